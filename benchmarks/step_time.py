"""Step time of SmolLM2-135M-Instruct LoRA training: sft vs eaft (and Hugging Face's own CE), same run.

Each step is forward + objective + backward + AdamW on one batch of the shipped house_calc set, through the loss
path `eaft train` uses. The variants are interleaved step by step on the same batches, so that load on a shared
machine hits them alike; the median of N steps is reported.

    .venv/bin/python benchmarks/step_time.py --steps 20 --batch 8 [--fused]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eaft.data import CausalLMCollator, encode_dataset
from eaft.objectives import build_objective
from eaft.train.loss_paths import FusedLossPath, LossPath
from eaft.train.models import load_model_and_tokenizer
from eaft.train.sources import load_dataset_conversations


def hf_ce_step(model, inputs, labels):
    return model(**inputs, labels=labels, use_cache=False).loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--fused", action="store_true", help="use the fused linear+objective path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_model_and_tokenizer(None)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    examples = encode_dataset(tokenizer, load_dataset_conversations("house_calc"), cutoff_len=128)
    collator = CausalLMCollator(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    path_cls = FusedLossPath if args.fused else LossPath
    variants = {name: path_cls(build_objective(name)) for name in ("sft", "eaft")}
    times: dict[str, list[float]] = {name: [] for name in (*variants, "hf_ce")}
    for step in range(args.warmup + args.steps):
        start = (step * args.batch) % (len(examples) - args.batch)
        batch = collator([{k: e[k] for k in ("input_ids", "labels")} for e in examples[start : start + args.batch]])
        labels = batch.pop("labels")
        for name in times:
            t0 = time.perf_counter()
            if name == "hf_ce":
                loss = hf_ce_step(model, batch, labels)
            else:
                loss = variants[name](model, batch, labels, None, None)[0]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(values) for name, values in times.items()}
    tokens = args.batch * sum(len(e["input_ids"]) for e in examples[: args.batch]) / args.batch
    print(
        f"SmolLM2-135M-Instruct LoRA r=8, batch {args.batch} (~{tokens:.0f} tokens), {args.threads} threads, "
        f"{'fused' if args.fused else 'materialized logits'} path, median of {args.steps} interleaved steps"
    )
    for name, value in medians.items():
        print(f"  {name:<6} {value * 1000:8.1f} ms/step")
    print(
        f"  eaft / sft = {medians['eaft'] / medians['sft']:.3f}   sft / hf_ce = {medians['sft'] / medians['hf_ce']:.3f}"
    )


if __name__ == "__main__":
    main()
