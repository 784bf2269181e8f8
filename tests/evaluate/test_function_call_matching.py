"""The BFCL-style matcher on hand-written cases, and on every answer row of the real bfcl_v3 (the data root)."""

from __future__ import annotations

import json

from eaft.evaluate.call_matching import (
    check_no_call,
    check_reply,
    check_some_call,
    check_value,
    find_doc,
    normalize_string,
)
from eaft.evaluate.call_parsing import Call, parse_calls

AREA = {
    "name": "geometry.area",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string"},
            "sides": {"type": "array", "items": {"type": "float"}},
            "options": {"type": "dict", "properties": {"round": {"type": "boolean"}, "label": {"type": "string"}}},
            "shapes": {"type": "array", "items": {"type": "dict"}},
        },
        "required": ["base", "height"],
    },
}
WEATHER = {
    "name": "weather",
    "parameters": {"type": "dict", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
AREA_ANSWER = {
    "geometry.area": {
        "base": [10],
        "height": [5.0],
        "unit": ["units", "cm", ""],
        "sides": [[1.0, 2.5], ""],
        "options": [{"round": [True], "label": ["A-1", ""]}, ""],
        "shapes": [[{"kind": ["square"], "size": [2]}, {"kind": ["circle"], "size": ["", 1]}], ""],
    }
}


def verdict(arguments: dict, name: str = "geometry.area"):
    return check_reply([Call(name, arguments)], [AREA_ANSWER], [AREA, WEATHER], ordered=True)


def test_right_call_with_and_without_optionals():
    assert verdict({"base": 10, "height": 5.0}).correct
    assert verdict({"base": 10, "height": 5.0, "unit": "cm", "sides": [1.0, 2.5]}).correct


def test_wrong_function_name_and_wrong_value():
    assert verdict({"city": "Paris"}, name="weather").reason == "function 'weather' instead of 'geometry.area'"
    wrong = verdict({"base": 11, "height": 5.0})
    assert not wrong.correct and wrong.reason == "geometry.area.base: value 11 not among [10]"
    assert not verdict({"base": 10, "height": 5.0, "unit": "inches"}).correct


def test_missing_required_and_missing_non_optional_answer_parameter():
    assert verdict({"base": 10}).reason == "geometry.area: missing required parameter 'height'"
    answer = {"weather": {"city": ["Paris"], "unit": ["C"]}}  # 'unit' has no "" marker: it must be given
    doc = {**WEATHER, "parameters": {**WEATHER["parameters"], "properties": {"city": {}, "unit": {}}}}
    result = check_reply([Call("weather", {"city": "Paris"})], [answer], [doc], ordered=True)
    assert result.reason == "weather: missing parameter 'unit' (its answer has no optional marker)"


def test_extra_unknown_parameter():
    assert verdict({"base": 10, "height": 5.0, "color": "red"}).reason == "geometry.area: unknown parameter 'color'"


def test_type_coercion_as_bfcl_does_it():
    assert verdict({"base": 10, "height": 5}).correct  # int accepted for a float
    assert verdict({"base": 10, "height": 5, "sides": (1, 2.5)}).correct  # tuple as array, ints inside too
    assert not verdict({"base": 10.0, "height": 5.0}).correct  # but not a float for an int
    assert not verdict({"base": "10", "height": 5.0}).correct  # nor a string for a number
    assert "wrong type" in verdict({"base": True, "height": 5.0}).reason  # a bool is not an integer
    assert check_value(None, ["", None], {"type": "string"}) == ""  # a value of the answer's own type: compared


def test_string_normalization():
    assert normalize_string("New York, NY") == normalize_string("new york ny") == "newyorkny"
    assert normalize_string("It's") == 'it"s'
    assert verdict({"base": 10, "height": 5.0, "unit": " CM."}).correct
    assert not verdict({"base": 10, "height": 5.0, "unit": "centimetres"}).correct


def test_lists_are_ordered_and_nested_dicts_follow_the_answer_form():
    assert not verdict({"base": 10, "height": 5.0, "sides": [2.5, 1.0]}).correct
    assert verdict({"base": 10, "height": 5.0, "options": {"round": True, "label": "a 1"}}).correct
    assert verdict({"base": 10, "height": 5.0, "options": {"round": True}}).correct  # label optional
    assert not verdict({"base": 10, "height": 5.0, "options": {"label": "A-1"}}).correct  # round is not
    assert not verdict({"base": 10, "height": 5.0, "options": {"round": True, "x": 1}}).correct
    shapes = [{"kind": "Square", "size": 2}, {"kind": "circle"}]
    assert verdict({"base": 10, "height": 5.0, "shapes": shapes}).correct
    assert not verdict({"base": 10, "height": 5.0, "shapes": shapes[::-1]}).correct


PARALLEL_ANSWER = [
    {"weather": {"city": ["Paris"]}},
    {"weather": {"city": ["Rome"]}},
    {"geometry.area": AREA_ANSWER["geometry.area"]},
]


def test_parallel_calls_in_any_order_but_one_to_one():
    calls = [
        Call("geometry.area", {"base": 10, "height": 5}),
        Call("weather", {"city": "rome"}),
        Call("weather", {"city": "Paris"}),
    ]
    assert check_reply(calls, PARALLEL_ANSWER, [AREA, WEATHER], ordered=False).correct
    assert not check_reply(calls, PARALLEL_ANSWER, [AREA, WEATHER], ordered=True).correct
    twice = [calls[0], calls[1], calls[1]]
    result = check_reply(twice, PARALLEL_ANSWER, [AREA, WEATHER], ordered=False)
    assert not result.correct and "no call matches the expected weather call" in result.reason
    assert check_reply(calls[:2], PARALLEL_ANSWER, [AREA, WEATHER], ordered=False).reason == "2 call(s), expected 3"


def test_parallel_matching_is_a_perfect_matching_not_greedy():
    # the first expected call accepts either city; pairing it greedily with Paris would strand the second
    answer = [{"weather": {"city": ["Paris", "Rome"]}}, {"weather": {"city": ["Paris"]}}]
    calls = [Call("weather", {"city": "Paris"}), Call("weather", {"city": "Rome"})]
    assert check_reply(calls, answer, [WEATHER], ordered=False).correct


def test_irrelevance_and_relevance():
    assert check_no_call([]).correct
    assert not check_no_call([Call("weather", {"city": "Paris"})]).correct
    assert check_no_call(parse_calls("I cannot help with that: no function computes it.").calls).correct
    assert check_some_call([Call("anything")]).correct and not check_some_call([]).correct


def test_no_call_is_wrong_and_the_documented_name_is_expected():
    assert check_reply([], [AREA_ANSWER], [AREA], ordered=True).reason == "no call"
    # a single documented function whose answer spells its name differently (as in a few BFCL rows)
    assert find_doc("area", [AREA]) is AREA and find_doc("area", [AREA, WEATHER]) is None
    assert check_reply(
        [Call("geometry.area", {"base": 10, "height": 5})],
        [{"area": AREA_ANSWER["geometry.area"]}],
        [AREA],
        ordered=True,
    ).correct


def _pick(options):
    options = options if isinstance(options, list) else [options]
    given = [o for o in options if o != ""]
    return _concrete(given[0]) if given else ""


def _concrete(value):
    if isinstance(value, dict):
        return {k: _pick(o) for k, o in value.items() if not (isinstance(o, list) and "" in o)}
    return [_concrete(v) for v in value] if isinstance(value, list) else value


def _python_text(calls):
    return (
        "["
        + ", ".join(f"{c.name}(" + ", ".join(f"{k}={v!r}" for k, v in c.arguments.items()) + ")" for c in calls)
        + "]"
    )


# Rows whose answer no reply can satisfy (a required parameter the answer leaves out or only allows as "", or an
# answer parameter the documentation does not have): BFCL's checker rejects every reply to them too.
UNSATISFIABLE = {"live_multiple_862-181-3", "live_multiple_964-207-0", "live_simple_106-63-0", "live_simple_112-68-0"}


def test_every_bfcl_answer_accepts_its_own_calls_written_as_json_and_python(real_data_root):
    """Each answer's first allowed values (optional parameters left out), calls reversed, accepted from Calls,
    from JSON text and from Python text; one changed value is rejected."""
    failing, checked, changed_values = set(), 0, 0
    bfcl = real_data_root / "bfcl_v3"
    for answer_file in sorted((bfcl / "possible_answer").glob("BFCL_v3_*.json")):
        category = answer_file.stem.removeprefix("BFCL_v3_")
        rows = {r["id"]: r for r in map(json.loads, (bfcl / answer_file.name).read_text().splitlines())}
        for line in answer_file.read_text().splitlines():
            answer = json.loads(line)
            functions = rows[answer["id"]]["function"]
            calls = []
            for expected in answer["ground_truth"]:
                ((name, params),) = expected.items()
                doc = find_doc(name, functions)
                required = doc["parameters"].get("required", [])
                calls.append(
                    Call(doc["name"], {p: _pick(o) for p, o in params.items() if "" not in o or p in required})
                )
            calls = calls[::-1]
            ordered = "parallel" not in category
            texts = [json.dumps([c.as_dict() for c in calls]), _python_text(calls)]
            results = [check_reply(calls, answer["ground_truth"], functions, ordered=ordered)]
            results += [
                check_reply(parse_calls(t).calls, answer["ground_truth"], functions, ordered=ordered) for t in texts
            ]
            checked += 1
            if not all(r.correct for r in results):
                failing.add(answer["id"])
                continue
            extra = [Call(c.name, {**c.arguments, "not_a_parameter": 1}) for c in calls]
            assert not check_reply(extra, answer["ground_truth"], functions, ordered=ordered).correct
            changed_values += _assert_a_changed_value_is_rejected(calls, answer["ground_truth"], functions, ordered)
    assert checked == 2351 and changed_values > 2000
    assert failing == UNSATISFIABLE


def _assert_a_changed_value_is_rejected(calls, ground_truth, functions, ordered) -> int:
    """Change the first string or number argument of the first call that has one; the reply must fail."""
    for index, call in enumerate(calls):
        for param, value in call.arguments.items():
            if isinstance(value, str) and value:
                new = value + " zz"
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                new = value + 1000003
            else:
                continue
            changed = list(calls)
            changed[index] = Call(call.name, {**call.arguments, param: new})
            assert not check_reply(changed, ground_truth, functions, ordered=ordered).correct, (call, param)
            return 1
    return 0
