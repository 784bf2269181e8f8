"""One error boundary for every command: a known error is one line and exit 2 or 1, never a traceback;
--debug shows it; a closed pipe is not an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eaft import cli

REPO = Path(__file__).resolve().parents[1]


def test_help_into_a_closed_pipe_prints_no_traceback():
    """With stdout block-buffered, as in a user's shell: PYTHONUNBUFFERED (set on some machines) hid the failure,
    which came from the buffered rest of the 17 KB help being flushed at exit, after `head` had left."""
    shell = f"{sys.executable} -m eaft.cli train --help | head -1"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(["bash", "-c", shell], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.startswith("usage: eaft train")
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_a_truncated_results_file_is_named(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text('{"tasks": {')
    assert cli.main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / 'results.json'}: not a readable results file" in err and "Traceback" not in err


def test_a_known_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'{"instruction": "h\xe9", "output": "x"}\n')
    args = ["train", f"dataset={rows}", f"output_dir={tmp_path / 'out'}"]
    assert cli.main(args) == 2  # bad input
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"eaft train: {rows}:1: not UTF-8 text (byte 0xe9 at column 19); save the file as UTF-8"
    from eaft.data import DataError

    with pytest.raises(DataError):
        cli.main([*args, "--debug"])
    monkeypatch.setenv("EAFT_DEBUG", "1")
    with pytest.raises(DataError):
        cli.main(args)


def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import tempfile

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps({"tasks": {}}))

    def denied(*args, dir=None, **kwargs):  # noqa: A002 - mkstemp's keyword
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # what a read-only folder does to the atomic writer
    assert cli.main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report")]) == 1
    err = capsys.readouterr().err
    assert f"eaft report: Permission denied: {tmp_path / 'report'}" in err and "Traceback" not in err


def test_os_errors_say_what_to_do():
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoint-4/optimizer.pt")
    assert cli.describe(full) == (
        "No space left on device: /runs/x/checkpoint-4/optimizer.pt "
        "(the disk is full: free space or choose another output_dir/--out)"
    )
    assert "read-only" in cli.describe(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/config.yaml"))
    assert "--debug" in cli.describe(ZeroDivisionError("division by zero"))


def test_an_interrupt_says_what_to_run_next(capsys, monkeypatch):
    import eaft.evaluate.runner as runner

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "main", interrupted)
    assert cli.main(["eval", "--suite", "s.yaml"]) == 130
    assert capsys.readouterr().err.strip() == (
        "eaft eval: interrupted; the same command again reuses every task already scored (they are cached)"
    )
