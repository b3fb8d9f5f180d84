"""The VHD format (fixed, dynamic, differencing): layout, footer, reader."""
