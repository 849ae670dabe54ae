"""Incremental detokenization with stop strings: bytes in, whole UTF-8 characters out.

Each token contributes raw bytes; only complete UTF-8 characters are released. While stop
strings are set, a tail of the text that is the beginning of some stop string is held back,
because it could still become one; once a stop string appears, the text is cut right
before it and nothing after it is ever released.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence as Seq


class IncrementalDetokenizer:
    def __init__(
        self, id_to_bytes: Seq[bytes], skip_ids: frozenset[int], stop: tuple[str, ...] = ()
    ) -> None:
        self._id_to_bytes = id_to_bytes
        self._skip_ids = skip_ids
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._text = ""  # decoded, not yet released
        self._full: list[str] = []
        self.stopped = False  # a stop string was found

    def push(self, token_id: int) -> None:
        """Add one generated token (ignored once a stop string matched)."""
        if self.stopped or token_id in self._skip_ids:
            return
        piece = self._decoder.decode(self._id_to_bytes[token_id])
        if not piece:
            return
        search_from = max(0, len(self._text) - self._hold)
        self._text += piece
        if self._stop:
            self._check_stop(search_from)

    def _check_stop(self, search_from: int) -> None:
        cut = -1
        for s in self._stop:
            pos = self._text.find(s, search_from)
            if pos != -1 and (cut == -1 or pos < cut):
                cut = pos
        if cut != -1:
            self._text = self._text[:cut]
            self.stopped = True

    def take(self, final: bool = False) -> str:
        """The newly releasable text. ``final`` flushes everything (incomplete bytes become
        U+FFFD, held-back characters are released)."""
        if final and not self.stopped:
            self._text += self._decoder.decode(b"", final=True)
        keep = 0 if (final or self.stopped) else self._partial_stop_len()
        n = max(0, len(self._text) - keep)
        out, self._text = self._text[:n], self._text[n:]
        if out:
            self._full.append(out)
        return out

    def _partial_stop_len(self) -> int:
        """Length of the longest tail of the pending text that begins some stop string."""
        for k in range(min(self._hold, len(self._text)), 0, -1):
            tail = self._text[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0

    @property
    def text(self) -> str:
        """All text released so far."""
        return "".join(self._full)
