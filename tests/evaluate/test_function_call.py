"""The function_call task type: prompts, scripted replies scored per category, `eaft eval` + `eaft report` on the
tiny model, data errors, the example suite, and SmolLM2 on 50 BFCL `simple` items (slow)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import eaft.evaluate.function_call as fc
from eaft.evaluate.function_call import FunctionCallOptions
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.report import write_report
from eaft.evaluate.runner import main
from eaft.evaluate.suite import load_suite
from eaft.evaluate.tasks import TaskError, TaskSpec

from .conftest import FIXTURE_DATA, build_tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "suites"
SIZES = {"simple": 3, "parallel": 2, "irrelevance": 2}


def copy_head(category: str, n: int, folder: Path) -> None:
    for relative in (f"BFCL_v3_{category}.json", f"possible_answer/BFCL_v3_{category}.json"):
        source = FIXTURE_DATA / "bfcl_v3" / relative
        if source.is_file():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            lines = source.read_text(encoding="utf-8").splitlines(keepends=True)[:n]
            (folder / relative).write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def bfcl_folder(tmp_path) -> Path:
    folder = tmp_path / "bfcl"
    for category, n in SIZES.items():
        copy_head(category, n, folder)
    return folder


def make_task(folder: Path, **options) -> TaskSpec:
    opts = FunctionCallOptions(**{"categories": list(SIZES), "max_new_tokens": 8, **options})
    return TaskSpec(name="bfcl", type="function_call", group="target", path=folder, options=opts, source="test")


SCRIPTED = [
    # simple_0: right (JSON list in tool_call tags, optional `unit` left out)
    '<tool_call>[{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]</tool_call>',
    "math.factorial(number=5)",  # simple_1: right (Python style)
    '{"name": "math.hypot", "arguments": {"x": 4, "y": 6}}',  # simple_2: wrong value
    # parallel_0: right, calls in the other order
    '[spotify.play(artist="Maroon 5", duration=15), spotify.play(artist="Taylor Swift", duration=20)]',
    'spotify.play(artist="Taylor Swift", duration=20)',  # parallel_1 expects two calls: wrong
    "None of these functions can compute that.",  # irrelevance_0: no call, right
    '{"name": "determine_body_mass_index", "arguments": {"weight": 70, "height": 1.8}}',  # irrelevance_1: wrong
]


def test_scripted_replies_are_scored_per_category(bfcl_folder, tiny_model_dir, monkeypatch):
    rows = [json.loads(x) for x in (bfcl_folder / "BFCL_v3_parallel.json").read_text().splitlines()]
    assert "Taylor Swift" in rows[0]["question"][0][0]["content"]  # the scripted replies fit these rows
    seen = {}

    def scripted(model, tokenizer, prompts, **kwargs):
        seen["prompts"], seen["kwargs"] = prompts, kwargs
        return [tokenizer(reply, add_special_tokens=False)["input_ids"] for reply in SCRIPTED]

    monkeypatch.setattr(fc, "greedy_generate", scripted)
    outcome = fc.evaluate_function_call(make_task(bfcl_folder), ModelHandle(str(tiny_model_dir)))
    assert [s["correct"] for s in outcome.samples] == [True, True, False, True, False, True, False]
    assert [s["response"] for s in outcome.samples] == SCRIPTED
    assert outcome.metrics["simple"] == pytest.approx(200 / 3)
    assert outcome.metrics["parallel"] == outcome.metrics["irrelevance"] == 50.0
    assert outcome.score == outcome.metrics["overall"] == pytest.approx((200 / 3 + 50 + 50) / 3)
    assert outcome.metric == "overall_accuracy" and outcome.n == 7
    assert outcome.notes.startswith("overall = mean accuracy over 3 categories: simple 66.7 (n=3), parallel 50.0")
    assert "prompt=plain" in outcome.notes
    reasons = [s["reason"] for s in outcome.samples]
    assert reasons[2] == "math.hypot.y: value 6 not among [5]" and reasons[4] == "1 call(s), expected 2"
    assert [s["syntax"] for s in outcome.samples[:2]] == ["json:tagged", "python"]
    # the prompt: instruction and documentation in a system turn, the user turn, the assistant's turn opened
    first = seen["prompts"][0]
    assert first.startswith("<|system|>You can call these functions") and '"name": "calculate_triangle_area"' in first
    assert "<|user|>Find the area of a triangle" in first and first.endswith("<|end|>\n<|assistant|>")
    assert seen["kwargs"]["max_new_tokens"] == 8


def test_reply_prefix_opens_the_reply_and_counts_in_it(bfcl_folder, tiny_model_dir, monkeypatch):
    prefix = "<tool_call>["
    replies = [r.removeprefix("<tool_call>[") for r in SCRIPTED]
    monkeypatch.setattr(
        fc,
        "greedy_generate",
        lambda m, tok, prompts, **k: [tok(r, add_special_tokens=False)["input_ids"] for r in replies],
    )
    task = make_task(bfcl_folder, reply_prefix=prefix)
    outcome = fc.evaluate_function_call(task, ModelHandle(str(tiny_model_dir)))
    assert outcome.samples[0]["response"] == SCRIPTED[0] and outcome.samples[0]["correct"]
    assert all(s["response"].startswith(prefix) for s in outcome.samples)
    prompt = fc.build_prompt(build_tokenizer(), fc.load_items(task)[0], "plain", reply_prefix=prefix)
    assert prompt.endswith("<|assistant|>" + prefix)


TOOLS_TEMPLATE = (
    "{% if tools %}<|system|>TOOLS {{ tools | tojson }}<|end|>\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_template_with_tools_support_gets_the_documentation_as_json_schema(bfcl_folder):
    plain, tools = build_tokenizer(), build_tokenizer()
    tools.chat_template = TOOLS_TEMPLATE
    assert fc.prompt_format(plain, "auto") == "plain" and fc.prompt_format(tools, "auto") == "template"
    assert fc.prompt_format(tools, "plain") == "plain"
    with pytest.raises(TaskError, match="ignores `tools`"):
        fc.prompt_format(plain, "template")
    item = fc.load_items(make_task(bfcl_folder))[0]
    prompt = fc.build_prompt(tools, item, "template")
    rendered = json.loads(prompt[len("<|system|>TOOLS ") : prompt.index("<|end|>")])
    assert rendered[0]["type"] == "function" and rendered[0]["function"]["name"] == "calculate_triangle_area"
    assert rendered[0]["function"]["parameters"]["type"] == "object"
    assert fc.json_schema(
        {"type": "dict", "properties": {"x": {"type": "float"}, "t": {"type": "tuple"}, "a": {"type": "any"}}}
    ) == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "t": {"type": "array"}, "a": {}},
    }
    assert "You can call these functions" not in prompt and prompt.endswith("<|assistant|>")


def test_a_question_system_message_follows_the_instruction(bfcl_folder):
    item = dataclasses.replace(
        fc.load_items(make_task(bfcl_folder))[0],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Area?"}],
    )
    prompt = fc.build_prompt(build_tokenizer(), item, "plain", "Docs: {functions}")
    assert prompt.startswith('<|system|>Docs: {"name": "calculate_triangle_area"') and "}\n\nBe brief.<|end|>" in prompt
    assert prompt.count("<|system|>") == 1


def test_limit_applies_per_category_and_modes_follow_names(bfcl_folder):
    items = fc.load_items(dataclasses.replace(make_task(bfcl_folder), limit=1))
    assert [(i.category, i.id) for i in items] == [
        ("simple", "simple_0"),
        ("parallel", "parallel_0"),
        ("irrelevance", "irrelevance_0"),
    ]
    assert items[2].answer is None and items[1].answer[0] == {
        "spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}
    }
    modes = {
        c: fc.scoring_mode(c)
        for c in ["simple", "live_multiple", "parallel_multiple", "live_irrelevance", "live_relevance"]
    }
    assert modes == {
        "simple": "ordered",
        "live_multiple": "ordered",
        "parallel_multiple": "unordered",
        "live_irrelevance": "no_call",
        "live_relevance": "some_call",
    }


def test_data_and_option_errors_name_the_problem(bfcl_folder):
    with pytest.raises(TaskError, match=r"category 'multiple' needs .*BFCL_v3_multiple.json, which does not exist"):
        fc.category_files(make_task(bfcl_folder, categories=["simple", "multiple"]))
    with pytest.raises(TaskError, match="non-empty list"):
        fc.category_files(make_task(bfcl_folder, categories=[]))
    with pytest.raises(TaskError, match=r"must contain \{functions\}"):
        fc.category_files(make_task(bfcl_folder, instruction="no docs"))
    with pytest.raises(TaskError, match="must be a folder"):
        fc.category_files(make_task(bfcl_folder / "BFCL_v3_simple.json"))
    answers = bfcl_folder / "possible_answer" / "BFCL_v3_simple.json"
    answers.write_text(answers.read_text().replace('"simple_1"', '"simple_x"'))
    with pytest.raises(TaskError, match=r"BFCL_v3_simple.json:2: no answer with id 'simple_1'"):
        fc.load_items(make_task(bfcl_folder))
    questions = bfcl_folder / "BFCL_v3_parallel.json"
    row = json.loads(questions.read_text().splitlines()[0])
    row["question"].append(row["question"][0])
    questions.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskError, match=r"BFCL_v3_parallel.json:1: `question` must hold exactly one turn"):
        fc.load_items(make_task(bfcl_folder, categories=["parallel"]))


def test_eval_and_report_end_to_end_on_the_tiny_model(tmp_path, bfcl_folder, tiny_model_dir):
    suite = tmp_path / "agent.yaml"
    suite.write_text(f"""
