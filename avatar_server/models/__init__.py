"""Pydantic models of the public API and the stored records. No I/O in this package."""
