"""Owner locks for runs and studies: lock files that work on a local disk and on NFS, across hosts.

A lock is a file ``<results>/locks/<kind>-<name>.lock`` holding its owner as JSON (``host``, ``pid``,
``pid_start``, ``started``, ``what``, ``argv``); its mtime is the owner's heartbeat, renewed every
``heartbeat_s`` by a thread of the owner (:class:`Heartbeat`).

* **Taking it** is one atomic step that NFS honours: the owner record is written to a private file
  and hard-linked to the lock's name (``link(2)`` fails with EEXIST if the lock exists, also over
  NFSv2/3 where ``O_EXCL`` was not atomic; a lost reply is caught by checking the private file's link
  count, the classic procmail/Mailman recipe). Where hard links are not supported it falls back to
  ``O_CREAT | O_EXCL``.
* **Stale locks** are taken over: an owner on *this* host is dead when its pid is gone, a zombie, or a
  later process with the same pid (``pid_start`` from ``/proc``); an owner on *another* host is dead
  when its heartbeat is older than ``stale_after_s`` (default 300 s, ``$MAMBAMIA_LOCK_STALE_S``),
  measured against the file server's clock (the mtime of a file just created next to it), so clock
  skew between hosts does not matter. Breaking is serialised by a second lock file ``<lock>.break``
  and re-checked under it, so two processes that both saw a stale lock cannot remove a fresh one.

Why not a library: ``filelock`` (installed) and ``portalocker`` use ``flock``/``fcntl``, which are not
reliable across NFS clients and say nothing about who holds a lock; ``flufl.lock`` does the link recipe
with lifetimes but cannot tell a dead pid on this host from a live one (a killed driver would keep its
runs for a whole lifetime) and would be a new dependency. This module is those ~150 lines.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HOST = socket.gethostname()
DEFAULT_STALE_S = float(os.environ.get("MAMBAMIA_LOCK_STALE_S", "300"))
BREAK_STALE_S = 30.0  # a `.break` guard older than this was left by a killed breaker


def proc_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie Linux process; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` of this host runs (not a zombie; with ``start``, the same process)."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        got = proc_start(pid)
        return got is not None and (start is None or got == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_info(what: str = "") -> dict[str, Any]:
    """This process as a lock owner."""
    return {"host": HOST, "pid": os.getpid(), "pid_start": proc_start(os.getpid()), "what": what,
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "argv": " ".join(sys.argv)[:500], "token": uuid.uuid4().hex}


def describe_owner(info: dict[str, Any] | None) -> str:
    if not info:
        return "an unknown owner"
    return (f"{info.get('what') or 'a process'} (pid {info.get('pid')} on {info.get('host')}, "
            f"since {info.get('started')})")


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` if it does not exist, atomically (also on NFS); True if created."""
    tmp = path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    try:
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return os.stat(tmp).st_nlink == 2  # the link was made but the (NFS) reply was lost
        except OSError:  # no hard links here (some FUSE / SMB mounts): O_EXCL, atomic on local disks, NFSv3+
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_lock(path: Path) -> tuple[dict[str, Any] | None, os.stat_result | None]:
    """(owner record or None if unreadable, stat or None if there is no lock)."""
    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except FileNotFoundError:
        return None, None
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    return (info if isinstance(info, dict) else None), st


