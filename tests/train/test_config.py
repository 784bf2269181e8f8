"""`eaft train` configuration: overrides, validation, errors that name the key, help, and the example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from eaft.train.cli import REFUSED_TRAINING_KEYS, help_text, parse_args
from eaft.train.config import ConfigError, our_fields, training_fields

REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_and_overrides():
    config = parse_args(["learning_rate=1e-3", "objective_args.alpha=2", "lora_target=[q_proj,v_proj]"])
    assert config.eaft.model == "default" and config.eaft.objective == "eaft"
    assert config.eaft.objective_args == {"alpha": 2}
    assert config.training.learning_rate == 1e-3  # YAML reads 1e-3 as a string; it is coerced to float
    assert config.eaft.lora_target_modules() == ["q_proj", "v_proj"]
    assert config.training.output_dir.startswith("runs/eaft-")


def test_yaml_file_gives_defaults_and_cli_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: ./m\ndataset: d.jsonl\nobjective: dft\nlogging_steps: 3\noutput_dir: out\n")
    config = parse_args([str(path), "logging_steps=7", "finetuning=full"])
    assert (config.eaft.objective, config.training.logging_steps, config.eaft.finetuning) == ("dft", 7, "full")
    assert config.raw["logging_steps"] == 7 and config.raw["dataset"] == "d.jsonl"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["learning_rat=1e-4"], r"unknown key 'learning_rat'; did you mean 'learning_rate'\?"),
        (["objective=eaftt"], r"unknown objective 'eaftt'; did you mean 'eaft'\?"),
        (["objective_args.alpah=2"], r"objective 'eaft' has no parameter 'alpah'; did you mean 'alpha'\?"),
        (["objective_args.alpha=-1"], r"alpha must be >= 0"),
        (["lora_rank=many"], r"lora_rank='many' has the wrong type"),
        (["finetuning=qlora"], r"finetuning must be one of lora, full"),
        (["finetuning=full", "lora_rank=16"], r"lora_rank=16 set but finetuning=full"),
        (["resume=true", "overwrite_output_dir=true"], r"contradict"),
        (["remove_unused_columns=true"], r"remove_unused_columns must be False"),
        (["lr_scheduler_type=zigzag"], r"zigzag"),
        (["lora_rank=4", "novalue"], r"expected key=value"),
        (["checkpoint_steps=[0,5]"], r"checkpoint_steps must be a list of positive step numbers"),
        (["checkpoint_steps=10"], r"checkpoint_steps must be a list"),
        (["lora_target=[]"], r"lora_target=\[\] names no module \(expected 'all' or module names"),
        (["lora_target=' , '"], r"lora_target=' , ' names no module"),
        (["max_steps=-1", "num_train_epochs=0"], r"num_train_epochs=0 with max_steps=-1 trains no step"),
        (["use_liger_kernel=true"], r"use_liger_kernel=true patches the model .* objective \('eaft'\) replaces"),
    ],
)
def test_config_errors_name_the_key(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        parse_args([str(tmp_path / "none.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: expected a mapping"):
        parse_args([str(bad)])


def test_help_lists_every_key_with_its_help():
    text = help_text()
    for name, field in our_fields().items():
        assert f"\n  {name} (default:" in text and field.metadata["help"].split()[0] in text
    for name in training_fields():
        if name in REFUSED_TRAINING_KEYS:
            assert f"\n  {name} (default:" not in text  # refused by eaft train: not offered
        else:
            assert f"\n  {name} (default:" in text
    assert "\n  eaft:\n    alpha (default: 1.0)" in text and "\n  flow:\n    per (default: 'sample')" in text
    assert "\n  include_for_metrics (default: [])" in text  # a default_factory's value, not dataclasses.MISSING
    assert "object at 0x" not in text and "_MISSING_TYPE" not in text


def test_every_example_config_validates():
    configs = sorted((REPO / "configs" / "train").glob("*.yaml"))
    assert configs, "configs/train holds the example YAMLs"
    for path in configs:
        parse_args([str(path)])


def test_the_training_page_documents_every_eaft_key():
    page = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    section = page[: page.index("\n## Data\n")]
    assert all(f"`{name}`" in section for name in our_fields())


def test_a_dataset_on_the_command_line_takes_eaft_defaults_not_the_demo(tmp_path):
    config = parse_args(["dataset=rows.jsonl", "num_train_epochs=2"])
    assert config.training.num_train_epochs == 2 and config.training.max_steps == -1  # the demo caps at 20
    assert config.eaft.val_size == 0 and config.eaft.objective == "sft"  # the demo holds out 40 rows, trains eaft
    assert config.training.learning_rate == 1e-4  # eaft's documented default, not the demo's 5e-4
    with pytest.raises(ConfigError, match=r"^command line: unknown key"):
        parse_args(["dataset=rows.jsonl", "learning_rat=1"])


def test_a_key_whose_package_is_missing_names_both(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(ConfigError, match=r"deepspeed='ds.json' needs the package 'deepspeed', which is not installed"):
        parse_args(["deepspeed=ds.json"])
