"""Peak memory above the inputs and wall time of one forward+backward of the LM loss from hidden states.

Methods: materialized logits + F.cross_entropy (`ce`; in bf16 the logits are upcast to fp32 first, as transformers'
loss does), materialized logits + our EAFT loss (`eaft_materialized`, `causal_lm_objective_loss`), the fused op
(`fused_sft`, `fused_eaft_topk`, `fused_eaft_full`; and the batch-global `fused_masked_sft`, `fused_talr`, whose
weights need every token's statistics first, so their chunks' logits are computed twice), and `floor`: the fused
op's three matmuls alone (the logits, the hidden gradient and the weight gradient) at its own chunking and layout,
with no softmax, i.e. the least a chunked op can cost.

Each measurement runs in a fresh Python process (one method, one T), methods one after another, never in
parallel. Memory: the process's peak resident set size (VmHWM) during the forward+backward minus its resident size
(VmRSS) once the inputs exist; the peak is reset just before through /proc/self/clear_refs. That counts what the
torch CPU allocator and malloc really hold, the weight gradient included, so it is what a training step pays.

    .venv/bin/python benchmarks/loss_memory.py                       # T in {2048, 8192}, 3 repeats, Markdown table
    .venv/bin/python benchmarks/loss_memory.py --tokens 2048 --repeats 1 --methods ce fused_eaft_topk
    .venv/bin/python benchmarks/loss_memory.py --dtype bfloat16 --tokens 512 --methods ce fused_eaft_topk floor
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = (
    "ce",
    "eaft_materialized",
    "fused_sft",
    "fused_eaft_topk",
    "fused_eaft_full",
    "fused_masked_sft",
    "fused_talr",
    "floor",
)
DTYPES = ("float32", "bfloat16")
HIDDEN, VOCAB = 896, 151936  # Qwen2.5-0.5B's hidden size and vocabulary


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _reset_peak_rss() -> None:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    Path("/proc/self/clear_refs").write_text("5")


def split_method(method: str) -> tuple[str, int | None]:
    """'fused_eaft_topk@256' -> ('fused_eaft_topk', 256): a fused method at a given chunk size."""
    name, _, chunk = method.partition("@")
    chunked = name.startswith("fused") or name == "floor"
    if name not in METHODS or (chunk and not (chunked and chunk.isdigit())):
        raise argparse.ArgumentTypeError(f"unknown method {method!r}: one of {METHODS}, fused ones optionally @CHUNK")
    return name, int(chunk) if chunk else None


def matmul_floor(hidden, weight, chunk_size: int | None):
    """The fused op's three matmuls per chunk, its layout and weight-gradient accumulation, and nothing else: its
    own gradient accumulator (`eaft.ops.fused._Grads`) fed each chunk's logits as a stand-in gradient."""
    import torch

    from eaft.ops import default_chunk_size
    from eaft.ops.fused import ScaledGrad, _Grads, _Rows

    h = hidden.detach().reshape(-1, HIDDEN)
    w = weight.detach()
    chunk = chunk_size or default_chunk_size(VOCAB, "cpu", w.element_size(), rows=h.shape[0], hidden_size=HIDDEN)
    rows = _Rows(h, w, None, torch.zeros(h.shape[0], dtype=torch.long), None, None, None, None)
    grads = _Grads(rows, (True, True, False))
    buffer = w.new_empty(chunk * VOCAB)
    ones = torch.ones(chunk)
    for sl in rows.chunks(chunk):
        part = h[sl]
        zt = buffer[: VOCAB * part.shape[0]].view(VOCAB, part.shape[0])
        torch.mm(w, part.T, out=zt)  # the logits, transposed, as the CPU math lays them out
        grads.add_chunk(ScaledGrad(zt.T, ones[: part.shape[0]]), sl, rows)  # as the CPU math hands on its gradient
    grad_h, grad_w, _ = grads.finish()
    weight.grad, hidden.grad = grad_w, grad_h.reshape(hidden.shape)
    return None


