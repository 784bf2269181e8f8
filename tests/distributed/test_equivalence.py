"""Two real processes (torchrun, gloo, CPU) train exactly as one process with the same global batch and accumulation.

Rows of very unequal lengths land on different ranks, so a mean of per-rank means would differ; loss, logged token
statistics and parameters must match the one-process run within fp32 tolerance, fused and unfused.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed.equivalence import VARIANTS, rows, train_variant

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dist") / "results.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(ROOT / "tests" / "distributed" / "equivalence.py"), str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    saved = torch.load(out, weights_only=False)
    assert saved["world_size"] == 2
    return saved["results"]


def test_ranks_hold_unequal_token_counts():
    from eaft.data import encode_conversation  # noqa: F401  (rows() encodes with it)
    from tests.train.tiny import build_tokenizer

    data = rows(build_tokenizer())
    tokens = [sum(1 for x in r["labels"] if x != -100) for r in data]
    rank0 = tokens[0] + tokens[1] + tokens[4] + tokens[5]  # batches 0 and 2 of size 2 (sequential sharding)
    rank1 = tokens[2] + tokens[3] + tokens[6] + tokens[7]
    assert rank1 > 3 * rank0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_ranks_equal_one_process(two_process_results, variant):
    torch.set_num_threads(1)
    single = train_variant(variant, world_size=1)
    dist = two_process_results[variant]
    assert len(dist["logs"]) == len(single["logs"]) > 0
    for got, want in zip(dist["logs"], single["logs"], strict=True):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (variant, key)
    for name, expected in single["params"].items():
        torch.testing.assert_close(dist["params"][name], expected, rtol=1e-5, atol=1e-5, msg=f"{variant}: {name}")
