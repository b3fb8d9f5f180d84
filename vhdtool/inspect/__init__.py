"""Offline inspection of what a disk holds: partitions, filesystems, the OS and its state."""
