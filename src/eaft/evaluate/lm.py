"""The two model operations every task is built from: continuation log-likelihoods and greedy generation.

Both are batched (longest first, so padding is small), run under `torch.inference_mode`, and show a progress
bar. Log-likelihoods use right padding; generation uses left padding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from eaft.train.models import load_model_and_tokenizer


class ModelHandle:
    """A model and its tokenizer, loaded on first use so that a fully cached run never loads weights."""

    def __init__(
        self, model: str | None, adapter: str | None = None, *, dtype: str = "float32", device: str | None = None
    ) -> None:
        self.model_name = model
        self.adapter = adapter
        self.dtype = dtype
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._loaded: tuple[Any, Any] | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            model, tokenizer = load_model_and_tokenizer(self.model_name, dtype=self.dtype, adapter=self.adapter)
            model.to(self.device).eval()
            self._loaded = (model, tokenizer)
        return self._loaded

    @contextlib.contextmanager
    def base_model(self) -> Iterator[tuple[Any, Any]]:
        """The loaded model with its adapter switched off (the model itself when there is no adapter)."""
        model, tokenizer = self.load()
        if self.adapter is None:
            yield model, tokenizer
        else:
            with model.disable_adapter():
                yield model, tokenizer

    def release(self) -> None:
        self._loaded = None


def chat_prompt(tokenizer: Any, user: str, system: str | None = None) -> str:
    """The chat-template rendering of one user turn, ending where the assistant's answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; set `chat: false` in the task to use plain prompts")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_pair(
    tokenizer: Any, context: str, continuation: str, *, add_special_tokens: bool = True
) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), split the way lm-evaluation-harness does: trailing spaces of the
    context move to the continuation, the pair is encoded whole and the context's length cuts it."""
    stripped = context.rstrip(" ")
    continuation = context[len(stripped) :] + continuation
    whole = tokenizer(stripped + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    ctx = tokenizer(stripped, add_special_tokens=add_special_tokens)["input_ids"]
    cont = whole[len(ctx) :]
    if not ctx:  # the first continuation token needs a position to be predicted from
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx = [start]
    if not cont:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens after context {context[-40:]!r}")
    return ctx, cont


def _length_batches(lengths: Sequence[int], max_tokens: int, max_items: int | None = None) -> list[list[int]]:
    """Indices grouped longest first so that (items × longest) stays within `max_tokens`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches:
            current = batches[-1]
            longest = lengths[current[0]]
            fits = longest * (len(current) + 1) <= max_tokens and (max_items is None or len(current) < max_items)
            if fits:
                current.append(i)
                continue
        batches.append([i])
    return batches


@torch.inference_mode()
def continuation_logprobs(
    model: Any,
    requests: Sequence[tuple[list[int], list[int]]],
    *,
    batch_tokens: int = 4096,
    max_length: int = 2048,
    desc: str = "log-likelihood",
) -> list[float]:
    """Σ_t log p(continuation_t | context, continuation_<t) for each (context_ids, continuation_ids) pair.

    A sequence longer than `max_length` loses context tokens on the left. Logits are [B, T, V] per batch; only
    the continuation positions are upcast to fp32.
    """
    device = next(model.parameters()).device
    rows = []
    for ctx, cont in requests:
        if len(cont) > max_length:
            raise ValueError(f"a continuation of {len(cont)} tokens is longer than max_length={max_length}")
        full = (list(ctx) + list(cont))[-(max_length + 1) :]
        rows.append((full[:-1], full[1:], len(cont)))
    out = [0.0] * len(rows)
    batches = _length_batches([len(r[0]) for r in rows], max(batch_tokens, 1))
    with tqdm(total=len(rows), desc=desc, leave=False, disable=len(rows) < 2) as bar:
        for batch in batches:
            width = len(rows[batch[0]][0])
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, : len(rows[i][0])] = torch.tensor(rows[i][0])
                mask[b, : len(rows[i][0])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for b, i in enumerate(batch):
                inp, tgt, n = rows[i]
                piece = logits[b, len(inp) - n : len(inp)].float().log_softmax(-1)
                target = torch.tensor(tgt[-n:], device=piece.device)
                out[i] = float(piece.gather(-1, target[:, None]).sum())
            bar.update(len(batch))
    return out


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids.update(value if isinstance(value, list) else [value] if value is not None else [])
    return sorted(ids)


@torch.inference_mode()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    add_special_tokens: bool = False,
    desc: str = "generate",
) -> list[list[int]]:
    """Greedy continuations of each prompt as token ids, cut after the first stop token (which is kept).

    Prompts are already rendered (chat template applied), hence `add_special_tokens=False` by default.
    """
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    stops = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=stops or None
    )
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    batches = _length_batches([len(e) for e in encoded], 1 << 62, max_items=max(batch_size, 1))
    with tqdm(total=len(prompts), desc=desc, leave=False, disable=len(prompts) < 2) as bar:
        for batch in batches:
            width = len(encoded[batch[0]])
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[b, width - len(encoded[i]) :] = 1
            generated = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
            for b, i in enumerate(batch):
                out[i] = _cut_at_stop(generated[b, width:].tolist(), stops)
            bar.update(len(batch))
    return out


def _cut_at_stop(ids: list[int], stops: list[int]) -> list[int]:
    for position, token in enumerate(ids):
        if token in stops:
            return ids[: position + 1]
    return ids


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)
