"""Stage-independent helpers: errors, artifacts and manifests, config checks, progress."""

from lrm.core.errors import ConfigError, DataError
from lrm.core.artifacts import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_manifest,
    save_npy,
    write_manifest,
)

__all__ = [
    "ConfigError",
    "DataError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "read_manifest",
    "save_npy",
    "write_manifest",
]
