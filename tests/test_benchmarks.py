"""The benchmark scripts' own logic (their figures live in docs/, never in a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_goal_sheet_says_met_and_missed_against_ce_with_the_peers_beside():
    gpu = _load("gpu_fused")
    bf16, fp32 = str(torch.bfloat16), str(torch.float32)
    bench = [
        {"method": "ce_materialized", "tokens": 4096, "dtype": bf16, "ms": 10.0, "peak_mb": 4000.0},
        {"method": "fused_triton_sft", "tokens": 4096, "dtype": bf16, "ms": 9.0, "peak_mb": 900.0},  # met
        {"method": "fused_triton_eaft_topk", "tokens": 4096, "dtype": bf16, "ms": 11.0, "peak_mb": 900.0},  # slow
        {"method": "fused_triton_eaft_full", "tokens": 4096, "dtype": bf16, "ms": 9.0, "peak_mb": 1100.0},  # big
        {"method": "liger_flce", "tokens": 4096, "dtype": bf16, "ms": 8.0, "peak_mb": 800.0},
        {"method": "ce_materialized", "tokens": 4096, "dtype": fp32, "ms": 20.0, "peak_mb": 6000.0},
        {"method": "fused_triton_sft", "tokens": 4096, "dtype": fp32, "ms": 19.0, "peak_mb": 1100.0},  # > 1/6
        {"method": "fused_torch_sft", "tokens": 4096, "dtype": fp32, "ms": 1.0, "peak_mb": 1.0},  # not a goal row
    ]
    lines = gpu.goal_sheet(bench)
    assert len(lines) == 4
    assert [line.split(": ")[-1].split(";")[0] for line in lines] == ["met", "MISSED", "MISSED", "MISSED"]
    assert lines[3].startswith("- fused_triton_sft T=4096 torch.float32: time 0.95× ce")
    assert "peers liger_flce 0.80× / 0.200" in lines[0]
    assert "peers" not in lines[3]  # no peer ran in fp32
