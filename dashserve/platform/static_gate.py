"""StaticKeyGate: the Gate for keys given on the command line; no quotas, usage goes to the log.

With keys configured, a request must carry one of them. With none configured, any
non-empty bearer token is accepted (the official SDKs refuse to send a request without
some key, so a missing header still means a broken client), and start-up warns that
the server is open.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable

from dashserve.errors import AuthenticationFailed, DashServeError
from dashserve.platform.gate import Admission, Principal, UsageRecord
from dashserve.platform.logs import log_request

log = logging.getLogger(__name__)


def key_prefix(key: str) -> str:
    """The part of a key that is safe to log."""
    return key[:7] if len(key) > 12 else key[:3]


class StaticKeyGate:
    """Implements ``dashserve.platform.gate.Gate`` for a fixed list of keys."""

    def __init__(self, api_keys: Iterable[str] = ()) -> None:
        self._keys = tuple(k for k in api_keys if k)
        self.num_finished = 0

    @property
    def is_open(self) -> bool:
        """True when no keys are configured (any non-empty key is accepted)."""
        return not self._keys

    async def start(self) -> None:
        if self.is_open:
            log.warning("no --api-key given: any non-empty API key is accepted")
        else:
            log.info("%d API keys configured", len(self._keys))

    async def stop(self) -> None:
        return None

    async def authenticate(self, api_key: str | None, workspace: str | None,
                           model: str) -> Principal:
        if not api_key:
            raise AuthenticationFailed("No API-key provided.")
        if self._keys and not any(hmac.compare_digest(api_key.encode(), k.encode())
                                  for k in self._keys):
            raise AuthenticationFailed("Invalid API-key provided.")
        return Principal(key_id=None, key_prefix=key_prefix(api_key), workspace=workspace)

    async def admit(self, principal: Principal, request_id: str, model: str,
                    estimated_tokens: int) -> Admission:
        return Admission(principal=principal, request_id=request_id, model=model,
                         reserved_tokens=estimated_tokens, started_at=time.monotonic())

    def expects_admission(self, principal: Principal, estimated_tokens: int) -> bool:
        return False  # admit answers at once

    async def finish(self, admission: Admission, record: UsageRecord) -> None:
        self.num_finished += 1
        log_request(log, record)

    async def refuse(self, request_id: str, principal: Principal | None, model: str,
                     error: DashServeError) -> None:
        """An error answered without a run: logged (there is no usage table here)."""
        log.info("refused request_id=%s key=%s status=%d code=%s", request_id,
                 principal.key_prefix if principal else "-", error.status_code, error.code)
