"""The same LLaMA-Factory YAML trained by LLaMA-Factory itself and by `eaft train`: per-step losses and peak memory.

LLaMA-Factory runs from its own Python environment (`--lf-python`, a venv kept outside the repository, e.g. made
with `python -m venv /work/lf-venv && /work/lf-venv/bin/pip install llamafactory==0.9.5 -c constraints/cpu.txt`);
eaft runs from this one. Both read one YAML (SmolLM2-135M from eaft's converted cache folder, the first `--rows`
GSM8K training rows through a dataset_info.json, template smollm2, LoRA, `use_eaft_loss: true`, `val_size`,
`--steps` optimizer steps, logging every step) in separate processes, one after the other. Each side wraps
`transformers.Trainer` the same way: a step's loss is the sum of its micro-batches' `training_step` values at full
precision (what Trainer logs, before rounding), and the peak memory is the process's peak resident set size while
`Trainer.train` runs (the high-water mark is reset as training starts), with the resident size at that moment
beside it. Row order is the same on both sides: the same seed, split and row count give the same sampler order.

    .venv/bin/python benchmarks/llamafactory_parity.py --lf-python /work/lf-venv/bin/python
    .venv/bin/python benchmarks/llamafactory_parity.py --lf-python /work/lf-venv/bin/python --packing

Acceptance (issue 27): every step's loss within 0.5% relative of LLaMA-Factory's, and eaft's peak within 10% of
LLaMA-Factory's (eaft ≤ 1.10 × LLaMA-Factory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOSS_TOLERANCE = 0.005
MEMORY_TOLERANCE = 0.10


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def instrument_trainer(record: dict) -> None:
    """Wrap transformers.Trainer (either side's) to record per-step losses and the peak RSS of `train`."""
    from transformers import Trainer

    train, training_step, log = Trainer.train, Trainer.training_step, Trainer.log
    pending: list[float] = []

    def measured_train(self, *args, **kwargs):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM, the peak resident set size
        record["rss_at_train_start_mb"] = _status_kb("VmRSS") / 1024
        try:
            return train(self, *args, **kwargs)
        finally:
            record["peak_rss_mb"] = _status_kb("VmHWM") / 1024

    def counted_step(self, *args, **kwargs):
        loss = training_step(self, *args, **kwargs)
        pending.append(float(loss))
        return loss

    def logged(self, logs, *args, **kwargs):
        if "loss" in logs and pending:
            record.setdefault("losses", []).append(sum(pending))
            record.setdefault("logged", []).append(float(logs["loss"]))
            pending.clear()
        return log(self, logs, *args, **kwargs)

    Trainer.train, Trainer.training_step, Trainer.log = measured_train, counted_step, logged


def run_side(side: str, yaml_path: str, out_path: str) -> None:
    """In a child process: train the YAML with LLaMA-Factory or eaft and write the record as JSON."""
    record: dict = {"side": side}
    instrument_trainer(record)
    if side == "lf":
        import yaml
        from llamafactory.train.tuner import run_exp

        run_exp(args=yaml.safe_load(Path(yaml_path).read_text()))
    else:
        from eaft.train.cli import main

        if main([yaml_path]) != 0:
            raise SystemExit("eaft train failed")
    Path(out_path).write_text(json.dumps(record))


def write_inputs(folder: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """The data (first `rows` GSM8K training rows), its dataset_info.json and the YAML both sides read."""

    from eaft.data_root import find_data_root
    from eaft.models import default_model_path

    lines = (find_data_root() / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()[: args.rows]
    data = folder / "data"
    data.mkdir()
    (data / "gsm8k.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    info = {"gsm8k": {"file_name": "gsm8k.jsonl", "columns": {"prompt": "question", "response": "answer"}}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    config = {
        "model_name_or_path": str(default_model_path()),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": 8,
        "lora_target": "all",
        "use_eaft_loss": True,
        "dataset": "gsm8k",
        "dataset_dir": str(data),
        "template": "smollm2",
        "cutoff_len": args.cutoff_len,
        "val_size": args.val_size,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "overwrite_output_dir": True,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1.0e-3,
        "max_steps": args.steps,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
    }
    if args.packing:
        config["packing"] = True
    return data, config


def rows_over_cutoff(data: Path, config: dict) -> tuple[int, int]:
    """(rows whose tokens exceed cutoff_len under the smollm2 template, rows) — the truncation the run exercises."""
    from eaft.data.lf_templates import TEMPLATES
    from eaft.data.llamafactory import conversation_pairs, encode_pairs
    from eaft.data.sources import load_dataset_conversations
    from eaft.models import load_tokenizer

    tokenizer = load_tokenizer(config["model_name_or_path"])
    conversations = load_dataset_conversations("gsm8k", dataset_dir=str(data), compat="llamafactory")
    over = 0
    for messages in conversations:
        system, pairs = conversation_pairs(messages, "gsm8k")
        encoded = encode_pairs(tokenizer, TEMPLATES["smollm2"], system, pairs)
        over += sum(len(s) + len(t) for s, t in encoded) > config["cutoff_len"]
    return over, len(conversations)


def run_child(python: str, side: str, config: dict, folder: Path) -> dict:
    import yaml

    path = folder / f"{side}.yaml"
    path.write_text(yaml.safe_dump({**config, "output_dir": str(folder / f"out-{side}")}))
    out = folder / f"{side}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    if side == "lf":
        env.pop("PYTHONPATH")  # LLaMA-Factory's environment imports nothing from this repository
    command = [python, str(Path(__file__).resolve()), "--side", side, str(path), str(out)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"the {side} run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(out.read_text())


def compare(lf: dict, eaft: dict) -> tuple[list[str], bool]:
    """Markdown lines of the comparison, and whether the acceptance holds."""
    lines = ["| step | LLaMA-Factory | eaft | relative difference |", "|---:|---:|---:|---:|"]
    worst = 0.0
    for step, (a, b) in enumerate(zip(lf["losses"], eaft["losses"], strict=True), start=1):
        relative = (b - a) / a
        worst = max(worst, abs(relative))
        lines.append(f"| {step} | {a:.6f} | {b:.6f} | {relative:+.4%} |")
    ratio = eaft["peak_rss_mb"] / lf["peak_rss_mb"]
    losses_ok, memory_ok = worst <= LOSS_TOLERANCE, ratio <= 1 + MEMORY_TOLERANCE
    lines += [
        "",
        f"largest per-step difference: {worst:.4%} (limit {LOSS_TOLERANCE:.1%}): {'met' if losses_ok else 'MISSED'}",
        f"peak RSS during training: LLaMA-Factory {lf['peak_rss_mb']:.0f} MB (RSS at train start "
        f"{lf['rss_at_train_start_mb']:.0f} MB), eaft {eaft['peak_rss_mb']:.0f} MB (at train start "
        f"{eaft['rss_at_train_start_mb']:.0f} MB): {ratio:.2f}× (limit {1 + MEMORY_TOLERANCE:.2f}×): "
        f"{'met' if memory_ok else 'MISSED'}",
    ]
    return lines, losses_ok and memory_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", nargs=3, metavar=("SIDE", "YAML", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--lf-python", help="the Python of an environment where llamafactory 0.9.5 imports")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--cutoff-len", type=int, default=160)
    parser.add_argument("--val-size", type=float, default=0.125)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--packing", action="store_true", help="packing: true in the YAML")
    args = parser.parse_args()
    if args.side:
        run_side(*args.side)
        return 0
    if not args.lf_python:
        parser.error("--lf-python is required (the Python of an environment with llamafactory 0.9.5)")
    probe = subprocess.run(
        [args.lf_python, "-c", "import llamafactory; print(llamafactory.__version__)"], text=True, capture_output=True
    )
    if probe.returncode != 0:
        print(f"llamafactory does not import with {args.lf_python}: {probe.stderr.strip().splitlines()[-1:]}")
        return 2
    with tempfile.TemporaryDirectory(prefix="lf-parity-") as tmp:
        folder = Path(tmp)
        data, config = write_inputs(folder, args)
        over, total = rows_over_cutoff(data, config)
        lf = run_child(args.lf_python, "lf", config, folder)
        eaft = run_child(sys.executable, "eaft", config, folder)
    lines, ok = compare(lf, eaft)
    print(
        f"LLaMA-Factory {probe.stdout.strip()} vs eaft on one YAML: SmolLM2-135M, {total} GSM8K rows ({over} longer "
        f"than cutoff_len={args.cutoff_len}), val_size={args.val_size}, batch {args.batch_size} × 2 accumulation, "
        f"{args.steps} steps, LoRA r=8, use_eaft_loss, packing={args.packing}, CPU fp32, "
        f"load {os.getloadavg()[0]:.2f}\n"
    )
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
