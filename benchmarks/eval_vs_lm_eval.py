"""eaft's native multiple-choice scoring against lm-evaluation-harness on the same items, the same weights and the
same prompts: ARC-Easy (the first N items of the data root) with the embedded SmolLM2-135M-Instruct in fp32.

Each side runs in its own subprocess, which reports its own peak RSS (ru_maxrss: imports, weights and scoring) and
its wall time from loading the model to the scores. Runs alternate eaft / lm-eval (the order flips each round), and
the medians are printed with the ratios and the per-item agreement (predicted choices, largest |Δ log p|).
lm-eval scores its own `arc_easy` task, pointed at a local copy of the items (offline).

    python benchmarks/eval_vs_lm_eval.py --items 100 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASK_FILE = REPO / "configs" / "suites" / "tasks" / "arc_easy.yaml"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def eaft_child(items: int) -> dict:
    from eaft.evaluate.lm import ModelHandle
    from eaft.evaluate.multiple_choice import evaluate_multiple_choice
    from eaft.evaluate.suite import load_suite

    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(f"general:\n  - task: {TASK_FILE}\n    limit: {items}\n")
        task = load_suite(suite).tasks[0]
    start = time.perf_counter()
    handle = ModelHandle(None)
    handle.load()
    loaded = time.perf_counter()
    outcome = evaluate_multiple_choice(task, handle)
    return {
        "load_s": loaded - start,
        "score_s": time.perf_counter() - loaded,
        "acc": outcome.metrics["acc_raw"],
        "acc_norm": outcome.metrics["acc_per_char"],
        "logprobs": [s["logprobs"] for s in outcome.samples],
    }


def lm_eval_task(tmp: Path, items: int) -> Path:
    """A task file that takes lm-eval's own `arc_easy` config and points it at the data root's first items."""
    import lm_eval

    from eaft.data_root import find_data_root

    rows = [json.loads(line) for line in (find_data_root() / "arc" / "arc_easy_test.jsonl").open()][:items]
    docs = tmp / "arc_easy.jsonl"
    with docs.open("w", encoding="utf-8") as out:
        for row in rows:  # the data root's layout back into the hub data set's (allenai/ai2_arc)
            labels = list(string.ascii_uppercase[: len(row["choices"])])
            choices = {"text": row["choices"], "label": labels}
            doc = {"id": str(row["id"]), "question": row["question"], "choices": choices}
            out.write(json.dumps({**doc, "answerKey": labels[row["answer"]]}) + "\n")
    builtin = Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml"
    files = {split: str(docs) for split in ("train", "validation", "test")}
    config = {
        "include": str(builtin),
        "task": "arc_easy_local",
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files, "cache_dir": str(tmp / "hf")},
    }
    (tmp / "arc_easy_local.yaml").write_text(json.dumps(config))  # JSON is YAML
    return tmp


def lm_eval_child(items: int, batch_size: int) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from eaft.evaluate.lm import ModelHandle

    with tempfile.TemporaryDirectory() as tmp:
        manager = TaskManager(include_path=str(lm_eval_task(Path(tmp), items)), include_defaults=False)
        start = time.perf_counter()
        model, tokenizer = ModelHandle(None).load()  # the same weights and dtype as the eaft side
        loaded = time.perf_counter()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = simple_evaluate(model=lm, tasks=["arc_easy_local"], task_manager=manager, bootstrap_iters=0)
        seconds = time.perf_counter() - loaded
    block = results["results"]["arc_easy_local"]
    samples = sorted(results["samples"]["arc_easy_local"], key=lambda s: s["doc_id"])
    return {
        "load_s": loaded - start,
        "score_s": seconds,
        "acc": 100 * block["acc,none"],
        "acc_norm": 100 * block["acc_norm,none"],
        "logprobs": [[float(r[0]) for r in s["filtered_resps"]] for s in samples],
    }


def run_child(side: str, args: argparse.Namespace) -> dict:
    child = "eaft" if side.startswith("eaft") else "lm-eval"
    command = [sys.executable, __file__, "--child", child, "--items", str(args.items)]
    command += ["--lm-eval-batch-size", str(args.lm_eval_batch_size)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if side == "eaft-baseline":  # the same script on another checkout's eaft
        env["PYTHONPATH"] = os.pathsep.join([str(Path(args.baseline_src).resolve()), str(REPO)])
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{side} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(a: list[list[float]], b: list[list[float]]) -> tuple[int, float]:
    """Items with the same raw-argmax choice, and the largest log-likelihood difference."""
    pick = [
        (max(range(len(x)), key=x.__getitem__), max(range(len(y)), key=y.__getitem__))
        for x, y in zip(a, b, strict=True)
    ]
    diff = max(abs(u - v) for x, y in zip(a, b, strict=True) for u, v in zip(x, y, strict=True))
    return sum(i == j for i, j in pick), diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one run per side, interleaved")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every child")
    parser.add_argument("--lm-eval-batch-size", type=int, default=8, help="as `eaft eval --backend lm-eval` uses")
    parser.add_argument("--baseline-src", default=None, help="also run the eaft side from this src/ folder")
    parser.add_argument("--child", choices=("eaft", "lm-eval"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        if os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        result = eaft_child(args.items) if args.child == "eaft" else lm_eval_child(args.items, args.lm_eval_batch_size)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return
    sides = ["eaft", "lm-eval"] + (["eaft-baseline"] if args.baseline_src else [])
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        for side in sides if round_ % 2 == 0 else sides[::-1]:
            runs[side].append(run_child(side, args))
            last = runs[side][-1]
            print(
                f"round {round_ + 1} {side:13s}: {last['score_s']:6.1f} s (load {last['load_s']:.1f} s), "
                f"peak RSS {last['peak_rss_mb']:5.0f} MB, acc {last['acc']:.0f}, acc_norm {last['acc_norm']:.0f}",
                flush=True,
            )
    median = {
        side: {k: statistics.median(r[k] for r in rs) for k in ("score_s", "peak_rss_mb")} for side, rs in runs.items()
    }
    print(f"ARC-Easy({args.items}), SmolLM2-135M-Instruct fp32, lm-eval batch size {args.lm_eval_batch_size}:")
    for side, m in median.items():
        print(f"  {side:13s}: median {m['score_s']:6.1f} s, peak RSS {m['peak_rss_mb']:5.0f} MB")
    for side in sides:
        if side != "lm-eval":
            time_ratio = median[side]["score_s"] / median["lm-eval"]["score_s"]
            rss_ratio = median[side]["peak_rss_mb"] / median["lm-eval"]["peak_rss_mb"]
            same, diff = agreement(runs[side][0]["logprobs"], runs["lm-eval"][0]["logprobs"])
            print(
                f"  {side} / lm-eval: time {time_ratio:.2f}x, peak RSS {rss_ratio:.2f}x; same raw choice on "
                f"{same}/{args.items} items, largest |Δ log p| {diff:.1e}"
            )
    if args.baseline_src:
        same, diff = agreement(runs["eaft"][0]["logprobs"], runs["eaft-baseline"][0]["logprobs"])
        ratio = median["eaft"]["score_s"] / median["eaft-baseline"]["score_s"]
        print(
            f"  eaft / eaft-baseline: time {ratio:.2f}x; same raw choice on {same}/{args.items}, |Δ log p| {diff:.1e}"
        )
    print(f"  load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
