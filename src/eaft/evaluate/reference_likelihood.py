"""Reference likelihood: the teacher-forced NLL of each row's written response after its prompt.

The prompt is rendered like a generative task's (one user turn through the chat template, or plain), the response
is the continuation, scored token by token under the evaluated model. The score is `100·exp(−NLL per token)`
over all response tokens of the selection (the geometric-mean token probability, higher is better), so a model
that has learnt a domain's answers scores higher even when, like a 135M model on GSM8K, it cannot yet solve the
problems. Exact match stays the task to read for solving; this one measures fitting the target style.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from eaft.evaluate.generative import prompt_text
from eaft.evaluate.lm import ModelHandle, continuation_logprobs
from eaft.evaluate.task_types import register_task_type
from eaft.evaluate.tasks import (
    TaskError,
    TaskOutcome,
    TaskSpec,
    field_value,
    iter_rows,
    render,
    require_finite,
)


@dataclass(frozen=True)
class ReferenceLikelihoodOptions:
    """Teacher-forced NLL of each row's reference response after its prompt: how well the model has learnt a
    domain's written answers, without generating (cheap, and not floored at chance like exact match)."""

    prompt: str = field(default="{question}", metadata={"help": "template of the user message"})
    answer: str = field(default="answer", metadata={"help": "field with the reference response"})
    system: str | None = field(default=None, metadata={"help": "optional system message"})
    chat: bool = field(default=True, metadata={"help": "use the chat template (false: plain prompt)"})
    max_length: int = field(default=2048, metadata={"help": "tokens kept per sequence (context cut on the left)"})
    batch_tokens: int = field(default=4096, metadata={"help": "padded tokens per forward batch"})


def evaluate_reference_likelihood(task: TaskSpec, handle: ModelHandle) -> TaskOutcome:
    opts: ReferenceLikelihoodOptions = task.options
    rows = list(iter_rows(task.path, task.limit, task.limit_mode))
    users, answers = [], []
    for line, row in rows:
        where = f"{task.path}:{line}"
        answer = field_value(row, opts.answer, where)
        if not isinstance(answer, str) or not answer.strip():
            raise TaskError(f"{where}: field {opts.answer!r} should be a non-empty string, got {answer!r}")
        users.append(render(opts.prompt, row, where))
        answers.append(answer)
    model, tokenizer = handle.load()
    requests = []
    for user, answer in zip(users, answers, strict=True):
        context = prompt_text(tokenizer, user, system=opts.system, chat=opts.chat)
        ctx = tokenizer(context, add_special_tokens=not opts.chat)["input_ids"]
        cont = tokenizer(answer, add_special_tokens=False)["input_ids"]
        requests.append((ctx, cont))
    logprobs = continuation_logprobs(
        model, requests, batch_tokens=opts.batch_tokens, max_length=opts.max_length, desc=task.name
    )
    require_finite(task, [line for line, _ in rows], logprobs)
    n_tokens = sum(len(cont) for _, cont in requests)
    nll = -sum(logprobs) / max(n_tokens, 1)
    metrics = {"token_prob": 100.0 * math.exp(-nll), "nll": nll, "answer_tokens": float(n_tokens)}
    samples = [
        {"line": line, "nll": -lp / len(cont), "tokens": len(cont)}
        for (line, _), lp, (_, cont) in zip(rows, logprobs, requests, strict=True)
    ]
    notes = "score = 100·exp(−NLL per token) of the reference responses, teacher-forced"
    return TaskOutcome(metrics["token_prob"], "token_prob", metrics, len(rows), samples, notes=notes)


register_task_type("reference_likelihood", ReferenceLikelihoodOptions, evaluate_reference_likelihood)
