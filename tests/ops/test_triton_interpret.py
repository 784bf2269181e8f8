"""The Triton kernels, run by Triton's CPU interpreter (TRITON_INTERPRET=1), against the torch op and the spec.

Triton reads TRITON_INTERPRET when it is first imported (its own library functions are @jit-decorated then), and
transformers' model modules import triton early in a test session. So these checks run in a fresh pytest process
started with TRITON_INTERPRET=1 by `test_interpreter_checks_in_a_fresh_process`; in the parent they are skipped.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eaft.ops.stats import EntropySpec, chunk_logits_grad, chunk_statistics
from tests.ops.cases import CASES, assert_matches, make_inputs, run_fused, run_reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not HAS_TRITON, reason="triton is not installed (pip install -e '.[gpu]'): the Triton path cannot be checked"
)
in_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the fresh TRITON_INTERPRET=1 process of test_interpreter_checks_in_a_fresh_process"
)


@pytest.mark.skipif(INTERPRETED, reason="this is the fresh process")
def test_interpreter_checks_in_a_fresh_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", str(Path(__file__).relative_to(REPO)), "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary


@pytest.fixture(scope="module")
def launcher():
    from eaft.ops.triton import launcher

    return launcher


@pytest.mark.parametrize("mode", ["topk", "full"])
@pytest.mark.parametrize("scale", [1.0, 30.0])
@in_interpreter
def test_kernels_match_the_shared_chunk_math(launcher, mode, scale):
    gen = torch.Generator().manual_seed(int(scale))
    z = torch.randn(6, 300, generator=gen) * scale
    ref_z = z + torch.randn(6, 300, generator=gen) * 2
    targets = torch.randint(0, 300, (6,), generator=gen)
    spec = EntropySpec(mode=mode, k=7)
    expected = chunk_statistics(z, targets, spec, ref_z)
    got = launcher.chunk_statistics(z.clone(), targets, spec, ref_z)
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    g, g_kl = torch.randn(6, generator=gen), torch.rand(6, generator=gen)
    args = (targets, expected[0], g, ref_z, expected[3], g_kl)
    torch.testing.assert_close(launcher.chunk_logits_grad(z.clone(), *args), chunk_logits_grad(z, *args), **_fp32())


# asft's KL(π_ref ‖ π_θ) is not in the kernels: backend "triton" refuses it (tests/ops/test_fused_api.py).
@pytest.mark.parametrize("case", [case for case in CASES if case != "asft"])
@pytest.mark.parametrize("chunk_size", [8])
@in_interpreter
def test_triton_backend_matches_reference(launcher, case, chunk_size):
    inputs, labels = make_inputs(1, 29, 9, 70, seed=len(case))
    ours, ours_grads, _ = run_fused(case, inputs, labels, backend="triton", chunk_size=chunk_size)
    torch_loss, torch_grads, _ = run_fused(case, inputs, labels, backend="torch", chunk_size=chunk_size)
    theirs, their_grads = run_reference(case, inputs, labels)
    assert_matches(ours, theirs)
    assert_matches(ours, torch_loss)
    for mine, torch_grad, ref in zip(ours_grads, torch_grads, their_grads, strict=True):
        assert_matches(mine, ref)
        assert_matches(mine, torch_grad)


@pytest.mark.parametrize("case", ["eaft", "sft_kl"])
@in_interpreter
def test_triton_bf16_logits(launcher, case):
    inputs, labels = make_inputs(2, 17, 16, 96, seed=3, dtype=torch.bfloat16)
    ours, ours_grads, _ = run_fused(case, inputs, labels, backend="triton", chunk_size=8)
    theirs, their_grads = run_reference(case, inputs, labels, upcast=True)
    assert_matches(ours, theirs, torch.bfloat16)
    for mine, ref in zip(ours_grads, their_grads, strict=True):
        assert mine.dtype == torch.bfloat16
        assert_matches(mine, ref, torch.bfloat16)


@in_interpreter
def test_all_ignored(launcher):
    inputs, labels = make_inputs(1, 9, 8, 40)
    labels[:] = -100
    loss, grads, _ = run_fused("talr", inputs, labels, backend="triton")
    assert loss.item() == 0.0 and all(not g.any() for g in grads)


def _fp32():
    return dict(rtol=1e-5, atol=1e-6)


@in_interpreter
@pytest.mark.parametrize("case", ["eaft_full_alpha2", "masked_sft"])
def test_one_chunk_round_shape(launcher, case):
    inputs, labels = make_inputs(2, 16, 16, 128, seed=11)
    ours, ours_grads, _ = run_fused(case, inputs, labels, backend="triton")
    theirs, their_grads = run_reference(case, inputs, labels)
    assert_matches(ours, theirs)
    for mine, ref in zip(ours_grads, their_grads, strict=True):
        assert_matches(mine, ref)
