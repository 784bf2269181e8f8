"""The two log-likelihood paths agree: shared context (KV cache repeated per choice) vs one sequence per pair."""

from __future__ import annotations

import pytest
import torch

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
