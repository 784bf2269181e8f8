"""Multiple-choice log-likelihoods equal a hand-made forward pass, one sequence at a time, on a tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.multiple_choice import MultipleChoiceOptions, build_items, evaluate_multiple_choice
from eaft.evaluate.tasks import TaskError, TaskSpec

from .conftest import fixture_rows, write_jsonl


def naive_logprob(model, tokenizer, context: str, continuation: str) -> tuple[float, int]:
    """log p(continuation | context) from one unpadded forward pass, and the continuation's token count."""
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=True)["input_ids"]
    cont = whole[len(ctx) :]
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(ctx) - 1 + i, t]) for i, t in enumerate(cont)), len(cont)


def task_for(path, **options) -> TaskSpec:
    return TaskSpec(
        name="mc",
        type="multiple_choice",
        group="general",
        path=path,
        options=MultipleChoiceOptions(**options),
        source="test",
    )


def naive_accuracy(model, tokenizer, rows, contexts_of, continuations_of, lengths_of):
    correct = {"raw": 0, "per_char": 0, "per_token": 0}
    all_lps = []
    for row in rows:
        pairs = [
            naive_logprob(model, tokenizer, c, k) for c, k in zip(contexts_of(row), continuations_of(row), strict=True)
        ]
        lps = [lp for lp, _ in pairs]
        all_lps.append(lps)
        scores = {
            "raw": lps,
            "per_char": [lp / n for lp, n in zip(lps, lengths_of(row), strict=True)],
            "per_token": [lp / n for lp, (_, n) in zip(lps, pairs, strict=True)],
        }
        for name, s in scores.items():
            correct[name] += max(range(len(s)), key=s.__getitem__) == int(row["answer"])
    return {f"acc_{k}": 100.0 * v / len(rows) for k, v in correct.items()}, all_lps


def test_choice_scoring_matches_naive_forward(tmp_path, tiny, tiny_model_dir):
    model, tokenizer = tiny
    rows = fixture_rows("arc/arc_easy_test.jsonl", 7)
    path = write_jsonl(tmp_path / "arc.jsonl", rows)
    # a small token budget forces several padded batches of different widths
    outcome = evaluate_multiple_choice(task_for(path, batch_tokens=300), ModelHandle(str(tiny_model_dir)))
    expected, lps = naive_accuracy(
        model,
        tokenizer,
        rows,
        lambda r: [f"Question: {r['question']}\nAnswer:"] * len(r["choices"]),
        lambda r: [" " + c for c in r["choices"]],
        lambda r: [len(c) for c in r["choices"]],
    )
    assert outcome.n == 7 and outcome.metric == "acc_per_char"
    for sample, naive in zip(outcome.samples, lps, strict=True):
        assert sample["logprobs"] == pytest.approx(naive, abs=1e-4)
    assert outcome.metrics == pytest.approx(expected)
    assert outcome.score == outcome.metrics["acc_per_char"]


def test_partial_form_scores_the_shared_continuation(tmp_path, tiny, tiny_model_dir):
    model, tokenizer = tiny
    rows = fixture_rows("winogrande/winogrande_dev.jsonl", 4)
    path = write_jsonl(tmp_path / "wg.jsonl", rows)
    task = task_for(path, contexts="context_options", continuation="continuation", scoring="raw")
    outcome = evaluate_multiple_choice(task, ModelHandle(str(tiny_model_dir)))
    expected, _ = naive_accuracy(
        model,
        tokenizer,
        rows,
        lambda r: r["context_options"],
        lambda r: [" " + r["continuation"]] * 2,
        lambda r: [len(r["continuation"])] * 2,
    )
    assert outcome.metric == "acc_raw" and outcome.metrics == pytest.approx(expected)


def test_letter_format_few_shot_and_templates(tmp_path):
    rows = fixture_rows("mmlu/dev.jsonl", 7)  # 5 abstract_algebra + 2 anatomy
    path = write_jsonl(tmp_path / "mmlu.jsonl", rows)
    task = task_for(
        path,
        choice_format="letter",
        few_shot=2,
        few_shot_match="subject",
        description="The following are questions about {subject}.",
    )
    (line, item), *_ = build_items(dataclasses.replace(task, limit=5))
    shot = rows[1]
    assert item.continuations == [" A", " B", " C", " D"] and item.gold == rows[0]["answer"]
    assert item.contexts[0].startswith(
        "The following are questions about abstract_algebra.\n\n"
        f"{shot['question']}\nA. {shot['choices'][0]}\nB. {shot['choices'][1]}\n"
    )
    assert item.contexts[0].endswith(
        f"{rows[0]['question']}\nA. {rows[0]['choices'][0]}\nB. {rows[0]['choices'][1]}"
        f"\nC. {rows[0]['choices'][2]}\nD. {rows[0]['choices'][3]}\nAnswer:"
    )
    assert item.contexts[0].count("\nAnswer:") == 3  # two solved examples and the question
    with pytest.raises(TaskError, match="asks for 2 few-shot examples with subject='anatomy'"):
        build_items(task)


def test_cluewsc_literal_choices_and_nested_fields(tmp_path):
    rows = fixture_rows("cluewsc/fewclue_cluewsc_test_public.jsonl", 2)
    path = write_jsonl(tmp_path / "wsc.jsonl", rows)
    task = task_for(
        path,
        prompt="{text}\n问题：“{target.span2_text}”指的是“{target.span1_text}”吗？\n答案：",
        choices=["否", "是"],
        target_delimiter="",
    )
    items = build_items(task)
    assert items[0][1].continuations == ["否", "是"] and items[0][1].gold == rows[0]["answer"]
    assert f"“{rows[0]['target']['span2_text']}”指的是“{rows[0]['target']['span1_text']}”" in items[0][1].contexts[0]


def test_bad_rows_name_file_line_and_field(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "q", "choices": ["a", "b"], "answer": 5}],
    )
    with pytest.raises(TaskError, match=r"bad.jsonl:2: answer must be a 0-based index below 2"):
        build_items(task_for(path))
    with pytest.raises(TaskError, match=r"bad.jsonl:1: no field 'stem'"):
        build_items(task_for(path, prompt="{stem}"))
    path.write_text('{"question": "q"}\nnot json\n')
    with pytest.raises(TaskError, match=r"bad.jsonl:2: malformed JSON"):
        build_items(task_for(path))
