"""Where photo files live: a small interface, so object storage can replace the local disk later.

Keys are made here, never from a user's file name, and every key is checked
before it touches the disk, so nothing can reach outside UPLOAD_DIR.
"""
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from flask import current_app

# ab/cd/<32 hex>.jpg, plus one derivative tag for cached versions (ab/cd/<32 hex>.thumb.jpg).
KEY_PATTERN = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}(?:\.[a-z0-9]{1,8}){1,2}")
SUFFIX_PATTERN = re.compile(r"\.?[a-z0-9]{1,8}")


class InvalidStorageKey(ValueError):
    """A key that was not made by the storage, or that would point outside it."""


class LocalStorage:
    """Files under one directory on the local disk."""

    def __init__(self, root):
        self.root = Path(root).resolve()

    def save(self, data, suffix):
        """Store bytes or a binary stream under a new random key and return the key."""
        if not SUFFIX_PATTERN.fullmatch(suffix):
            raise InvalidStorageKey(f"unusable suffix {suffix!r}")
        name = uuid.uuid4().hex
        key = f"{name[:2]}/{name[2:4]}/{name}.{suffix.lstrip('.')}"
        self.put(key, data)
        return key

    def put(self, key, data):
        """Store bytes or a binary stream under a key the storage made (or derived from one)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary name in the same directory and renamed, so a crash
        # mid-write leaves a stray temp file, never a half photo under a real key.
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as temp:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    temp.write(data)
                else:
                    shutil.copyfileobj(data, temp)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def open(self, key):
        """The stored file, opened for binary reading."""
        return self.path(key).open("rb")

    def path(self, key):
        """The local path of a key, confined to the storage root (for renderers that need a path)."""
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise InvalidStorageKey(f"not a storage key: {key!r}")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidStorageKey(f"key leaves the storage root: {key!r}")
        return path

    def exists(self, key):
        """Whether a file is stored under the key."""
        return self.path(key).is_file()

    def delete(self, key):
        """Remove a stored file; a file that is already gone is not an error."""
        self.path(key).unlink(missing_ok=True)


def get_storage():
    """The storage configured for this app (UPLOAD_DIR on the local disk)."""
    return LocalStorage(current_app.config["UPLOAD_DIR"])
