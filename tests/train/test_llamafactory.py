"""A LLaMA-Factory SFT YAML runs unchanged; keys eaft does not honour are refused by name."""

from __future__ import annotations

import json

import pytest

from eaft.objectives import build_objective
from eaft.train.cli import main, parse_args
from eaft.train.config import ConfigError, build_config

LF_YAML = """\
### model
model_name_or_path: {model}
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 4
lora_target: all
use_eaft_loss: true
eaft_alpha: 2.0

### dataset
dataset: my_math
dataset_dir: {data_dir}
template: qwen
cutoff_len: 256
max_samples: 24
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 0

### output
output_dir: {out}
logging_steps: 2
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none

### train
per_device_train_batch_size: 4
gradient_accumulation_steps: 2
learning_rate: 1.0e-2
max_steps: 4
lr_scheduler_type: cosine
warmup_ratio: 0.1
ddp_timeout: 180000000
resume_from_checkpoint: null
"""


@pytest.fixture
def lf_setup(tmp_path, tiny_model_dir):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rows = [{"question": f"what is {i} plus {i}?", "answer": f"Answer: {2 * i}."} for i in range(40)]
    (data_dir / "math.json").write_text(json.dumps(rows))
    info = {"my_math": {"file_name": "math.json", "columns": {"prompt": "question", "response": "answer"}}}
    (data_dir / "dataset_info.json").write_text(json.dumps(info))
    text = LF_YAML.format(model=tiny_model_dir, data_dir=data_dir, out=tmp_path / "saves")
    path = tmp_path / "llama3_lora_sft.yaml"
    path.write_text(text)
    return path, text


def test_llamafactory_yaml_runs_unchanged(lf_setup, tmp_path):
    path, _ = lf_setup
    config = parse_args([str(path)])
    assert config.eaft.objective == "eaft"
    assert config.eaft.objective_args == {"k": 20, "normalizer": 3.0, "alpha": 2.0}
    assert (config.eaft.finetuning, config.eaft.lora_rank, config.eaft.max_samples) == ("lora", 4, 24)
    assert config.training.warmup_steps == pytest.approx(0.1) and config.training.gradient_accumulation_steps == 2
    assert (config.eaft.compat, config.eaft.template, config.eaft.cutoff_len) == ("llamafactory", "qwen", 256)
    assert config.training.gradient_checkpointing  # LLaMA-Factory's default, reentrant as its use_reentrant_gc
    kwargs = getattr(config.training, "activation_checkpointing_kwargs", None) or {}
    assert (kwargs or config.training.gradient_checkpointing_kwargs) == {"use_reentrant": True}
    assert main([str(path)]) == 0
    summary = json.loads((tmp_path / "saves" / "summary.json").read_text())
    assert summary["objective"] == "eaft" and summary["training_rows"] == 24 and summary["steps"] == 4
    assert (tmp_path / "saves" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("use_eaft_loss: true", "use_eaft_loss: true\nuse_dft_loss: true"), "both true; choose one objective"),
        (("use_eaft_loss: true", "use_eaft_loss: true\nuse_asft_loss: true"), "use_eaft_loss and use_asft_loss"),
        (("eaft_alpha: 2.0", "eaft_alpha: 2.0\nasft_alpha: 0.2"), "asft_alpha is set but use_asft_loss"),
        (("stage: sft", "stage: dpo"), "stage='dpo' is not supported"),
        (("finetuning_type: lora", "finetuning_type: freeze"), "finetuning_type='freeze' is not supported"),
        (("lora_rank: 4", "lora_rank: 4\nquantization_bit: 4"), "'quantization_bit' are not supported"),
        (("template: qwen", "template: qwen\nmodel: other"), "model_name_or_path and model both given"),
        (("template: qwen", "template: qwen\ntrain_on_prompt: true"), r"train_on_prompt=True is not supported.*false"),
        (("template: qwen", "template: qwen\nmask_history: true"), r"mask_history=True is not supported"),
        (("template: qwen", "template: qwen\nflash_attn: fa2"), r"flash_attn='fa2' is not supported.*'sdpa'"),
        (("template: qwen", "template: qwen\nuse_fast_tokenizer: false"), "use_fast_tokenizer=False"),
        (("template: qwen", "template: qwen\ncompat: eaft"), "compat='eaft' contradicts"),
        (("template: qwen", "template: qwen\ndisable_gradient_checkpointing: 1"), "must be true or false"),
    ],
)
def test_llamafactory_keys_that_cannot_be_honoured_are_refused(lf_setup, tmp_path, edit, message):
    _, text = lf_setup
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        parse_args([str(path)])


def test_use_dft_loss_selects_dft(lf_setup, tmp_path):
    _, text = lf_setup
    path = tmp_path / "dft.yaml"
    path.write_text(text.replace("use_eaft_loss: true\neaft_alpha: 2.0", "use_dft_loss: true"))
    assert parse_args([str(path)]).eaft.objective == "dft"


