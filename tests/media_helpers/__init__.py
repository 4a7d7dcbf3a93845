"""Helpers for the media tests (importable by decode workers, which unpickle load functions by name)."""
