"""The two log-likelihood paths agree (shared context, each choice on its KV cache rows, vs one sequence per pair),
equal a naive full-vocabulary log-softmax, and never put more than a chunk of positions through the lm_head."""

from __future__ import annotations

import pytest
import torch

from eaft.evaluate import lm
from eaft.evaluate.lm import continuation_logprobs, encode_pair, shared_context_logprobs


def test_shared_context_equals_pairwise(tiny):
    model, _ = tiny
    gen = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 400, (n,), generator=gen).tolist()

    groups = [
        (ids(23), [ids(1), ids(1), ids(1), ids(1)]),  # letters: only the context's last logits are used
        (ids(7), [ids(5), ids(1), ids(9), ids(2)]),
        (ids(40), [ids(3), ids(3)]),
        (ids(1), [ids(4), ids(6)]),
        (ids(31), [ids(2), ids(8), ids(1)]),
    ]
    shared = shared_context_logprobs(model, groups, batch_tokens=60)  # several batches per choice count
    pairwise = continuation_logprobs(model, [(ctx, c) for ctx, conts in groups for c in conts], batch_tokens=60)
    assert [x for row in shared for x in row] == pytest.approx(pairwise, abs=1e-4)
    # truncation keeps the continuation and the most recent context tokens in both paths
    short = shared_context_logprobs(model, groups[:1], max_length=12)
    short_pairs = continuation_logprobs(model, [(groups[0][0], c) for c in groups[0][1]], max_length=12)
    assert short[0] == pytest.approx(short_pairs, abs=1e-4)
    assert short[0] != pytest.approx(shared[0], abs=1e-4)  # the cut changed the numbers


def test_encode_pair_moves_trailing_space(tiny):
    _, tokenizer = tiny
    ctx, cont = encode_pair(tokenizer, "Answer: ", "42")
    assert tokenizer.decode(ctx) == "Answer:" and tokenizer.decode(cont) == " 42"
    with pytest.raises(ValueError, match="encodes to no tokens"):
        encode_pair(tokenizer, "Answer:", "")


def naive_logprobs(model, requests) -> list[float]:
    """Σ log p(continuation) from one unpadded forward per pair and a float64 log-softmax over the whole vocabulary."""
    out = []
    with torch.no_grad():
        for ctx, cont in requests:
            logp = model(torch.tensor([ctx + cont])).logits[0].double().log_softmax(-1)
            out.append(sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)))
    return out


def random_groups(seed: int = 1) -> list[tuple[list[int], list[list[int]]]]:
    gen = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 400, (n,), generator=gen).tolist()

    return [(ids(9), [ids(1), ids(6), ids(3)]), (ids(17), [ids(4), ids(1), ids(2)]), (ids(3), [ids(7), ids(5)])]


@pytest.mark.parametrize("head", ["split", "model logits"])
def test_logprobs_equal_a_naive_log_softmax(tiny, monkeypatch, head):
    """Chunked scoring (target logit minus a per-position logsumexp, a few positions at a time) gives the numbers
    of a full log-softmax, whether the lm_head runs outside the model or the model's own logits are read."""
    import eaft.loss

    model, _ = tiny
    vocab = model.lm_head.weight.shape[0]
    monkeypatch.setattr(lm, "CHUNK_ELEMENTS", 3 * vocab)  # three positions per chunk: several chunks per batch
    if head == "model logits":  # e.g. a model that soft-caps its logits after the lm_head
        monkeypatch.setattr(eaft.loss, "fused_unsupported_reason", lambda model: "a logit transform")
    groups = random_groups()
    pairs = [(ctx, c) for ctx, conts in groups for c in conts]
    expected = naive_logprobs(model, pairs)
    assert continuation_logprobs(model, pairs, batch_tokens=40) == pytest.approx(expected, abs=1e-4)
    shared = shared_context_logprobs(model, groups, batch_tokens=40)
    assert [x for row in shared for x in row] == pytest.approx(expected, abs=1e-4)


def test_the_lm_head_sees_one_chunk_of_positions_at_a_time(tiny, monkeypatch):
    """No [batch, width, vocabulary] block: the lm_head runs on at most CHUNK_ELEMENTS / V scored positions at once,
    and only on positions that are scored (each context's last one, then the continuations' own)."""
    model, _ = tiny
    monkeypatch.setattr(lm, "CHUNK_ELEMENTS", 4 * model.lm_head.weight.shape[0])
    rows: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _out: rows.append(args[0].shape[:-1].numel()))
    groups = random_groups()
    try:
        continuation_logprobs(model, [(ctx, c) for ctx, conts in groups for c in conts])
        pairwise = list(rows)
        rows.clear()
        shared_context_logprobs(model, groups)
    finally:
        hook.remove()
    conts = [c for _, cs in groups for c in cs]
    assert max(pairwise) <= 4 and sum(pairwise) == sum(len(c) for c in conts)
    assert max(rows) <= 4 and sum(rows) == len(groups) + sum(len(c) - 1 for c in conts)
