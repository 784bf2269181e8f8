"""`eaft analyze` end to end: data -> model -> token statistics -> landscapes, summary.json and report.md."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eaft.analysis.gradients import add_objective_columns, build_objectives, required_specs
from eaft.analysis.landscape import Panel, conflict_mask, plot_gradient_landscape, plot_landscape, quantile_thresholds
from eaft.analysis.outputs import write_json, write_table, write_text
from eaft.analysis.report import annotate_top, render_report, set_summary, top_conflict_sequences
from eaft.analysis.tokens import FULL_SPEC, TOPK_SPEC, entropy_column, token_statistics_table
from eaft.fields import option
from eaft.io import atomic_dir, check_replaceable, sha256_file
from eaft.loss import FUSED_CHOICES
from eaft.ownership import own_folder


@dataclass
class AnalyzeConfig:
    """Options of `eaft analyze`; each field is one `--flag` (underscores as dashes)."""

    data: str = option(
        "",
        "Data set, as eaft train's `dataset`: a JSON/JSONL/parquet file or folder, a shipped set (house_calc), or a "
        "name in --dataset-dir's dataset_info.json (e.g. gsm8k_train); comma-separate several.",
    )
    dataset_dir: str | None = option(None, "Folder holding a LLaMA-Factory dataset_info.json (as eaft train's).")
    model: str | None = option(None, "Model: hub id or local folder; default: the embedded SmolLM2-135M-Instruct.")
    adapter: str | None = option(None, "PEFT adapter folder applied on top of the model.")
    format: str = option("auto", "Data format: auto, alpaca, sharegpt, messages or prompt_completion.")
    max_samples: int | None = option(None, "Analyze the first N samples only.")
    cutoff_len: int | None = option(2048, "Keep the first N tokens of each sample (as training does).")
    out: str | None = option(None, "Output folder; default runs/analyze-<date>-<time>.")
    rollouts: int = option(0, "Also let the model answer each prompt K times and analyze those answers (Fig. 1b).")
    max_new_tokens: int = option(256, "Longest rollout, in tokens.")
    temperature: float = option(1.0, "Rollout sampling temperature (1.0 = the model's own distribution).")
    top_p: float = option(1.0, "Rollout nucleus sampling (1.0 = off).")
    seed: int = option(0, "Random seed of the rollouts.")
    entropy: str = option("topk", "Entropy on the landscape axis and for the thresholds: topk (k=20) or full.")
    entropy_quantile: float = option(0.15, "Confident-conflict entropy threshold: this quantile of the data's H̃.")
    prob_quantile: float = option(0.15, "Confident-conflict probability threshold: this quantile of the data's p(y).")
    objectives: list[str] = option((), "Objectives in the gradient landscape besides sft and eaft.", nargs="+")
    objective_param: list[str] = option((), "An objective's parameter, as NAME.KEY=VALUE (repeatable).", append=True)
    grad_stat: str = option("mean", "Gradient landscape cell value: mean or sum of the per-token gradient norms.")
    bins: int = option(50, "Landscape bins per axis.")
    prob_axis: str = option(
        "log", "Landscape probability axis: log (spreads out the small p where confident conflicts lie) or linear."
    )
    top_n: int = option(10, "Samples listed in the report, by conflict density.")
    html: bool = option(True, "Write report.html: the summary, landscapes and a sample browser in one offline page.")
    html_samples: int = option(200, "report.html: embed this many samples with the densest confident conflicts.")
    html_random: int = option(100, "report.html: embed this many other samples too, drawn at random with --seed.")
    table_format: str = option("parquet", "Per-token table format: parquet or jsonl.")
    batch_tokens: int = option(2048, "Padded tokens per forward batch.")
    max_batch: int = option(32, "Samples per forward batch at most.")
    chunk_size: int | None = option(
        None, "Label tokens per statistics chunk, as in eaft train (default: the fused op's budget, else 1024)."
    )
    fused_loss: str = option("auto", "Label logits from the hidden states chunk by chunk (auto/true) or the model's.")
    generate_batch: int = option(8, "Prompts per generation batch.")
    dtype: str = option("float32", "Model dtype: float32, bfloat16 or float16.")
    progress: bool = option(True, "Show progress bars.")

    def __post_init__(self) -> None:
        choices = {
            "entropy": ("topk", "full"),
            "grad_stat": ("mean", "sum"),
            "table_format": ("parquet", "jsonl"),
            "prob_axis": ("linear", "log"),
            "fused_loss": FUSED_CHOICES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("rollouts", "top_n", "html_samples", "html_random"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ValueError(f"--chunk-size must be an integer >= 1, got {self.chunk_size!r}")
        self.objectives, self.objective_param = list(self.objectives), list(self.objective_param)

    def objective_params(self) -> dict[str, dict]:
        import yaml

        params: dict[str, dict] = {}
        for item in self.objective_param:
            name, dot, rest = item.partition(".")
            key, eq, value = rest.partition("=")
            if not (dot and eq and name and key):
                raise ValueError(f"--objective-param {item!r}: expected NAME.KEY=VALUE, e.g. eaft.alpha=0.5")
            params.setdefault(name, {})[key] = yaml.safe_load(value)
        return params


def data_fingerprint(samples: list[dict]) -> str:
    """sha256 of the encoded samples, so that two analyses can be checked to have read the same tokens."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps([s["input_ids"], s["labels"]]).encode())
    return digest.hexdigest()[:16]


