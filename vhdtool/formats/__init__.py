"""Format readers: each turns an image file into a :class:`vhdtool.disk.base.VirtualDisk`."""
