"""The paths every user runs emit no FutureWarning or DeprecationWarning: `eaft train` as `make train` runs it
(EAFT + LoRA on the shipped house_calc set, here on the tiny model) with evaluation after training, which loads the
adapter and scores multiple-choice, generative and self-consistency tasks."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from eaft.train import cli as train_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


def suite_with_every_task_kind(folder: Path, model_dir: str) -> Path:
    shutil.copy(FIXTURES / "gsm8k" / "test.jsonl", folder / "gsm8k.jsonl")
    rows = [{"question": f"{i} plus {i}?", "choices": ["five", "ok", "dog"], "answer": i % 3} for i in range(3)]
    (folder / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    suite = {
        "name": "every_kind",
        "target": [
            {"name": "gen", "type": "generative", "path": "gsm8k.jsonl", "max_new_tokens": 4, "stop_regex": "####"},
            {"name": "fit", "type": "reference_likelihood", "path": "gsm8k.jsonl", "prompt": "{question}"},
        ],
        "general": [{"name": "mc", "type": "multiple_choice", "path": "mc.jsonl"}],
        "extra": [{"name": "sc", "type": "self_consistency", "reference": model_dir, "max_new_tokens": 4, "limit": 2}],
    }
    (folder / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    return folder / "suite.yaml"


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def make_train_run(tmp_path_factory, tiny_model_dir):
    """(Python warnings, transformers' log warnings) of one `eaft train` with evaluation after training."""
    import os

    tmp = tmp_path_factory.mktemp("make_train")
    suite = suite_with_every_task_kind(tmp, tiny_model_dir)
    args = [f"model={tiny_model_dir}", f"output_dir={tmp / 'run'}", "max_steps=2", "logging_steps=1"]
    args += ["val_size=4", f"eval_suite={suite}", "eval_limit=3"]  # the embedded default config otherwise
    logging.Logger.warning_once.cache_clear()  # transformers logs each deprecation once per process
    recorder = Recorder()
    library = logging.getLogger("transformers")
    library.addHandler(recorder)
    previous, os.environ["EAFT_CACHE"] = os.environ.get("EAFT_CACHE"), str(tmp / "cache")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert train_cli.main(args) == 0
    finally:
        library.removeHandler(recorder)
        if previous is None:
            os.environ.pop("EAFT_CACHE")
        else:
            os.environ["EAFT_CACHE"] = previous
    assert (tmp / "run" / "adapter").is_dir() and (tmp / "run" / "forgetting.md").is_file()
    return caught, recorder.messages


def test_make_train_and_its_evaluation_warn_no_deprecation(make_train_run):
    caught, _ = make_train_run
    deprecations = [
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
    ]
    assert deprecations == []


def test_make_train_and_its_evaluation_log_no_library_deprecation(make_train_run):
    _, logged = make_train_run
    assert [m for m in logged if "deprecated" in m] == []
