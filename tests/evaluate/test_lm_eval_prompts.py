"""The shipped task files build lm-evaluation-harness's own prompts. For each task file with an lm-eval counterpart,
the (context, continuation) pairs eaft scores equal the requests that lm-eval's task builds from the same rows, and
the character counts behind per_char are those of lm-eval's choices (its acc_norm). lm-eval's task YAMLs and code
are used as installed; only the data set is pointed at a local copy of the rows, in the hub data set's layout."""

from __future__ import annotations

import json
import string
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from eaft.evaluate.multiple_choice import build_items
from eaft.evaluate.suite import load_suite

from .conftest import FIXTURE_DATA, write_jsonl

lm_eval = pytest.importorskip("lm_eval")

TASK_FILES = Path(__file__).resolve().parents[2] / "configs" / "suites" / "tasks"
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
LETTERS = string.ascii_uppercase


# The data root's rows back in the layout of the hub data set each lm-eval task reads (see shared/data/README.md).
def arc_doc(row: dict) -> dict:
    labels = list(LETTERS[: len(row["choices"])])
    choices = {"text": row["choices"], "label": labels}
    return {"id": str(row["id"]), "question": row["question"], "choices": choices, "answerKey": labels[row["answer"]]}


def piqa_doc(row: dict) -> dict:
    return {"goal": row["question"], "sol1": row["choices"][0], "sol2": row["choices"][1], "label": row["answer"]}


def hellaswag_doc(row: dict) -> dict:
    keys = ("activity_label", "ctx_a", "ctx_b", "source_id", "split_type")
    return {**{k: row[k] for k in keys}, "ind": row["id"], "ctx": row["context"], "endings": row["choices"],
            "split": "val", "label": str(row["answer"])}  # fmt: skip


def winogrande_doc(row: dict) -> dict:
    """The data root holds llm-foundry's partial form of WinoGrande: `context_options` = the sentence up to the
    blank with each option filled in, `continuation` = the rest. The sentence and options are read back from it."""
    first, second = row["context_options"]
    shared = len(first)
    while not second.startswith(first[:shared]):
        shared -= 1
    sentence = f"{first[:shared]}_ {row['continuation']}"
    return {
        "sentence": sentence,
        "option1": first[shared:],
        "option2": second[shared:],
        "answer": str(row["answer"] + 1),
    }


def mmlu_doc(row: dict) -> dict:
    return {k: row[k] for k in ("question", "subject", "choices", "answer")}


def medmcqa_doc(row: dict) -> dict:
    options = dict(zip(("opa", "opb", "opc", "opd"), row["choices"], strict=True))
    return {"id": row["id"], "question": row["question"], **options, "cop": row["answer"], "exp": None}


def medqa_doc(row: dict) -> dict:
    endings = {f"ending{i}": text for i, text in enumerate(row["choices"])}
    return {"id": str(row["id"]), "sent1": row["question"], "sent2": "", **endings, "label": row["answer"]}


def pubmedqa_doc(row: dict) -> dict:
    return {"QUESTION": row["question"], "CONTEXTS": row["contexts"], "LABELS": row["context_labels"],
            "LONG_ANSWER": row["long_answer"], "final_decision": row["final_decision"]}  # fmt: skip


class Case(NamedTuple):
    lm_eval_yaml: str  # under lm_eval/tasks
    data_file: str  # under the data root
    to_doc: Callable[[dict], dict]
    shots: int = 0  # lm-eval's num_fewshot, from its `dev` split
    dev_file: str | None = None


CASES = {  # eaft's task file -> its lm-eval counterpart
    "arc_easy": Case("arc/arc_easy.yaml", "arc/arc_easy_test.jsonl", arc_doc),
    "arc_challenge": Case("arc/arc_challenge.yaml", "arc/arc_challenge_test.jsonl", arc_doc),
    "piqa": Case("piqa/piqa.yaml", "piqa/piqa_valid.jsonl", piqa_doc),
    "hellaswag": Case("hellaswag/hellaswag.yaml", "hellaswag/hellaswag_val_1000.jsonl", hellaswag_doc),
    "winogrande": Case("winogrande/default.yaml", "winogrande/winogrande_dev.jsonl", winogrande_doc),
    "mmlu": Case("mmlu/default/mmlu_business_ethics.yaml", "mmlu/test.jsonl", mmlu_doc, 5, "mmlu/dev.jsonl"),
    "mmlu_cloze": Case("mmlu/continuation/mmlu_business_ethics.yaml", "mmlu/test.jsonl", mmlu_doc, 0, "mmlu/dev.jsonl"),
    "medmcqa": Case("medmcqa/medmcqa.yaml", "medmcqa/medmcqa_dev_2816.jsonl", medmcqa_doc),
    "medqa": Case("medqa/medqa.yaml", "medqa/medqa_usmle_4opt_test.jsonl", medqa_doc),
    "pubmedqa": Case("pubmedqa/pubmedqa.yaml", "pubmedqa/pubmedqa_labeled_1000.jsonl", pubmedqa_doc),
}


