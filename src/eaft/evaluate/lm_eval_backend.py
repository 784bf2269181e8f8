"""`--backend lm-eval`: named lm-evaluation-harness tasks on the already-loaded model, folded into our results.

lm-eval is an optional extra (`pip install 'eaft[eval]'`). Its tasks download their data sets from the hub, so
this path needs network access; the native backend does not. The model (with its adapter, if any) is handed to
lm-eval's `HFLM` as an object, so it is loaded once for both backends. lm-eval reports fractions; we report
every numeric metric ×100 so the table has one scale.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from eaft.evaluate.ifeval import MissingResource
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec

#: The metric reported as the score when a task names none (lm-eval's `metric,filter` keys).
DEFAULT_METRICS = {
    "gsm8k": "exact_match,strict-match",
    "mmlu": "acc,none",
    "ifeval": "prompt_level_strict_acc,none",
    "medmcqa": "acc,none",
    "medqa_4options": "acc,none",
    "pubmedqa": "acc,none",
}
INSTALL_HINT = "pip install 'eaft[eval]'  (or: pip install lm-eval)"


def require_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise MissingResource(f"--backend lm-eval needs lm-evaluation-harness, which is not installed: {INSTALL_HINT}")


def _sample_count(results: dict[str, Any], name: str) -> int:
    counts = results.get("n-samples", {})
    if name in counts:
        return int(counts[name].get("effective", counts[name].get("original", 0)))
    subtasks = results.get("group_subtasks", {}).get(name, [])
    return sum(_sample_count(results, sub) for sub in subtasks)


def fold_results(results: dict[str, Any], tasks: Sequence[TaskSpec]) -> dict[str, TaskOutcome]:
    """Our per-task outcomes from the dict `lm_eval.simple_evaluate` returns (metrics ×100, stderr dropped)."""
    out = {}
    for task in tasks:
        name = task.lm_eval
        block = results.get("results", {}).get(name) or results.get("groups", {}).get(name)
        if block is None:
            raise TaskError(
                f"lm-eval returned no results for task {name!r} (it has: {sorted(results.get('results', {}))})"
            )
        metrics = {
            key: 100.0 * float(value)
            for key, value in block.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and "_stderr" not in key
        }
        metric = task.lm_eval_metric or DEFAULT_METRICS.get(name)
        if metric is None and len(metrics) == 1:
            metric = next(iter(metrics))
        if metric not in metrics:
            raise TaskError(
                f"{task.source}: lm-eval task {name!r} has metrics {sorted(metrics)}; name the one to "
                "report with `lm_eval_metric`"
            )
        notes = f"lm-eval {name}, {metric}, {results.get('n-shot', {}).get(name, 0)}-shot"
        out[task.name] = TaskOutcome(metrics[metric], metric, metrics, _sample_count(results, name), notes=notes)
    return out


def run_lm_eval(tasks: Sequence[TaskSpec], handle: ModelHandle, *, batch_size: int = 8) -> dict[str, TaskOutcome]:
    """Run the tasks' `lm_eval` names through lm-eval, one call per (limit, few-shot) setting."""
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = handle.load()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    outcomes: dict[str, TaskOutcome] = {}
    settings = sorted({(t.limit, t.lm_eval_fewshot) for t in tasks}, key=str)
    for limit, fewshot in settings:
        group = [t for t in tasks if (t.limit, t.lm_eval_fewshot) == (limit, fewshot)]
        results = simple_evaluate(model=lm, tasks=[t.lm_eval for t in group], num_fewshot=fewshot, limit=limit)
        outcomes.update(fold_results(results, group))
    return outcomes
