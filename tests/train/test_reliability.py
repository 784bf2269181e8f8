"""Reliability of `eaft train`: non-finite values stop a run, a collapse is reported, every kill point resumes to
the uninterrupted run's numbers, failed starts can be retried, and bad input is named before the model loads."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from eaft.train import run as run_module
from eaft.train.guard import NonFiniteError, RunGuard
from eaft.train.outputs import read_metrics
from eaft.train.run_dir import RunError


def argv(model_dir, data, run_dir, *extra):
    args = [f"model={model_dir}", f"dataset={data}", f"output_dir={run_dir}", "objective=eaft", "val_size=0"]
    args += ["max_steps=6", "logging_steps=1", "save_steps=2", "per_device_train_batch_size=4"]
    return [*args, "learning_rate=0.01", "seed=3", *extra]


def train(args):
    from eaft.train.cli import parse_args

    return run_module.run_training(parse_args(args))


def losses(run_dir: Path) -> dict[int, float]:
    """step -> logged loss (one row a step; a resumed run must not log a step twice)."""
    rows = [row for row in read_metrics(run_dir) if "loss" in row]
    assert len({row["step"] for row in rows}) == len(rows)
    return {row["step"]: row["loss"] for row in rows}


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model_dir, chat_data) -> Path:
    """The uninterrupted run every resumed run is compared with."""
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    train(argv(tiny_model_dir, chat_data, run_dir))
    return run_dir


def poison_loss_from(monkeypatch, step: int) -> None:
    """From optimizer step `step` on, the training loss (and so the gradients and weights) turns NaN; the weights
    before it are sound (the pre-save check of the weights after step `step` - 1 sees a finite loss)."""
    from eaft.train.trainer import ObjectiveTrainer

    real = ObjectiveTrainer.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = real(self, model, inputs, return_outputs, num_items_in_batch)
        return loss * math.nan if self.state.global_step + 1 >= step and model.training else loss

    monkeypatch.setattr(ObjectiveTrainer, "compute_loss", compute_loss)


def test_a_non_finite_loss_stops_the_run_and_it_resumes_from_the_last_finite_checkpoint(
    tmp_path, tiny_model_dir, chat_data, whole, monkeypatch
):
    run_dir = tmp_path / "run"
    poison_loss_from(monkeypatch, step=3)
    with pytest.raises(NonFiniteError, match=r"step 3: .*not finite.*resume=true continues from .*checkpoint-2"):
        train(argv(tiny_model_dir, chat_data, run_dir))
    assert not (run_dir / "report.md").exists() and not (run_dir / "adapter").exists()
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]  # strict JSON
    assert rows[-1]["step"] == 3 and rows[-1]["loss"] is None and rows[-1]["grad_norm"] is None
    monkeypatch.undo()
    train(argv(tiny_model_dir, chat_data, run_dir, "resume=true"))
    assert losses(run_dir) == pytest.approx(losses(whole), abs=1e-4)


def test_non_finite_weights_are_never_saved(tmp_path, tiny_model_dir, chat_data):
    run_dir = tmp_path / "run"
    blow_up = ["learning_rate=1e30", "max_grad_norm=0", "save_steps=1", "objective=sft"]
    with pytest.raises(NonFiniteError, match=r"lower learning_rate \(now 1e\+30\).*max_grad_norm > 0"):
        train(argv(tiny_model_dir, chat_data, run_dir, *blow_up))
    for checkpoint in run_dir.glob("checkpoint-*"):
        from safetensors.torch import load_file

        weights = load_file(checkpoint / "adapter_model.safetensors")
        assert all(bool(t.isfinite().all()) for t in weights.values())
    assert not (run_dir / "report.md").exists()


def test_allow_non_finite_trains_on_as_transformers_does(tmp_path, tiny_model_dir, chat_data, monkeypatch):
    poison_loss_from(monkeypatch, step=5)
    run_dir = train(argv(tiny_model_dir, chat_data, tmp_path / "run", "allow_non_finite=true"))
    assert (run_dir / "report.md").is_file()


def test_a_collapse_is_a_warning_in_the_report(tmp_path, tiny_model_dir, chat_data, monkeypatch):
    from eaft.train.trainer import ObjectiveTrainer

    real = ObjectiveTrainer.compute_loss
    monkeypatch.setattr(ObjectiveTrainer, "compute_loss", lambda self, *a, **k: real(self, *a, **k) * 0.0)
    run_dir = train(argv(tiny_model_dir, chat_data, tmp_path / "run"))
    report = (run_dir / "report.md").read_text()
    assert "## Warnings" in report and "gradient norm has been 0 in 3 logs running" in report


def test_ce_near_a_uniform_guess_is_a_collapse():
    guard = RunGuard(vocab_size=1000, learning_rate=1e3, max_grad_norm=1.0)
    guard.check_logs(1, {"loss": 2.0, "ce": 2.0, "grad_norm": 0.3}, lambda: None)
    assert guard.warnings == []
    guard.check_logs(5, {"loss": 6.0, "ce": 0.95 * math.log(1000), "grad_norm": 0.3}, lambda: None)
    guard.check_logs(6, {"loss": 6.5, "ce": 0.96 * math.log(1000), "grad_norm": 0.3}, lambda: None)
    assert len(guard.warnings) == 1 and "rose near ln V = 6.908" in guard.warnings[0]
    fresh = RunGuard(vocab_size=1000, learning_rate=1e-4, max_grad_norm=1.0)  # random weights start there
    fresh.check_logs(1, {"loss": 6.9, "ce": 6.9, "grad_norm": 0.3}, lambda: None)
    assert fresh.warnings == []


class Killed(Exception):
    """What a kill leaves on disk, raised in-process at a chosen point."""


@pytest.mark.parametrize("point", ["before_first_checkpoint", "after_last_checkpoint", "during_final_save"])
def test_every_kill_point_resumes_to_the_uninterrupted_run(
    tmp_path, tiny_model_dir, chat_data, whole, point, monkeypatch
):
    run_dir = tmp_path / "run"
    if point == "before_first_checkpoint":
        from eaft.train.trainer import ObjectiveTrainer

        real_log = ObjectiveTrainer.log

        def killed_at_three(self, logs, start_time=None):
            real_log(self, logs, start_time)
            if self.state.global_step == 3:
                raise Killed()

        monkeypatch.setattr(ObjectiveTrainer, "log", killed_at_three)
        with pytest.raises(Killed):
            train(argv(tiny_model_dir, chat_data, run_dir, "save_steps=100"))
        assert (run_dir / "config.yaml").is_file() and not list(run_dir.glob("checkpoint-*"))
        monkeypatch.undo()
        train(argv(tiny_model_dir, chat_data, run_dir, "resume=true"))  # a failed start: resume starts it anew
    else:
        real_save = run_module.save_final

        def killed_save(model, tokenizer, target_dir, lora):
            if point == "during_final_save":  # the half-written folder atomic_dir leaves behind
                (target_dir / ".adapter-partial").mkdir()
                (target_dir / ".adapter-partial" / "adapter_model.safetensors").write_bytes(b"\0" * 10)
            raise Killed()

        monkeypatch.setattr(run_module, "save_final", killed_save)
        with pytest.raises(Killed):
            train(argv(tiny_model_dir, chat_data, run_dir))
        parts = json.loads((run_dir / "checkpoint-6" / "eaft_state.json").read_text())
        monkeypatch.setattr(run_module, "save_final", real_save)
        train(argv(tiny_model_dir, chat_data, run_dir, "resume=true"))
        assert not (run_dir / "checkpoint-7").exists()  # never trains past max_steps
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == 6 and summary["wall_seconds"] >= parts["wall_seconds"]
    assert losses(run_dir) == pytest.approx(losses(whole), abs=1e-4)
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, whole))
    assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4)


def test_a_resumed_run_reports_train_loss_over_all_its_steps(tmp_path, tiny_model_dir, chat_data, whole, monkeypatch):
    from eaft.train.trainer import ObjectiveTrainer

    run_dir = tmp_path / "run"
    real_save = ObjectiveTrainer._save_checkpoint

    def killed_after_checkpoint_four(self, model, trial):
        real_save(self, model, trial)
        if self.state.global_step == 4:
            raise Killed()

    monkeypatch.setattr(ObjectiveTrainer, "_save_checkpoint", killed_after_checkpoint_four)
    with pytest.raises(Killed):
        train(argv(tiny_model_dir, chat_data, run_dir))
    monkeypatch.undo()
    train(argv(tiny_model_dir, chat_data, run_dir, "resume=true"))
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, whole))
    assert ours["resumed_from"] == "checkpoint-4"
    assert ours["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-4)


def test_a_failed_start_does_not_block_its_retry(tmp_path, tiny_model_dir, chat_data):
    run_dir = tmp_path / "run"
    with pytest.raises(RunError, match=r"lora_target 'q_prj'.*did you mean 'q_proj'"):
        train(argv(tiny_model_dir, chat_data, run_dir, "lora_target=[q_prj]"))
    assert (run_dir / "config.yaml").is_file()  # it got that far
    train(argv(tiny_model_dir, chat_data, run_dir, "lora_target=[q_proj]", "max_steps=2"))
    assert (run_dir / "report.md").is_file()


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (["objective_args.k=100000"], RunError, r"objective_args.k=100000: larger than the model's vocabulary"),
        (["model=/no/such/dir"], RunError, r"model='/no/such/dir': no such local folder"),
    ],
)
def test_model_errors_name_the_key(tmp_path, tiny_model_dir, chat_data, extra, error, message):
    with pytest.raises(error, match=message):
        train(argv(tiny_model_dir, chat_data, tmp_path / "run", *extra))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"instruction": "h\xe9", "output": "x"}\n', r"rows.jsonl:1: not UTF-8 text"),
        (b"\x00\x01\x02\xff\xfe", r"rows.jsonl:1: not UTF-8 text"),
    ],
)
def test_data_is_checked_before_the_model_loads(tmp_path, tiny_model_dir, content, message, monkeypatch):
    from eaft.data import DataError

    (tmp_path / "rows.jsonl").write_bytes(content)
    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("the model loaded before the data"))
    with pytest.raises(DataError, match=message):
        train(argv(tiny_model_dir, tmp_path / "rows.jsonl", tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing written either


def test_a_byte_order_mark_is_accepted(tmp_path):
    from eaft.data.load import load_conversations

    (tmp_path / "rows.jsonl").write_bytes(b'\xef\xbb\xbf{"instruction": "hi", "output": "yo"}\n')
    (tmp_path / "rows.json").write_bytes(b'\xef\xbb\xbf[{"instruction": "hi", "output": "yo"}]')
    for name in ("rows.jsonl", "rows.json"):
        assert load_conversations(str(tmp_path / name))[0][1] == {"role": "assistant", "content": "yo"}


def test_an_empty_parquet_and_a_mistyped_local_path_are_named(tmp_path, monkeypatch):
    from eaft.data import DataError
    from eaft.data.load import load_conversations

    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.parquet: not a readable parquet file"):
        load_conversations(str(tmp_path / "empty.parquet"))
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"data/goodd: no such file or folder"):
        load_conversations("data/goodd")  # not sent to the hub as the id data/goodd


def test_outputs_have_normal_permissions(tmp_path, tiny_model_dir, chat_data):
    old = os.umask(0o022)
    try:
        run_dir = train(argv(tiny_model_dir, chat_data, tmp_path / "run", "max_steps=2"))
    finally:
        os.umask(old)
    for name in ("config.yaml", "report.md", "summary.json", "metrics.jsonl", "adapter/adapter_config.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((run_dir / "adapter").stat().st_mode) == 0o755


def test_a_run_of_zero_steps_is_refused_before_the_model_loads(tmp_path, tiny_model_dir, chat_data, monkeypatch):
    from types import SimpleNamespace

    from eaft.train.config import ConfigError

    monkeypatch.setattr(run_module, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(ConfigError, match=r"num_train_epochs=0 with max_steps=-1 trains no step"):
        train(argv(tiny_model_dir, chat_data, tmp_path / "run", "max_steps=-1", "num_train_epochs=0"))
    assert not (tmp_path / "run").exists()
    schedule = SimpleNamespace(
        per_device_train_batch_size=4,
        world_size=1,
        gradient_accumulation_steps=1,
        max_steps=-1,
        num_train_epochs=0.0,
        learning_rate=1e-4,
        lr_scheduler_type="linear",
        warmup_steps=0,
    )
    with pytest.raises(RunError, match="the schedule has no optimizer step"):  # the same, built from Python
        run_module.planned_steps(schedule, rows=40)


def test_weights_that_diverge_in_the_last_step_are_caught_before_they_are_saved(tmp_path, tiny_model_dir, chat_data):
    run_dir = tmp_path / "run"
    one_step = ["learning_rate=1e30", "max_grad_norm=0", "max_steps=1", "objective=sft"]
    # step 1 logs a finite loss (computed before its update); the update leaves finite weights of ~1e30
    with pytest.raises(NonFiniteError, match=r"step 1: the loss at the weights about to be saved as the .* is nan"):
        train(argv(tiny_model_dir, chat_data, run_dir, *one_step))
    assert [row["loss"] for row in read_metrics(run_dir) if "loss" in row] == [pytest.approx(5.9, abs=0.5)]
    assert not (run_dir / "adapter").exists() and not (run_dir / "report.md").exists()
    assert not list(run_dir.glob("checkpoint-*/adapter_model.safetensors"))


def test_a_learning_rate_of_zero_is_a_warning_in_the_report(tmp_path, tiny_model_dir, chat_data):
    run_dir = train(argv(tiny_model_dir, chat_data, tmp_path / "run", "learning_rate=0", "max_steps=2"))
    assert "learning_rate=0: no weight can change" in (run_dir / "report.md").read_text()
