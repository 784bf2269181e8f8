"""`eaft experiment`: a tiny model, 2 objectives x 2 steps, a tiny suite; the table is written, a re-run skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from eaft import experiment as exp
from eaft.experiment import runner
from tests.train.tiny import save_tiny, write_rows, write_tiny_suite


def write_experiment(tmp_path: Path, runs: list, train_extra: dict | None = None) -> Path:
    model = save_tiny(tmp_path / "tiny")
    data = write_rows(tmp_path / "chat.jsonl", count=16)
    write_tiny_suite(tmp_path)
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
    import tqdm as tqdm_module

    bars = []

    class Recorded(tqdm_module.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.first_total = self.total

        def close(self):
            if str(self.desc).startswith("experiment") and not self.disable:  # close() runs again at __del__
                bars.append((self.first_total, self.total, self.n))
            super().close()

    monkeypatch.setattr(tqdm_module, "tqdm", Recorded)
    path = write_experiment(tmp_path, ["sft", {"name": "eaft_a2", "objective": "eaft", "objective_args": {"alpha": 2}}])
    assert exp.main([str(path)]) == 0
    assert bars == [(3, 3, 3)]  # base + 2 runs scored in process: the total is known at the start and never moves
    monkeypatch.undo()
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
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
    monkeypatch.setattr(runner.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    assert exp.main([str(path)]) == 0
    assert calls == []


def test_interrupted_run_is_planned_as_a_resume(tmp_path):
    path = write_experiment(tmp_path, ["sft"])
    experiment = exp.load_experiment(path)
    run_dir = Path(experiment.runs[0].config["output_dir"])
    (run_dir / "checkpoint-1").mkdir(parents=True)
    (run_dir / "checkpoint-1" / "trainer_state.json").write_text("{}")
    train = [s for s in exp.plan(experiment) if s.kind == "train"][0]
    assert not Path(train.command[-1]).exists()  # written only when the step runs: it is what ran
    written = train.config[1]
    assert written["resume"] is True and written["output_dir"] == str(run_dir)


def test_launcher_prefixes_training_only(tmp_path):
    path = write_experiment(tmp_path, ["sft"])
    spec = yaml.safe_load(path.read_text())
    spec["launcher"] = "accelerate launch --num_processes 8"
    path.write_text(yaml.safe_dump(spec))
    assert not exp.load_experiment(path).in_process  # no process of a launched run holds the whole model
    spec["eval_in_process"] = True
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(exp.ExperimentError, match="eval_in_process: false"):
        exp.load_experiment(path)
    del spec["eval_in_process"]
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


@pytest.mark.parametrize("value", ["quick", "quick.yaml", "configs/suites/quick.yaml"])
def test_a_shipped_suite_is_found_from_any_folder(tmp_path, monkeypatch, value):
    """From a wheel there is no configs/ beside the experiment file: a shipped name or configs/ path still works,
    a file beside the experiment wins, and an unknown name lists the shipped suites."""
    from eaft.shipped import configs_dir

    monkeypatch.chdir(tmp_path)
    path = write_experiment(tmp_path, ["sft"])
    spec = yaml.safe_load(path.read_text())
    spec["suite"] = value
    path.write_text(yaml.safe_dump(spec))
    assert exp.load_experiment(path).suite == configs_dir() / "suites" / "quick.yaml"
    (tmp_path / "quick.yaml").write_text((tmp_path / "suite.yaml").read_text())
    spec["suite"] = "quick.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert exp.load_experiment(path).suite == tmp_path / "quick.yaml"
    spec["suite"] = "no_such_suite"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(exp.ExperimentError, match="shipped suites: .*quick"):
        exp.load_experiment(path)


def test_validate_rejects_a_bad_objective_parameter(tmp_path):
    path = write_experiment(tmp_path, [{"objective": "eaft", "objective_args": {"alpah": 2}}])
    with pytest.raises(ValueError, match="alpha"):
        exp.validate(exp.load_experiment(path))


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (REPO / "configs" / "experiments").glob("*.yaml") if p.name != "paper_train.yaml")
)
def test_shipped_experiments_are_valid(name, monkeypatch, stand_in_data_root):
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


def test_cpu_experiment_reads_gsm8k_train(monkeypatch, real_data_root):
    from eaft.data.sources import load_dataset_conversations

    monkeypatch.chdir(REPO)
    config = exp.load_experiment(Path("configs/experiments/smollm2_gsm8k_cpu.yaml")).runs[0].config
    rows = load_dataset_conversations(config["dataset"], dataset_dir=config["dataset_dir"], max_samples=3)
    assert len(rows) == 3 and rows[0][-1]["role"] == "assistant" and "####" in rows[0][-1]["content"]


_REAL_RUN_STEP = runner.run_step


def _train_in_this_process(step, log_dir):
    """run_step, but a training step runs `eaft train` in this process (so a test can interrupt it inside)."""
    from eaft.train import cli as train_cli

    if step.kind != "train":
        return _REAL_RUN_STEP(step, log_dir)
    assert train_cli.main(step.command[step.command.index("train") + 1 :]) == 0


def test_a_kill_during_an_in_process_evaluation_redoes_only_that_point(tmp_path, monkeypatch):
    """2 objectives x points 1, 2 and the end (4), scored in each run's training process; the process is killed
    while it scores eaft's step 2: the re-run trains eaft again and scores step 2 and the end only."""
    from eaft.train.curve_eval import CurveEvaluation

    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    path = write_experiment(tmp_path, ["sft", "eaft"], train_extra={"max_steps": 4, "finetuning": "full"})
    spec = yaml.safe_load(path.read_text())
    spec.update({"eval_steps": [1, 2, 9]})  # step 9 is past the end: not scored
    path.write_text(yaml.safe_dump(spec))
    real_evaluate, scored = CurveEvaluation.evaluate, []

    def killed_at_eaft_step_2(self, model, step):
        if self.plan.series == "eaft" and step == 2:
            folder = self.plan.point_dir(step) / "samples"
            folder.mkdir(parents=True)
            (folder / "mc_target.jsonl").write_text("{}\n")  # what a kill mid-write leaves
            raise KeyboardInterrupt
        scored.append((self.plan.series, step))
        return real_evaluate(self, model, step)

    monkeypatch.setattr(runner, "run_step", _train_in_this_process)
    monkeypatch.setattr(CurveEvaluation, "evaluate", killed_at_eaft_step_2)
    with pytest.raises(KeyboardInterrupt):
        exp.main([str(path)])
    assert scored == [("sft", 1), ("sft", 2), ("sft", 4), ("eaft", 1)]
    out = tmp_path / "out"
    done = {p: (out / "evals" / "eaft" / "step-1" / "results.json").stat().st_mtime_ns for p in ("step-1",)}
    scored.clear()

    def record(self, model, step):
        from eaft.train.curve_eval import point_done

        if not point_done(self.plan.point_dir(step), self.suite):
            scored.append((self.plan.series, step))
        return real_evaluate(self, model, step)

    monkeypatch.setattr(CurveEvaluation, "evaluate", record)
    assert exp.main([str(path)]) == 0
    assert scored == [("eaft", 2), ("eaft", 4)]  # sft untouched, eaft's step 1 not scored twice
    assert (out / "evals" / "eaft" / "step-1" / "results.json").stat().st_mtime_ns == done["step-1"]

    for name in ("sft", "eaft"):
        point = json.loads((out / "evals" / name / "step-1" / "results.json").read_text())
        final = json.loads((out / "evals" / name / "step-4" / "results.json").read_text())
        assert point["curve"] == {"series": name, "step": 1, "family": name}
        assert final["curve"]["step"] == 4 and point["identity"] != final["identity"]
        assert not {"checkpoint-1", "checkpoint-2"} & {p.name for p in (out / "runs" / name).iterdir()}
    front = json.loads((out / "report" / "frontier.json").read_text())
    steps = {s: [p[0] for p in c["points"]] for s, c in front["curves"].items()}
    assert steps == {"sft": [0, 1, 2, 4], "eaft": [0, 1, 2, 4]}
    assert (out / "report" / "timings.md").is_file()
    table = json.loads((out / "report" / "forgetting.json").read_text())
    assert [r["run"] for r in table["rows"]] == ["base", "sft", "eaft"]


