"""The Triton kernels compile for a GPU (sm_90, PTX and cubin through the wheel's ptxas) without one.

The interpreter tests check the math; this checks what only the compiler enforces (constexpr globals, types of
loop-carried values, pointer arithmetic), so that the kernels' first GPU run does not fail on compilation.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") == "1",
    reason="needs triton installed and not in interpreter mode (pip install -e '.[gpu]')",
)

STATS = {"z_ptr": "*{t}", "z_stride": "i64", "target_ptr": "*i64", "ref_ptr": "*{t}", "ref_stride": "i64"}
STATS |= {"lse_ptr": "*fp32", "logprob_ptr": "*fp32", "entropy_ptr": "*fp32", "kl_ptr": "*fp32", "vocab": "i32"}
GRAD = {"z_ptr": "*{t}", "z_stride": "i64", "grad_ptr": "*{t}", "grad_stride": "i64", "target_ptr": "*i64"}
GRAD |= {"lse_ptr": "*fp32", "grad_logprob_ptr": "*fp32", "ref_ptr": "*{t}", "ref_stride": "i64"}
GRAD |= {"kl_ptr": "*fp32", "grad_kl_ptr": "*fp32", "vocab": "i32"}


def compile_kernel(fn, signature: dict, dtype: str, constexprs: dict):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {name: kind.format(t=dtype) for name, kind in signature.items()} | dict.fromkeys(constexprs, "constexpr")
    source = ASTSource(fn, sig, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_kernels_compile_for_sm90(dtype, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))  # compile afresh, not from a cache
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")
    from eaft.ops.triton import kernels

    for has_ref, full in ((True, True), (False, False)):
        flags = {"HAS_REF": has_ref, "FULL_ENTROPY": full, "BLOCK": 4096}
        assert compile_kernel(kernels.statistics_kernel, STATS, dtype, flags).asm["cubin"]
    for has_kl in (True, False):
        flags = {"HAS_KL": has_kl, "BLOCK": 4096}
        assert compile_kernel(kernels.logits_grad_kernel, GRAD, dtype, flags).asm["cubin"]
