"""GPU check and benchmark of the fused op: Triton vs torch backends vs materialized logits vs two peers.

Not yet run on a GPU (no device was available when it was written). Part 1 checks the Triton backend against the
materialized loss for every objective (fp32 with TF32 off, and bf16 params). Part 2 times one forward+backward
(median of --repeats after 2 warm-ups) and the peak CUDA memory above the inputs
(torch.cuda.max_memory_allocated), for each method and T, in bf16 and fp32. The peers, each when it imports
(cross-entropy only): Liger-Kernel's `LigerFusedLinearCrossEntropyLoss` and cut-cross-entropy's
`linear_cross_entropy`. Results: a Markdown table on stdout, the goal sheet after it, and JSON at --out.

The goal sheet, for the Triton backend's `sft`, `eaft_topk` and `eaft_full` at each T and dtype (the CPU goals of
`benchmarks/loss_memory.py`, issue "fused loss op: as fast as materialized CE at a sixth of its memory"):
- time ≤ 1.00× `ce_materialized` (bf16 logits upcast to fp32 before `F.cross_entropy`, as transformers does);
- peak ≤ 1/4 of `ce_materialized`'s peak in bf16, ≤ 1/6 in fp32.
Each line says met or missed, with the peers' figures beside it.

    python benchmarks/gpu_fused.py --out gpu_fused.json            # about 3-5 minutes on one H100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from eaft.objectives import build_objective, causal_lm_objective_loss, fused_linear_objective
from eaft.ops.tokens import shift_labels

HIDDEN, VOCAB = 896, 151936
DEVICE = "cuda"  # `--device cpu --hidden 16 --vocab 300` with TRITON_INTERPRET=1 smoke-tests this script
CHECKS = {
    "sft": {},
    "eaft": {},
    "eaft_full": {"entropy": "full"},
    "masked_sft": {},
    "dft": {},
    "talr": {},
    "flow": {},
    "sft_kl": {},
}


def make(tokens: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    hidden = torch.randn(1, tokens, HIDDEN, device=DEVICE, generator=gen).to(dtype)
    weight = (torch.randn(VOCAB, HIDDEN, device=DEVICE, generator=gen) * HIDDEN**-0.5 * 3).to(dtype)
    labels = torch.randint(0, VOCAB, (1, tokens), device=DEVICE, generator=gen)
    labels[torch.rand(1, tokens, device=DEVICE, generator=gen) < 0.2] = -100
    extra = {
        "ref_hidden": hidden + 0.1 * torch.randn_like(hidden),
        "ref_weight": weight,
        "static_weights": torch.rand(1, tokens, device=DEVICE, generator=gen),
    }
    return hidden, weight, labels, extra


def grads_of(fn, hidden, weight):
    h, w = hidden.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)
    loss = fn(h, w)
    loss.backward()
    return loss.detach().float(), h.grad.float(), w.grad.float()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_case(objective, hidden, weight, labels, extra) -> list[float]:
    """Relative errors (loss, hidden grad, weight grad) of the Triton backend against materialized logits."""
    kw = {"static_weights": extra["static_weights"]} if objective.needs_static_weight else {}
    ref_logits = None
    if objective.needs_reference:
        kw |= {"ref_hidden": extra["ref_hidden"], "ref_weight": extra["ref_weight"]}
        ref_logits = extra["ref_hidden"] @ extra["ref_weight"].T

    def materialized(h, w):
        return causal_lm_objective_loss(
            h @ w.T, labels, objective, ref_logits=ref_logits, static_weights=extra["static_weights"]
        )[0]

    def fused(h, w):
        return fused_linear_objective(h, w, labels, objective, backend="triton", **kw)[0]

    ours, theirs = grads_of(fused, hidden, weight), grads_of(materialized, hidden, weight)
    return [rel_err(a, b) for a, b in zip(ours, theirs, strict=True)]


def check(tokens: int) -> list[dict]:
    rows = []
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        hidden, weight, labels, extra = make(tokens, dtype)
        for case, params in CHECKS.items():
            errs = check_case(build_objective(case.split("_full")[0], params), hidden, weight, labels, extra)
            rows.append({"case": case, "dtype": str(dtype), "errors": errs, "ok": max(errs) < tol})
            print(f"check {case:<11} {dtype}: loss/h/W rel err {errs} {'ok' if rows[-1]['ok'] else 'FAIL'}")
    return rows


def methods(labels):
    eaft_topk, eaft_full, sft = build_objective("eaft"), build_objective("eaft", {"entropy": "full"}), "sft"
    table = {
        "ce_materialized": lambda h, w: F.cross_entropy(
            (h @ w.T).float().reshape(-1, VOCAB), shift_labels(labels).reshape(-1)
        ),
        "eaft_materialized": lambda h, w: causal_lm_objective_loss(h @ w.T, labels, eaft_topk)[0],
    }
    for backend in ("torch", "triton"):
        for name, objective in (("sft", sft), ("eaft_topk", eaft_topk), ("eaft_full", eaft_full)):
            table[f"fused_{backend}_{name}"] = lambda h, w, o=objective, b=backend: fused_linear_objective(
                h, w, labels, o, backend=b
            )[0]
    for chunk in (256, 1024, 4096):
        table[f"fused_triton_eaft_topk_chunk{chunk}"] = lambda h, w, c=chunk: fused_linear_objective(
            h, w, labels, eaft_topk, backend="triton", chunk_size=c
        )[0]
    targets = shift_labels(labels).reshape(-1)
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        table["liger_flce"] = lambda h, w: liger(w, h.reshape(-1, HIDDEN), targets)
    except ImportError as err:
        print(f"liger_kernel not importable ({err}); no Liger row", file=sys.stderr)
    try:
        from cut_cross_entropy import linear_cross_entropy

        table["cut_cross_entropy"] = lambda h, w: linear_cross_entropy(h.reshape(-1, HIDDEN), w, targets)
    except ImportError as err:
        print(f"cut_cross_entropy not importable ({err}); no cut-cross-entropy row", file=sys.stderr)
    return table


#: The goal sheet's methods and bounds: time ≤ TIME_GOAL × ce; peak ≤ PEAK_GOAL[dtype] × ce's peak.
GOAL_METHODS = ("fused_triton_sft", "fused_triton_eaft_topk", "fused_triton_eaft_full")
PEERS = ("liger_flce", "cut_cross_entropy")
TIME_GOAL = 1.00
PEAK_GOAL = {str(torch.bfloat16): 1 / 4, str(torch.float32): 1 / 6}


def goal_sheet(bench: list[dict]) -> list[str]:
    """One line per goal method, T and dtype: its time and peak against CE's, met or missed, and the peers'."""
    ce = {(r["tokens"], r["dtype"]): r for r in bench if r["method"] == "ce_materialized"}
    lines = []
    for row in bench:
        key = (row["tokens"], row["dtype"])
        if row["method"] not in GOAL_METHODS or key not in ce:
            continue
        time_ratio, peak_ratio = row["ms"] / ce[key]["ms"], row["peak_mb"] / max(ce[key]["peak_mb"], 1e-9)
        ok = time_ratio <= TIME_GOAL and peak_ratio <= PEAK_GOAL[row["dtype"]]
        peers = [
            f"{r['method']} {r['ms'] / ce[key]['ms']:.2f}× / {r['peak_mb'] / max(ce[key]['peak_mb'], 1e-9):.3f}"
            for r in bench
            if r["method"] in PEERS and (r["tokens"], r["dtype"]) == key
        ]
        lines.append(
            f"- {row['method']} T={row['tokens']} {row['dtype']}: time {time_ratio:.2f}× ce (goal ≤ {TIME_GOAL:.2f}), "
            f"peak {peak_ratio:.3f} of ce's (goal ≤ {PEAK_GOAL[row['dtype']]:.3f}): {'met' if ok else 'MISSED'}"
            + (f"; peers {', '.join(peers)}" if peers else "")
        )
    return lines


def one_run(fn, hidden, weight) -> tuple[float, float]:
    """Milliseconds and peak MB above the inputs of one forward+backward."""
    hidden.grad = weight.grad = None
    if DEVICE != "cuda":
        start = time.perf_counter()
        fn(hidden, weight).backward()
        return (time.perf_counter() - start) * 1e3, 0.0
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn(hidden, weight).backward()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end), (torch.cuda.max_memory_allocated() - base) / 2**20


def bench(tokens: int, dtype: torch.dtype, repeats: int) -> list[dict]:
    hidden, weight, labels, _ = make(tokens, dtype)
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    rows = []
    for name, fn in methods(labels).items():
        runs = [one_run(fn, hidden, weight) for _ in range(repeats + 2)][2:]
        ms, peak = statistics.median(r[0] for r in runs), max(r[1] for r in runs)
        rows.append({"method": name, "tokens": tokens, "dtype": str(dtype), "ms": ms, "peak_mb": peak})
        print(f"{name:<36} T={tokens} {dtype}: {ms:.1f} ms, {peak:.0f} MB", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    global DEVICE, HIDDEN, VOCAB
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--check-tokens", type=int, default=1001)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("gpu_fused.json"))
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--hidden", type=int, default=HIDDEN, help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, default=VOCAB, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    DEVICE, HIDDEN, VOCAB = args.device, args.hidden, args.vocab
    if DEVICE == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_fused.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    results = {"device": name, "torch": torch.__version__, "checks": check(args.check_tokens)}
    results["bench"] = [
        row for t in args.tokens for dt in (torch.bfloat16, torch.float32) for row in bench(t, dt, args.repeats)
    ]
    print("| method | T | dtype | ms | × ce | peak above inputs (MB) |\n|---|---|---|---|---|---|")
    ce_ms = {(r["tokens"], r["dtype"]): r["ms"] for r in results["bench"] if r["method"] == "ce_materialized"}
    for row in results["bench"]:
        ratio = row["ms"] / ce_ms[(row["tokens"], row["dtype"])]
        print(
            f"| {row['method']} | {row['tokens']} | {row['dtype']} | {row['ms']:.1f} | {ratio:.2f} "
            f"| {row['peak_mb']:.0f} |"
        )
    results["goals"] = goal_sheet(results["bench"])
    print("\nGoal sheet (time × ce, peak as a share of ce's):\n" + "\n".join(results["goals"]))
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(args.out)
    return 0 if all(row["ok"] for row in results["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
