"""`eaft experiment`: a tiny model, 2 objectives x 2 steps, a tiny suite; the table is written, a re-run skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from eaft import experiment as exp
from tests.train.conftest import write_rows
from tests.train.tiny import save_tiny


def write_experiment(tmp_path: Path, runs: list, train_extra: dict | None = None) -> Path:
    model = save_tiny(tmp_path / "tiny")
    data = write_rows(tmp_path / "chat.jsonl", count=16)
    items = [{"question": f"{i} plus {i}?", "choices": ["five", "ok", "dog"], "answer": i % 3} for i in range(3)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    suite = {
        "name": "tiny",
        "target": [{"name": "mc_target", "type": "multiple_choice", "path": "mc.jsonl", "prompt": "Q: {question}\nA:"}],
        "general": [{"name": "mc_general", "type": "multiple_choice", "path": "mc.jsonl", "scoring": "raw"}],
    }
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    train = {
        "model": model,
        "dataset": data,
        "cutoff_len": 64,
        "max_steps": 2,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 100,
        "report_to": "none",
        **(train_extra or {}),
    }
    spec = {"name": "tiny_exp", "out": str(tmp_path / "out"), "train": train, "suite": "suite.yaml", "runs": runs}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_runner_writes_the_table_and_a_rerun_skips_finished_work(tmp_path, monkeypatch):
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    path = write_experiment(tmp_path, ["sft", {"name": "eaft_a2", "objective": "eaft", "objective_args": {"alpha": 2}}])
    assert exp.main([str(path)]) == 0
    out = tmp_path / "out"
    table = json.loads((out / "report" / "forgetting.json").read_text())
    markdown = (out / "report" / "forgetting.md").read_text()
    assert "sft" in markdown and "eaft_a2" in markdown
    assert (out / "report" / "forgetting.png").stat().st_size > 0
    assert json.dumps(table).count("mc_general") >= 1
    for name in ("sft", "eaft_a2"):
        report = (out / "runs" / name / "report.md").read_text()
        assert "steps" in report
        assert (out / "runs" / name / "adapter" / "adapter_config.json").is_file()
        config = yaml.safe_load((out / "runs" / name / "config.yaml").read_text())
        assert config["objective"] == name.split("_")[0]
    assert yaml.safe_load((out / "runs" / "eaft_a2" / "config.yaml").read_text())["objective_args"] == {"alpha": 2}

    calls = []
    monkeypatch.setattr(exp.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    assert exp.main([str(path)]) == 0
    assert calls == []


def test_interrupted_run_is_planned_as_a_resume(tmp_path):
    path = write_experiment(tmp_path, ["sft"])
    experiment = exp.load_experiment(path)
    run_dir = Path(experiment.runs[0].config["output_dir"])
    (run_dir / "checkpoint-1").mkdir(parents=True)
    (run_dir / "checkpoint-1" / "trainer_state.json").write_text("{}")
    train = [s for s in exp.plan(experiment) if s.kind == "train"][0]
    written = yaml.safe_load(Path(train.command[-1]).read_text())
    assert written["resume"] is True and written["output_dir"] == str(run_dir)


def test_launcher_prefixes_training_only(tmp_path):
    path = write_experiment(tmp_path, ["sft"])
    spec = yaml.safe_load(path.read_text())
    spec["launcher"] = "accelerate launch --num_processes 8"
    path.write_text(yaml.safe_dump(spec))
    steps = exp.plan(exp.load_experiment(path))
    train = [s for s in steps if s.kind == "train"][0]
    assert train.command[:6] == ["accelerate", "launch", "--num_processes", "8", "-m", "eaft.cli"]
    assert all(s.command[1:3] == ["-m", "eaft.cli"] for s in steps if s.kind == "eval")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runz": []}, "did you mean 'runs'"),
        ({"runs": [{"objective": "sft", "lr": 1}]}, "unknown key 'lr'"),
        ({"runs": [{"name": "x"}]}, "missing key 'objective'"),
        ({"runs": ["sft", "sft"]}, "unique"),
        ({"suite": "nope.yaml"}, "suite 'nope.yaml' not found"),
        ({"eval_limit": 0}, "eval_limit"),
    ],
)
def test_bad_experiment_files_name_the_key(tmp_path, change, message):
    path = write_experiment(tmp_path, ["sft"])
    spec = yaml.safe_load(path.read_text())
    spec.update(change)
    if "runz" in change:
        del spec["runs"]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(exp.ExperimentError, match=message):
        exp.load_experiment(path)


def test_validate_rejects_a_bad_objective_parameter(tmp_path):
    path = write_experiment(tmp_path, [{"objective": "eaft", "objective_args": {"alpah": 2}}])
    with pytest.raises(ValueError, match="alpha"):
        exp.validate(exp.load_experiment(path))


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "configs" / "experiments").glob("*.yaml") if p.name != "paper_train.yaml")
)
def test_shipped_experiments_are_valid(name, monkeypatch):
    monkeypatch.chdir(REPO)
    experiment = exp.load_experiment(Path("configs") / "experiments" / name)
    exp.validate(experiment)
    if experiment.launcher:
        config_file = experiment.launcher[experiment.launcher.index("--config_file") + 1]
        assert (REPO / config_file).is_file()


def test_paper_recipes_follow_table_4(monkeypatch):
    monkeypatch.chdir(REPO)
    math = exp.load_experiment(Path("configs/experiments/qwen3_4b_instruct_math.yaml"))
    assert [r.config["objective"] for r in math.runs] == ["sft", "eaft", "sft_kl", "flow", "dft", "talr"]
    config = math.runs[0].config
    assert config["learning_rate"] == 1e-5 and config["lr_scheduler_type"] == "cosine"
    assert config["warmup_steps"] == 0.03 and config["num_train_epochs"] == 10 and config["cutoff_len"] == 16384
    num_processes = int(math.launcher[math.launcher.index("--num_processes") + 1])
    assert num_processes * config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 64
    assert math.runs[2].config["objective_args"] == {"beta": 0.5}
    medical = exp.load_experiment(Path("configs/experiments/qwen3_4b_thinking_medical.yaml"))
    assert medical.base_model == "Qwen/Qwen3-4B-Thinking-2507" and math.base_model == "Qwen/Qwen3-4B-Instruct-2507"


def test_cpu_experiment_reads_gsm8k_train(monkeypatch):
    from eaft.train.sources import load_dataset_conversations

    monkeypatch.chdir(REPO)
    config = exp.load_experiment(Path("configs/experiments/smollm2_gsm8k_cpu.yaml")).runs[0].config
    rows = load_dataset_conversations(config["dataset"], dataset_dir=config["dataset_dir"], max_samples=3)
    assert len(rows) == 3 and rows[0][-1]["role"] == "assistant" and "####" in rows[0][-1]["content"]
