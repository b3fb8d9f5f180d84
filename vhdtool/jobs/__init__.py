"""The jobs users run: convert, fix, prepare (with naming and the manifest)."""
