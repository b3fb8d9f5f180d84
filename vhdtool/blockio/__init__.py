"""Positional file I/O and zero detection: the lowest layer, no project imports but errors."""
