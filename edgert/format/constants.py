"""Constants of the `.edgert` container."""

FILE_IDENTIFIER = b"EDGR"
FILE_EXTENSION = "edgert"
# Version of the format written. Readers accept files with version <= SCHEMA_VERSION.
SCHEMA_VERSION = 1
# Every constant blob starts at a multiple of this many bytes from the start of the file.
BLOB_ALIGNMENT = 64