name: agent
data_root: {tmp_path}
target:
  - {{name: bfcl, type: function_call, path: bfcl, categories: [simple, irrelevance], max_new_tokens: 6, limit: 2}}
""")
    out = tmp_path / "run"
    assert main(["--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())["tasks"]["bfcl"]
    assert record["type"] == "function_call" and record["group"] == "target" and record["n"] == 4
    assert set(record["metrics"]) == {"simple", "irrelevance", "overall", "replies_with_calls"}
    assert record["score"] == pytest.approx((record["metrics"]["simple"] + record["metrics"]["irrelevance"]) / 2)
    assert sorted(record["data"]) == sorted(
        str(bfcl_folder / p)
        for p in ["BFCL_v3_simple.json", "possible_answer/BFCL_v3_simple.json", "BFCL_v3_irrelevance.json"]
    )
    samples = [json.loads(x) for x in (out / "samples" / "bfcl.jsonl").read_text().splitlines()]
    assert [s["category"] for s in samples] == ["simple", "simple", "irrelevance", "irrelevance"]
    # a second run is served from the cache; a changed answer file misses it
    assert main(["--model", str(tiny_model_dir), "--suite", str(suite), "--out", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "results.json").read_text())["tasks"]["bfcl"]["cached"]
    table = write_report(out, [out], tmp_path / "report")
    assert table["columns"] == [{"task": "bfcl", "group": "target"}]
    assert table["rows"][0]["target_avg"] == pytest.approx(record["score"])
    assert "overall = mean accuracy over 2 categories: simple" in (tmp_path / "report" / "forgetting.md").read_text()


def test_example_suites_fit_the_real_data(real_data_root):
    """Every function_call task of configs/suites: its files exist and its first rows load with their answers."""
    tasks = [t for f in sorted(CONFIGS.glob("*.yaml")) for t in load_suite(f).tasks if t.type == "function_call"]
    assert {t.source.split(":")[0].rsplit("/", 1)[-1] for t in tasks} >= {"agent.yaml", "bfcl_quick.yaml"}
    for task in tasks:
        assert task.path.resolve() == (real_data_root / "bfcl_v3").resolve()
        items = fc.load_items(dataclasses.replace(task, limit=2))
        assert len(items) == 2 * len(task.options.categories)
    (full,) = [t for t in tasks if t.source.startswith(str(CONFIGS / "agent.yaml"))]
    assert len(full.options.categories) == 11 and len(fc.category_files(full)) == 11 + 8  # 8 have answer files


@pytest.mark.slow
def test_smollm2_on_50_simple_items(real_data_root):
    """configs/suites/bfcl_quick.yaml with the embedded SmolLM2-135M-Instruct in bfloat16: the first 50 `simple`
    questions, plain prompt, reply opened with '<tool_call>[', greedy, 48 new tokens."""
    (task,) = load_suite(CONFIGS / "bfcl_quick.yaml").tasks
    outcome = fc.evaluate_function_call(task, ModelHandle(None, dtype="bfloat16"))
    assert outcome.n == 50 and outcome.metric == "overall_accuracy"
    print(f"SmolLM2 on 50 BFCL simple items: {outcome.score:.1f}% ({outcome.notes})")
    # the real model writes parseable calls for part of the items, and some of them are right
    assert outcome.metrics["replies_with_calls"] >= 20
    assert 2 <= outcome.score <= 50
    right = [s for s in outcome.samples if s["correct"]]
    assert all(s["calls"] and s["reason"] == "" for s in right)
    answer_file = real_data_root / "bfcl_v3" / "possible_answer" / "BFCL_v3_simple.json"
    answers = [json.loads(x) for x in answer_file.read_text().splitlines()]
    expected = {a["id"]: a["ground_truth"][0] for a in answers[:50]}
    for sample in right:  # cross-check against the answer file itself: the function, and only its answer's keys
        ((name, allowed),) = expected[sample["id"]].items()
        assert sample["calls"][0]["name"] == name and set(sample["calls"][0]["arguments"]) <= set(allowed)
