"""The VHDX format: layout, log replay, reader."""
