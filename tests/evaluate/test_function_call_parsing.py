"""Reading calls out of replies: one test per accepted syntax, and unparseable replies that never raise."""

from __future__ import annotations

import random

import pytest

from eaft.evaluate.call_parsing import Call, parse_calls

TWO = [Call("f", {"a": 1}), Call("math.g", {"b": "x", "c": [1, 2.5]})]


def calls(text: str, **kw) -> list[Call]:
    return parse_calls(text, **kw).calls


def test_json_single_object_list_and_parameters_key():
    assert calls('{"name": "f", "arguments": {"a": 1}}') == [Call("f", {"a": 1})]
    assert (
        calls('[{"name": "f", "arguments": {"a": 1}}, {"name": "math.g", "parameters": {"b": "x", "c": [1, 2.5]}}]')
        == TWO
    )
    assert calls('{"name": "noargs"}') == [Call("noargs", {})]


def test_json_openai_wrappers_and_string_arguments():
    text = '{"tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 1}"}}]}'
    assert calls(text) == [Call("f", {"a": 1})]
    assert calls('{"type": "function", "function": {"name": "f", "arguments": ""}}') == [Call("f", {})]


def test_json_lines_one_call_per_line():
    text = '{"name": "f", "arguments": {"a": 1}}\n{"name": "math.g", "arguments": {"b": "x", "c": [1, 2.5]}}\n'
    parsed = parse_calls(text)
    assert parsed.calls == TWO and parsed.syntax == "json_lines"


def test_python_single_call_and_dotted_name():
    assert calls("f(a=1)") == [Call("f", {"a": 1})]
    assert calls("math.g(b='x', c=[1, 2.5])") == [TWO[1]]


def test_python_list_form_and_one_call_per_line():
    assert calls('[f(a=1), math.g(b="x", c=[1, 2.5])]') == TWO
    assert calls('f(a=1)\nmath.g(b="x", c=(1, 2.5))') == [
        Call("f", {"a": 1}),
        Call("math.g", {"b": "x", "c": (1, 2.5)}),
    ]


def test_python_values_literals_json_words_and_variables():
    parsed = calls("f(a=-2.5, b=true, c=null, d=None, e={'k': [1, 'v']}, f=x, g=np.pi, h=[x, 2])")
    assert parsed == [
        Call(
            "f",
            {"a": -2.5, "b": True, "c": None, "d": None, "e": {"k": [1, "v"]}, "f": "x", "g": "np.pi", "h": ["x", 2]},
        )
    ]


def test_tagged_and_fenced_blocks():
    tagged = (
        'Sure.<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
        '<tool_call>math.g(b="x", c=[1, 2.5])</tool_call>'
    )
    parsed = parse_calls(tagged)
    assert parsed.calls == TWO and parsed.syntax == "json+python:tagged"
    fenced = 'Here you go:\n```json\n{"name": "f", "arguments": {"a": 1}}\n```\nDone.'
    assert parse_calls(fenced).calls == [Call("f", {"a": 1})] and parse_calls(fenced).syntax == "json:fenced"
    assert calls("```python\n[f(a=1)]\n```") == [Call("f", {"a": 1})]


def test_calls_embedded_in_prose_count_unless_strict():
    for text in ["I will call [f(a=1)] now.", 'Answer: {"name": "f", "arguments": {"a": 1}} as asked', "Use f(a=1)."]:
        parsed = parse_calls(text)
        assert parsed.calls == [Call("f", {"a": 1})] and parsed.syntax.endswith(":embedded")
        assert parse_calls(text, embedded=False).calls == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The weather is nice today.", "no function call found"),
        ("", "no function call found"),
        ("f(1, 2)", "positional arguments"),
        ("f(a=1 + 2)", "not a literal"),
        ("f(a=g(b=1))", "not a literal"),
        ("f(**kw)", "kwargs"),
        ("(lambda: 1)(a=1)", "cannot read a function name"),
        ('{"name": "f", "arguments": "not json"}', "not JSON"),
        ('{"name": "f", "arguments": [1, 2]}', "must be an object"),
        ('{"result": 5}', "no function call found"),
        ("x" * 30_000, "longer than"),
    ],
)
def test_unparseable_replies_give_no_call_and_a_reason(text, reason):
    parsed = parse_calls(text)
    assert parsed.calls == [] and parsed.syntax is None
    assert reason in parsed.error


def test_strict_mode_needs_the_whole_reply_to_be_calls():
    for text in ["[f(a=1), 3]", "import os; os.system(cmd='ls')", "f(a=1) and then g(b=2)"]:
        parsed = parse_calls(text, embedded=False)
        assert parsed.calls == [] and parsed.error == "no function call found"
    assert parse_calls("f(a=1) and then g(b=2)").calls == [Call("f", {"a": 1})]  # lenient: the first that parses


def test_nothing_is_executed():
    parsed = parse_calls("__import__(name='os').system(command='touch /tmp/eaft-pwned')")
    assert parsed.calls == [] and "cannot read a function name" in parsed.error


def test_garbage_and_truncated_replies_never_raise():
    rng = random.Random(0)
    valid = '<tool_call>[{"name": "f", "arguments": {"a": [1, {"b": "c"}]}}, g(x=\'y\', z=[1, (2, 3)])]</tool_call>'
    alphabet = "[]{}()<>\"':,=.\\ \nabcfgxyz0123456789_-`"
    texts = [valid[:cut] for cut in range(len(valid))]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 60))) for _ in range(400)]
    for text in texts:
        parsed = parse_calls(text)
        assert all(isinstance(c.name, str) and isinstance(c.arguments, dict) for c in parsed.calls)
        assert bool(parsed.calls) != bool(parsed.error)
