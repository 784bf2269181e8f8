"""A training-compatible chat template for TRL's `assistant_only_loss`, made from a tokenizer's own ChatML template.

TRL builds its assistant mask from `{% generation %}` markers in the chat template, patching the templates it knows
and refusing the others, SmolLM2's (eaft's embedded default) among them. `training_chat_template` wraps the
assistant turn of a ChatML template, `{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] +
'<|im_end|>' + '\\n' }}`, so that the marked span is the assistant's content and its `<|im_end|>` (not the newline
after it): TRL's mask is then exactly the labels `eaft train` trains on. The result must render a set of probe
conversations exactly as the original does, or it is refused (ValueError), as is any template without that turn.
"""

from __future__ import annotations

import re
from typing import Any

#: The ChatML turn as SmolLM2's and similar templates write it; the newline may be a real one or the escape `\n`.
CHATML_TURN = re.compile(
    r"\{\{-?\s*'<\|im_start\|>'\s*\+\s*message\['role'\]\s*\+\s*'(?P<nl>\n|\\n)'\s*\+\s*message\['content'\]"
    r"\s*\+\s*'<\|im_end\|>'\s*\+\s*'(?P=nl)'\s*-?\}\}"
)
GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
PROBES = (
    [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello.\nHow can I help?"},
        {"role": "user", "content": "Add 1 and 1."},
        {"role": "assistant", "content": "2"},
    ],
    [{"role": "user", "content": "Only a question"}],
)


def has_generation_markers(template: str) -> bool:
    return GENERATION.search(template) is not None


def training_chat_template(tokenizer: Any) -> str:
    """The tokenizer's chat template with `{% generation %}` around each assistant turn (unchanged if it has the
    markers already). Raises ValueError for a template it cannot mark faithfully."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template:
        raise ValueError("the tokenizer has no chat template to mark for assistant-only loss")
    if has_generation_markers(template):
        return template
    turns = list(CHATML_TURN.finditer(template))
    if len(turns) != 1:
        raise ValueError(
            "the chat template is not the ChatML form eaft knows how to mark ({{ '<|im_start|>' + message['role'] + "
            "'\\n' + message['content'] + '<|im_end|>' + '\\n' }} once); add {% generation %} markers to it yourself"
        )
    turn, nl = turns[0].group(0), turns[0].group("nl")
    marked = (
        f"{{% if message['role'] == 'assistant' %}}{{{{ '<|im_start|>assistant{nl}' }}}}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        f"{{{{ '{nl}' }}}}{{% else %}}{turn}{{% endif %}}"
    )
    result = template.replace(turn, marked)
    for messages in PROBES:
        for prompt in (False, True):
            before = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            after = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt, chat_template=result
            )
            if before != after:
                raise ValueError("the marked chat template would render conversations differently; not used")
    return result
