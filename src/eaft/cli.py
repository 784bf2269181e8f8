"""`eaft <command> ...`: each command lives in its own module and parses its own arguments."""

from __future__ import annotations

import errno
import importlib
import os
import sys

#: command -> (module with `main(argv) -> int`, one-line help). Add a line when a command lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("eaft.train.cli", "fine-tune a model with any objective (no config: EAFT + LoRA on SmolLM2)"),
    "analyze": ("eaft.analysis.cli", "find confident conflicts in a data set before training"),
    "eval": ("eaft.evaluate.runner", "score a model (and adapter) on a suite of target and general tasks"),
    "report": ("eaft.evaluate.report", "the forgetting table and scatter of eval runs against a base"),
    "experiment": ("eaft.experiment", "train one base with several objectives, evaluate all, write the table"),
}


DEBUG_FLAG = "--debug"
#: What to do after Ctrl-C, per command (`eaft train` raises `Interrupted` naming its own checkpoint).
AFTER_INTERRUPT = {
    "train": "`eaft train <output_dir>/config.yaml resume=true` continues from the last complete checkpoint",
    "eval": "the same command again reuses every task already scored (they are cached)",
    "analyze": "nothing was written (the --out folder keeps its earlier analysis); run it again",
    "report": "run it again",
    "experiment": "the same command again continues: finished runs and evaluations are kept",
}


def describe(err: BaseException) -> str:
    """One line for an error: eaft's own say what to do; an OS error names the file and the likely cause."""
    from eaft.errors import EaftError

    if isinstance(err, EaftError) or (isinstance(err, OSError) and not err.strerror):
        return str(err)  # a message written for the user
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        hint = {
            errno.ENOSPC: " (the disk is full: free space or choose another output_dir/--out)",
            errno.EACCES: " (not allowed: choose a folder you can write to)",
            errno.EROFS: " (a read-only file system: choose another output folder)",
        }.get(err.errno, "")
        return f"{err.strerror}{where}{hint}"
    return f"unexpected {type(err).__name__}: {err} (run with {DEBUG_FLAG} or EAFT_DEBUG=1 for the traceback)"


def run_command(name: str, rest: list[str], debug: bool) -> int:
    """One error boundary for every command: known errors are one message and exit 2 (bad input) or 1."""
    try:
        module = importlib.import_module(COMMANDS[name][0])
        code = int(module.main(rest) or 0)
        # Inside the boundary: output still buffered when a reader has left (`| head`) fails here, not at exit.
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # `eaft train --help | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as err:  # eaft.errors.Interrupted carries the command's own hint
        hint = str(err) or AFTER_INTERRUPT.get(name)
        print(f"eaft {name}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"eaft {name}: {describe(err)}", file=sys.stderr)
        return int(getattr(err, "exit_code", 1))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get("EAFT_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: eaft <command> [args]\n\ncommands:")
        for name, (_, help_text) in COMMANDS.items():
            print(f"  {name:<10} {help_text}")
        if not COMMANDS:
            print("  (none yet)")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from eaft import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"eaft: unknown command {name!r}; known: {', '.join(COMMANDS) or 'none'}", file=sys.stderr)
        return 2
    previous = os.environ.get("EAFT_DEBUG")
    if debug:
        os.environ["EAFT_DEBUG"] = "1"  # the commands' own handlers re-raise too
    try:
        return run_command(name, rest, debug)
    finally:
        if previous is None:
            os.environ.pop("EAFT_DEBUG", None)
        else:
            os.environ["EAFT_DEBUG"] = previous


if __name__ == "__main__":
    sys.exit(main())
