"""`eaft <command> ...`: each command lives in its own module and parses its own arguments."""

from __future__ import annotations

import importlib
import sys

#: command -> (module with `main(argv) -> int`, one-line help). Add a line when a command lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("eaft.train.cli", "fine-tune a model with any objective (no config: EAFT + LoRA on SmolLM2)"),
    "analyze": ("eaft.analysis.cli", "find confident conflicts in a data set before training"),
    "eval": ("eaft.evaluate.runner", "score a model (and adapter) on a suite of target and general tasks"),
    "report": ("eaft.evaluate.report", "the forgetting table and scatter of eval runs against a base"),
    "experiment": ("eaft.experiment", "train one base with several objectives, evaluate all, write the table"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
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
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
