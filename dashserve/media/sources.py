"""The bytes behind a media reference: http(s) URLs, data URLs, ``oss://`` uploads, local files.

http(s) goes through ``netguard`` (no private addresses, capped, timed out). ``data:`` URLs
must be base64. ``oss://`` keys need ``X-DashScope-OssResourceResolve: enable`` and resolve
only inside the caller's workspace. ``file://`` URLs and bare paths are read only under the
operator's ``allowed_local_media_path``; without it they are refused, since they would read
the server's own files.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from dashserve.errors import InvalidRequest
from dashserve.media.uploads import UploadStore
from dashserve.netguard import FetchError, FetchPolicy, fetch

MAX_MEDIA_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Where media may come from and how large it may be."""

    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    max_bytes: int = MAX_MEDIA_BYTES
    allowed_local_path: Path | None = None
    uploads: UploadStore | None = None


def _data_url(source: str, where: str, max_bytes: int) -> bytes:
    header, sep, payload = source.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequest(f"{where}: a data URL must be base64 (data:image/png;base64,...)",
                             param=where)
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise InvalidRequest(f"{where}: the image is larger than {max_bytes} bytes",
                             param=where)
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{where}: the data URL is not valid base64", param=where) from exc


def _local_file(source: str, where: str, config: MediaConfig) -> bytes:
    if config.allowed_local_path is None:
        raise InvalidRequest(
            f"{where}: local files cannot be read by this server; send a URL, a base64 data "
            "URL, or upload the file (the dashscope SDK does so for local paths)", param=where)
    if source.startswith("file://"):
        parsed = urlparse(source)
        source = unquote(parsed.netloc + parsed.path)
    root = config.allowed_local_path.resolve()
    path = Path(source).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise InvalidRequest(f"{where}: the file is not inside the allowed local media path",
                             param=where)
    if path.stat().st_size > config.max_bytes:
        raise InvalidRequest(f"{where}: the file is larger than {config.max_bytes} bytes",
                             param=where)
    return path.read_bytes()


async def load_media(source: str, where: str, config: MediaConfig, *,
                     workspace: str | None, resolve_oss: bool) -> bytes:
    """The bytes ``source`` refers to; 400 naming ``where`` when they cannot or may not be
    read."""
    scheme = source.split(":", 1)[0].lower() if ":" in source else ""
    if scheme == "data":
        return _data_url(source, where, config.max_bytes)
    if scheme in ("http", "https"):
        policy = config.fetch
        if policy.max_bytes != config.max_bytes:
            policy = dataclasses.replace(policy, max_bytes=config.max_bytes)
        try:
            return (await fetch(source, policy)).content
        except FetchError as exc:
            raise InvalidRequest(f"{where}: cannot download the image: {exc.message}",
                                 param=where) from exc
    if scheme == "oss":
        if not resolve_oss:
            raise InvalidRequest(f"{where}: oss:// resources need the header "
                                 "X-DashScope-OssResourceResolve: enable", param=where)
        if config.uploads is None:
            raise InvalidRequest(f"{where}: uploads are not enabled on this server",
                                 param=where)
        try:
            path = config.uploads.resolve(source[len("oss://"):], workspace)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}: {exc.message}", param=where) from exc
        return path.read_bytes()
    if scheme == "file" or not scheme or len(scheme) == 1:  # a path (or a drive letter)
        return _local_file(source, where, config)
    raise InvalidRequest(f"{where}: unsupported image reference {scheme}://; use http(s), "
                         "a base64 data URL or oss://", param=where)