def test_checkpoint_curves_resume_after_a_kill_and_write_the_frontier(tmp_path, monkeypatch):
    """eval_in_process: false: 2 objectives x 2 points scored by `eaft eval` from saved checkpoints; killed after
    its 4th step, resumed, then re-run: nothing is redone."""
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    path = write_experiment(tmp_path, ["sft", "eaft"], train_extra={"max_steps": 4})
    spec = yaml.safe_load(path.read_text())
    spec.update({"eval_steps": [2, 9], "keep_checkpoints": False, "eval_in_process": False})
    path.write_text(yaml.safe_dump(spec))

    real_run_step, ran = runner.run_step, []

    def killed_after_four(step, log_dir):
        if len(ran) == 4:
            raise KeyboardInterrupt  # what a kill between two steps leaves on disk
        real_run_step(step, log_dir)
        ran.append(step.name)

    monkeypatch.setattr(runner, "run_step", killed_after_four)
    with pytest.raises(KeyboardInterrupt):
        exp.main([str(path)])
    assert ran == ["base", "sft", "sft/step-2", "sft/step-4"]  # the base, sft's training and both its evals
    ran.clear()
    monkeypatch.setattr(runner, "run_step", lambda step, log_dir: (real_run_step(step, log_dir), ran.append(step.name)))
    assert exp.main([str(path)]) == 0
    assert ran == ["eaft", "eaft/step-2", "eaft/step-4"]  # nothing of the first pass again

    out = tmp_path / "out"
    for name in ("sft", "eaft"):
        point = json.loads((out / "evals" / name / "step-2" / "results.json").read_text())
        final = json.loads((out / "evals" / name / "step-4" / "results.json").read_text())
        assert point["curve"] == {"series": name, "step": 2, "family": name}
        assert final["curve"]["step"] == 4 and point["identity"] != final["identity"]
        assert not list((out / "runs" / name).glob("checkpoint-*"))  # keep_checkpoints: false
    front = json.loads((out / "report" / "frontier.json").read_text())
    assert {s: [p[0] for p in c["points"]] for s, c in front["curves"].items()} == {"sft": [0, 2, 4], "eaft": [0, 2, 4]}
    assert set(front["measures"]) == {"mc_general", "general avg"}
    assert (out / "report" / "frontier.png").stat().st_size > 0 and (out / "report" / "frontier.md").is_file()

    calls = []
    monkeypatch.setattr(runner.subprocess, "call", lambda *a, **k: calls.append(a) or 1)
    assert exp.main([str(path)]) == 0
    assert calls == []


