"""LLaMA-Factory 0.9.5's chat templates, as they shape the tokens and labels of a training row.

A template is a set of text slots with a `{{content}}` hole: the system turn, the user turn (which ends with the
assistant header, so the header is prompt) and the assistant turn (which ends with its end-of-turn marker **and the
newline after it**, so both are labels). LLaMA-Factory tokenizes every slot on its own, never the whole
conversation; a row's tokens are therefore the concatenation of the slots' tokens. A template without a system
message in the row uses its `default_system`.

`template: <name>` picks one of `TEMPLATES` (the ChatML family: chatml, smollm, smollm2, qwen, qwen3,
qwen3_nothink). With no name, the slots are read off the tokenizer's own chat template by rendering placeholder
conversations, as LLaMA-Factory does when its `template` is left out. A name eaft does not reproduce, or a template
whose markers are not single tokens of the model's tokenizer, is refused naming the template and the model's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eaft.data.formats import DataError

HOLE = "{{content}}"
#: The reasoning templates' thought markers; an assistant turn without them gets an empty thought block.
THOUGHT = ("<think>\n", "\n</think>\n\n")
CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class ChatTemplate:
    """Text slots of one LLaMA-Factory template; each holds `{{content}}` once."""

    name: str
    system: str
    user: str
    assistant: str
    default_system: str = ""
    prefix: str = ""  # text before the first turn (a BOS the tokenizer writes), tokenized on its own
    reasoning: bool = False  # qwen3-style: an assistant turn without a thought block gets an empty one
    markers: tuple[str, ...] = ()  # strings that must each be one token of the model's tokenizer

    def fill(self, slot: str, content: str) -> str:
        return slot.replace(HOLE, content, 1)


def _chatml(name: str, default_system: str = "", reasoning: bool = False) -> ChatTemplate:
    return ChatTemplate(
        name=name,
        system=f"<|im_start|>system\n{HOLE}<|im_end|>\n",
        user=f"<|im_start|>user\n{HOLE}<|im_end|>\n<|im_start|>assistant\n",
        assistant=f"{HOLE}<|im_end|>\n",
        default_system=default_system,
        reasoning=reasoning,
        markers=CHATML_MARKERS,
    )


#: The templates eaft reproduces, by LLaMA-Factory's names; the default system prompts are LLaMA-Factory 0.9.5's.
TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": _chatml("chatml"),
    "smollm": _chatml("smollm"),
    "smollm2": _chatml("smollm2", "You are a helpful AI assistant named SmolLM, trained by Hugging Face."),
    "qwen": _chatml("qwen", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
    "qwen3": _chatml("qwen3", reasoning=True),
    "qwen3_nothink": _chatml("qwen3_nothink"),
}
#: Chat-template families told apart by a marker their template text contains (for messages only).
FAMILIES = (
    ("<|im_start|>", "ChatML (<|im_start|>role ... <|im_end|>)"),
    ("<|start_header_id|>", "Llama 3 (<|start_header_id|>role<|end_header_id|> ... <|eot_id|>)"),
    ("<start_of_turn>", "Gemma (<start_of_turn>role ... <end_of_turn>)"),
    ("[INST]", "Llama 2 / Mistral ([INST] ... [/INST])"),
    ("<|user|>", "Phi-3 / Zephyr (<|user|> ... <|end|>)"),
)


def _family_marker(tokenizer: Any) -> str | None:
    text = getattr(tokenizer, "chat_template", None)
    if not isinstance(text, str):
        return None
    return next((marker for marker, _ in FAMILIES if marker in text), None)


def model_family(tokenizer: Any) -> str:
    """The model's own chat template, described by its family (for error messages)."""
    if not getattr(tokenizer, "chat_template", None):
        return "none (its tokenizer has no chat template)"
    marker = _family_marker(tokenizer)
    return dict(FAMILIES)[marker] if marker else "not one of the families eaft knows"


