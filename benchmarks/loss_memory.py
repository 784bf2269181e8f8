"""Peak memory above the inputs and wall time of one forward+backward of the LM loss from hidden states.

Methods: materialized logits + F.cross_entropy (`ce`), materialized logits + our EAFT loss (`eaft_materialized`,
`causal_lm_objective_loss`), and the fused op (`fused_sft`, `fused_eaft_topk`, `fused_eaft_full`).

Each measurement runs in a fresh Python process (one method, one T), methods one after another, never in
parallel. Memory: the process's peak resident set size (VmHWM) during the forward+backward minus its resident size
(VmRSS) once the inputs exist; the peak is reset just before through /proc/self/clear_refs. That counts what the
torch CPU allocator and malloc really hold, the weight gradient included, so it is what a training step pays.

    .venv/bin/python benchmarks/loss_memory.py                       # T in {2048, 8192}, 3 repeats, Markdown table
    .venv/bin/python benchmarks/loss_memory.py --tokens 2048 --repeats 1 --methods ce fused_eaft_topk
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

METHODS = ("ce", "eaft_materialized", "fused_sft", "fused_eaft_topk", "fused_eaft_full")
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
    if name not in METHODS or (chunk and not (name.startswith("fused") and chunk.isdigit())):
        raise argparse.ArgumentTypeError(f"unknown method {method!r}: one of {METHODS}, fused ones optionally @CHUNK")
    return name, int(chunk) if chunk else None


def worker(method: str, tokens: int, chunk_size: int | None, seed: int = 0) -> dict:
    """One forward+backward of `method` in this process. Returns seconds and MB above the inputs."""
    label = method
    method, chunk_size = split_method(method)[0], split_method(method)[1] or chunk_size
    import torch
    import torch.nn.functional as F

    from eaft.objectives import build_objective, causal_lm_objective_loss, fused_linear_objective
    from eaft.ops.tokens import shift_labels

    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, tokens, HIDDEN, generator=gen).requires_grad_(True)
    weight = (torch.randn(VOCAB, HIDDEN, generator=gen) * HIDDEN**-0.5).requires_grad_(True)
    labels = torch.randint(0, VOCAB, (1, tokens), generator=gen)
    torch.randn(64, 64) @ torch.randn(64, 64)  # BLAS threads up before timing
    eaft_topk, eaft_full = build_objective("eaft"), build_objective("eaft", {"entropy": "full"})
    run = {
        "ce": lambda: F.cross_entropy((hidden @ weight.T).reshape(-1, VOCAB), shift_labels(labels).reshape(-1)),
        "eaft_materialized": lambda: causal_lm_objective_loss(hidden @ weight.T, labels, eaft_topk)[0],
        "fused_sft": lambda: fused_linear_objective(hidden, weight, labels, "sft", chunk_size=chunk_size)[0],
        "fused_eaft_topk": lambda: fused_linear_objective(hidden, weight, labels, eaft_topk, chunk_size=chunk_size)[0],
        "fused_eaft_full": lambda: fused_linear_objective(hidden, weight, labels, eaft_full, chunk_size=chunk_size)[0],
    }[method]
    base_kb = _proc_status_kb("VmRSS")
    _reset_peak_rss()
    start = time.perf_counter()
    loss = run()
    loss.backward()
    seconds = time.perf_counter() - start
    peak_kb = _proc_status_kb("VmHWM")
    assert weight.grad is not None and torch.isfinite(loss)
    return {"method": label, "tokens": tokens, "seconds": seconds, "peak_extra_mb": (peak_kb - base_kb) / 1024}


def measure(method: str, tokens: int, chunk_size: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--tokens", str(tokens)]
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
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    for method in args.methods:
        try:
            split_method(method)  # a typo fails now, not after minutes of measuring
        except argparse.ArgumentTypeError as err:
            parser.error(str(err))
    if args.worker:
        print(json.dumps(worker(args.worker, args.tokens[0], args.chunk_size)))
        return 0
    rows = []
    print(f"load average at start: {os.getloadavg()}", file=sys.stderr)
    for tokens in args.tokens:
        # Repeats outermost: on a shared machine each method then meets the same spread of background load.
        runs = {method: [] for method in args.methods}
        for _ in range(args.repeats):
            for method in args.methods:
                runs[method].append(measure(method, tokens, args.chunk_size))
                last = runs[method][-1]
                print(f"{method} T={tokens}: {last['seconds']:.2f} s, {last['peak_extra_mb']:.0f} MB", file=sys.stderr)
        for method, done in runs.items():
            seconds = statistics.median(r["seconds"] for r in done)
            peak = statistics.median(r["peak_extra_mb"] for r in done)
            rows.append({"method": method, "tokens": tokens, "seconds": seconds, "peak_extra_mb": peak, "runs": done})
    print(f"load average at end: {os.getloadavg()}", file=sys.stderr)
    print("| method | T | time (s) | × ce | peak above inputs (MB) |\n|---|---|---|---|---|")
    for row in rows:
        ce = next((r for r in rows if r["method"] == "ce" and r["tokens"] == row["tokens"]), None)
        ratio = f"{row['seconds'] / ce['seconds']:.2f}" if ce else "–"
        print(f"| {row['method']} | {row['tokens']} | {row['seconds']:.2f} | {ratio} | {row['peak_extra_mb']:.0f} |")
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