def worker(method: str, tokens: int, chunk_size: int | None, dtype: str = "float32", seed: int = 0) -> dict:
    """One forward+backward of `method` in this process. Returns seconds and MB above the inputs."""
    label = method
    method, chunk_size = split_method(method)[0], split_method(method)[1] or chunk_size
    import torch
    import torch.nn.functional as F

    from eaft.objectives import build_objective, causal_lm_objective_loss, fused_linear_objective
    from eaft.ops.tokens import shift_labels

    gen = torch.Generator().manual_seed(seed)
    kind = getattr(torch, dtype)
    hidden = torch.randn(1, tokens, HIDDEN, generator=gen).to(kind).requires_grad_(True)
    weight = (torch.randn(VOCAB, HIDDEN, generator=gen) * HIDDEN**-0.5).to(kind).requires_grad_(True)
    labels = torch.randint(0, VOCAB, (1, tokens), generator=gen)
    torch.randn(64, 64).to(kind) @ torch.randn(64, 64).to(kind)  # BLAS threads up before timing
    eaft_topk, eaft_full = build_objective("eaft"), build_objective("eaft", {"entropy": "full"})
    run = {
        "ce": lambda: F.cross_entropy((hidden @ weight.T).float().reshape(-1, VOCAB), shift_labels(labels).reshape(-1)),
        "eaft_materialized": lambda: causal_lm_objective_loss(hidden @ weight.T, labels, eaft_topk)[0],
        "fused_sft": lambda: fused_linear_objective(hidden, weight, labels, "sft", chunk_size=chunk_size)[0],
        "fused_eaft_topk": lambda: fused_linear_objective(hidden, weight, labels, eaft_topk, chunk_size=chunk_size)[0],
        "fused_eaft_full": lambda: fused_linear_objective(hidden, weight, labels, eaft_full, chunk_size=chunk_size)[0],
        # Batch-global weights: a statistics pass, then a gradient pass that recomputes each chunk's logits.
        "fused_masked_sft": lambda: fused_linear_objective(hidden, weight, labels, "masked_sft", chunk_size=chunk_size)[
            0
        ],
        "fused_talr": lambda: fused_linear_objective(hidden, weight, labels, "talr", chunk_size=chunk_size)[0],
        "floor": lambda: matmul_floor(hidden, weight, chunk_size),
    }[method]
    base_kb = _proc_status_kb("VmRSS")
    _reset_peak_rss()
    start = time.perf_counter()
    loss = run()
    if loss is not None:
        loss.backward()
    seconds = time.perf_counter() - start
    peak_kb = _proc_status_kb("VmHWM")
    assert weight.grad is not None and (loss is None or torch.isfinite(loss))
    return {
        "method": label,
        "tokens": tokens,
        "dtype": dtype,
        "seconds": seconds,
        "peak_extra_mb": (peak_kb - base_kb) / 1024,
    }


def measure(method: str, tokens: int, chunk_size: int | None, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--tokens", str(tokens), "--dtype", dtype]
    if chunk_size:
        cmd += ["--chunk-size", str(chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"of {METHODS}; fused ones may end @CHUNK")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=None, help="fused op rows per chunk (default: the op's)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="of the hidden states and the weight")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    for method in args.methods:
        try:
            split_method(method)  # a typo fails now, not after minutes of measuring
        except argparse.ArgumentTypeError as err:
            parser.error(str(err))
    if args.worker:
        print(json.dumps(worker(args.worker, args.tokens[0], args.chunk_size, args.dtype)))
        return 0
    rows = []
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    for tokens in args.tokens:
        # Repeats outermost: on a shared machine each method then meets the same spread of background load.
        runs = {method: [] for method in args.methods}
        for _ in range(args.repeats):
            for method in args.methods:
                runs[method].append(measure(method, tokens, args.chunk_size, args.dtype))
                last = runs[method][-1]
                print(f"{method} T={tokens}: {last['seconds']:.2f} s, {last['peak_extra_mb']:.0f} MB", file=sys.stderr)
        for method, done in runs.items():
            seconds = statistics.median(r["seconds"] for r in done)
            peak = statistics.median(r["peak_extra_mb"] for r in done)
            rows.append({"method": method, "tokens": tokens, "seconds": seconds, "peak_extra_mb": peak, "runs": done})
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    print(f"{args.dtype}, median of {args.repeats}")
    print("| method | T | time (s) | × ce | × floor | peak above inputs (MB) |\n|---|---|---|---|---|---|")
    for row in rows:
        ratios = []
        for other in ("ce", "floor"):
            ref = next((r for r in rows if r["method"] == other and r["tokens"] == row["tokens"]), None)
            ratios.append(f"{row['seconds'] / ref['seconds']:.2f}" if ref else "–")
        print(
            f"| {row['method']} | {row['tokens']} | {row['seconds']:.2f} | {ratios[0]} | {ratios[1]} "
            f"| {row['peak_extra_mb']:.0f} |"
        )
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
