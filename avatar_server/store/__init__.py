"""Persistence: the only package that imports redis."""
