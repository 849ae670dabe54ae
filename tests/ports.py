"""Free loopback ports for the servers the tests start, never the same one twice in a run.

A port is free when the kernel hands it out, but the server it is for binds it only once its
process is up; a second ask before then may get the same number back (about 1 in 15,000 on
Linux), and the second server dies with "address already in use" while the first one answers
for both. Remembering every port handed out in this test process rules that out.
"""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that is free now and was not handed out before in this process."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
