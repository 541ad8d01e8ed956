"""Who is running what: the identity of a process that claims work (a sweep's run, a search's trial) and whether the
one holding a claim is still alive, so that several processes on one results store split the work and a dead one's
work is taken over.

A claim records its claimant (`Claimant`: a token, the machine, the process id) and a heartbeat time the claimant
renews every `BEAT_S` seconds while it lives (`Heartbeat`). The claimant is dead when its heartbeat is older than
`TIMEOUT_S`, or at once when it ran on this machine (same host name and boot) and its process is gone: a sweep
killed here is taken over by the next one without waiting out the timeout. Clocks of machines sharing a store must
agree to well within the timeout.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

TIMEOUT_S = 120.0
"""A claim whose heartbeat is older than this is dead: its claimant was killed, lost its machine, or hangs."""
BEAT_S = 15.0
"""How often a live claimant renews its heartbeat (a fraction of TIMEOUT_S: a few missed beats are survived)."""


def _machine() -> str:
    """This machine: its host name and, on Linux, its boot id (a reboot, or another machine with the same name, is
    another machine: its process ids mean nothing here)."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    try:
        return f"{socket.gethostname()}/{boot.read_text().strip()}"
    except OSError:
        return socket.gethostname()


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass(frozen=True)
class Claimant:
    """A process that claims work: `owner` is unique to this claimant, `host` the machine, `pid` the process."""

    owner: str
    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Claimant:
        return cls(uuid.uuid4().hex, _machine(), os.getpid())

    def to_dict(self) -> dict:
        return asdict(self)


def is_dead(holder: dict, heartbeat: float, now: float | None = None) -> bool:
    """Whether the claimant `holder` (a `Claimant` as a dict) whose last heartbeat was at `heartbeat` (time.time())
    has died: its heartbeat is older than TIMEOUT_S, or it ran on this machine and its process is gone."""
    now = time.time() if now is None else now
    if now - heartbeat > TIMEOUT_S:
        return True
    pid = holder.get("pid")
    if holder.get("host") != _machine():
        return False
    return not (isinstance(pid, int) and pid > 0 and process_exists(pid))


class Heartbeat:
    """A daemon thread calling `beat()` every BEAT_S seconds until `stop()`; a failed beat (a locked database) is
    retried at the next one. A context manager."""

    def __init__(self, beat: Callable[[], None], every: float = BEAT_S):
        self._beat, self._every = beat, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kdlora-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._beat()
            except Exception:  # a missed beat is survived: the next one retries
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