def test_seeds_of_one_setting_form_a_family(tmp_path):
    path = write_experiment(tmp_path, ["sft", {"name": "sft_s1", "objective": "sft", "overrides": {"seed": 1}}, "eaft"])
    spec = yaml.safe_load(path.read_text())
    spec["eval_every"] = 2
    path.write_text(yaml.safe_dump(spec))
    experiment = exp.load_experiment(path)
    assert [r.family for r in experiment.runs] == ["sft", "sft", "eaft"]
    assert [r.config["eval_family"] for r in experiment.runs] == ["sft", "sft", "eaft"]
    assert all(r.config["eval_suite_steps"] == "every:2" for r in experiment.runs)
    assert runner.curve_points(experiment, 7) == [2, 4, 6, 7]
    spec["eval_in_process"] = False
    path.write_text(yaml.safe_dump(spec))
    assert all(r.config["save_steps"] == 2 for r in exp.load_experiment(path).runs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eval_steps": [0, 2]}, "eval_steps: expected a list of positive step numbers"),
        ({"eval_steps": "logarithmic"}, "'geometric'"),
        ({"eval_steps": []}, "at least one step"),
        ({"eval_in_process": "yes"}, "eval_in_process must be"),
        ({"eval_steps": [2], "eval_every": 2}, "not both"),
        ({"eval_every": "often"}, "eval_every must be"),
        ({"keep_checkpoints": "no"}, "keep_checkpoints must be"),
    ],
)
def test_bad_curve_keys_name_the_key(tmp_path, change, message):
    path = write_experiment(tmp_path, ["sft"])
    spec = yaml.safe_load(path.read_text())
    spec.update(change)
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(exp.ExperimentError, match=message):
        exp.load_experiment(path)


def test_a_rotating_checkpoint_limit_is_refused_with_curves(tmp_path):
    path = write_experiment(tmp_path, ["sft"], train_extra={"save_total_limit": 1})
    spec = yaml.safe_load(path.read_text())
    spec.update({"eval_steps": [1], "eval_in_process": False})
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(exp.ExperimentError, match="save_total_limit"):
        exp.load_experiment(path)


def test_an_edited_run_is_refused_and_rerun_trains_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    path = write_experiment(tmp_path, ["sft"])
    assert exp.main([str(path)]) == 0
    stored = tmp_path / "out" / "configs" / "sft.yaml"
    assert yaml.safe_load(stored.read_text())["learning_rate"] == 1e-3
    spec = yaml.safe_load(path.read_text())
    spec["train"]["learning_rate"] = 5e-4
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(exp.ExperimentError, match=r"run 'sft' was trained with other settings \(learning_rate"):
        exp.run_experiment(exp.load_experiment(path))
    plan = exp.describe_plan(exp.load_experiment(path))  # --check names the refusal instead of failing on it
    assert plan[1].startswith("  train sft: refused: ") and "--rerun sft" in plan[1]
    assert plan[-1] == "0 of 2 steps to run; 1 refused: a run now stops at the first of them, naming it"
    assert yaml.safe_load(stored.read_text())["learning_rate"] == 1e-3  # still what ran
    assert exp.main([str(path), "--rerun", "sft"]) == 0
    assert yaml.safe_load(stored.read_text())["learning_rate"] == 5e-4
    assert yaml.safe_load((tmp_path / "out" / "runs" / "sft" / "config.yaml").read_text())["learning_rate"] == 5e-4


