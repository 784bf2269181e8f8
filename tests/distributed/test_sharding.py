"""The fused op refuses sharded lm_heads (FSDP, ZeRO-3) by name; example accelerate configs load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eaft.loss import ObjectiveLoss, sharded_head_reason
from eaft.objectives import build_objective
from tests.train.tiny import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "ZeRO-3"),
    ],
)
def test_sharded_launch_refuses_fused_true_and_auto_uses_logits(monkeypatch, env, reason):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    model, objective = build_model(vocab_size=64), build_objective("eaft")
    with pytest.raises(ValueError, match=f"fused_loss=true is not possible: .*{reason}"):
        ObjectiveLoss.for_model(model, objective, fused_loss="true", chunk_size=64)
    path = ObjectiveLoss.for_model(model, objective, fused_loss="auto", chunk_size=64)
    assert not path.fused


def test_zero2_and_plain_ddp_keep_the_fused_path(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    path = ObjectiveLoss.for_model(build_model(vocab_size=64), build_objective("eaft"), fused_loss="auto")
    assert path.fused


def test_a_partitioned_head_weight_is_refused_at_the_step():
    model = build_model(vocab_size=64)
    model.lm_head.weight.ds_id = 7  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    assert "ZeRO-3" in sharded_head_reason(model.lm_head)
    inputs = {"input_ids": torch.randint(0, 64, (1, 5))}
    with pytest.raises(RuntimeError, match="fused_loss cannot run: .*ZeRO-3"):
        ObjectiveLoss(build_objective("sft"), fused=True)(model, inputs, inputs["input_ids"])


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "cpu_ddp"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(CONFIGS / f"{name}.yaml")
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "cpu_ddp": "MULTI_CPU"}.get(name, "DEEPSPEED")
    assert config.distributed_type.value == expected
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
