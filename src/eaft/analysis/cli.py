"""`eaft analyze`: find confident conflicts in a data set before training. Flags come from `AnalyzeConfig`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing

from eaft.analysis.run import AnalyzeConfig
from eaft.errors import debugging


def _flag_type(tp) -> type:
    """The element type of a field annotation (`int | None` -> int, `list[str]` -> str)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin in (list, typing.Union, types.UnionType):
        return _flag_type(args[0])
    return tp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eaft analyze",
        description="Per-token entropy/probability statistics of a data set under a model, the entropy–probability "
        "and gradient landscapes, and the samples with the densest confident conflicts.",
    )
    parser.add_argument("--compare", nargs=2, metavar=("DIR1", "DIR2"), help="Compare two analysis folders.")
    hints = typing.get_type_hints(AnalyzeConfig)
    for f in dataclasses.fields(AnalyzeConfig):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if hints[f.name] is bool:
            help_ = _with_default(meta["help"], "--" + flag[2:] if f.default else "--no-" + flag[2:])
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
            continue
        kind = _flag_type(hints[f.name])
        extra = {"nargs": meta["nargs"]} if "nargs" in meta else {"action": "append"} if meta.get("append") else {}
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        parser.add_argument(flag, type=kind, default=default, help=_with_default(meta["help"], shown), **extra)
    return parser


def _with_default(help_: str, default: object) -> str:
    """The help with its default appended, unless the help already says it or there is none to show."""
    if default in (None, "") or "default" in help_.lower():
        return help_.replace("%", "%%")
    return f"{help_} (default: {default})".replace("%", "%%")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compare:
        from eaft.analysis.compare import compare_runs

        print(compare_runs(*args.compare))
        return 0
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(AnalyzeConfig)}
    if not options["data"]:
        print("eaft analyze: --data is required (or --compare DIR1 DIR2)", file=sys.stderr)
        return 2
    try:
        config = AnalyzeConfig(**options)
    except ValueError as err:
        if debugging():
            raise
        print(f"eaft analyze: {err}", file=sys.stderr)
        return 2
    from eaft.analysis.run import run_analysis

    summary = run_analysis(config)
    data = summary["data"]
    out = summary["config"]["out"]
    print(
        f"{data['tokens']:,} label tokens: confident-conflict share {data['confident_conflict_share']:.2%}, "
        f"mean entropy {data['mean_entropy']:.4f}, mean EAFT weight {data['mean_eaft_weight']:.4f}"
    )
    if "rollouts" in summary:
        r = summary["rollouts"]
        print(f"rollouts ({r['tokens']:,} tokens): confident-conflict share {r['confident_conflict_share']:.2%}")
    page = ", report.html" if "html" in summary["files"] else ""
    print(f"wrote {out}/report.md{page}, summary.json and the landscapes")
    return 0
