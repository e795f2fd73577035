"""Put bytes under a key, give back the public URL: a local folder or S3-compatible buckets.

Storage knows nothing of images, gRPC or machines. `Publisher` writes one job's variants to every
store all-or-nothing, with a manifest as the commit point.
"""

from uplodr.storage.base import IMMUTABLE_CACHE_CONTROL, Store
from uplodr.storage.keys import content_digest, manifest_key, variant_key
from uplodr.storage.local import LocalStore
from uplodr.storage.publish import Blob, NameTaken, Published, Publisher, SetInfo, StoredVariant
from uplodr.storage.s3 import S3Store
from uplodr.storage.spec import open_store

__all__ = [
    "IMMUTABLE_CACHE_CONTROL",
    "Blob",
    "LocalStore",
    "NameTaken",
    "Published",
    "Publisher",
    "S3Store",
    "SetInfo",
    "Store",
    "StoredVariant",
    "content_digest",
    "manifest_key",
    "open_store",
    "variant_key",
]
