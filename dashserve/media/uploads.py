"""Temporary uploads for the dashscope SDK's local files: signed policies and ``oss://`` keys.

The SDK uploads a local image in two steps: ``GET /api/v1/uploads?action=getPolicy`` (with
the API key) answers an upload policy, then the file is POSTed, without a key, as a form
to the policy's ``upload_host``; the message then names the file ``oss://<key>``. dashserve
plays both parts. A policy is base64 JSON (expiry, the key prefix ``<workspace token>/<random>``
and the allowed size range) signed with an HMAC-SHA256 of a secret kept in the data dir, so
the unauthenticated POST is still bound to the key's workspace. Files live under
``<data dir>/uploads/<key>`` and expire after ``ttl_s``; ``oss://`` keys resolve only for the
workspace that uploaded them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashserve.errors import InvalidRequest

POLICY_TTL_S = 300.0  # the SDK asks for a policy right before it uploads
UPLOAD_TTL_S = 48 * 3600.0  # as DashScope's temporary upload space
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_NAME = re.compile(r"^[^/\\\x00]{1,255}$")


def workspace_token(workspace: str | None) -> str:
    """A path-safe name for a workspace (the default workspace when None)."""
    return "ws-" + hashlib.sha256((workspace or "").encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """What ``getPolicy`` answers (the field names the SDK reads)."""

    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: int
    max_file_size_mb: int

    def as_output(self) -> dict[str, Any]:
        return {"policy": self.policy, "signature": self.signature,
                "upload_dir": self.upload_dir, "upload_host": self.upload_host,
                "expire_in_seconds": self.expire_in_seconds,
                "max_file_size_mb": self.max_file_size_mb, "capacity_limit_mb": 999999999,
                "oss_access_key_id": "dashserve", "x_oss_object_acl": "private",
                "x_oss_forbid_overwrite": "true"}


class UploadStore:
    """Issues and checks upload policies; stores, finds and expires uploaded files."""

    def __init__(self, root: Path, *, ttl_s: float = UPLOAD_TTL_S,
                 max_bytes: int = MAX_UPLOAD_BYTES, policy_ttl_s: float = POLICY_TTL_S) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.policy_ttl_s = policy_ttl_s
        self._secret: bytes | None = None

    @property
    def files(self) -> Path:
        return self.root / "uploads"

    def _key(self) -> bytes:
        """The HMAC secret: made once, kept (owner-only) in the data dir."""
        if self._secret is None:
            path = self.root / "upload-secret"
            if not path.exists():
                self.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
            self._secret = path.read_text().strip().encode()
        return self._secret

    def _sign(self, policy: str) -> str:
        return _b64(hmac.new(self._key(), policy.encode(), hashlib.sha256).digest())

    def issue(self, workspace: str | None, upload_host: str,
              now: float | None = None) -> UploadPolicy:
        now = time.time() if now is None else now
        upload_dir = f"{workspace_token(workspace)}/{secrets.token_hex(12)}"
        body = {"expiration": now + self.policy_ttl_s,
                "conditions": [["starts-with", "$key", upload_dir + "/"],
                               ["content-length-range", 1, self.max_bytes]]}
        policy = _b64(json.dumps(body, separators=(",", ":")).encode())
        return UploadPolicy(policy, self._sign(policy), upload_dir, upload_host,
                            int(self.policy_ttl_s), self.max_bytes // (1024 * 1024))

    def check(self, policy: str, signature: str, key: str, size: int,
              now: float | None = None) -> None:
        """Refuse (400) a POST whose policy is forged or expired, or whose key or size
        the policy does not allow."""
        if not hmac.compare_digest(self._sign(policy), signature or ""):
            raise InvalidRequest("the upload policy's signature does not match",
                                 param="Signature")
        try:
            body = json.loads(base64.b64decode(policy, validate=True))
            expiration = float(body["expiration"])
            prefix = next(c[2] for c in body["conditions"] if c[0] == "starts-with")
            lo, hi = next(c[1:] for c in body["conditions"] if c[0] == "content-length-range")
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            raise InvalidRequest("the upload policy is not valid", param="policy") from exc
        if (time.time() if now is None else now) > expiration:
            raise InvalidRequest("the upload policy has expired", param="policy")
        name = key[len(prefix):] if key.startswith(prefix) else ""
        if not _NAME.match(name) or name in (".", ".."):
            raise InvalidRequest("the upload key is outside the policy's directory",
                                 param="key")
        if not lo <= size <= hi:
            raise InvalidRequest(f"the file must have between {lo} and {hi} bytes",
                                 param="file")

    def save(self, key: str, data: bytes) -> Path:
        """Store a checked upload (its directory is unique to one policy)."""
        self.sweep()
        path = self.files / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def resolve(self, key: str, workspace: str | None) -> Path:
        """The file of ``oss://<key>`` for a caller in ``workspace`` (400 otherwise)."""
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != workspace_token(workspace) \
                or any(p in ("", ".", "..") for p in parts):
            raise InvalidRequest(f"oss://{key} is not a file uploaded in this workspace",
                                 param="oss")
        path = self.files.joinpath(*parts)
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            age = None
        if age is None or age > self.ttl_s:
            raise InvalidRequest(f"oss://{key} does not exist or has expired", param="oss")
        return path

    def sweep(self, now: float | None = None) -> None:
        """Delete upload directories older than the TTL."""
        now = time.time() if now is None else now
        if not self.files.is_dir():
            return
        for workspace in self.files.iterdir():
            for folder in workspace.iterdir() if workspace.is_dir() else ():
                try:
                    if now - folder.stat().st_mtime > self.ttl_s:
                        shutil.rmtree(folder, ignore_errors=True)
                except OSError:
                    continue