class Lock:
    """One owner lock. ``acquire()`` never blocks; ``wait_acquire()`` polls; ``release()`` removes it
    only while this process still owns it."""

    def __init__(self, path: str | os.PathLike, what: str = "", stale_after_s: float | None = None):
        self.path = Path(path)
        self.what = what
        self.stale_after_s = DEFAULT_STALE_S if stale_after_s is None else stale_after_s
        self.info: dict[str, Any] | None = None  # ours, while held

    @property
    def held(self) -> bool:
        return self.info is not None

    def holder(self) -> dict[str, Any] | None:
        """The current owner record (None: no lock, or unreadable)."""
        return read_lock(self.path)[0]

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; True if this process holds it now."""
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = owner_info(self.what)
        data = json.dumps(info, sort_keys=True).encode()
        for _ in range(2):  # a stale lock is broken once, then taken
            if _create_exclusive(self.path, data):
                self.info = info
                return True
            if not self._break_if_stale():
                return False
        return False

    def wait_acquire(self, timeout_s: float | None = None, poll_s: float = 1.0,
                     on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> bool:
        """Poll until the lock is ours (True) or ``timeout_s`` passed (False); ``on_wait(holder)`` is
        called once, when the first attempt finds the lock taken."""
        t0, told = time.monotonic(), False
        while not self.acquire():
            if on_wait is not None and not told:
                on_wait(self.holder())
                told = True
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                return False
            time.sleep(poll_s)
        return True

    def is_stale(self, info: dict[str, Any] | None, st: os.stat_result, server_now: float) -> bool:
        age = server_now - st.st_mtime
        if info is None:  # being written (O_EXCL fallback) or damaged
            return age > max(10.0, self.stale_after_s)
        if info.get("host") == HOST and isinstance(info.get("pid"), int):
            return not pid_alive(info["pid"], info.get("pid_start"))
        return age > self.stale_after_s

    def _break_if_stale(self) -> bool:
        """Remove the lock if its owner is dead; True if it was removed (or is gone)."""
        guard = self.path.with_name(self.path.name + ".break")
        if not _create_exclusive(guard, json.dumps(owner_info("break")).encode()):
            with contextlib.suppress(OSError):  # a breaker killed while holding the guard
                if time.time() - os.stat(guard).st_mtime > BREAK_STALE_S:
                    os.unlink(guard)
            return False
        try:
            server_now = os.stat(guard).st_mtime
            info, st = read_lock(self.path)
            if st is None:
                return True
            if not self.is_stale(info, st, server_now):
                return False
            cur = os.stat(self.path)
            if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                return False
            os.unlink(self.path)
            print(f"[lock] took over {self.path} from {describe_owner(info)}: owner is gone", file=sys.stderr,
                  flush=True)
            return True
        except FileNotFoundError:
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(guard)

    def owns(self) -> bool:
        """Whether the lock file still names this holder (False after another process broke it)."""
        info, _ = read_lock(self.path)
        return bool(self.info and info and info.get("token") == self.info["token"])

    def heartbeat(self) -> bool:
        """Renew the lock's mtime; False if the lock is no longer ours."""
        if not self.held or not self.owns():
            return False
        with contextlib.suppress(OSError):
            os.utime(self.path)
            return True
        return False

    def release(self) -> None:
        if self.held and self.owns():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.info = None

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise TimeoutError(f"{self.path} is held by {describe_owner(self.holder())}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Heartbeat:
    """A daemon thread renewing every held lock in ``locks`` every ``interval_s`` (add/remove freely)."""

    def __init__(self, interval_s: float | None = None):
        self.interval_s = interval_s or max(1.0, min(30.0, DEFAULT_STALE_S / 5))
        self.locks: dict[str, Lock] = {}
        self.lost: list[Lock] = []
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lock-heartbeat", daemon=True)
        self._thread.start()

    def add(self, key: str, lock: Lock) -> None:
        with self._mu:
            self.locks[key] = lock

    def remove(self, key: str) -> Lock | None:
        with self._mu:
            return self.locks.pop(key, None)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._mu:
                locks = list(self.locks.items())
            for key, lk in locks:
                if lk.held and not lk.heartbeat():
                    print(f"[lock] lost {lk.path}: another process took it over (this one was thought dead)",
                          file=sys.stderr, flush=True)
                    self.lost.append(lk)
                    self.remove(key)

    def close(self, release: Iterable[Lock] = ()) -> None:
        self._stop.set()
        for lk in release:
            lk.release()
