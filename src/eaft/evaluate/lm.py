"""The two model operations every task is built from: continuation log-likelihoods and greedy generation.

Both are batched (longest first, so padding is small), run under `torch.inference_mode`, show a progress bar,
and pad on the left.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from eaft.models import load_model_and_tokenizer


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

    def identity(self) -> dict[str, Any]:
        """What makes this model's scores what they are (the result cache's key): folder hashes and dtype."""
        from eaft.evaluate.cache import model_identity

        return model_identity(self.model_name, self.adapter, self.dtype)

    def describe(self) -> dict[str, Any]:
        """What results.json records as the evaluated model: `model` and `adapter`."""
        return {"model": self.model_name or "default", "adapter": self.adapter}

    def base_identity(self) -> dict[str, Any]:
        """The identity of `base_model()`: the model with its adapter switched off."""
        from eaft.evaluate.cache import model_identity

        return model_identity(self.model_name, None, self.dtype)


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

    A sequence longer than `max_length` loses context tokens on the left. Batches are left-padded (explicit
    position ids), so every continuation ends at the last position and only the last `max(n_cont)` positions
    go through the LM head: logits are [B, max(n_cont), V], upcast to fp32 per row.
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
                ids[b, width - len(rows[i][0]) :] = torch.tensor(rows[i][0])
                mask[b, width - len(rows[i][0]) :] = 1
            keep = max(rows[i][2] for i in batch)
            logits = _last_logits(model, ids.to(device), mask.to(device), keep)
            for b, i in enumerate(batch):
                _, tgt, n = rows[i]
                piece = logits[b, keep - n :].float().log_softmax(-1)
                target = torch.tensor(tgt[-n:], device=piece.device)
                out[i] = float(piece.gather(-1, target[:, None]).sum())
            bar.update(len(batch))
    return out


@torch.inference_mode()
def shared_context_logprobs(
    model: Any,
    groups: Sequence[tuple[list[int], list[list[int]]]],
    *,
    batch_tokens: int = 4096,
    max_length: int = 2048,
    desc: str = "log-likelihood",
) -> list[list[float]]:
    """Like `continuation_logprobs` for k continuations of one shared context: the context runs once, its KV
    cache is repeated k times, and the continuations run on top. Same numbers, about k× less context work.

    `groups`: [(context_ids, [continuation_ids, ...])]. Returns one list of k log-likelihoods per group.
    """
    device = next(model.parameters()).device
    out: list[list[float]] = [[] for _ in groups]
    by_k: dict[int, list[int]] = {}
    for g, (_, conts) in enumerate(groups):
        by_k.setdefault(len(conts), []).append(g)
    cost = [len(ctx) + sum(len(c) for c in conts) for ctx, conts in groups]
    with tqdm(total=len(groups), desc=desc, leave=False, disable=len(groups) < 2) as bar:
        for members in by_k.values():
            for chunk in _length_batches([cost[g] for g in members], max(batch_tokens, 1)):
                batch = [members[i] for i in chunk]
                for g, scores in zip(
                    batch, _shared_batch(model, [groups[g] for g in batch], max_length, device), strict=True
                ):
                    out[g] = scores
                bar.update(len(batch))
    return out


def _shared_batch(model: Any, groups: list[tuple[list[int], list[list[int]]]], max_length: int, device) -> list:
    k = len(groups[0][1])
    contexts = []
    for ctx, conts in groups:
        longest = max(len(c) for c in conts)
        if longest > max_length:
            raise ValueError(f"a continuation of {longest} tokens is longer than max_length={max_length}")
        contexts.append(list(ctx)[-(max_length + 1 - longest) :])  # as continuation_logprobs for the longest
    width = max(len(c) for c in contexts)
    ids = torch.zeros(len(groups), width, dtype=torch.long)
    mask = torch.zeros(len(groups), width, dtype=torch.long)
    for b, ctx in enumerate(contexts):
        ids[b, width - len(ctx) :] = torch.tensor(ctx)
        mask[b, width - len(ctx) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    first = _forward(model, 1, input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    first_logp = first.logits[:, -1].float().log_softmax(-1)  # [B, V]: predicts each continuation's first token
    conts = [c for _, cs in groups for c in cs]
    rest_width = max(len(c) - 1 for c in conts)
    rest_logp = None
    if rest_width > 0:
        cache = first.past_key_values
        cache.batch_repeat_interleave(k)
        rest = torch.zeros(len(conts), rest_width, dtype=torch.long)
        rest_mask = torch.zeros(len(conts), rest_width, dtype=torch.long)
        for r, c in enumerate(conts):
            rest[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
            rest_mask[r, : len(c) - 1] = 1
        ctx_len = mask.sum(-1).repeat_interleave(k)[:, None]
        positions = ctx_len + torch.arange(rest_width, device=device)[None]
        full_mask = torch.cat([mask.repeat_interleave(k, dim=0), rest_mask.to(device)], dim=-1)
        logits = model(
            input_ids=rest.to(device),
            attention_mask=full_mask,
            position_ids=positions,
            use_cache=True,
            **{_cache_kwarg(model): cache},
        ).logits
        rest_logp = logits.float().log_softmax(-1)  # [B·k, W, V]
    scores = []
    for b in range(len(groups)):
        row = []
        for j, c in enumerate(groups[b][1]):
            r = b * k + j
            total = float(first_logp[b, c[0]])
            if len(c) > 1:
                targets = torch.tensor(c[1:], device=device)[:, None]
                total += float(rest_logp[r, : len(c) - 1].gather(-1, targets).sum())
            row.append(total)
        scores.append(row)
    return scores


def _cache_kwarg(model: Any) -> str:
    """`cache` in recent transformers (`past_key_values` is deprecated there), `past_key_values` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _forward(model: Any, keep: int, **inputs: Any) -> Any:
    """`model(**inputs)` computing logits for the last `keep` positions only, where the model class allows."""
    try:
        return model(**inputs, logits_to_keep=keep)
    except TypeError as err:  # a model class without `logits_to_keep`: same numbers, all positions computed
        if "logits_to_keep" not in str(err):
            raise
        return model(**inputs)