def test_a_changed_suite_evaluates_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    path = write_experiment(tmp_path, ["sft"])

    def check() -> list[str]:  # --check: what a run now would do, step by step; it runs nothing
        capsys.readouterr()
        assert exp.main([str(path), "--check"]) == 0
        return capsys.readouterr().out.splitlines()[2:]

    assert check() == ["  eval base: evaluate", "  train sft: train", "2 of 2 steps to run"]
    assert not (tmp_path / "out" / "runs").exists()
    assert exp.main([str(path)]) == 0
    assert check() == ["  eval base: done", "  train sft: done", "0 of 2 steps to run"]
    suite = yaml.safe_load((tmp_path / "suite.yaml").read_text())
    suite["general"][0]["scoring"] = "per_char"
    (tmp_path / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert check() == [
        "  eval base: evaluate again: the suite changed since it ran",
        "  train sft: train again: points 2 are missing or out of date",
        "2 of 2 steps to run",
    ]
    ran = []
    real = runner.run_step
    monkeypatch.setattr(
        runner, "run_step", lambda step, log_dir: (ran.append((step.kind, step.name)), real(step, log_dir))
    )
    assert exp.main([str(path)]) == 0
    assert ran == [("eval", "base"), ("train", "sft")]  # scored in its training process: trained again to score
    result = json.loads((tmp_path / "out" / "evals" / "sft" / "step-2" / "results.json").read_text())
    assert result["tasks"]["mc_general"]["settings"]["options"]["scoring"] == "per_char"


def test_a_second_runner_on_the_same_experiment_is_refused(tmp_path, capsys):
    import subprocess
    import sys

    path = write_experiment(tmp_path, ["sft"])
    holder = subprocess.Popen(  # another live process owns the experiment folder
        [
            sys.executable,
            "-c",
            "import sys, time; from eaft.ownership import own_folder\n"
            f"with own_folder({str(tmp_path / 'out')!r}, 'eaft experiment'):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert exp.main([str(path)]) == 2
        assert "eaft experiment" in capsys.readouterr().err
        assert not (tmp_path / "out" / "runs").exists()  # nothing trained into the owned folder
    finally:
        holder.kill()
        holder.wait()


#: The regime map's experiments (issue 24): rows each reads besides the baseline's 400 GSM8K rows.
REGIME_EXTRA_ROWS = {
    "regime_conflict_100.yaml": 100,
    "regime_conflict_400.yaml": 400,
    "regime_conflict_1200.yaml": 1200,
    "regime_pubmedqa.yaml": 400,
}


@pytest.mark.parametrize("name", sorted(REGIME_EXTRA_ROWS))
def test_regime_experiments_read_their_shipped_rows(name, monkeypatch):
    """The conflict and PubMedQA rows the regime files name exist in the repository, in the numbers intended."""
    from eaft.data.sources import load_dataset_conversations

    monkeypatch.chdir(REPO)
    config = exp.load_experiment(Path("configs/experiments") / name).runs[0].config
    shipped = [part for part in config["dataset"].split(",") if part != "gsm8k_train"]
    rows = load_dataset_conversations(
        ",".join(shipped), dataset_dir=config["dataset_dir"], max_samples=config["max_samples"]
    )
    assert len(rows) == REGIME_EXTRA_ROWS[name]
    assert all(conv[-1]["role"] == "assistant" and conv[-1]["content"].strip() for conv in rows)
    assert ("gsm8k_train" in config["dataset"]) == name.startswith("regime_conflict")


def test_pubmedqa_target_is_the_shipped_official_test_rows(monkeypatch, stand_in_data_root):
    """The target rows ship in the repository (the general tasks' data root is a stand-in: not read here)."""
    from eaft.evaluate.suite import load_suite

    monkeypatch.chdir(REPO)
    suite = load_suite(Path("configs/suites/pubmedqa_frontier.yaml"))
    (target,) = suite.group("target")
    rows = [json.loads(line) for line in target.path.read_text(encoding="utf-8").split("\n") if line]
    assert target.name == "pubmedqa_fit" and len(rows) == 40 and all(r["long_answer"] and r["question"] for r in rows)
    train = REPO / "configs/experiments/data/regimes/pubmedqa_train.jsonl"
    train_ids = {json.loads(line)["id"] for line in train.read_text(encoding="utf-8").split("\n") if line}
    assert not train_ids & {r["id"] for r in rows}  # no test question is trained on
