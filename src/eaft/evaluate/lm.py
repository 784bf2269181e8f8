"""The two model operations every task is built from: continuation log-likelihoods and greedy generation.

Both are batched (longest first, so padding is small), run under `torch.inference_mode`, show a progress bar,
and pad on the left.
"""

from __future__ import annotations

import contextlib
import copy
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


#: Vocabulary-wide fp32 elements per scoring chunk (32 MB): the largest buffer log-likelihood scoring adds to the
#: forward pass, whatever the batch (`target_logprobs`).
CHUNK_ELEMENTS = 1 << 23


def target_logprobs(
    states: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor, head: Any = None
) -> torch.Tensor:
    """log p(target) at positions (rows[i], cols[i]) of `states`, in fp32: each target's logit minus its position's
    logsumexp, a chunk of positions at a time, so no full-vocabulary log-softmax over the batch is ever held.

    `states`: logits [B, T, V], or hidden states [B, T, H] that `head` (the lm_head) turns into logits chunk by
    chunk, so the batch's logits are never held either. `targets`: [N, m] token ids per position. Shape: [N, m].
    """
    vocab = head.weight.shape[0] if head is not None else states.shape[-1]
    step = max(1, CHUNK_ELEMENTS // vocab)
    out = torch.empty(targets.shape, dtype=torch.float32, device=states.device)
    for start in range(0, len(rows), step):
        part = slice(start, start + step)
        block = states[rows[part], cols[part]]
        logits = (head(block) if head is not None else block).float()  # as the model's own logits, then fp32
        out[part] = logits.gather(-1, targets[part]) - logits.logsumexp(-1, keepdim=True)
    return out


def _plain_head(model: Any) -> Any:
    """The lm_head when the model's logits are exactly `lm_head(decoder output)` (no soft-capping or scaling after
    it; `eaft.loss.fused_unsupported_reason`), else None: then the model's own logits are read."""
    from eaft.loss import base_causal_lm, fused_unsupported_reason

    return None if fused_unsupported_reason(model) is not None else base_causal_lm(model).get_output_embeddings()


def _last_states(model: Any, keep: int, **inputs: Any) -> tuple[torch.Tensor, Any, Any]:
    """(states, head, outputs) of one forward: the last `keep` positions' hidden states and the lm_head when the head
    is plain (the model builds no logits at all), else their logits and None. Shape: [B, keep, H or V]."""
    head = _plain_head(model)
    if head is None:
        outputs = _forward(model, keep, **inputs)
        return outputs.logits[:, -keep:], None, outputs
    from eaft.loss import base_causal_lm

    captured = []
    hook = base_causal_lm(model).get_decoder().register_forward_hook(lambda _m, _a, output: captured.append(output))
    try:
        no_positions = torch.zeros(0, dtype=torch.long, device=inputs["input_ids"].device)
        outputs = model(**inputs, logits_to_keep=no_positions)
    finally:
        hook.remove()
    hidden = captured[-1]
    hidden = hidden[0] if isinstance(hidden, tuple) else getattr(hidden, "last_hidden_state", hidden)
    return hidden[:, -keep:], head, outputs


def _left_padded(sequences: Sequence[list[int]], device: Any) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and position_ids of left-padded sequences (the longest sets the width)."""
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for b, seq in enumerate(sequences):
        ids[b, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[b, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def _long(values: Sequence[Any], device: Any) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


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
    position ids), so every continuation ends at the last position; only the continuation positions are scored,
    chunk by chunk (`target_logprobs`).
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
            keep = max(rows[i][2] for i in batch)
            states, head, _ = _last_states(model, keep, **_left_padded([rows[i][0] for i in batch], device))
            # continuation positions: the last n of each row's `keep`
            where = [(b, t) for b, i in enumerate(batch) for t in range(keep - rows[i][2], keep)]
            targets = _long([[t] for i in batch for t in rows[i][1][-rows[i][2] :]], device)
            b_index, t_index = _long([b for b, _ in where], device), _long([t for _, t in where], device)
            logp = target_logprobs(states, b_index, t_index, targets, head)[:, 0]
            start = 0
            for i in batch:
                out[i], start = float(logp[start : start + rows[i][2]].sum()), start + rows[i][2]
            bar.update(len(batch))
    return out


@torch.inference_mode()
def shared_context_logprobs(
    model: Any,
    groups: Sequence[tuple[list[int], list[list[int]]]],
    *,
    batch_tokens: int = 2048,
    max_length: int = 2048,
    desc: str = "log-likelihood",
) -> list[list[float]]:
    """Like `continuation_logprobs` for k continuations of one shared context: the context runs once, and the
    continuations run on top of its KV cache. Same numbers, about k× less context work.

    Contexts are batched by length, then their continuations (each with its context's cache rows) by length, so
    neither pass computes much padding; the contexts' cache and one continuation batch's each hold at most
    `batch_tokens / 2` tokens. `groups`: [(context_ids, [continuation_ids, ...])]. Returns one list of k
    log-likelihoods per group.
    """
    device = next(model.parameters()).device
    budget = max(batch_tokens // 2, 1)
    out: list[list[float]] = [[] for _ in groups]
    by_k: dict[int, list[int]] = {}
    for g, (_, conts) in enumerate(groups):
        by_k.setdefault(len(conts), []).append(g)
    with tqdm(total=len(groups), desc=desc, leave=False, disable=len(groups) < 2) as bar:
        for members in by_k.values():
            for chunk in _length_batches([len(groups[g][0]) for g in members], budget):
                batch = [members[i] for i in chunk]
                scores = _shared_batch(model, [groups[g] for g in batch], max_length, budget, device)
                for g, row in zip(batch, scores, strict=True):
                    out[g] = row
                bar.update(len(batch))
    return out


def _shared_batch(
    model: Any, groups: list[tuple[list[int], list[list[int]]]], max_length: int, budget: int, device: Any
) -> list[list[float]]:
    contexts = []
    for ctx, conts in groups:
        longest = max(len(c) for c in conts)
        if longest > max_length:
            raise ValueError(f"a continuation of {longest} tokens is longer than max_length={max_length}")
        contexts.append(list(ctx)[-(max_length + 1 - longest) :])  # as continuation_logprobs for the longest
    inputs = _left_padded(contexts, device)
    states, head, first = _last_states(model, 1, **inputs, use_cache=True)
    # each context's last position predicts the first token of its k continuations: [B, k]
    first_tokens = _long([[c[0] for c in conts] for _, conts in groups], device)
    every = torch.arange(len(groups), device=device)
    first_logp = target_logprobs(states, every, torch.zeros_like(every), first_tokens, head)
    # the rest of each continuation, on its context's cache rows; longest first, `budget` cached tokens a batch
    rows = [(b, j, c) for b, (_, conts) in enumerate(groups) for j, c in enumerate(conts) if len(c) > 1]
    width = inputs["attention_mask"].shape[1]
    rest: dict[tuple[int, int], float] = {}
    for part in _length_batches([width + len(c) - 1 for _, _, c in rows], budget):
        rest.update(_rest_logprobs(model, _output_cache(first), inputs["attention_mask"], [rows[i] for i in part]))
    return [
        [float(first_logp[b, j]) + rest.get((b, j), 0.0) for j in range(len(conts))]
        for b, (_, conts) in enumerate(groups)
    ]


def _rest_logprobs(
    model: Any, cache: Any, context_mask: torch.Tensor, rows: list[tuple[int, int, list[int]]]
) -> dict[tuple[int, int], float]:
    """Σ log p of each continuation's tokens after its first, run on a copy of its context's cache rows.
    `rows`: (context row b, choice j, continuation ids). Returns {(b, j): log-likelihood}."""
    device = context_mask.device
    index = _long([b for b, _, _ in rows], device)
    picked = copy.copy(cache)  # the contexts' cache itself stays as it is for the next rows
    picked.layers = [copy.copy(layer) for layer in cache.layers]
    picked.batch_select_indices(index)
    width = max(len(c) - 1 for _, _, c in rows)
    rest = torch.zeros(len(rows), width, dtype=torch.long)
    rest_mask = torch.zeros(len(rows), width, dtype=torch.long)
    for r, (_, _, c) in enumerate(rows):
        rest[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
        rest_mask[r, : len(c) - 1] = 1
    mask = context_mask[index]
    positions = mask.sum(-1, keepdim=True) + torch.arange(width, device=device)[None]
    states, head, _ = _last_states(
        model,
        width,
        input_ids=rest.to(device),
        attention_mask=torch.cat([mask, rest_mask.to(device)], dim=-1),
        position_ids=positions,
        use_cache=True,
        **{_cache_kwarg(model): picked},
    )
    where = [(r, t) for r, (_, _, c) in enumerate(rows) for t in range(len(c) - 1)]
    targets = _long([[t] for _, _, c in rows for t in c[1:]], device)
    logp = target_logprobs(states, _long([r for r, _ in where], device), _long([t for _, t in where], device),
                           targets, head)[:, 0]  # fmt: skip
    out, start = {}, 0
    for b, j, c in rows:
        out[(b, j)], start = float(logp[start : start + len(c) - 1].sum()), start + len(c) - 1
    return out


def _output_cache(output: Any) -> Any:
    """A forward pass's KV cache: `cache` in recent transformers (reading `past_key_values` warns there)."""
    return output["cache"] if "cache" in output else output.past_key_values


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