def add_token_text(columns: dict[str, np.ndarray], tokenizer) -> dict[str, np.ndarray]:
    ids = columns["token_id"]
    text = {int(i): tokenizer.decode([int(i)]) for i in np.unique(ids)}
    out = dict(columns)
    out["token"] = np.asarray([text[int(i)] for i in ids], dtype=object)
    order = ["sample", "position", "token_id", "token"]
    return {name: out[name] for name in order + [n for n in out if n not in order]}


def encode_samples(config: AnalyzeConfig, tokenizer) -> tuple[list, list[dict]]:
    from eaft.data import encode_conversation
    from eaft.data.sources import load_dataset_conversations

    conversations = load_dataset_conversations(
        config.data, data_format=config.format, dataset_dir=config.dataset_dir, max_samples=config.max_samples
    )
    samples = [encode_conversation(tokenizer, conv, cutoff_len=config.cutoff_len) for conv in conversations]
    return conversations, samples


def analyze_tokens(model, tokenizer, samples, config: AnalyzeConfig, objectives, desc: str) -> dict[str, np.ndarray]:
    """The per-token table of `samples` with every objective's weight and gradient norm."""
    specs = required_specs(objectives, [TOPK_SPEC, FULL_SPEC])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    columns = token_statistics_table(
        model,
        samples,
        specs=specs,
        batch_tokens=config.batch_tokens,
        max_batch=config.max_batch,
        chunk_size=config.chunk_size,
        fused_loss=config.fused_loss,
        pad_id=pad_id,
        progress=config.progress,
        desc=desc,
    )
    if samples and "rollout" in samples[0]:  # rows index the rollouts: map them to (prompt sample, rollout)
        columns["rollout"] = np.asarray([samples[i]["rollout"] for i in columns["sample"]], dtype=np.int64)
        columns["sample"] = np.asarray([samples[i]["sample"] for i in columns["sample"]], dtype=np.int64)
    return add_token_text(add_objective_columns(columns, objectives), tokenizer)


def default_out() -> Path:
    return Path("runs") / time.strftime("analyze-%Y%m%d-%H%M%S")


#: What an analysis folder holds (glob patterns); `--out` may name a folder with these only, as it is replaced whole.
ANALYSIS_FILES = (
    "summary.json",
    "report.md",
    "report.html",
    "*landscape.png",
    "tokens.parquet",
    "tokens.jsonl",
    "rollout_tokens.parquet",
    "rollout_tokens.jsonl",
    ".*.tmp",  # a file an earlier eaft was writing when it was killed
)


def run_analysis(config: AnalyzeConfig, model=None, tokenizer=None) -> dict:
    """Run the whole analysis into `config.out`; returns the summary. `model`/`tokenizer` bypass loading.

    The folder is owned for the whole run (`eaft.ownership`) and appears whole: every file is written into a
    temporary folder beside it, which then replaces it (an earlier analysis's files included).
    """
    out = Path(config.out) if config.out else default_out()
    with own_folder(out, "eaft analyze"):
        check_replaceable(out, ANALYSIS_FILES, "--out")
        return _analyze_into(out, config, model, tokenizer)


