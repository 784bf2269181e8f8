"""Objective weights and logits-gradient norms of every token of a statistics table.

The gradient of an objective's token loss −w_t · log p(y_t) w.r.t. the logits is w_t · (onehot(y_t) − softmax),
so its norm is |w_t| · ‖softmax − onehot‖₂ (the table's `grad_norm`), up to the batch's 1/N.
Weights come from the registry's objectives over a `TokenStats` built from the table, so they are the weights
training would use. Two objectives need more than the model's own predictions, and are resolved as at the start
of training: objectives with a reference model (`sft_kl`) see π_ref = π_θ, so their KL term and its gradient are
zero; `flow` gets its static weights from this same pass (the analyzed model is its initial model). Objectives
whose weights depend on the whole batch (`masked_sft`, `talr`) see the whole table as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from eaft.analysis.tokens import entropy_column
from eaft.objectives.base import Objective, build_objective
from eaft.objectives.flow import flow_weights
from eaft.ops.stats import EntropySpec, TokenStats

DEFAULT_OBJECTIVES = ("sft", "eaft")


def build_objectives(names: Sequence[str], params: dict[str, dict] | None = None) -> dict[str, Objective]:
    """Registry objectives by name, SFT and EAFT always first; `params` maps a name to its parameters."""
    params = dict(params or {})
    unknown = set(params) - set(names) - set(DEFAULT_OBJECTIVES)
    if unknown:
        raise KeyError(f"parameters given for objective(s) {sorted(unknown)} that are not analyzed (add them)")
    ordered = list(dict.fromkeys([*DEFAULT_OBJECTIVES, *names]))
    return {name: build_objective(name, params.get(name)) for name in ordered}


def required_specs(objectives: dict[str, Objective], base: Sequence[EntropySpec]) -> list[EntropySpec]:
    """The entropy estimates to compute: `base` plus any other that an objective reads."""
    specs = list(base)
    for objective in objectives.values():
        spec = objective.entropy_spec()
        if spec not in specs:
            specs.append(spec)
    return specs


def _flow_static_weights(columns: dict[str, np.ndarray], objective: Objective) -> torch.Tensor:
    nll = torch.from_numpy(-columns["logprob"].astype(np.float32))
    # one group per sequence: a sample of the data set, or one rollout of it
    change = columns["sample"][1:] != columns["sample"][:-1]
    if "rollout" in columns:
        change |= columns["rollout"][1:] != columns["rollout"][:-1]
    starts = np.flatnonzero(np.r_[True, change])
    pieces = list(torch.tensor_split(nll, starts[1:].tolist()))
    losses = [p.mean() for p in pieces] if objective.per == "sample" else pieces
    weights, _ = flow_weights(losses, objective.tau)
    counts = [len(p) for p in pieces]
    return torch.cat([w.expand(n) if w.dim() == 0 else w for w, n in zip(weights, counts, strict=True)])


def objective_weights(columns: dict[str, np.ndarray], objective: Objective) -> np.ndarray:
    """Detached weight of every token under `objective` (table sorted by sequence). Shape: [N]."""
    n = len(columns["logprob"])
    if n == 0:
        return np.zeros(0, np.float32)
    column = entropy_column(objective.entropy_spec())
    if column not in columns:
        raise KeyError(f"objective {objective.name!r} reads {column!r}, which the table lacks (see required_specs)")
    stats = TokenStats(
        target_logprob=torch.from_numpy(columns["logprob"].astype(np.float32)),
        entropy=torch.from_numpy(columns[column].astype(np.float32)),
        logsumexp=torch.from_numpy(columns["logsumexp"].astype(np.float32)),
        kl=torch.zeros(n) if objective.needs_reference else None,
        static_weight=_flow_static_weights(columns, objective) if objective.needs_static_weight else None,
    )
    return objective.token_weights(stats).detach().float().numpy()


def add_objective_columns(columns: dict[str, np.ndarray], objectives: dict[str, Objective]) -> dict[str, np.ndarray]:
    """`weight_<name>` and `grad_<name>` (= |w| · grad_norm) for every objective. Returns a new dict."""
    out = dict(columns)
    for name, objective in objectives.items():
        weight = objective_weights(columns, objective)
        out[f"weight_{name}"] = weight
        out[f"grad_{name}"] = (np.abs(weight) * columns["grad_norm"]).astype(np.float32)
    return out
