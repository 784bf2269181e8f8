"""The TRL page (docs/trl.md) runs as written on a CPU, offline: its code block is taken from the page and run with
one change, the embedded default model replaced by a tiny stand-in with SmolLM2's chat template; the loss it trains
covers the assistant tokens (and their <|im_end|>) and nothing else, exactly `eaft train`'s labels."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from eaft.data import encode_conversation  # noqa: E402
from eaft.data.training_template import training_chat_template  # noqa: E402
from eaft.integrations.trl import EaftSFTTrainer  # noqa: E402
from tests.train.tiny import SMOLLM2_CHATML, build_model, build_tokenizer  # noqa: E402

TRL_PAGE = Path(__file__).resolve().parents[2] / "docs" / "trl.md"


def trl_snippet(page: str) -> str:
    """The first python code block of the TRL page."""
    return re.search(r"```python\n(.*?)```", page, re.S).group(1)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    """A tiny model saved with SmolLM2's own chat template: what `model="default"` loads in these tests."""
    folder = tmp_path_factory.mktemp("smollm2_stand_in")
    tokenizer = build_tokenizer(SMOLLM2_CHATML)
    build_model("llama", vocab_size=len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_snippet(code: str, stand_in: Path, tmp_path, monkeypatch) -> tuple[dict, list, list]:
    """Run `code` in a fresh namespace from tmp_path with the default model patched to `stand_in`; returns the
    namespace, the (input_ids, labels) rows the objective saw, and the warnings raised."""
    import eaft.models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(eaft.models, "default_model_path", lambda: stand_in)
    seen = []
    real = EaftSFTTrainer.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for ids, labels in zip(inputs["input_ids"].tolist(), inputs["labels"].tolist(), strict=True):
            seen.append((ids, labels))
        return real(self, model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(EaftSFTTrainer, "compute_loss", compute_loss)
    namespace: dict = {"__name__": "readme_trl"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, str(TRL_PAGE), "exec"), namespace)  # noqa: S102 - the page's own code
    return namespace, seen, caught


def assert_assistant_tokens_only(namespace: dict, seen: list) -> None:
    tokenizer = namespace["trainer"].processing_class
    expected = {}
    for messages in namespace["rows"]:
        example = encode_conversation(tokenizer, messages)
        expected[tuple(example["input_ids"])] = example["labels"]
    assert seen, "the objective saw no batch"
    for ids, labels in seen:
        length = next((i for i in range(len(ids), 0, -1) if labels[i - 1] != -100), 0)
        key = next(k for k in expected if list(k) == ids[: len(k)])  # right-padded rows
        assert labels[: len(key)] == expected[key] and length <= len(key)
        trained = sum(label != -100 for label in labels)
        assert 0 < trained < len(key)  # the prompt and system turns are not trained


def test_the_trl_page_snippet_runs_and_trains_only_assistant_tokens(stand_in, tmp_path, monkeypatch):
    code = trl_snippet(TRL_PAGE.read_text(encoding="utf-8"))
    namespace, seen, caught = run_snippet(code, stand_in, tmp_path, monkeypatch)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == namespace["args"].max_steps
    assert_assistant_tokens_only(namespace, seen)
    assert str(trainer.model.name_or_path) == str(stand_in)  # `default` was the local folder, not a hub id
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    noisy = [
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning)) or "pin_memory" in str(w.message)
    ]
    assert noisy == []


@pytest.mark.parametrize(
    ("line", "failure"),
    [
        ("    assistant_only_loss=True,", AssertionError),  # messages rows then train the prompts too
        ("    bf16=False,", ValueError),  # TRL's bf16 default, refused on a CPU
    ],
)
def test_the_check_fails_on_a_broken_snippet(stand_in, tmp_path, monkeypatch, line, failure):
    """The test above is not vacuous: the snippet without one of its CPU / assistant-only settings fails it."""
    code = trl_snippet(TRL_PAGE.read_text(encoding="utf-8"))
    assert line in code
    broken = "\n".join(x for x in code.splitlines() if not x.startswith(line))
    with pytest.raises(failure):
        namespace, seen, _ = run_snippet(broken, stand_in, tmp_path, monkeypatch)
        assert_assistant_tokens_only(namespace, seen)


def test_eaft_marks_the_stand_ins_chatml_as_eaft_train_labels(stand_in):
    """The marked template renders as the original and its generation span is eaft's label span."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(stand_in)
    marked = training_chat_template(tokenizer)
    messages = [
        {"role": "user", "content": "what is 2 plus 2?"},
        {"role": "assistant", "content": "Answer: 4."},
        {"role": "user", "content": "and 3 plus 3?"},
        {"role": "assistant", "content": "Answer: 6. ok"},
    ]
    rendered = tokenizer.apply_chat_template(
        messages, chat_template=marked, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ours = encode_conversation(tokenizer, messages)
    assert rendered["input_ids"] == ours["input_ids"]
    assert rendered["assistant_masks"] == [int(label != -100) for label in ours["labels"]]
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="not the ChatML form"):
        training_chat_template(tokenizer)


@pytest.mark.slow
def test_the_stand_in_has_smollm2s_own_template():
    """The embedded default's real tokenizer: the template the stand-in copies, and eaft can mark it."""
    from eaft.models import load_tokenizer

    tokenizer = load_tokenizer("default")
    assert tokenizer.chat_template == SMOLLM2_CHATML
    assert "{% generation %}" in training_chat_template(tokenizer)
