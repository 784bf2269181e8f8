"""Load time of `eaft analyze`'s report.html in headless Chromium, on synthetic data of a given size.

Builds a page the way `run_analysis` does (`build_report_html` over token columns with real SFT/EAFT/DFT weights,
the landscapes drawn by the same plot functions) for `--samples` samples of `--tokens` label tokens after a
`--prompt`-token prompt, all of them embedded. Each repeat opens the file in a fresh headless Chromium and reads
the page's own mark: `<html data-rendered>` = performance.now() once the first page of samples is on screen
(navigation start to rendered: reading the file, parsing the HTML and the JSON blob, building the spans).
The figure is the median over `--repeats`.

    .venv/bin/python benchmarks/html_load.py                      # 2,000 samples x 200 tokens
    .venv/bin/python benchmarks/html_load.py --fragment per=200   # the largest page the controls offer
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


class WordTokenizer:
    """`decode` over a synthetic vocabulary of words (what build_report_html needs of a tokenizer)."""

    def __init__(self, size: int, rng: np.random.Generator):
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        self.words = [" " + "".join(rng.choice(letters, size=int(rng.integers(1, 9)))) for _ in range(size)]
        self.words[:3] = ["\n", "<|im_end|>", " the"]

    def decode(self, ids) -> str:
        return "".join(self.words[int(i)] for i in ids)


def synthetic_analysis(samples: int, tokens: int, prompt: int, vocab: int, seed: int):
    """Token columns shaped like token_statistics_table's, with objective weights, and the encoded samples."""
    from eaft.analysis.gradients import add_objective_columns, build_objectives

    rng = np.random.default_rng(seed)
    n = samples * tokens
    prob = rng.beta(2.0, 0.6, n).astype(np.float32)  # most label tokens likely, a tail of unlikely ones
    entropy = rng.beta(1.2, 3.0, n).astype(np.float32)
    columns = {
        "sample": np.repeat(np.arange(samples), tokens),
        "position": np.tile(np.arange(prompt, prompt + tokens), samples),
        "token_id": rng.integers(0, vocab, n),
        "prob": prob,
        "logprob": np.log(np.maximum(prob, 1e-30)),
        "logsumexp": rng.normal(8.0, 1.0, n).astype(np.float32),
        "entropy_topk": entropy,
        "entropy_full": np.clip(entropy * 1.1, 0, 1).astype(np.float32),
        "entropy_nats": (entropy * 5.0).astype(np.float32),
        "grad_norm": np.sqrt((1 - prob) ** 2 + 0.1 * (1 - prob)).astype(np.float32),
    }
    objectives = build_objectives(["dft"])
    columns = add_objective_columns(columns, objectives)
    seqs = []
    for s in range(samples):
        ids = np.r_[rng.integers(0, vocab, prompt), columns["token_id"][s * tokens : (s + 1) * tokens]]
        seqs.append({"input_ids": ids.tolist()})
    return columns, seqs, list(objectives)


def build_page(out: Path, args) -> Path:
    from eaft.analysis.html import build_report_html
    from eaft.analysis.landscape import Panel, plot_gradient_landscape, plot_landscape, quantile_thresholds
    from eaft.analysis.outputs import write_text
    from eaft.analysis.report import set_summary

    rng = np.random.default_rng(args.seed)
    tokenizer = WordTokenizer(args.vocab, rng)
    columns, seqs, objectives = synthetic_analysis(args.samples, args.tokens, args.prompt, args.vocab, args.seed)
    columns["token"] = np.asarray([tokenizer.words[i] for i in columns["token_id"]], dtype=object)
    th = quantile_thresholds(columns["entropy_topk"], columns["prob"])
    grads = {name: columns[f"grad_{name}"] for name in objectives}
    panel = Panel("data set", columns["entropy_topk"], columns["prob"], grads)
    plot_landscape([panel], th, out / "landscape.png")
    plot_gradient_landscape(panel, th, out / "gradient_landscape.png")
    files = {"landscape": "landscape.png", "gradient_landscape": "gradient_landscape.png", "tokens": "tokens.parquet"}
    summary = {
        "config": {"model_label": "synthetic", "data": f"{args.samples} x {args.tokens} tokens", "rollouts": 0},
        "thresholds": th.to_dict(),
        "files": files,
        "data": set_summary(columns, th, objectives, args.samples),
    }
    sets = {"data": (columns, seqs, args.samples)}
    start = time.perf_counter()
    page, info = build_report_html(
        summary, sets, th, tokenizer, out, most=args.samples, random=args.samples, seed=args.seed
    )
    print(f"built the page in {time.perf_counter() - start:.1f} s: {info['top'] + info['random']:,} samples embedded")
    path = out / "report.html"
    write_text(path, page)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=200, help="Label tokens per sample.")
    parser.add_argument("--prompt", type=int, default=60, help="Prompt tokens before them.")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fragment", default="", help="URL fragment, e.g. per=200 or sort=nll.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="Folder to keep the page in (default: a temporary one).")
    args = parser.parse_args()

    from eaft.browser import file_url, find_chromium, run_chromium

    if find_chromium() is None:
        raise SystemExit("chromium not found: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="eaft-html-load-") as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        path = build_page(out, args)
        print(f"{path.stat().st_size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        marks = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            dom = run_chromium(file_url(path, args.fragment), dump_dom=True, budget_ms=None)
            wall = time.perf_counter() - start
            mark = re.search(r'<html[^>]*\bdata-rendered="([0-9.]+)"', dom)
            script = re.search(r'data-script-ms="([0-9.]+)"', dom)
            parse = re.search(r'data-parse-ms="([0-9.]+)"', dom)
            if mark is None:
                raise SystemExit("the page never set data-rendered: its script failed")
            spans = len(re.findall(r'<span class="tok(?: c)?" data-j=', dom))
            marks.append(float(mark.group(1)))
            print(
                f"repeat {repeat + 1}: rendered at {marks[-1]:.0f} ms (script {float(script.group(1)):.0f} ms, "
                f"of which JSON.parse {float(parse.group(1)):.0f} ms), "
                f"{spans:,} token spans on the first page; chromium process {wall:.1f} s"
            )
        print(
            f"median time to rendered: {statistics.median(marks):.0f} ms (min {min(marks):.0f}, max {max(marks):.0f})"
        )


if __name__ == "__main__":
    main()
