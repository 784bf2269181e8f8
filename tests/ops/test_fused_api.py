"""The fused op's contract beyond the numbers: argument forms, errors, autograd integration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from eaft.loss import ObjectiveLoss
from eaft.objectives import build_objective, fused_linear_objective
from eaft.ops import resolve_math
from tests.ops.cases import assert_matches, make_inputs, run_fused, run_reference
from tests.reference import naive_objectives as ref


def test_shifted_labels_equal_unshifted():
    inputs, labels = make_inputs(2, 15, 8, 50, seed=2)
    h, w = inputs["hidden"], inputs["weight"]
    unshifted, _ = fused_linear_objective(h, w, labels, "eaft", chunk_size=4)
    targets = torch.cat([labels[:, 1:], torch.full((2, 1), -100)], dim=1)
    flat, _ = fused_linear_objective(h.reshape(-1, 8), w, targets.reshape(-1), "eaft", chunk_size=4, shifted=True)
    torch.testing.assert_close(unshifted, flat, rtol=1e-6, atol=0)


def test_loss_module_form_and_grad_scaling():
    inputs, labels = make_inputs(1, 20, 8, 50, seed=4)
    h = inputs["hidden"].clone().requires_grad_(True)
    w = inputs["weight"].clone().requires_grad_(True)
    head = SimpleNamespace(weight=w, bias=None)  # the lm_head the loss module reads
    loss = ObjectiveLoss("dft", fused=True, chunk_size=6).from_hidden(h, head, labels)
    (3.0 * loss).backward()
    _, grads, _ = run_fused("dft", {**inputs, "bias": None}, labels, chunk_size=6)
    assert_matches(h.grad, 3.0 * grads[0])
    assert_matches(w.grad, 3.0 * grads[1])


def test_no_grad_gives_the_loss_and_backward_twice_is_refused():
    inputs, labels = make_inputs(1, 20, 8, 50, seed=4)
    h = inputs["hidden"].clone().requires_grad_(True)
    with torch.no_grad():
        plain, _ = fused_linear_objective(h, inputs["weight"], labels, "sft")
    loss, _ = fused_linear_objective(h, inputs["weight"], labels, "sft")
    assert plain.grad_fn is None and torch.equal(plain, loss.detach())
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


def test_tied_embedding_and_checkpointed_body():
    """weight is also the input embedding, and hidden comes from a checkpointed layer: grads match materialized."""
    gen = torch.Generator().manual_seed(0)
    vocab, dim = 61, 12
    input_ids = torch.randint(0, vocab, (2, 13), generator=gen)
    labels = input_ids.clone()
    labels[:, :3] = -100
    init = torch.randn(vocab, dim, generator=gen), torch.randn(dim, dim, generator=gen) / dim**0.5

    def body_and_params():
        emb, mix = (p.clone().requires_grad_(True) for p in init)
        hidden = checkpoint(lambda x: torch.tanh(x @ mix), emb[input_ids], use_reentrant=False)
        return emb, mix, hidden

    emb, mix, hidden = body_and_params()
    loss, _ = fused_linear_objective(hidden, emb, labels, "eaft", chunk_size=5)
    loss.backward()
    emb_ref, mix_ref, hidden_ref = body_and_params()
    expected = ref.eaft(hidden_ref @ emb_ref.T, labels)
    expected.backward()
    assert_matches(loss.detach(), expected.detach())
    assert_matches(emb.grad, emb_ref.grad)
    assert_matches(mix.grad, mix_ref.grad)


def test_frozen_weight_gets_no_grad():
    inputs, labels = make_inputs(1, 20, 8, 50, seed=4)
    h = inputs["hidden"].clone().requires_grad_(True)
    loss, _ = fused_linear_objective(h, inputs["weight"], labels, "sft")
    loss.backward()
    _, grads = run_reference("sft", {**inputs, "bias": None}, labels)
    assert inputs["weight"].grad is None
    assert_matches(h.grad, grads[0])


def test_refusals_name_what_is_missing():
    inputs, labels = make_inputs(1, 10, 8, 30)
    h, w = inputs["hidden"], inputs["weight"]
    with pytest.raises(ValueError, match="ref_hidden"):
        fused_linear_objective(h, w, labels, "sft_kl")
    with pytest.raises(ValueError, match="static_weights"):
        fused_linear_objective(h, w, labels, "flow")
    with pytest.raises(ValueError, match=r"\[0, 30\)"):
        fused_linear_objective(h, w, labels.masked_fill(labels == -100, 30), "sft")
    with pytest.raises(ValueError, match="leading dims"):
        fused_linear_objective(h, w, labels[:, 1:], "sft")
    with pytest.raises(ValueError, match="backend"):
        fused_linear_objective(h, w, labels, "sft", backend="cuda")


def test_backend_auto_is_torch_on_cpu_and_triton_is_refused_with_a_reason(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_math("auto", torch.device("cpu")).name == "torch"
    inputs, labels = make_inputs(1, 10, 8, 30)
    with pytest.raises(RuntimeError, match="backend 'triton' cannot run here: .*(not installed|CUDA)"):
        fused_linear_objective(inputs["hidden"], inputs["weight"], labels, "sft", backend="triton")
    # The kernels compute KL(π_θ ‖ π_ref) only: asft (KL(π_ref ‖ π_θ)) takes the torch math, and is refused by name.
    assert resolve_math("auto", torch.device("cuda"), reference_kl="ref_model").name == "torch"
    with pytest.raises(RuntimeError, match="'triton' computes KL.*only"):
        resolve_math("triton", torch.device("cuda"), reference_kl="ref_model")
    asft = build_objective("asft")
    ref = {"ref_hidden": inputs["hidden"], "ref_weight": inputs["weight"]}
    with pytest.raises(RuntimeError, match="cannot run objective 'asft'.*KL"):
        fused_linear_objective(inputs["hidden"], inputs["weight"], labels, asft, backend="triton", **ref)
