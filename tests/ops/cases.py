"""Shared inputs and reference runs for the fused-op tests: every objective against tests/reference/."""

from __future__ import annotations

import torch

from eaft.objectives import build_objective
from tests.reference import naive_objectives as ref

#: One table per dtype. bf16 atol is relative to the largest reference magnitude of the compared tensor.
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=0.05, atol=0.02)}

# case -> (registry name, params, naive loss(logits, labels, ref_logits, static_weights, num_items))
CASES = {
    "sft": ("sft", {}, lambda z, y, zr, w, n: ref.sft(z, y, n)),
    "eaft": ("eaft", {}, lambda z, y, zr, w, n: ref.eaft(z, y, num_items=n)),
    "eaft_full_alpha2": (
        "eaft",
        {"entropy": "full", "alpha": 2.0},
        lambda z, y, zr, w, n: ref.eaft(z, y, 2.0, "full", num_items=n),
    ),
    "eaft_sigmoid": ("eaft", {"gate": "sigmoid"}, lambda z, y, zr, w, n: ref.eaft(z, y, gate="sigmoid", num_items=n)),
    "masked_sft": ("masked_sft", {"quantile": 0.4}, lambda z, y, zr, w, n: ref.masked_sft(z, y, 0.4, n)),
    "dft": ("dft", {}, lambda z, y, zr, w, n: ref.dft(z, y, n)),
    "talr": ("talr", {}, lambda z, y, zr, w, n: ref.talr(z, y, num_items=n)),
    "flow": ("flow", {}, lambda z, y, zr, w, n: ref.flow(z, y, w, n)),
    "sft_kl": ("sft_kl", {"beta": 0.7}, lambda z, y, zr, w, n: ref.sft_kl(z, zr, y, beta=0.7, num_items=n)),
    "asft": ("asft", {"alpha": 0.7}, lambda z, y, zr, w, n: ref.asft(z, zr, y, alpha=0.7, num_items=n)),
}


def objective_of(case: str):
    name, params, _ = CASES[case]
    return build_objective(name, params)


def make_inputs(b, s, h, v, *, seed=0, ignore_frac=0.3, bias=True, dtype=torch.float32):
    """hidden [B, S, H], weight [V, H], bias [V], labels [B, S] (some ignored), reference model and static weights."""
    gen = torch.Generator().manual_seed(seed)
    inputs = {
        "hidden": torch.randn(b, s, h, generator=gen) * 2.0,
        "weight": torch.randn(v, h, generator=gen) * h**-0.5 * 2.0,
        "bias": torch.randn(v, generator=gen) if bias else None,
        "ref_hidden": torch.randn(b, s, h, generator=gen),
        "ref_weight": torch.randn(v, h, generator=gen) * h**-0.5,
        "static_weights": torch.rand(b, s, generator=gen),
    }
    labels = torch.randint(0, v, (b, s), generator=gen)
    labels[torch.rand(b, s, generator=gen) < ignore_frac] = -100
    labels[:, 0] = -100
    inputs = {k: (x.to(dtype) if x is not None and k != "static_weights" else x) for k, x in inputs.items()}
    return inputs, labels


def leaves(inputs):
    """Fresh leaf copies of hidden, weight and bias that require grad."""
    return [
        x.detach().clone().requires_grad_(True) if x is not None else None
        for x in (inputs[k] for k in ("hidden", "weight", "bias"))
    ]


def run_reference(case, inputs, labels, num_items=None, upcast=False):
    """Naive loss on the materialized logits, and grads of hidden, weight, bias."""
    h, w, b = leaves(inputs)
    cast = (lambda x: x.float()) if upcast else (lambda x: x)
    logits = cast(h) @ cast(w).T + (cast(b) if b is not None else 0)
    ref_logits = inputs["ref_hidden"].float() @ inputs["ref_weight"].float().T
    loss = CASES[case][2](logits, labels, ref_logits, inputs["static_weights"], num_items)
    loss.backward()
    return loss.detach(), [x.grad if x is not None else None for x in (h, w, b)]


def run_fused(case, inputs, labels, *, backend="torch", chunk_size=None, num_items=None, **kwargs):
    from eaft.objectives import fused_linear_objective

    h, w, b = leaves(inputs)
    objective = objective_of(case)
    extra = {}
    if objective.needs_reference:
        extra = {"ref_hidden": inputs["ref_hidden"], "ref_weight": inputs["ref_weight"]}
    if objective.needs_static_weight:
        extra["static_weights"] = inputs["static_weights"]
    loss, stats = fused_linear_objective(
        h,
        w,
        labels,
        objective,
        bias=b,
        chunk_size=chunk_size,
        backend=backend,
        num_items_in_batch=num_items,
        **extra,
        **kwargs,
    )
    loss.backward()
    return loss.detach(), [x.grad if x is not None else None for x in (h, w, b)], stats


def assert_matches(ours, theirs, dtype=torch.float32):
    tol = dict(TOL[dtype])
    if dtype != torch.float32:
        tol["atol"] = tol["atol"] * float(theirs.float().abs().max())
    torch.testing.assert_close(ours.float(), theirs.float(), **tol)
