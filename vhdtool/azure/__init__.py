"""Azure Storage: destinations, the page-blob transport, upload planning and the upload."""
