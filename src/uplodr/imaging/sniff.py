"""The sniffer lives in the pure module `uplodr.sniff` (the gateway uses it without loading
libvips); re-exported here so imaging checks the magic bytes at the library level too."""

from uplodr.sniff import ALLOWED_FORMATS, SNIFF_BYTES, ImageFormat, read_head, sniff

__all__ = ["ALLOWED_FORMATS", "SNIFF_BYTES", "ImageFormat", "read_head", "sniff"]
