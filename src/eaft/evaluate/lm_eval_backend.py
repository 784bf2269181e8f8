"""`--backend lm-eval`: lm-evaluation-harness tasks on the already-loaded model, folded into our results.

lm-eval is an optional extra (`pip install 'eaft[eval]'`). A task's `lm_eval:` names one of lm-eval's own tasks
(they download their data sets from the hub on first use), a task defined in an include folder, a task YAML or an
inline task config (`eaft.evaluate.lm_eval_local`). A local task whose data set is local (`dataset_path: json`
with `dataset_kwargs.data_files`, say) runs offline. The model (with its adapter, if any) is handed to lm-eval's
`HFLM` as an object, so it is loaded once for both backends. Results are read under the name lm-eval reports the
task by; lm-eval reports fractions, and we report its metric values ×100 so the table has one scale (counts such
as `sample_len` are not metrics; perplexities and BLEU-like scores keep their own scale). lm-eval's per-sample
records (`log_samples`) become the task's samples.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eaft.evaluate.ifeval import MissingResource
from eaft.evaluate.lm_eval_local import LocalIndex, is_yaml_path, task_name, walk
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec, suggest

if TYPE_CHECKING:
    from eaft.evaluate.lm import ModelHandle

#: The metric reported as the score when a task names none (lm-eval's `metric,filter` keys).
DEFAULT_METRICS = {
    "gsm8k": "exact_match,strict-match",
    "mmlu": "acc,none",
    "ifeval": "prompt_level_strict_acc,none",
    "medmcqa": "acc,none",
    "medqa_4options": "acc,none",
    "pubmedqa": "acc,none",
}
#: lm-eval metrics that are not fractions (perplexities; sacrebleu's 0–100 scores): reported as they are.
UNSCALED_METRICS = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte", "bleu", "chrf", "ter")
INSTALL_HINT = "pip install 'eaft[eval]'  (or: pip install lm-eval)"


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise MissingResource(f"--backend lm-eval needs lm-evaluation-harness, which is not installed: {INSTALL_HINT}")


def lm_eval_version() -> str | None:
    try:
        return importlib.metadata.version("lm_eval")
    except importlib.metadata.PackageNotFoundError:
        return None


def task_files(task: TaskSpec, include: Sequence[Path]) -> list[Path]:
    """What a task's lm-eval scores depend on besides the model and lm-eval's version: the task's YAML files and
    modules when it is local, and its local data files (for the cache key and the run record)."""
    files: list[Path] = []
    walk(task.lm_eval, LocalIndex.build(include), files, set())
    return files


def _sample_count(results: dict[str, Any], name: str) -> int:
    counts = results.get("n-samples", {})
    if name in counts:
        return int(counts[name].get("effective", counts[name].get("original", 0)))
    subtasks = results.get("group_subtasks", {}).get(name, [])
    return sum(_sample_count(results, sub) for sub in subtasks)


def _metric_values(block: dict[str, Any]) -> dict[str, float]:
    """The `metric,filter` entries of a results block (stderrs dropped), fractions ×100."""
    out = {}
    for key, value in block.items():
        metric, comma, _ = key.partition(",")
        if not comma or metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = float(value) * (1.0 if metric in UNSCALED_METRICS else 100.0)
    return out


def _samples(results: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """lm-eval's per-sample records of a task, or of a group's tasks (each marked with its task), as plain JSON."""
    by_task = results.get("samples") or {}
    if name in by_task:
        records = by_task[name]
    else:
        subtasks = results.get("group_subtasks", {}).get(name, [])
        records = [{"task": sub, **s} for sub in subtasks for s in _samples(results, sub)]
    return json.loads(json.dumps(records, default=str))


def fold_results(results: dict[str, Any], tasks: Sequence[TaskSpec]) -> dict[str, TaskOutcome]:
    """Our per-task outcomes from the dict `lm_eval.simple_evaluate` returns, each task read under the name lm-eval
    reports it by (its config's `task` or `group` for a YAML path or an inline config)."""
    out = {}
    for task in tasks:
        name = task_name(task.lm_eval)
        block = results.get("results", {}).get(name) or results.get("groups", {}).get(name)
        if block is None:
            raise TaskError(
                f"lm-eval returned no results for task {name!r} (it has: {sorted(results.get('results', {}))})"
            )
        metrics = _metric_values(block)
        metric = task.lm_eval_metric or DEFAULT_METRICS.get(name)
        if metric is None and len(metrics) == 1:
            metric = next(iter(metrics))
        if metric not in metrics:
            raise TaskError(
                f"{task.source}: lm-eval task {name!r} has metrics {sorted(metrics)}; name the one to "
                "report with `lm_eval_metric`"
            )
        notes = f"lm-eval {name}, {metric}, {results.get('n-shot', {}).get(name, 0)}-shot"
        n = _sample_count(results, name)
        out[task.name] = TaskOutcome(metrics[metric], metric, metrics, n, _samples(results, name), notes=notes)
    return out


def task_manager(tasks: Sequence[TaskSpec], include: Sequence[Path]) -> Any:
    """lm-eval's TaskManager over the include folders. lm-eval's own tasks are indexed too (several seconds)
    only when some task needs one of them; an unknown name is an error here, before any model runs."""
    from lm_eval.tasks import TaskManager

    index, every_local = LocalIndex.build(include), True
    for task in tasks:
        every_local = walk(task.lm_eval, index, [], set()) and every_local
    paths = [str(p) for p in include] or None
    manager = TaskManager(include_path=paths, include_defaults=not every_local)
    known = set(manager.all_tasks)
    for task in tasks:
        if isinstance(task.lm_eval, str) and not is_yaml_path(task.lm_eval) and task.lm_eval not in known:
            raise TaskError(
                f"{task.source}: lm-eval has no task {task.lm_eval!r}{suggest(task.lm_eval, sorted(known))}; "
                "a local task's folder goes on the include path (--lm-eval-include, the suite's lm_eval_include "
                "or EAFT_LM_EVAL_INCLUDE)"
            )
    return manager


def run_lm_eval(
    tasks: Sequence[TaskSpec], handle: ModelHandle, *, include: Sequence[Path] = (), batch_size: int = 8
) -> dict[str, TaskOutcome]:
    """Run the tasks' `lm_eval` specs through lm-eval, one call per (limit, few-shot) setting."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    manager = task_manager(tasks, include)
    model, tokenizer = handle.load()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    outcomes: dict[str, TaskOutcome] = {}
    settings = sorted({(t.limit, t.lm_eval_fewshot) for t in tasks}, key=str)
    for limit, fewshot in settings:
        group = [t for t in tasks if (t.limit, t.lm_eval_fewshot) == (limit, fewshot)]
        specs = list({json.dumps(t.lm_eval, sort_keys=True): copy.deepcopy(t.lm_eval) for t in group}.values())
        results = simple_evaluate(
            model=lm,
            tasks=specs,
            num_fewshot=fewshot,
            limit=limit,
            task_manager=manager,
            log_samples=True,
            bootstrap_iters=0,  # stderrs are dropped from our records
        )
        outcomes.update(fold_results(results, group))
    return outcomes