def _analyze_into(out: Path, config: AnalyzeConfig, model, tokenizer) -> dict:
    from eaft.models import DEFAULT_MODEL_NAME, is_default, load_model_and_tokenizer, load_tokenizer

    objectives = build_objectives(config.objectives, config.objective_params())
    if model is None or tokenizer is None:
        # the data is read and checked with the tokenizer alone, before the model's weights load
        conversations, samples = encode_samples(config, load_tokenizer(config.model))
        model, tokenizer = load_model_and_tokenizer(config.model, dtype=config.dtype, adapter=config.adapter)
        label = f"{DEFAULT_MODEL_NAME} (embedded default)" if is_default(config.model) else config.model
    else:
        conversations, samples = encode_samples(config, tokenizer)
        label = f"{type(model).__name__} (passed in by the caller)"
    data = analyze_tokens(model, tokenizer, samples, config, objectives, "analyze data")
    axis = entropy_column(TOPK_SPEC if config.entropy == "topk" else FULL_SPEC)
    th = quantile_thresholds(
        data[axis],
        data["prob"],
        entropy_quantile=config.entropy_quantile,
        prob_quantile=config.prob_quantile,
        entropy_column=axis,
    )
    sets = {"data": (data, samples, len(samples))}
    if config.rollouts:
        sets["rollouts"] = _rollout_set(model, tokenizer, conversations, config, objectives)
    summary = {
        "config": {
            **dataclasses.asdict(config),
            "out": str(out),
            "model_label": label,
            "data_fingerprint": data_fingerprint(samples),
        },
        "thresholds": th.to_dict(),
    }
    for name, (columns, seqs, count) in sets.items():
        summary[name] = set_summary(columns, th, list(objectives), count)
        conflicts = conflict_mask(columns[th.entropy_column], columns["prob"], th)
        top = top_conflict_sequences(columns, conflicts, config.top_n)
        lookup = {(s.get("sample", i), s.get("rollout")): s["input_ids"] for i, s in enumerate(seqs)}
        annotate_top(tokenizer, columns, conflicts, top, lambda e, lk=lookup: lk[(e["sample"], e.get("rollout"))])
        summary[name]["top"] = top
    atomic_dir(out, lambda folder: _write_outputs(folder, summary, sets, th, tokenizer, config))
    return summary


def _write_outputs(folder: Path, summary: dict, sets: dict, th, tokenizer, config: AnalyzeConfig) -> None:
    """Every file of the analysis into `folder` (the temporary one); summary.json records each file's sha256,
    so that `--compare` can tell a folder whose files belong together from a mix."""
    summary["files"] = _write_sets(folder, sets, th, config)
    if config.html:
        from eaft.analysis.html import build_report_html

        page, summary["html"] = build_report_html(
            summary, sets, th, tokenizer, folder, most=config.html_samples, random=config.html_random, seed=config.seed
        )
        summary["files"]["html"] = "report.html"
        write_text(folder / "report.html", page)
    write_text(folder / "report.md", render_report(summary))
    summary["sha256"] = {name: sha256_file(folder / name) for name in sorted({*summary["files"].values(), "report.md"})}
    write_json(folder / "summary.json", summary)


def _rollout_set(model, tokenizer, conversations, config: AnalyzeConfig, objectives):
    from eaft.analysis.rollouts import generate_rollouts
    from eaft.data import encode_prompt

    prompts = [encode_prompt(tokenizer, conv) for conv in conversations]
    rollouts = generate_rollouts(
        model,
        tokenizer,
        prompts,
        k=config.rollouts,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        batch_size=config.generate_batch,
        seed=config.seed,
        progress=config.progress,
    )
    return analyze_tokens(model, tokenizer, rollouts, config, objectives, "analyze rollouts"), rollouts, len(rollouts)


def _write_sets(out: Path, sets: dict, th, config: AnalyzeConfig) -> dict[str, str]:
    files = {"landscape": "landscape.png", "gradient_landscape": "gradient_landscape.png"}
    panels = []
    for name, (columns, _, _) in sets.items():
        prefix = "" if name == "data" else "rollout_"
        files[f"{prefix}tokens"] = f"{prefix}tokens.{config.table_format}"
        write_table(out / files[f"{prefix}tokens"], columns)
        grads = {key[5:]: value for key, value in columns.items() if key.startswith("grad_") and key != "grad_norm"}
        panel = Panel("data set" if name == "data" else "rollouts", columns[th.entropy_column], columns["prob"], grads)
        panels.append(panel)
        files[f"{prefix}gradient_landscape"] = f"{prefix}gradient_landscape.png"
        plot_gradient_landscape(
            panel,
            th,
            out / files[f"{prefix}gradient_landscape"],
            bins=config.bins,
            stat=config.grad_stat,
            prob_axis=config.prob_axis,
        )
    plot_landscape(panels, th, out / files["landscape"], bins=config.bins, prob_axis=config.prob_axis)
    return files
