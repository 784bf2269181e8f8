"""Retention check: how likely the evaluated model still finds the base model's own answers.

The reference (base) model answers a set of general prompts greedily, through the chat template; the answers
are generated once and cached by the reference's identity, the prompts and the length. The evaluated model then
scores those exact token ids. Metrics: `nll` = mean negative log-likelihood per answer token (lower = closer to
the base) and the reported score `token_prob` = 100 · exp(−nll), the geometric-mean token probability (higher is
better, like every other score). The shipped prompt set (`eaft/resources/general_prompts.jsonl`, 42 prompts
written for this project) is used when the task names no file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eaft.evaluate.cache import ResultCache, digest, file_sha256, model_identity
from eaft.evaluate.generative import prompt_text
from eaft.evaluate.lm import ModelHandle, continuation_logprobs, decode, greedy_generate
from eaft.evaluate.task_types import register_task_type
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec, iter_rows, render, require_finite


@dataclass(frozen=True)
class SelfConsistencyOptions:
    """NLL, under the evaluated model, of the reference (base) model's greedy answers to general prompts."""

    prompt: str = field(default="{prompt}", metadata={"help": "template of the user message"})
    reference: str | None = field(
        default=None, metadata={"help": "base model; default: the evaluated model with its adapter switched off"}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "length of the reference answers"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    batch_tokens: int = field(default=4096, metadata={"help": "padded tokens per forward batch"})


GENERAL_PROMPTS = Path(__file__).resolve().parent.parent / "resources" / "general_prompts.jsonl"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def prompts_file(task: TaskSpec) -> Path:
    return task.path if task.path is not None else GENERAL_PROMPTS


def reference_identity(task: TaskSpec, handle: ModelHandle) -> dict[str, Any]:
    opts: SelfConsistencyOptions = task.options
    if opts.reference is None:
        return handle.base_identity()
    return model_identity(opts.reference, None, handle.dtype)


def reference_answers(task: TaskSpec, handle: ModelHandle, users: list[str], cache: ResultCache) -> dict[str, Any]:
    """{'tokenizer': fingerprint, 'answers': [[ids]], 'texts': [...]} from the reference model, cached."""
    opts: SelfConsistencyOptions = task.options
    ref_id = reference_identity(task, handle)
    key = digest(
        {
            "reference": ref_id,
            "file": file_sha256(prompts_file(task)),
            "users": users,
            "max_new_tokens": opts.max_new_tokens,
        }
    )
    cached = cache.get(key, kind="reference_answers")
    if cached is not None:
        return cached
    same = opts.reference is None or ref_id == handle.base_identity()
    ref_handle = handle if same else ModelHandle(opts.reference, dtype=handle.dtype, device=handle.device)
    with ref_handle.base_model() as (model, tokenizer):
        prompts = [prompt_text(tokenizer, u, system=None, chat=True) for u in users]
        answers = greedy_generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=opts.max_new_tokens,
            batch_size=opts.batch_size,
            desc=f"{task.name} (reference answers)",
        )
        record = {
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "answers": answers,
            "texts": [decode(tokenizer, a) for a in answers],
            "reference": ref_id,
        }
    if not same:
        ref_handle.release()
    cache.put(key, record, kind="reference_answers")
    return record


def evaluate_self_consistency(task: TaskSpec, handle: ModelHandle, cache: ResultCache) -> TaskOutcome:
    opts: SelfConsistencyOptions = task.options
    path = prompts_file(task)
    selected = list(iter_rows(path, task.limit, task.limit_mode))
    users = [render(opts.prompt, row, f"{path}:{line}") for line, row in selected]
    reference = reference_answers(task, handle, users, cache)
    model, tokenizer = handle.load()
    if tokenizer_fingerprint(tokenizer) != reference["tokenizer"]:
        raise TaskError(
            f"task {task.name!r}: the reference model's tokenizer differs from the evaluated model's; "
            "self_consistency scores the reference's token ids, so both must share a tokenizer"
        )
    requests = []
    for user, answer in zip(users, reference["answers"], strict=True):
        if not answer:
            raise TaskError(f"task {task.name!r}: a reference answer is empty (max_new_tokens={opts.max_new_tokens})")
        context = tokenizer(prompt_text(tokenizer, user, system=None, chat=True), add_special_tokens=False)
        requests.append((context["input_ids"], answer))
    logprobs = continuation_logprobs(
        model, requests, batch_tokens=opts.batch_tokens, max_length=1 << 30, desc=task.name
    )
    require_finite(task, [line for line, _ in selected], logprobs, path)
    n_tokens = sum(len(a) for a in reference["answers"])
    nll = -sum(logprobs) / max(n_tokens, 1)
    metrics = {"token_prob": 100.0 * math.exp(-nll), "nll": nll, "answer_tokens": float(n_tokens)}
    samples = [
        {"line": line, "nll": -lp / len(a), "tokens": len(a), "reference_answer": text}
        for (line, _), lp, a, text in zip(selected, logprobs, reference["answers"], reference["texts"], strict=True)
    ]
    notes = f"score = 100·exp(−NLL per token) of the reference's greedy answers, max_new_tokens={opts.max_new_tokens}"
    return TaskOutcome(metrics["token_prob"], "token_prob", metrics, len(selected), samples, notes=notes)


register_task_type("self_consistency", SelfConsistencyOptions, evaluate_self_consistency, uses_cache=True)
