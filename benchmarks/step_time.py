"""Step time of SmolLM2-135M-Instruct LoRA training: sft vs eaft (and Hugging Face's own CE), same run.

Each step is forward + objective + backward + AdamW on one batch of the shipped house_calc set, through the loss
paths `eaft train` uses: materialized logits (`sft`, `eaft`) and the fused op from hidden states (`sft_fused`,
`eaft_fused`), beside Hugging Face's own CE (`hf_ce`). The variants are interleaved step by step on the same
batches, so that load on a shared machine hits them alike; the median of N steps is reported.

    .venv/bin/python benchmarks/step_time.py --steps 16 --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eaft.data import CausalLMCollator, encode_dataset
from eaft.data.sources import load_dataset_conversations
from eaft.loss import ObjectiveLoss
from eaft.models import load_model_and_tokenizer
from eaft.objectives import build_objective


def hf_ce_step(model, inputs, labels):
    return model(**inputs, labels=labels, use_cache=False).loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-fused", action="store_true", help="leave out the fused variants")
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
    variants = {name: ObjectiveLoss(build_objective(name)) for name in ("sft", "eaft")}
    if not args.no_fused:
        variants |= {f"{name}_fused": ObjectiveLoss(build_objective(name), fused=True) for name in ("sft", "eaft")}
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
                loss = variants[name](model, batch, labels)[0]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    medians = {name: statistics.median(values) for name, values in times.items()}
    tokens = sum(len(e["input_ids"]) for e in examples[: args.batch])
    print(
        f"SmolLM2-135M-Instruct LoRA r=8, batch {args.batch} (~{tokens} tokens), {args.threads} threads, "
        f"median of {args.steps} interleaved steps"
    )
    for name, value in medians.items():
        print(f"  {name:<10} {value * 1000:8.1f} ms/step   (min {min(times[name]) * 1000:8.1f})")
    print(
        f"  eaft / sft = {medians['eaft'] / medians['sft']:.3f}   sft / hf_ce = {medians['sft'] / medians['hf_ce']:.3f}"
    )
    if "eaft_fused" in medians:
        ratio = medians["eaft_fused"] / medians["sft_fused"]
        print(f"  eaft_fused / sft_fused = {ratio:.3f}   sft_fused / sft = {medians['sft_fused'] / medians['sft']:.3f}")


if __name__ == "__main__":
    main()
