"""Where uploaded bytes live: a small blob-store interface and its local-directory backend.

Keys are made by dashserve (``<file id>/original``, ``<file id>/text``), never from client
input, and are checked to stay inside the root anyway. Writes are atomic (a temporary file
renamed into place), so a reader never sees half a blob. An S3-compatible store only has to
implement the same four methods; every server process must see the same blobs.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class BlobStore(Protocol):
    """Blocking calls: the file service runs them off the event loop."""

    def put_file(self, key: str, source: Path) -> None:
        """Store the content of the local file ``source`` under ``key``."""

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes:
        """The blob; ``FileNotFoundError`` when there is none."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every blob whose key starts with ``prefix + "/"`` (no error if none)."""


class LocalBlobStore:
    """Blobs as files under ``root`` (one directory per file id)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path_of(self, key: str) -> Path:
        if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
            raise ValueError(f"invalid blob key {key!r}")
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"blob key {key!r} leaves the store")
        return path

    def _temporary(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")

    def put_file(self, key: str, source: Path) -> None:
        path = self.path_of(key)
        tmp = self._temporary(path)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self.path_of(key)
        tmp = self._temporary(path)
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, key: str) -> bytes:
        return self.path_of(key).read_bytes()

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path_of(prefix), ignore_errors=True)
