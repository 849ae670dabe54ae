"""Throw-away Redis and PostgreSQL servers on free ports, started (and restarted) by tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.reliability.conftest import free_port


class RedisServer:
    """``redis-server`` on a free port, its data kept in ``dir`` across restarts."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True,
                             check=False).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self, save: bool = True) -> None:
        """Shut down (saving its data first, as a restart with persistence would)."""
        if self.proc is None:
            return
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown",
                        "save" if save else "nosave"], capture_output=True, check=False)
        self.proc.wait(10)
        self.proc = None


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """A PostgreSQL cluster of its own (``initdb``) on a free port; run as the ``postgres``
    user when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="dashserve-pg-"))  # outside root-only dirs
        self.root = directory
        self.dir = directory / "pgdata"
        self.sock = directory
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(directory, "postgres")

    @staticmethod
    def available() -> bool:
        return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or shutil.which("runuser")
                                                 is not None)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.dir), "-U", "postgres", "-A", "trust")

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-w", "-l",
                  str(self.sock / "pg.log"), "-o",
                  f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-w", "-m", mode, "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
