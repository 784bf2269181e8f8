"""Chat templating and label masking: the loss covers the tokens of every assistant turn, nothing else.

Assistant spans are found on the rendered text: for assistant message i, the span starts where the rendering of
`messages[:i]` with the generation prompt ends, and ends where the rendering of `messages[:i + 1]` ends, so it holds
the assistant content **and the end-of-turn marker the template emits after it** (`<|im_end|>` for ChatML,
`<|eot_id|>` for Llama 3), which the model must learn to stop. Whitespace the template adds after the marker (the
ChatML newline) is not trained. A token is labelled when its first character lies inside a span. This needs a
template whose renderings of successive prefixes are prefixes of each other (true of ChatML, Llama, Mistral and
Qwen templates); any other template is refused with an error rather than mis-masked.
"""

from __future__ import annotations

import json
from typing import Any

from eaft.data.formats import DataError, Messages

IGNORE_INDEX = -100


def render(tokenizer: Any, messages: Messages, *, add_generation_prompt: bool = False) -> str:
    """The tokenizer's chat template applied to `messages`, as text."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; set one on the tokenizer "
            "(tokenizer.chat_template = '...') or use an instruct model"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def template_messages(tokenizer: Any, messages: Messages) -> Messages:
    """Messages as the template will see them: tool calls are written into the content as JSON lines when the
    template does not render `tool_calls` itself, so that they are trained rather than silently dropped."""
    if "tool_calls" in (tokenizer.chat_template or ""):
        return messages
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            lines = [json.dumps(call.get("function", call), ensure_ascii=False) for call in calls]
            content = "\n".join(([message["content"]] if message.get("content") else []) + lines)
            message = {k: v for k, v in message.items() if k != "tool_calls"} | {"content": content}
        out.append(message)
    return out


def assistant_spans(tokenizer: Any, messages: Messages) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of its assistant turns."""
    messages = template_messages(tokenizer, messages)
    full = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render(tokenizer, messages[: i + 1])
        if not (full.startswith(head) and full.startswith(upto) and upto.startswith(head)):
            raise DataError(
                f"the chat template of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} does not render "
                f"conversation prefixes as prefixes of the whole (assistant turn {i}); its assistant tokens "
                "cannot be located safely"
            )
        end = len(head) + len(upto[len(head) :].rstrip())
        spans.append((len(head), end))
    return full, spans


def encode_conversation(tokenizer: Any, messages: Messages, *, cutoff_len: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels of one conversation.

    `labels[j] == input_ids[j]` on the tokens of every assistant turn (content plus end-of-turn marker), and
    `IGNORE_INDEX` (-100) elsewhere; position 0 is never a label (nothing predicts it). `cutoff_len` keeps the
    first `cutoff_len` tokens. Needs a fast tokenizer (character offsets). Shape: two lists of equal length.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("label masking needs a fast (Rust) tokenizer with character offsets")
    full, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    span_index = 0
    for j, (start, _end) in enumerate(encoded["offset_mapping"]):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index < len(spans) and spans[span_index][0] <= start and j > 0:
            labels[j] = input_ids[j]
    if cutoff_len is not None:
        if cutoff_len < 2:
            raise DataError(f"cutoff_len must be >= 2, got {cutoff_len}")
        input_ids, labels = input_ids[:cutoff_len], labels[:cutoff_len]
    return {"input_ids": input_ids, "labels": labels}


def encode_prompt(tokenizer: Any, messages: Messages) -> list[int]:
    """The conversation up to (not including) its last assistant turn, with the generation prompt, as token ids.

    This is what a model sees before it writes the reference answer: used for rollouts and evaluation.
    """
    messages = template_messages(tokenizer, messages)
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise DataError("the conversation has no assistant turn, so it has no prompt to complete")
    text = render(tokenizer, messages[:last], add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_labels(example: dict[str, list[int]]) -> int:
    return sum(1 for label in example["labels"] if label != IGNORE_INDEX)
