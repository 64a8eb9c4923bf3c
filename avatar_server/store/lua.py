"""Lua scripts used by more than one store (each store registers its own copy)."""

from __future__ import annotations

# KEYS: record hash; ARGV: field/value pairs → 1 if the record exists (and was changed), 0 if not
SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
