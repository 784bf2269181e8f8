"""One writer per output folder: `own_folder(path, "eaft train")` holds a lock for as long as a command writes there.

The lock is a file beside the folder, `.<name>.eaft-lock` (beside, so that clearing or replacing the folder
never drops it), holding the owner's pid, host, start time and command. It is an OS lock (`flock`), so the kernel
releases it when its owner exits or is killed: a lock file left by a dead process is stale and simply taken
over. A second command that asks for a folder a live process owns is refused with a message naming the owner,
before it reads, clears or writes anything there. Where the file system has no `flock` (some network mounts),
the pid is checked instead: a lock from a pid that no longer runs on this host is taken over.

The lock is re-entrant within one process (`eaft train` holds its run directory across training and the
evaluation after it). Applying it to another command is one call:

    with own_folder(out, "eaft experiment"):
        ...  # everything that reads, clears or writes `out`
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eaft.errors import EaftError

logger = logging.getLogger(__name__)
LOCK_SUFFIX = ".eaft-lock"
#: errno values meaning "this file system cannot flock", where the pid check stands in.
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}

_held: dict[str, int] = {}  # lock path -> depth, for re-entry within this process


class FolderBusy(EaftError, RuntimeError):
    """Another live process owns the output folder; the message names it and what to do."""


def lock_path(folder: str | Path) -> Path:
    """`.<name>.eaft-lock` beside the folder; the path is resolved, so two spellings of one folder share a lock."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def read_owner(lock: Path) -> dict:
    """The owner record in a lock file ({} when it is empty or unreadable)."""
    try:
        data = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _busy(folder: Path, lock: Path, owner: dict, command: str) -> FolderBusy:
    who = owner.get("command", "another eaft command")
    pid, host, started = owner.get("pid", "?"), owner.get("host", "?"), owner.get("started", "?")
    return FolderBusy(
        f"{folder} is in use by {who} (pid {pid} on {host}, started {started}); {command} will not write into a "
        f"folder another process is writing: wait for it to finish, or choose another output folder. If that "
        f"process is gone (e.g. it ran on another machine), delete {lock}"
    )


def _record(command: str) -> str:
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": command})


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system has no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in NO_FLOCK:
            return None
        raise
    return True


def _stale_by_pid(owner: dict) -> bool:
    """Without flock: a lock is stale when its owner ran on this host and its pid no longer runs."""
    if not owner:
        return True
    same_host = owner.get("host") == socket.gethostname()
    return same_host and isinstance(owner.get("pid"), int) and not pid_alive(owner["pid"])


def _acquire(folder: Path, lock: Path, command: str) -> int:
    """An open descriptor holding the lock on `lock`; raises FolderBusy when a live process holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        locked = _try_flock(fd)
        owner = read_owner(lock)
        if locked is False or (locked is None and not _stale_by_pid(owner) and owner.get("pid") != os.getpid()):
            os.close(fd)
            raise _busy(folder, lock, owner, command)
        try:  # the file may have been removed by its previous owner between our open and our lock
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if owner.get("pid") not in (None, os.getpid()):
        logger.info("%s: taking over a stale lock of pid %s (%s), which no longer runs", folder, owner["pid"], lock)
    os.ftruncate(fd, 0)
    os.write(fd, _record(command).encode())
    return fd


@contextmanager
def own_folder(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold `folder` for this process while the block runs (see the module docstring); yields the folder."""
    folder = Path(folder)
    lock = lock_path(folder)
    key = str(lock)
    if _held.get(key):
        _held[key] += 1
        try:
            yield folder
        finally:
            _held[key] -= 1
        return
    fd = _acquire(folder, lock, command)
    _held[key] = 1
    try:
        yield folder
    finally:
        del _held[key]
        try:  # remove it while still holding it: a waiting process then finds the file gone and retries
            os.unlink(lock)
        except FileNotFoundError:
            pass
        os.close(fd)
