"""Throughput of `eaft analyze`'s statistics pass against a bare forward over the same tokens, on CPU.

The analysis (one forward, the label tokens' logits from the loss module's fused path, fp32 chunked statistics:
target probability, top-k and exact entropy, ‖softmax − onehot‖, then the SFT and EAFT weights) and a bare forward
(`model(...).logits` at every position, nothing else) run on the same padded batches, alternating batch by batch,
`--repeats` times after a warm-up. The figure is the median of the per-repeat ratios analysis / bare, so that
load from other processes largely cancels.

    .venv/bin/python benchmarks/analyze_throughput.py                          # SmolLM2-135M, 64 domain rows
    .venv/bin/python benchmarks/analyze_throughput.py --data ../shared/data/alpaca/alpaca_subset_1k.jsonl \\
        --max-samples 32 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "src" / "eaft" / "resources" / "house_calc.jsonl"


def bare_forward(model, batch: list[dict], pad_id: int) -> None:
    from eaft.analysis.tokens import pad_right

    input_ids = pad_right([s["input_ids"] for s in batch], pad_id)
    attention_mask = pad_right([[1] * len(s["input_ids"]) for s in batch], 0)
    model(input_ids=input_ids, attention_mask=attention_mask).logits.sum()


def analysis(model, batch: list[dict], pad_id: int, objectives) -> int:
    from eaft.analysis.gradients import add_objective_columns
    from eaft.analysis.tokens import token_statistics_table

    columns = token_statistics_table(model, batch, batch_tokens=10**9, pad_id=pad_id, progress=False)
    add_objective_columns(columns, objectives)
    return len(columns["prob"])


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Model (default: the embedded SmolLM2-135M-Instruct).")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Data set in a format `eaft train` reads.")
    parser.add_argument("--max-samples", type=int, default=64)
    parser.add_argument("--batch-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from eaft.analysis.gradients import build_objectives
    from eaft.analysis.tokens import length_batches
    from eaft.data import encode_conversation, load_conversations
    from eaft.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(args.model)
    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    samples = [encode_conversation(tokenizer, c) for c in load_conversations(args.data, max_samples=args.max_samples)]
    index = length_batches([len(s["input_ids"]) for s in samples], args.batch_tokens, 32)
    batches = [[samples[i] for i in b] for b in index]
    padded = sum(max(len(s["input_ids"]) for s in b) * len(b) for b in batches)
    objectives = build_objectives([])
    bare, ana, ratios = [], [], []
    with torch.no_grad():
        bare_forward(model, batches[0], pad_id)  # warm-up
        labels = sum(analysis(model, b, pad_id, objectives) for b in batches)
        for repeat in range(args.repeats):
            # the two passes alternate batch by batch (order flipped every repeat), so that load from other
            # processes hits both alike
            b_sec = a_sec = 0.0
            for batch in batches:
                if repeat % 2:
                    a_sec += timed(analysis, model, batch, pad_id, objectives)
                b_sec += timed(bare_forward, model, batch, pad_id)
                if not repeat % 2:
                    a_sec += timed(analysis, model, batch, pad_id, objectives)
            bare.append(b_sec)
            ana.append(a_sec)
            ratios.append(a_sec / b_sec)
    tokens = sum(len(s["input_ids"]) for s in samples)
    threads = torch.get_num_threads()
    print(f"model {args.model or 'SmolLM2-135M-Instruct (default)'}, {len(samples)} samples of {args.data}")
    print(f"{tokens:,} tokens ({padded:,} padded, {labels:,} labels) in {len(batches)} batches, {threads} threads;")
    print(f"medians of {args.repeats} repeats\n")
    print("| pass | seconds | tokens/s | label tokens/s |\n|---|---|---|---|")
    for name, runs in (("bare forward (all logits)", bare), ("analysis (statistics + weights)", ana)):
        sec = statistics.median(runs)
        print(f"| {name} | {sec:.2f} | {tokens / sec:,.0f} | {labels / sec:,.0f} |")
    per_repeat = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"\nanalysis / bare forward: median ratio {statistics.median(ratios):.2f} (per repeat: {per_repeat})")


if __name__ == "__main__":
    main()
