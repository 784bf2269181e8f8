"""On-policy rollouts: the model answers the data set's prompts itself, K times each.

The model sees only the prompt (`eaft.data.encode_prompt`: the conversation before its last assistant turn, with
the generation prompt), never the reference answer. Prompts are left-padded for generation; each rollout is then
stored as its own unpadded sequence, prompt + response, labelled on the response only, so that the statistics
pass treats rollouts exactly like data set samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from eaft.analysis.tokens import IGNORE_INDEX


def stop_token_ids(model, tokenizer) -> set[int]:
    """End-of-sequence ids: the generation config's (an int or a list) and the tokenizer's."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("neither the model's generation config nor the tokenizer names an end-of-sequence token")
    return ids


def pad_left(rows: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask. Shape: -> [B, L], [B, L]."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[b, width - len(row) :] = 1
    return ids, mask


def cut_response(tokens: Sequence[int], stops: set[int], pad_id: int) -> list[int]:
    """A generated continuation up to and including its first stop token (trailing padding dropped)."""
    out = []
    for token in tokens:
        out.append(int(token))
        if token in stops:
            return out
    while out and out[-1] == pad_id and pad_id not in stops:
        out.pop()
    return out


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    k: int,
    max_new_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """K sampled responses per prompt (temperature 0: one greedy response, K must be 1).

    Returns, for prompt i and rollout r (in that order), {"sample": i, "rollout": r, "input_ids": prompt + response,
    "labels": -100 over the prompt, the response ids after it}.
    """
    if k < 1:
        raise ValueError(f"--rollouts must be >= 1, got {k}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
    if temperature == 0 and k != 1:
        raise ValueError(f"temperature 0 is greedy decoding, which gives one rollout per prompt; got --rollouts {k}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = stop_token_ids(model, tokenizer)
    sampling = temperature > 0
    options = dict(do_sample=sampling, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=sorted(stops))
    # pure sampling from the model's distribution: no top-k cut, whatever the model's generation config says
    options.update(dict(temperature=temperature, top_p=top_p, top_k=0) if sampling else dict(top_k=None, top_p=None))
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    out: list[dict] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="rollouts", unit="batch", disable=not progress):
            batch = [list(p) for p in prompts[start : start + batch_size]]
            ids, mask = pad_left(batch, pad_id)
            generated = model.generate(input_ids=ids, attention_mask=mask, num_return_sequences=k, **options)
            for row, tokens in enumerate(generated[:, ids.shape[1] :].tolist()):
                prompt = batch[row // k]
                response = cut_response(tokens, stops, pad_id)
                out.append(
                    {
                        "sample": start + row // k,
                        "rollout": row % k,
                        "input_ids": prompt + response,
                        "labels": [IGNORE_INDEX] * len(prompt) + response,
                    }
                )
    finally:
        model.train(was_training)
    return out
