"""`--backend lm-eval`: the missing-extra error, the folding of lm-eval's results dict into our records, the
suite's forms of `lm_eval:`, and the cache key of a local task. (`test_lm_eval_local_run.py` runs local tasks.)"""

from __future__ import annotations

import sys

import pytest

from eaft.evaluate.ifeval import MissingResource
from eaft.evaluate.lm_eval_backend import fold_results, require_lm_eval
from eaft.evaluate.runner import main
from eaft.evaluate.suite import load_suite
from eaft.evaluate.tasks import TaskError, TaskSpec

# The shape `lm_eval.simple_evaluate` returns (0.4.x), trimmed to the keys we read.
RESULTS = {
    "results": {
        "gsm8k": {
            "alias": "gsm8k",
            "name": "gsm8k",
            "sample_len": 50,
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.01,
            "exact_match,flexible-extract": 0.3,
            "exact_match_stderr,flexible-extract": "N/A",
        },
        "ifeval": {
            "alias": "ifeval",
            "prompt_level_strict_acc,none": 0.4,
            "inst_level_strict_acc,none": 0.5,
            "prompt_level_loose_acc,none": 0.45,
            "inst_level_loose_acc,none": 0.55,
        },
        "mmlu_anatomy": {"acc,none": 0.3},
        "mmlu_astronomy": {"acc,none": 0.4},
    },
    "groups": {"mmlu": {"alias": "mmlu", "acc,none": 0.35, "acc_stderr,none": 0.02}},
    "group_subtasks": {"mmlu": ["mmlu_anatomy", "mmlu_astronomy"]},
    "n-shot": {"gsm8k": 5, "ifeval": 0},
    "n-samples": {
        "gsm8k": {"original": 1319, "effective": 50},
        "ifeval": {"original": 541, "effective": 541},
        "mmlu_anatomy": {"original": 135, "effective": 10},
        "mmlu_astronomy": {"original": 152, "effective": 10},
    },
}


def spec(lm_eval: str, metric: str | None = None, name: str | None = None) -> TaskSpec:
    return TaskSpec(
        name=name or f"my_{lm_eval}",
        type=None,
        group="general",
        path=None,
        lm_eval=lm_eval,
        lm_eval_metric=metric,
        source="suite.yaml",
    )


def test_fold_results_scales_and_picks_metrics():
    out = fold_results(
        RESULTS,
        [spec("gsm8k"), spec("ifeval"), spec("mmlu"), spec("gsm8k", "exact_match,flexible-extract", "gsm8k_flex")],
    )
    assert out["my_gsm8k"].score == pytest.approx(25.0) and out["gsm8k_flex"].score == pytest.approx(30.0)
    assert out["my_ifeval"].score == pytest.approx(40.0) and out["my_ifeval"].n == 541
    assert out["my_ifeval"].metrics["inst_level_loose_acc,none"] == pytest.approx(55.0)
    assert out["my_mmlu"].score == pytest.approx(35.0) and out["my_mmlu"].n == 20  # a group: summed subtasks
    gsm = fold_results(RESULTS, [spec("gsm8k")])["my_gsm8k"]
    assert gsm.score == pytest.approx(25.0) and gsm.n == 50 and "5-shot" in gsm.notes
    assert not any("stderr" in k for k in gsm.metrics)
    assert set(gsm.metrics) == {"exact_match,strict-match", "exact_match,flexible-extract"}  # no sample_len


def test_fold_results_scales_only_fractions():
    results = {"results": {"wiki": {"sample_len": 62, "word_perplexity,none": 31.5, "bits_per_byte,none": 0.9,
                                    "acc,none": 0.5}}}  # fmt: skip
    out = fold_results(results, [spec("wiki", "word_perplexity,none")])["my_wiki"]
    assert out.score == pytest.approx(31.5) and out.metrics["bits_per_byte,none"] == pytest.approx(0.9)
    assert out.metrics["acc,none"] == pytest.approx(50.0) and "sample_len" not in out.metrics


def test_fold_results_errors():
    with pytest.raises(TaskError, match="no results for task 'pubmedqa'"):
        fold_results(RESULTS, [spec("pubmedqa")])
    weird = {"results": {"custom": {"acc,none": 0.1, "f1,none": 0.2}}}
    with pytest.raises(TaskError, match="name the one to report with `lm_eval_metric`"):
        fold_results(weird, [spec("custom")])


def test_missing_extra_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "lm_eval" else object())
    with pytest.raises(MissingResource, match=r"pip install 'eaft\[eval\]'"):
        require_lm_eval()
    suite = tmp_path / "s.yaml"
    suite.write_text("general:\n  - {lm_eval: gsm8k}\n")
    assert main(["--suite", str(suite), "--backend", "lm-eval"]) == 2
    assert "needs lm-evaluation-harness" in capsys.readouterr().err


def test_lm_eval_only_task_needs_the_backend(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("general:\n  - {lm_eval: pubmedqa}\n")
    task = load_suite(suite).tasks[0]
    assert task.name == "pubmedqa" and task.type is None and task.lm_eval == "pubmedqa"
    from eaft.evaluate.runner import run_native

    with pytest.raises(TaskError, match="run it with --backend lm-eval"):
        run_native(task, None, None)
