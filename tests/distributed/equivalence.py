"""Train the tiny model for a few steps, one variant after another; run it under torchrun or in one process.

Under `torchrun --nproc_per_node W tests/distributed/equivalence.py OUT` every rank trains with a per-device batch
of `GLOBAL_BATCH // W` (gloo, CPU) and rank 0 saves, per variant, the final parameters and the logged rows to OUT
(torch.save). In one process `train_variant(name, world_size=1)` sees the same global batches: the sampler is
sequential and accelerate hands rank r the dataloader batches r, r + W, ..., so each micro-batch of the one-process
run is the concatenation of the ranks' micro-batches.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

#: (objective, fused, objective params); masked_sft and talr check that their batch statistics span the ranks.
VARIANTS = {
    "sft": ("sft", False, {}),
    "sft_fused": ("sft", True, {}),
    "eaft": ("eaft", False, {}),
    "eaft_fused": ("eaft", True, {}),
    "masked_sft": ("masked_sft", False, {"quantile": 0.3}),
    "masked_sft_fused": ("masked_sft", True, {"quantile": 0.3}),
    "talr": ("talr", False, {}),
    "talr_fused": ("talr", True, {}),
}
GLOBAL_BATCH = 4  # rows per micro-batch over all ranks
ACCUMULATION = 2
STEPS = 2
SHARPEN = 25.0  # scale of the random lm_head
LOGGED = ("loss", "ce", "mean_weight", "label_tokens", "mean_entropy")


def rows(tokenizer) -> list[dict]:
    """Eight conversations; under 2 ranks, rank 0 gets the short ones and rank 1 the long ones (sequential)."""
    from eaft.data import encode_conversation

    words = "the quick brown fox jumps over the lazy dog what is two plus three the answer is five".split()
    lengths = [1, 2, 14, 17, 2, 1, 16, 12]  # assistant words: pairs (short, short), (long, long), ...
    convs = [
        [
            {"role": "user", "content": " ".join(words[: 1 + i % 3])},
            {"role": "assistant", "content": " ".join(words[:n])},
        ]
        for i, n in enumerate(lengths)
    ]
    return [encode_conversation(tokenizer, c) for c in convs]


def train_variant(name: str, world_size: int) -> dict:
    """Train one variant; returns {"params": {name: tensor}, "logs": [logged training rows]}."""
    from transformers import TrainingArguments

    from eaft.data import CausalLMCollator
    from eaft.loss import ObjectiveLoss
    from eaft.objectives import build_objective
    from eaft.train.trainer import ObjectiveTrainer
    from tests.train.tiny import build_model, build_tokenizer

    objective_name, fused, params = VARIANTS[name]
    tokenizer = build_tokenizer()
    model = build_model("llama", vocab_size=len(tokenizer), seed=0)
    with torch.no_grad():  # peaked predictions: entropies and token losses spread, so batch statistics matter
        model.lm_head.weight.mul_(SHARPEN)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=GLOBAL_BATCH // world_size,
            gradient_accumulation_steps=ACCUMULATION,
            max_steps=STEPS,
            learning_rate=0.05,
            optim="sgd",
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=0.0,
            train_sampling_strategy="sequential",
            save_strategy="no",
            logging_steps=1,
            report_to="none",
            remove_unused_columns=False,
            disable_tqdm=True,
            use_cpu=True,
            ddp_backend="gloo" if world_size > 1 else None,
        )
        trainer = ObjectiveTrainer(
            model=model,
            args=args,
            train_dataset=rows(tokenizer),
            data_collator=CausalLMCollator(tokenizer.pad_token_id),
            loss_module=ObjectiveLoss(build_objective(objective_name, params), fused=fused),
        )
        trainer.train()
    logs = [{k: float(row[k]) for k in LOGGED} for row in trainer.state.log_history if "ce" in row]
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    return {"params": params, "logs": logs}


def main(out: str) -> int:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    results = {name: train_variant(name, world_size) for name in VARIANTS}
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(out).with_suffix(".tmp")
        torch.save({"world_size": world_size, "results": results}, tmp)
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main(sys.argv[1]))