def test_use_asft_loss_selects_asft_with_its_alpha(lf_setup, tmp_path):
    _, text = lf_setup
    path = tmp_path / "asft.yaml"
    path.write_text(text.replace("use_eaft_loss: true\neaft_alpha: 2.0", "use_asft_loss: true\nasft_alpha: 0.25"))
    config = parse_args([str(path)])
    assert (config.eaft.objective, config.eaft.objective_args) == ("asft", {"alpha": 0.25})
    path.write_text(text.replace("use_eaft_loss: true\neaft_alpha: 2.0", "use_asft_loss: true"))
    config = parse_args([str(path)])
    assert (config.eaft.objective, config.eaft.objective_args) == ("asft", {})  # LLaMA-Factory's default α = 0.1
    assert build_objective("asft").alpha == 0.1


def _edited(lf_setup, tmp_path, old: str, new: str):
    _, text = lf_setup
    assert old in text
    path = tmp_path / "edited.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_keys_at_the_values_eaft_already_follows_are_accepted(lf_setup, tmp_path):
    extra = "train_on_prompt: false\nmask_history: false\nuse_fast_tokenizer: true\nflash_attn: sdpa\n"
    config = parse_args([str(_edited(lf_setup, tmp_path, "template: qwen\n", "template: qwen\n" + extra))])
    assert config.eaft.compat == "llamafactory"


def test_disable_gradient_checkpointing_turns_it_off(lf_setup, tmp_path):
    path = _edited(lf_setup, tmp_path, "template: qwen\n", "template: qwen\ndisable_gradient_checkpointing: true\n")
    assert not parse_args([str(path)]).training.gradient_checkpointing


def test_neat_packing_implies_packing_and_packing_alone_is_not_neat(lf_setup, tmp_path):
    path = _edited(lf_setup, tmp_path, "template: qwen\n", "template: qwen\nneat_packing: true\n")
    config = parse_args([str(path)])
    assert (config.eaft.packing, config.eaft.neat_packing) == (True, True)
    path = _edited(lf_setup, tmp_path, "template: qwen\n", "template: qwen\npacking: true\n")
    config = parse_args([str(path)])
    assert (config.eaft.packing, config.eaft.neat_packing) == (True, False)


def test_keys_left_out_take_llamafactory_defaults_and_native_configs_keep_eafts(tmp_path):
    lf = parse_args(["model_name_or_path=default", "dataset=x.jsonl"])
    assert (lf.eaft.cutoff_len, lf.training.learning_rate, lf.training.per_device_train_batch_size) == (2048, 5e-5, 8)
    assert lf.training.gradient_checkpointing and lf.eaft.compat == "llamafactory"
    switched = parse_args(["compat=llamafactory", "model=default", "dataset=x.jsonl", "cutoff_len=64"])
    assert (switched.eaft.compat, switched.eaft.cutoff_len, switched.training.learning_rate) == (
        "llamafactory",
        64,
        5e-5,
    )
    native = parse_args(["model=default", "dataset=x.jsonl"])
    assert (native.eaft.compat, native.eaft.cutoff_len, native.training.learning_rate) == ("eaft", 1024, 1e-4)
    assert native.training.per_device_train_batch_size == 4 and not native.training.gradient_checkpointing


def test_llamafactory_only_keys_are_refused_under_compat_eaft():
    with pytest.raises(ConfigError, match="neat_packing=True applies under compat: llamafactory only"):
        build_config({"model": "default", "neat_packing": True}, "test")
    with pytest.raises(ConfigError, match="compat must be one of eaft, llamafactory"):
        build_config({"model": "default", "compat": "axolotl"}, "test")


def test_a_template_that_does_not_fit_the_model_stops_the_run_naming_both(lf_setup, tmp_path, capsys):
    path = _edited(lf_setup, tmp_path, "template: qwen", "template: llama3")
    assert main([str(path)]) == 2  # bad input, before the model loads
    message = capsys.readouterr().err
    assert "template='llama3' is not one eaft reproduces" in message
    assert "own chat template is ChatML" in message and not (tmp_path / "saves" / "summary.json").exists()


@pytest.mark.parametrize("packing", ["packing: true", "neat_packing: true"])
def test_packed_llamafactory_runs_train(lf_setup, tmp_path, packing):
    path = _edited(lf_setup, tmp_path, "max_steps: 4", f"max_steps: 2\n{packing}\nval_size: 0.25")
    assert main([str(path)]) == 0
    summary = json.loads((tmp_path / "saves" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["heldout"]["rows"] == 6  # ceil(0.25 * 24)


def test_parity_benchmark_judges_every_step_and_the_peak():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "llamafactory_parity.py"
    spec = importlib.util.spec_from_file_location("llamafactory_parity", path)
    parity = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(parity)
    lf = {"losses": [1.0, 2.0], "peak_rss_mb": 1000.0, "rss_at_train_start_mb": 800.0}
    close = {"losses": [1.004, 1.995], "peak_rss_mb": 1090.0, "rss_at_train_start_mb": 700.0}
    lines, ok = parity.compare(lf, close)
    assert ok and "| 1 | 1.000000 | 1.004000 | +0.4000% |" in lines and "1.09×" in lines[-1]
    assert not parity.compare(lf, {**close, "losses": [1.0, 2.02]})[1]  # one step 1% off
    assert not parity.compare(lf, {**close, "peak_rss_mb": 1110.0})[1]  # 1.11× the peak