def read_rows(path: Path, n: int | None = None) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return rows[:n] if n else rows


class LmEvalDoc(NamedTuple):
    requests: list[tuple[str, str]]  # (context, continuation) per choice, in lm-eval's order
    doc: dict  # the document as lm-eval's task processed it


def lm_eval_requests(tmp: Path, case: str, rows: list[dict], dev: list[dict] | None = None) -> tuple[list, Any]:
    """lm-eval's requests per row and its task object, from lm-eval's own YAML for `case` with the data set
    replaced by `rows` (and `dev`, the few-shot split)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    spec = CASES[case]
    docs = write_jsonl(tmp / f"{case}.jsonl", [spec.to_doc(r) for r in rows])
    files = {split: str(docs) for split in ("train", "validation", "test")}
    config: dict[str, Any] = {"include": str(LM_EVAL_TASKS / spec.lm_eval_yaml), "task": f"local_{case}", "tag": []}
    if dev is not None:
        files["dev"] = str(write_jsonl(tmp / f"{case}_dev.jsonl", [spec.to_doc(r) for r in dev]))
        config["num_fewshot"] = spec.shots
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files, "cache_dir": str(tmp)})
    folder = tmp / f"{case}_task"
    folder.mkdir()
    (folder / "task.yaml").write_text(json.dumps(config))  # JSON is YAML
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        manager = TaskManager(include_path=str(folder), include_defaults=False)
        task = get_task_dict([f"local_{case}"], manager)[f"local_{case}"]
    task.build_all_requests(rank=0, world_size=1)
    requests: list[list[tuple[str, str]]] = [[] for _ in rows]
    docs: list[dict] = [{} for _ in rows]
    for instance in sorted(task.instances, key=lambda i: (i.doc_id, i.idx)):
        requests[instance.doc_id].append(tuple(instance.arguments))
        docs[instance.doc_id] = instance.doc  # after the task's own document processing
    return [LmEvalDoc(r, d) for r, d in zip(requests, docs, strict=True)], task


def eaft_items(tmp: Path, case: str, limit: int | None = None):
    """The items the shipped task file builds (its data from the data root: EAFT_DATA or the default)."""
    suite = tmp / "suite.yaml"
    extra = f"    limit: {limit}\n    limit_mode: first\n" if limit else ""
    suite.write_text(f"general:\n  - task: {TASK_FILES / case}.yaml\n{extra}")
    return [item for _, item in build_items(load_suite(suite).tasks[0])]


def assert_same_prompts(items, lm_eval_docs, task) -> None:
    assert len(items) == len(lm_eval_docs) > 0
    for item, (requests, doc) in zip(items, lm_eval_docs, strict=True):
        assert list(zip(item.contexts, item.continuations, strict=True)) == requests
        choices = task.doc_to_choice(doc)
        if not task.multiple_input:  # acc_norm divides by the choice's characters
            assert item.lengths == [len(c) for c in choices]
        if task.multiple_input:  # one context per choice: the text gives the gold index, the target is shared
            gold = task.doc_to_text(doc)
        else:
            target = task.doc_to_target(doc)
            gold = choices.index(target) if isinstance(target, str) and not target.isdigit() else int(target)
        assert item.gold == gold


@pytest.mark.parametrize("case", sorted(CASES))
def test_task_file_builds_lm_evals_prompts(case, tmp_path, monkeypatch):
    monkeypatch.setenv("EAFT_DATA", str(FIXTURE_DATA))
    spec = CASES[case]
    rows = read_rows(FIXTURE_DATA / spec.data_file)
    dev = read_rows(FIXTURE_DATA / spec.dev_file) if spec.dev_file else None
    if case.startswith("mmlu"):
        assert {r["subject"] for r in rows} == {"business_ethics"}  # one lm-eval subtask
        assert any(r["question"] != r["question"].strip() for r in rows)  # the strip is exercised
        dev = [s for s in dev if s["subject"] == "business_ethics"]
    lm_eval_docs, task = lm_eval_requests(tmp_path, case, rows, dev)
    items = eaft_items(tmp_path, case)
    assert_same_prompts(items, lm_eval_docs, task)


def test_hellaswag_preprocessing_is_exercised():
    """The fixture rows hold WikiHow markers and ActivityNet contexts, and the preprocessing changes them."""
    from eaft.evaluate.row_formats import hellaswag

    rows = read_rows(FIXTURE_DATA / "hellaswag" / "hellaswag_val_1000.jsonl")
    assert any("[title]" in r["context"] for r in rows) and any(r["ctx_b"] for r in rows)
    for row in rows:
        out = hellaswag(row)
        assert "[" not in out["query"] and not any("[" in c for c in out["choices"])
    assert any(hellaswag(r)["query"] != f"{r['activity_label']}: {r['context']}" for r in rows)


def test_hellaswag_first_50_items_of_the_data_root(tmp_path, real_data_root):
    """The standard-faithful HellaSwag on 50 real items, WikiHow ones among them: eaft's prompts are lm-eval's."""
    rows = read_rows(real_data_root / "hellaswag" / "hellaswag_val_1000.jsonl", 50)
    assert any(r["source_id"].startswith("wikihow") for r in rows)
    lm_eval_docs, task = lm_eval_requests(tmp_path, "hellaswag", rows)
    items = eaft_items(tmp_path, "hellaswag", limit=50)
    assert_same_prompts(items, lm_eval_docs, task)


@pytest.mark.slow
def test_hellaswag_smollm2_choices_match_lm_eval(tmp_path, real_data_root):
    """SmolLM2 on the first 50 HellaSwag items of the data root, natively and through lm-eval's own `hellaswag`
    task (its YAML and preprocessing, over a local copy of the items): the same per-item choices, raw and per
    character (acc_norm), and the same log-likelihoods."""
    from eaft.evaluate.cache import ResultCache
    from eaft.evaluate.lm import ModelHandle
    from eaft.evaluate.runner import run_suite

    rows = read_rows(real_data_root / "hellaswag" / "hellaswag_val_1000.jsonl", 50)
    docs = write_jsonl(tmp_path / "hellaswag.jsonl", [hellaswag_doc(r) for r in rows])
    files = {split: str(docs) for split in ("train", "validation")}
    config = {"include": str(LM_EVAL_TASKS / "hellaswag" / "hellaswag.yaml"), "task": "hellaswag_local", "tag": []}
    config.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": files})
    task_yaml = tmp_path / "hellaswag_local.yaml"
    task_yaml.write_text(json.dumps(config))
    entry = {"task": str(TASK_FILES / "hellaswag.yaml"), "limit": 50, "lm_eval": str(task_yaml),
             "lm_eval_metric": "acc_norm,none"}  # fmt: skip
    (tmp_path / "suite.yaml").write_text(f"general:\n  - {json.dumps(entry)}\n")
    suite = load_suite(tmp_path / "suite.yaml")
    handle, cache = ModelHandle(None), ResultCache(tmp_path / "cache", enabled=False)
    native = run_suite(suite, handle, cache=cache)["tasks"]["hellaswag"]
    theirs = sorted(run_suite(suite, handle, backend="lm-eval", cache=cache)["tasks"]["hellaswag"]["samples"],
                    key=lambda s: s["doc_id"])  # fmt: skip
    assert len(native["samples"]) == len(theirs) == 50

    def best(scores: list[float]) -> int:
        return max(range(len(scores)), key=scores.__getitem__)

    for ours, sample in zip(native["samples"], theirs, strict=True):
        logprobs = [float(r[0]) for r in sample["filtered_resps"]]
        lengths = [len(c) for c in sample["doc"]["choices"]]  # lm-eval's acc_norm: per character of its choices
        assert ours["logprobs"] == pytest.approx(logprobs, abs=1e-3)
        assert ours["pred"]["raw"] == best(logprobs)
        assert ours["pred"]["per_char"] == best([lp / n for lp, n in zip(logprobs, lengths, strict=True)])
        assert (ours["pred"]["per_char"] == int(sample["target"])) == bool(sample["acc_norm"])
