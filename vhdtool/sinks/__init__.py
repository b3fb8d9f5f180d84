"""Sinks: consumers of the pump's byte stream (a fixed-VHD/raw file, digests, page blobs)."""