def _last_logits(model: Any, ids: torch.Tensor, mask: torch.Tensor, keep: int) -> torch.Tensor:
    """Logits of the last `keep` positions of a left-padded batch. Shape: [B, keep, V]."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return _forward(model, keep, input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -keep:]


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
    stop_regex: str | None = None,
) -> list[list[int]]:
    """Greedy continuations of each prompt as token ids, cut after the first stop token (which is kept), or after
    the token that completes `stop_regex` in the decoded continuation (`eaft.evaluate.stopping`).

    Prompts are already rendered (chat template applied), hence `add_special_tokens=False` by default. The
    progress bar counts generated tokens (a batch that stops early jumps to its budget), so it moves while a
    batch decodes.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    from eaft.evaluate.stopping import GenerationWatch, compile_stop

    stop_pattern = compile_stop(stop_regex)
    device = next(model.parameters()).device
    stops = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=stops or None
    )
    encoded = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    batches = _length_batches([len(e) for e in encoded], 1 << 62, max_items=max(batch_size, 1))
    total = len(batches) * max_new_tokens
    with tqdm(total=total, desc=desc, unit="tok", leave=False, disable=len(prompts) < 2) as bar:
        for done, batch in enumerate(batches):
            bar.set_postfix_str(f"items {sum(len(b) for b in batches[:done])}/{len(prompts)}")
            width = len(encoded[batch[0]])
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[b, width - len(encoded[i]) :] = 1
            watch = GenerationWatch(tokenizer, width, stop_pattern, bar)
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([watch]),
            )
            for b, i in enumerate(batch):
                out[i] = watch.cut(b, _cut_at_stop(generated[b, width:].tolist(), stops))
            bar.update(max_new_tokens - watch.steps)
        bar.set_postfix_str(f"items {len(prompts)}/{len(prompts)}")
    return out


def _cut_at_stop(ids: list[int], stops: list[int]) -> list[int]:
    for position, token in enumerate(ids):
        if token in stops:
            return ids[: position + 1]
    return ids


def decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)
