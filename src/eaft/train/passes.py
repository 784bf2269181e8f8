"""No-grad passes over a dataset: held-out statistics (report.md) and FLOW's static-weight pre-pass."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from eaft.data import CausalLMCollator
from eaft.objectives import StepStats, build_objective, causal_lm_objective_loss
from eaft.objectives.flow import compute_flow_losses, flow_weights

logger = logging.getLogger(__name__)
FLOW_CACHE = "flow_weights.json"


def batches(examples: list[dict], collator: CausalLMCollator, batch_size: int, desc: str):
    """Padded batches of unpacked examples, one row per sample, in order, with a progress bar."""
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, unit="batch", leave=False):
        chunk = [{k: e[k] for k in ("input_ids", "labels")} for e in examples[start : start + batch_size]]
        yield collator(chunk)


@torch.no_grad()
def heldout_statistics(
    model: torch.nn.Module, examples: list[dict], collator: CausalLMCollator, batch_size: int = 8
) -> dict[str, float]:
    """CE, mean entropy and confident-conflict share of the model on `examples` (their label tokens)."""
    was_training = model.training
    model.eval()
    objective = build_objective("sft")
    total = StepStats()
    device = next(model.parameters()).device
    for batch in batches(examples, collator, batch_size, "held-out CE"):
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch, use_cache=False).logits
        total = total + causal_lm_objective_loss(logits, labels, objective)[1]
    model.train(was_training)
    means = total.means()
    return {"ce": means["ce"], "mean_entropy": means["mean_entropy"], "conflict_share": means["conflict_share"]}


def _fingerprint(examples: list[dict], per: str, tau: float | None, model_name: str) -> str:
    digest = hashlib.sha256(json.dumps([per, tau, model_name]).encode())
    for example in examples:
        digest.update(json.dumps([example["input_ids"], example["labels"]]).encode())
    return digest.hexdigest()


def attach_flow_weights(
    model: torch.nn.Module,
    examples: list[dict],
    objective: Any,
    run_dir: Path,
    collator: CausalLMCollator,
    *,
    model_name: str,
    batch_size: int = 8,
) -> float:
    """Put FLOW's weights into each example as `static_weights` (aligned with labels); returns τ.

    The initial losses come from the model as given (before any training), and are cached in the run directory
    (`flow_weights.json`, keyed by a fingerprint of the data and settings) so a resumed run reuses them.
    """
    cache = Path(run_dir) / FLOW_CACHE
    key = _fingerprint(examples, objective.per, objective.tau, model_name)
    if cache.is_file() and json.loads(cache.read_text()).get("fingerprint") == key:
        data = json.loads(cache.read_text())
        logger.info("flow: reusing the static weights cached in %s (tau=%.4f)", cache, data["tau"])
    else:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        moved = (
            {k: v.to(device) for k, v in b.items()} for b in batches(examples, collator, batch_size, "flow pre-pass")
        )
        losses = compute_flow_losses(model, moved, per=objective.per)
        model.train(was_training)
        weights, tau = flow_weights(losses, objective.tau)
        data = {"fingerprint": key, "tau": tau, "weights": [w.reshape(-1).tolist() for w in weights]}
        from eaft.io import write_text_atomic

        write_text_atomic(cache, json.dumps(data))
        logger.info("flow: static weights of %d samples computed (tau=%.4f), cached in %s", len(examples), tau, cache)
    for example, sample_weights in zip(examples, data["weights"], strict=True):
        positions = [j for j, label in enumerate(example["labels"]) if label != -100]
        per_token = sample_weights * len(positions) if len(sample_weights) == 1 else sample_weights
        static = [0.0] * len(example["labels"])
        for j, w in zip(positions, per_token, strict=True):
            static[j] = float(w)
        example["static_weights"] = static
    return float(data["tau"])
