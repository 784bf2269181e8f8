"""`eaft eval`: run a suite on a model (and adapter), with cached per-task results, into a run directory.

The run directory holds `results.json` (the record `eaft report` reads), `results.md` (this run's table),
`suite.yaml` (a copy of the suite used) and `samples/<task>.jsonl` (per-item predictions, for inspection). It is
owned by one `eaft eval` at a time (`eaft.ownership`) and appears whole: written into a temporary folder beside
it, which then replaces it, so no file of an earlier evaluation survives beside a new one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eaft import __version__
from eaft.data_root import DataRootError, add_data_root_flag, use_data_root
from eaft.errors import debugging
from eaft.evaluate.cache import ResultCache, data_files, file_sha256
from eaft.evaluate.ifeval import MissingResource
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.lm_eval_backend import require_lm_eval, run_lm_eval, task_files
from eaft.evaluate.lm_eval_local import include_folders, task_name
from eaft.evaluate.self_consistency import reference_identity
from eaft.evaluate.suite import Suite, load_suite
from eaft.evaluate.task_types import task_type
from eaft.evaluate.tasks import NonFiniteScoreError, TaskError, TaskOutcome, TaskSpec
from eaft.io import OutputFolderError, atomic_dir, check_replaceable, write_json_atomic
from eaft.io import write_text_atomic as _write_text
from eaft.ownership import own_folder

BACKENDS = ("native", "lm-eval")
#: What an evaluation folder holds (glob patterns); `--out` may name a folder with these only (it is replaced).
EVAL_FILES = ("results.json", "results.md", "suite.yaml", "samples", ".*.tmp")


def run_native(task: TaskSpec, handle: ModelHandle, cache: ResultCache) -> TaskOutcome:
    if task.type is None:
        raise TaskError(f"{task.source}: task {task.name!r} names only an lm-eval task; run it with --backend lm-eval")
    kind = task_type(task.type)
    outcome = kind.evaluate(task, handle, cache) if kind.uses_cache else kind.evaluate(task, handle)
    if not math.isfinite(outcome.score):
        raise NonFiniteScoreError(f"task {task.name!r}: its score is {outcome.score} ({outcome.metric}), not a number")
    return outcome


def task_record(
    task: TaskSpec, outcome: TaskOutcome, backend: str, seconds: float, data: list[Path] | None = None
) -> dict[str, Any]:
    """`data`: the files the result depends on (default: the native task's data files)."""
    data = data_files(task) if data is None else data
    return {
        "name": task.name,
        "group": task.group,
        "type": task.type if backend == "native" else f"lm-eval:{task_name(task.lm_eval)}",
        "backend": backend,
        "score": outcome.score,
        "metric": outcome.metric,
        "metrics": outcome.metrics,
        "n": outcome.n,
        "notes": outcome.notes,
        "settings": task.settings() if backend == "native" else {"lm_eval": task.lm_eval, "limit": task.limit},
        "data": {str(p): file_sha256(p) for p in data if p.is_file()},
        "seconds": round(seconds, 3),
        "samples": outcome.samples,
    }


def run_suite(
    suite: Suite,
    handle: ModelHandle,
    *,
    backend: str = "native",
    cache: ResultCache | None = None,
    lm_eval_include: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Every task's record, from the cache where possible; the model is loaded only if some task misses.
    `lm_eval_include`: local lm-eval task folders, before the suite's and EAFT_LM_EVAL_INCLUDE's."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    cache = cache or ResultCache()
    include = include_folders(lm_eval_include, suite.lm_eval_include) if backend == "lm-eval" else ()
    identity = handle.identity()
    records: dict[str, dict[str, Any]] = {}
    keys, pending_lm_eval = {}, []
    for task in suite.tasks:
        task_backend = "lm-eval" if backend == "lm-eval" and task.lm_eval else "native"
        extra = reference_identity(task, handle) if task.type == "self_consistency" else None
        keys[task.name] = key = cache.task_key(identity, task, task_backend, extra, lm_eval_include=include)
        cached = cache.get(key)
        if cached is not None:
            records[task.name] = {**cached, "group": task.group, "cached": True}
            print(f"[eval] {task.name}: cached ({cached['metric']} = {cached['score']:.2f})", file=sys.stderr)
        elif task_backend == "lm-eval":
            pending_lm_eval.append(task)
        else:
            start = time.perf_counter()
            outcome = run_native(task, handle, cache)
            records[task.name] = task_record(task, outcome, "native", time.perf_counter() - start)
            cache.put(key, records[task.name])
            print(f"[eval] {task.name}: {outcome.metric} = {outcome.score:.2f} (n={outcome.n})", file=sys.stderr)
    if pending_lm_eval:
        start = time.perf_counter()
        outcomes = run_lm_eval(pending_lm_eval, handle, include=include)
        seconds = (time.perf_counter() - start) / len(pending_lm_eval)
        for task in pending_lm_eval:
            data = task_files(task, include)
            records[task.name] = task_record(task, outcomes[task.name], "lm-eval", seconds, data)
            cache.put(keys[task.name], records[task.name])
    ordered = {t.name: {**records[t.name], "cache_key": keys[t.name]} for t in suite.tasks}
    return {"identity": identity, "tasks": ordered}


def _set_settings(settings: Any) -> Any:
    """Task settings without their unset (None) entries, at every depth: an option added to eaft after a result
    was recorded is absent from that record, and an unset option keeps the behaviour from before it existed (the
    rule every new task option follows), so the two compare equal. A set option still differs from an absent one."""
    if isinstance(settings, dict):
        return {k: _set_settings(v) for k, v in settings.items() if v is not None}
    return settings


def results_are_stale(path: Path, suite: Suite) -> bool:
    """A results.json whose tasks differ from `suite`'s: other tasks, settings or data (not merely the suite's
    comments, where its data lives, or options added to eaft since, left unset). Such an evaluation is run again;
    unchanged tasks come from the cache."""
    recorded = json.loads(Path(path).read_text(encoding="utf-8")).get("tasks", {})
    if set(recorded) != {t.name for t in suite.tasks}:
        return True
    for task in suite.tasks:
        record = recorded[task.name]
        if record.get("backend", "native") != "native":
            continue
        hashes = sorted(file_sha256(p) for p in data_files(task))
        if (
            _set_settings(record.get("settings")) != _set_settings(json.loads(json.dumps(task.settings())))
            or sorted(record["data"].values()) != hashes
        ):
            return True
    return False


def write_run(
    out: Path,
    suite: Suite,
    handle: ModelHandle,
    backend: str,
    result: dict[str, Any],
    curve: dict[str, Any] | None = None,
) -> Path:
    """results.json, results.md, suite.yaml and samples/ as the folder `out`, which appears whole.

    `curve` ({series, step, family}) places this model on a training curve, for `eaft report`'s frontier.
    """
    from eaft.evaluate.report import run_markdown

    tasks = {name: {k: v for k, v in record.items() if k != "samples"} for name, record in result["tasks"].items()}
    summary = {
        "eaft_version": __version__,
        "run": out.name,
        "suite": suite.name,
        "suite_file": str(suite.source),
        **handle.describe(),
        "dtype": handle.dtype,
        "backend": backend,
        "identity": result["identity"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **({"curve": curve} if curve else {}),
        "tasks": tasks,
    }

    def save(folder: Path) -> None:
        for name, record in result["tasks"].items():
            lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in record.get("samples", []))
            _write_text(folder / "samples" / f"{name}.jsonl", lines)
        write_json_atomic(folder / "results.json", summary)
        _write_text(folder / "results.md", run_markdown(summary))
        _write_text(folder / "suite.yaml", suite.source.read_text(encoding="utf-8"))

    atomic_dir(out, save)
    return out / "results.json"


def default_out(suite: Suite, model: str | None, adapter: str | None) -> Path:
    label = Path(adapter).name if adapter else (Path(model).name if model else "default")
    return Path("eval_runs") / f"{suite.name}-{label}"


def build_parser() -> argparse.ArgumentParser:
    """`eaft eval`'s flags (tests/test_docs.py checks the documented command lines against them)."""
    parser = argparse.ArgumentParser(prog="eaft eval", description="Score a model (and adapter) on a task suite.")
    parser.add_argument("--model", default=None, help="HF folder or hub id; omitted/'default' = SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", default=None, help="PEFT adapter folder applied on top of --model")
    from eaft.shipped import shipped_names

    parser.add_argument(
        "--suite",
        required=True,
        help="suite YAML (tasks grouped into target and general), or a shipped suite's name: "
        + ", ".join(shipped_names("suites")),
    )
    parser.add_argument("--out", default=None, help="run directory (default eval_runs/<suite>-<model or adapter>)")
    parser.add_argument("--limit", type=int, default=None, help="at most N items per task")
    parser.add_argument("--backend", choices=BACKENDS, default="native", help="native, or lm-evaluation-harness")
    parser.add_argument(
        "--lm-eval-include",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of local lm-eval task YAMLs (repeatable; also: the suite's lm_eval_include, EAFT_LM_EVAL_INCLUDE)",
    )
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-cache", action="store_true", help="recompute every task (results are still stored)")
    add_data_root_flag(parser)
    curve = parser.add_argument_group("training curve (read by `eaft report` for the frontier)")
    curve.add_argument("--series", default=None, help="the training run this model is a checkpoint of")
    curve.add_argument("--step", type=int, default=None, help="its optimizer step (the base model is step 0)")
    curve.add_argument("--family", default=None, help="runs that differ only in seed share a family (default: series)")
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def curve_of(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.step is None and args.series is None:
        return None
    if args.step is None or args.step < 0:
        raise TaskError("--series needs --step N (N >= 0: the checkpoint's optimizer step, 0 for the base)")
    series = args.series if args.series is not None else "base"
    return {"series": series, "step": args.step, "family": args.family or series}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.limit is not None and args.limit < 1:
        print("eaft eval: --limit must be a positive integer", file=sys.stderr)
        return 2
    try:
        curve_of(args)  # checked before any model loads
        use_data_root(args.data_root)
        if args.backend == "lm-eval":
            require_lm_eval()
        suite = load_suite(args.suite, limit=args.limit)
        out = Path(args.out) if args.out else default_out(suite, args.model, args.adapter)
        with own_folder(out, "eaft eval"):
            check_replaceable(out, EVAL_FILES, "--out")
            handle = ModelHandle(args.model, args.adapter, dtype=args.dtype, device=args.device)
            cache = ResultCache(enabled=not args.no_cache)
            result = run_suite(suite, handle, backend=args.backend, cache=cache, lm_eval_include=args.lm_eval_include)
            path = write_run(out, suite, handle, args.backend, result, curve_of(args))
    except (TaskError, DataRootError, MissingResource, FileNotFoundError, OutputFolderError) as err:
        if debugging():
            raise
        print(f"eaft eval: {err}", file=sys.stderr)
        return 2
    print((path.parent / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {path}")
    return 0
