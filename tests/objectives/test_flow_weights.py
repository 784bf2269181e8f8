"""FLOW's static-weight pre-pass: τ is the dataset median, weights exp(−L₀/τ), losses from a real forward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eaft.objectives.flow import compute_flow_losses, flow_weights


def test_flow_weights_median_temperature():
    losses = [torch.tensor(v) for v in (0.5, 1.0, 2.0, 4.0, 8.0)]
    weights, tau = flow_weights(losses)
    assert tau == 2.0
    expected = [math.exp(-v / 2.0) for v in (0.5, 1.0, 2.0, 4.0, 8.0)]
    torch.testing.assert_close(torch.stack(weights), torch.tensor(expected), rtol=1e-6, atol=0)
    weights, tau = flow_weights(losses, tau=1.0)
    assert tau == 1.0 and math.isclose(float(weights[1]), math.exp(-1.0), rel_tol=1e-6)


def test_flow_weights_per_token_keep_shapes():
    losses = [torch.tensor([0.1, 0.3]), torch.tensor([0.2, 0.4, 0.5])]
    weights, tau = flow_weights(losses)
    assert math.isclose(tau, 0.3, rel_tol=1e-6)
    assert [w.shape for w in weights] == [torch.Size([2]), torch.Size([3])]


class TinyLM(torch.nn.Module):
    def __init__(self, vocab=31, dim=8):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.out = torch.nn.Linear(dim, vocab)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.out(self.emb(input_ids))})()


def test_compute_flow_losses_is_the_mean_token_nll_per_sample():
    torch.manual_seed(0)
    model = TinyLM()
    ids = torch.randint(0, 31, (3, 7))
    labels = ids.clone()
    labels[:, :3] = -100
    labels[2, 5:] = -100
    per_sample = compute_flow_losses(model, [{"input_ids": ids, "labels": labels}], per="sample")
    per_token = compute_flow_losses(model, [{"input_ids": ids, "labels": labels}], per="token")
    logits = model(ids).logits
    for i in range(3):
        keep = labels[i, 1:] != -100
        nll = F.cross_entropy(logits[i, :-1][keep], labels[i, 1:][keep], reduction="none")
        torch.testing.assert_close(per_sample[i], nll.mean())
        torch.testing.assert_close(per_token[i], nll)
