"""Headless Chromium for the HTML reports' checks: the DOM after the page's scripts ran, and screenshots.

eaft never needs a browser to write a page; tests, benchmarks/html_load.py and docs/analyze.md's screenshot use this.
Debian's `chromium` package provides /usr/bin/chromium (`apt-get install -y chromium`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# Root in a container needs --no-sandbox; the rest keep a headless run from phoning home or touching a profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    """The chromium binary: $EAFT_CHROMIUM, else `chromium` or `chromium-browser` on PATH; None if absent."""
    override = os.environ.get("EAFT_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(
    url: str,
    *,
    dump_dom: bool = False,
    screenshot: str | Path | None = None,
    window: tuple[int, int] = (1280, 1600),
    budget_ms: int | None = 5000,
    timeout_s: float = 120.0,
    binary: str | None = None,
) -> str:
    """Load `url` in a fresh profile; returns the DOM serialized after scripts ran (`dump_dom`), else "".

    `budget_ms` is Chromium's --virtual-time-budget: the page gets that much virtual time for its scripts and
    timers before the dump or screenshot. `screenshot` writes a PNG of the `window`-sized viewport.
    """
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found: apt-get install -y chromium (or set EAFT_CHROMIUM)")
    if not (dump_dom or screenshot):
        raise ValueError("run_chromium needs dump_dom=True or a screenshot path")
    with tempfile.TemporaryDirectory(prefix="eaft-chromium-") as profile:
        args = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}"]
        if budget_ms is not None:
            args.append(f"--virtual-time-budget={budget_ms}")
        if screenshot is not None:
            args.append(f"--screenshot={Path(screenshot).resolve()}")
        if dump_dom:
            args.append("--dump-dom")
        proc = subprocess.run(args + [url], capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0 or (dump_dom and "<html" not in proc.stdout):
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise RuntimeError(f"chromium exited with {proc.returncode} on {url}:\n{tail}")
    if screenshot is not None and not Path(screenshot).is_file():
        raise RuntimeError(f"chromium wrote no screenshot to {screenshot}")
    return proc.stdout if dump_dom else ""


def file_url(path: str | Path, fragment: str = "") -> str:
    """file:// URL of a local page, with an optional `#fragment` (the pages read their state from it)."""
    url = Path(path).resolve().as_uri()
    return f"{url}#{fragment}" if fragment else url