def _misfit(tokenizer: Any, template: ChatTemplate) -> str | None:
    """Why `template` does not fit the tokenizer: a marker that is not one token, or a chat template of another
    family (a model without a chat template, or with one eaft does not recognize, is judged by its tokens)."""
    missing = [m for m in template.markers if len(tokenizer.encode(m, add_special_tokens=False)) != 1]
    if missing:
        return f"{', '.join(missing)} is not one token of its tokenizer"
    own = _family_marker(tokenizer)
    if own is not None and own not in template.markers:
        return "its chat template is of another family"
    return None


def _fitting(tokenizer: Any) -> list[str]:
    return [name for name, template in TEMPLATES.items() if _misfit(tokenizer, template) is None]


def resolve_template(name: str | None, tokenizer: Any) -> ChatTemplate:
    """The template `name` for this tokenizer (None: read off its chat template); refused when it does not fit."""
    model = getattr(tokenizer, "name_or_path", "") or "this model"
    if name is None:
        return template_from_tokenizer(tokenizer)
    fitting = _fitting(tokenizer)
    advice = (
        f"templates that fit it: {', '.join(fitting)}" if fitting else "no template eaft reproduces fits it"
    ) + "; or leave template out to read the model's own chat template as LLaMA-Factory does"
    own = f"the model's own chat template is {model_family(tokenizer)}"
    if name not in TEMPLATES:
        raise DataError(
            f"template={name!r} is not one eaft reproduces under compat: llamafactory (it reproduces "
            f"{', '.join(TEMPLATES)}); for model {model!r} {own}; {advice}"
        )
    misfit = _misfit(tokenizer, TEMPLATES[name])
    if misfit:
        raise DataError(f"template={name!r} does not fit model {model!r}: {misfit}, and {own}; {advice}")
    return TEMPLATES[name]


def _render(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except Exception as err:  # a template that raises on the placeholder turns (jinja raise_exception)
        raise DataError(
            f"the chat template of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} cannot be read as "
            f"LLaMA-Factory slots ({err}); name a template instead"
        ) from None


def _extra_characters(short: str, long: str) -> str:
    """The characters of `long` that a left-to-right walk matching `short` skips (the default system prompt)."""
    extra, i = [], 0
    for char in long:
        if i < len(short) and short[i] == char:
            i += 1
        else:
            extra.append(char)
    return "".join(extra)


def template_from_tokenizer(tokenizer: Any) -> ChatTemplate:
    """The slots of the tokenizer's own chat template, read the way LLaMA-Factory reads one when `template` is
    left out: render a system turn, a user turn (with and without an empty system turn) and a user + assistant
    exchange around placeholder content, and cut the renderings apart."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template and no template was named; "
            f"name one of {', '.join(TEMPLATES)}"
        )
    prefix = tokenizer.decode(tokenizer.encode(""))
    system = _render(tokenizer, [{"role": "system", "content": HOLE}], False)[len(prefix) :]
    user_after_empty_system = _render(
        tokenizer, [{"role": "system", "content": ""}, {"role": "user", "content": HOLE}], True
    )[len(prefix) :]
    user = _render(tokenizer, [{"role": "user", "content": HOLE}], True)[len(prefix) :]
    exchange = _render(tokenizer, [{"role": "user", "content": HOLE}, {"role": "assistant", "content": HOLE}], False)
    assistant = exchange[len(prefix) + len(user) :]
    reasoning = "<think>" in assistant
    assistant = assistant.replace("<think>", "").replace("</think>", "").lstrip("\n")
    default_system = ""
    if len(user) > len(user_after_empty_system):  # the template writes a default system turn of its own
        default_system = _extra_characters(user_after_empty_system, user)
        user = user[len(system.replace(HOLE, default_system, 1)) :]
    return ChatTemplate(
        name="(the tokenizer's chat template)",
        system=system,
        user=user,
        assistant=assistant,
        default_system=default_system,
        prefix=prefix,
        reasoning=reasoning,
    )
