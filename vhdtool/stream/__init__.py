"""The one read loop and its sinks: the fixed-VHD view, file writer, hashers, sparse digest."""
