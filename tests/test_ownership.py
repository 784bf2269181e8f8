"""One writer per output folder: a live owner's folder is refused, a dead owner's lock is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eaft.ownership import FolderBusy, lock_path, own_folder

SRC = Path(__file__).resolve().parents[1] / "src"
HOLD = """
import sys, time
from eaft.ownership import own_folder
with own_folder(sys.argv[1], "a test holder"):
    print("held", flush=True)
    time.sleep(120)
"""


def holder(folder: Path) -> subprocess.Popen:
    """Another process that owns `folder` until killed."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_owner_refuses_a_second_writer_and_a_dead_ones_lock_is_taken_over(tmp_path):
    folder = tmp_path / "out"
    proc = holder(folder)
    try:
        with pytest.raises(
            FolderBusy, match=rf"in use by a test holder \(pid {proc.pid} on .*delete .*\.out\.eaft-lock"
        ):
            with own_folder(folder, "eaft test"):
                pytest.fail("a second owner got in")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = json.loads(lock_path(folder).read_text())  # a kill leaves the file; the OS lock went with the process
    assert stale["pid"] == proc.pid
    with own_folder(folder, "eaft test"):
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    assert not lock_path(folder).exists()  # released: nothing left beside the folder


def test_the_lock_is_reentrant_within_a_process_and_sits_beside_the_folder(tmp_path):
    folder = tmp_path / "run"
    with own_folder(folder, "outer"):
        with own_folder(folder, "inner"):
            assert lock_path(folder) == tmp_path / ".run.eaft-lock"
        assert lock_path(folder).exists()  # the inner exit keeps the outer's hold
        owner = json.loads(lock_path(folder).read_text())
        assert owner["command"] == "outer" and owner["host"] and time.strptime(owner["started"], "%Y-%m-%dT%H:%M:%S")
    assert not lock_path(folder).exists()


def test_without_flock_a_stale_pid_is_taken_over_and_a_live_one_refused(tmp_path, monkeypatch):
    import socket

    import eaft.ownership as ownership

    monkeypatch.setattr(ownership, "_try_flock", lambda fd: None)  # a file system without flock
    folder = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "started": "then", "command": "a dead run"}
    lock_path(folder).write_text(json.dumps(record))
    with own_folder(folder, "eaft test"):
        assert json.loads(lock_path(folder).read_text())["pid"] == os.getpid()
    lock_path(folder).write_text(json.dumps({**record, "pid": os.getppid(), "command": "a live run"}))
    with pytest.raises(FolderBusy, match="in use by a live run"):
        with own_folder(folder, "eaft test"):
            pass
