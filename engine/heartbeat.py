"""Process heartbeats: whether the process that runs a piece of work is still alive.

A process that runs work (the app's job runner, a CLI command) calls :func:`start`: a daemon thread
rewrites ``<workspace>/heartbeats/<host>-<pid>.json`` every :data:`INTERVAL` seconds. Records of runs
and generator trainings carry the ``host`` and ``pid`` of the process doing them; :func:`is_stale` says
when that process is gone: on this host at once (its pid is dead), on another host once its heartbeat
is older than ``max_age``. A Ray worker that runs the lab's jobs beats as a ``worker``, with the node it
runs on, so a run it leaves behind is marked interrupted naming that node. Where this stops: no records
are changed here (``runs.sweep`` does that).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from engine import store

log = logging.getLogger(__name__)
INTERVAL = 10.0  # seconds between two beats
MAX_AGE = 60.0  # a heartbeat older than this says its process has stopped
ROLES = ("app", "cli", "worker")  # the app's server, a command-line run, or a cluster worker running jobs

_lock = threading.Lock()
_thread: threading.Thread | None = None
_folder: Path | None = None  # where this process beats: the workspace of the latest start()
_role = "cli"
_started = 0.0
_where = ""  # a worker's node, "node <ip> (<node id>)"; "" elsewhere
_write_error: OSError | None = None  # why the last beat was not written, if it was not


def host() -> str:
    """This machine's name, as records and heartbeat files carry it."""
    return socket.gethostname()


def _path(folder: Path, host_name: str, pid: int) -> Path:
    return folder / f"{host_name}-{pid}.json"


def beat() -> None:
    """Write this process's heartbeat now (the thread does it every INTERVAL seconds)."""
    folder = _folder
    if folder is None or not folder.parent.is_dir():  # the workspace was removed (e.g. a test's): nothing to tell
        return
    record = {"host": host(), "pid": os.getpid(), "role": _role, "started": _started, "time": time.time()}
    if _where:
        record["where"] = _where
    store.write_json(_path(folder, host(), os.getpid()), record)


def _beat_or_log() -> None:
    """:func:`beat`, or a log line: a full or read-only disk must not stop the server or this thread (the next
    beat tries again; a dead thread would make this process's own work look stopped)."""
    global _write_error
    try:
        beat()
        _write_error = None
    except OSError as err:
        _write_error = err
        log.warning("heartbeat not written: %s", err)


def write_error() -> OSError | None:
    """Why the last heartbeat could not be written (a full disk, say), or None when it was."""
    return _write_error


def _loop() -> None:
    while True:
        time.sleep(INTERVAL)
        _beat_or_log()


def start(role: str = "cli", *, where: str = "") -> None:
    """Beat for this process into the current workspace from now on (idempotent; a second call re-targets).

    ``role`` is "app" for the server's job runner, "cli" for a command-line run, "worker" for a cluster
    worker (``where``: its node); it decides how an interrupted record explains what stopped. A process
    keeps the first of app, worker, cli it was started as.
    """
    global _thread, _folder, _role, _started, _where
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not accepted: expected one of {', '.join(ROLES)}")
    with _lock:
        _folder = store.home() / "heartbeats"  # made by the first beat: a full disk must not stop the start
        held = (role, _role if _thread else "")
        _role = next(r for r in ("app", "worker", "cli") if r in (*held, "cli"))
        _where = where or _where
        _started = _started or time.time()
        _beat_or_log()
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="heartbeat", daemon=True)
            _thread.start()


def read(host_name: str, pid: int) -> dict[str, Any] | None:
    """The last heartbeat of process ``pid`` on ``host_name`` in this workspace, or None."""
    try:
        data: dict[str, Any] = json.loads(_path(store.subdir("heartbeats"), host_name, pid).read_text())
    except (OSError, ValueError):
        return None
    return data


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_stale(host_name: str, pid: int, *, max_age: float = MAX_AGE) -> bool:
    """Whether the process ``pid`` on ``host_name`` ("" = this host) has stopped.

    On this host a dead pid is stale at once; a live one only when its heartbeat is older than
    ``max_age`` seconds (a hung process, or the pid taken by another one); a live pid without a heartbeat
    (a process that never beats) is not. On another host: no heartbeat, or one older than ``max_age``.
    """
    host_name = host_name or host()
    beat_ = read(host_name, pid)
    old = beat_ is not None and time.time() - float(beat_.get("time", 0.0)) > max_age
    if host_name == host():
        return not pid_alive(pid) or old
    return beat_ is None or old


def has_stopped(host_name: str, pid: int) -> bool:
    """:func:`is_stale` for a record's process, where the asking process itself is always alive (its own
    records are never swept while it runs)."""
    own = pid == os.getpid() and host_name in ("", host())
    return not own and is_stale(host_name, pid)


def stopped_role(host_name: str, pid: int) -> str:
    """What the stopped process was, from its heartbeat: "app", "cli", or "" when it left none."""
    beat_ = read(host_name or host(), pid)
    return str(beat_.get("role", "")) if beat_ else ""


def stopped_where(host_name: str, pid: int) -> str:
    """The node a stopped worker ran on, from its heartbeat ("" when it named none)."""
    beat_ = read(host_name or host(), pid)
    return str(beat_.get("where", "")) if beat_ else ""


def forget_dead() -> int:
    """Remove the heartbeat files of this host's stopped processes (after a sweep used them); returns how many."""
    removed = 0
    for path in store.subdir("heartbeats").glob(f"{host()}-*.json"):
        pid = path.stem.rpartition("-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
