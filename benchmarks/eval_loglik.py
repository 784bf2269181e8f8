"""Multiple-choice scoring speed: one shared context per question (each choice runs on its KV cache rows) against one
sequence per (context, choice) pair, on the embedded SmolLM2-135M-Instruct. Prints seconds and the largest
difference between the two paths' log-likelihoods.

    python benchmarks/eval_loglik.py --items 20 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from eaft.evaluate.lm import continuation_logprobs, encode_pair, shared_context_logprobs
from eaft.evaluate.multiple_choice import build_items
from eaft.evaluate.suite import load_suite
from eaft.models import load_model_and_tokenizer

SUITES = Path(__file__).resolve().parents[1] / "configs" / "suites"


def requests_for(task_file: str, items: int, tokenizer) -> list[tuple[list[int], list[list[int]]]]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(f"general:\n  - task: {SUITES}/tasks/{task_file}.yaml\n    limit: {items}\n")
        task = load_suite(suite).tasks[0]
    groups = []
    for _, item in build_items(task):
        pairs = [encode_pair(tokenizer, c, k) for c, k in zip(item.contexts, item.continuations, strict=True)]
        groups.append((pairs[0][0], [cont for _, cont in pairs]))
    return groups


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model_and_tokenizer(None)
    model.eval()
    for task_file in ("arc_easy", "mmlu"):
        groups = requests_for(task_file, args.items, tokenizer)
        tokens = sum(len(ctx) + sum(len(c) for c in conts) for ctx, conts in groups)
        start = time.perf_counter()
        shared = shared_context_logprobs(model, groups)
        t_shared = time.perf_counter() - start
        start = time.perf_counter()
        pairwise = continuation_logprobs(model, [(ctx, c) for ctx, conts in groups for c in conts])
        t_pairs = time.perf_counter() - start
        diff = max(abs(a - b) for a, b in zip([x for row in shared for x in row], pairwise, strict=True))
        print(
            f"{task_file}: {len(groups)} items, {tokens} context+choice tokens | shared context {t_shared:.1f} s | "
            f"pairwise {t_pairs:.1f} s | max |Δ log p| {diff:.2e}"
        )


if __name__ == "__main__":
    main()
