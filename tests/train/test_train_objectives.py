"""End to end on tiny random models: every objective trains, its loss falls, weights move, outputs are written."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from eaft.data import count_labels, encode_conversation, load_conversations
from eaft.objectives import objective_names
from eaft.train.cli import parse_args
from eaft.train.outputs import read_metrics
from eaft.train.run import run_training
from eaft.train.run_dir import RunError
from tests.train.tiny import build_tokenizer

FAST = ["max_steps=8", "logging_steps=2", "save_steps=100", "per_device_train_batch_size=4", "learning_rate=0.01"]


def train(tmp_path, model_dir, data, *overrides, name="run"):
    argv = [f"model={model_dir}", f"dataset={data}", f"output_dir={tmp_path / name}", "val_size=8", *FAST, *overrides]
    return run_training(parse_args(argv))


def logged(run_dir, key):
    return [row[key] for row in read_metrics(run_dir) if key in row and "loss" in row]


@pytest.mark.parametrize("objective", objective_names())
def test_each_objective_trains_lora(tmp_path, tiny_model_dir, chat_data, objective):
    run_dir = train(tmp_path, tiny_model_dir, chat_data, f"objective={objective}")
    for name in ("config.yaml", "metrics.jsonl", "training_curve.png", "report.md", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # LoRA B starts at zero: the weights moved
    losses, ces = logged(run_dir, "loss"), logged(run_dir, "ce")
    assert len(losses) == 4 and ces[-1] < ces[0]
    # −sg(p)·log p grows with p while p < 1/e: DFT's loss (ASFT's too: DFT + a small KL) rises as a random model learns
    if objective in ("dft", "asft"):
        assert losses[-1] > losses[0]
    else:
        assert losses[-1] < losses[0]
    for key in ("mean_entropy", "mean_weight", "conflict_share"):
        assert all(0.0 <= v for v in logged(run_dir, key)), key
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["objective"] == objective and summary["steps"] == 8
    assert summary["heldout"]["after"]["ce"] < summary["heldout"]["before"]["ce"]
    assert "| ce |" in (run_dir / "report.md").read_text()


def test_full_finetuning_sft_kl_uses_a_frozen_copy_and_qwen2(tmp_path, tiny_qwen_dir, chat_data):
    from transformers import AutoModelForCausalLM

    run_dir = train(tmp_path, tiny_qwen_dir, chat_data, "objective=sft_kl", "finetuning=full", "fused_loss=false")
    before = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(run_dir / "model").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert logged(run_dir, "ce")[-1] < logged(run_dir, "ce")[0]


def test_flow_weights_are_cached_in_the_run_directory(tmp_path, tiny_model_dir, chat_data):
    run_dir = train(tmp_path, tiny_model_dir, chat_data, "objective=flow", "objective_args.per=token")
    cache = json.loads((run_dir / "flow_weights.json").read_text())
    assert cache["tau"] > 0 and len(cache["weights"]) == 32
    weights = [w for sample in cache["weights"] for w in sample]
    assert all(0 < w <= 1.5 for w in weights) and max(weights) > min(weights)  # per-token weights differ


def test_fused_and_materialized_paths_agree(tmp_path, tiny_model_dir, chat_data):
    fused = train(tmp_path, tiny_model_dir, chat_data, "objective=eaft", "fused_loss=true", name="fused")
    plain = train(tmp_path, tiny_model_dir, chat_data, "objective=eaft", "fused_loss=false", name="plain")
    assert json.loads((fused / "summary.json").read_text())["loss_path"] == "fused"
    assert json.loads((plain / "summary.json").read_text())["loss_path"] == "materialized logits"
    for key in ("loss", "ce", "mean_weight"):
        assert logged(fused, key) == pytest.approx(logged(plain, key), rel=1e-4, abs=1e-4), key


def test_packing_trains(tmp_path, tiny_model_dir, chat_data):
    run_dir = train(
        tmp_path, tiny_model_dir, chat_data, "packing=true", "cutoff_len=128", "per_device_train_batch_size=1"
    )
    assert logged(run_dir, "ce")[-1] < logged(run_dir, "ce")[0]
    # a packed row holds several samples: a 2-step window (2 rows) sees more label tokens than any 2 samples have
    tokenizer = build_tokenizer()
    most = max(count_labels(encode_conversation(tokenizer, c)) for c in load_conversations(chat_data))
    assert min(logged(run_dir, "label_tokens")) > 2 * most


def test_existing_run_directory_is_not_overwritten_silently(tmp_path, tiny_model_dir, chat_data):
    train(tmp_path, tiny_model_dir, chat_data, "max_steps=2")
    with pytest.raises(RunError, match="already holds files; pass resume=true"):
        train(tmp_path, tiny_model_dir, chat_data, "max_steps=2")
    with pytest.raises(RunError, match=r"finished run \(report.md exists\)"):
        train(tmp_path, tiny_model_dir, chat_data, "max_steps=2", "resume=true")
    run_dir = train(tmp_path, tiny_model_dir, chat_data, "max_steps=2", "overwrite_output_dir=true")
    assert (run_dir / "report.md").is_file()


@pytest.mark.parametrize("fused", ["true", "false"])
def test_evaluation_on_held_out_rows(tmp_path, tiny_model_dir, chat_data, fused):
    run_dir = train(
        tmp_path, tiny_model_dir, chat_data, "max_steps=4", "eval_strategy=steps", "eval_steps=2", f"fused_loss={fused}"
    )
    evals = [row["eval_loss"] for row in read_metrics(run_dir) if "eval_loss" in row]
    assert len(evals) == 2 and evals[-1] < evals[0]


def test_gradient_checkpointing_with_bf16_weights(tmp_path, tiny_model_dir, chat_data):
    run_dir = train(tmp_path, tiny_model_dir, chat_data, "gradient_checkpointing=true", "dtype=bfloat16")
    assert logged(run_dir, "ce")[-1] < logged(run_dir, "ce")[0]
    assert "gradient_checkpointing: true" in (run_dir / "config.yaml").read_text()


def test_flow_trains_with_packing(tmp_path, tiny_model_dir, chat_data):
    # FLOW's weights ride in each example; packed rows must be built after they are attached, or they lack them
    run_dir = train(
        tmp_path,
        tiny_model_dir,
        chat_data,
        "objective=flow",
        "packing=true",
        "cutoff_len=128",
        "per_device_train_batch_size=1",
    )
    weights = logged(run_dir, "mean_weight")
    assert weights and all(0 < w < 1 for w in weights)  # FLOW's exp(-L0/tau) weights, not SFT's 1
