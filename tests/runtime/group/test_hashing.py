"""The config hash is InfraKit's, byte for byte: its instances are adopted without a rollout."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.group.plan import hashing
from tests.runtime.conftest import WIRE

INSTANCE = {"Plugin": "file", "Properties": {"note": "wire-test"}}


def flavor_section(init: str) -> dict:
    return {"Plugin": "vanilla", "Properties": {"Init": [init], "Tags": {"tier": "web"}}}


def recorded_hashes(name: str) -> set[str]:
    body = json.loads((WIRE / name).read_text())["response"]["body"]
    return {i["Tags"]["infrakit.config.hash"] for i in body["result"]["Description"]["Instances"]}


def test_hash_matches_the_recorded_group():
    assert recorded_hashes("group-describe.json") == {"mvxacvjmbbjytlvshmkgzggqgg3zequ3"}
    assert hashing.config_hash(INSTANCE, flavor_section("echo hello")) == "mvxacvjmbbjytlvshmkgzggqgg3zequ3"


def test_hash_matches_the_recorded_group_after_an_init_change():
    assert recorded_hashes("group-describe-after-update.json") == {"nnz24zxi3abdhlwh7aorj27ehom32cwb"}
    assert hashing.config_hash(INSTANCE, flavor_section("echo hello v2")) == "nnz24zxi3abdhlwh7aorj27ehom32cwb"


def test_hash_matches_the_recorded_bench_group_whose_spec_is_read_back_from_its_instances():
    # group-describe-10-chunked.json records only instances. Their Properties show what the
    # file plugin was given: Properties {"note": "bench"}, Init "echo hello", tag tier=web -
    # i.e. the wire-test flavor with the instance note changed to "bench". The hash agrees.
    body = json.loads((WIRE / "group-describe-10-chunked.json").read_text())["response"]["body"]
    props = {json.dumps(i["Properties"]["Properties"]) for i in body["result"]["Description"]["Instances"]}
    inits = {i["Properties"]["Init"] for i in body["result"]["Description"]["Instances"]}
    assert props == {'{"note": "bench"}'} and inits == {"echo hello"}
    assert recorded_hashes("group-describe-10-chunked.json") == {"twstqxuowzijwyspp3vwcv4if2w762zu"}
    bench = {"Plugin": "file", "Properties": {"note": "bench"}}
    assert hashing.config_hash(bench, flavor_section("echo hello")) == "twstqxuowzijwyspp3vwcv4if2w762zu"


def test_stable_format_is_go_marshal_indent_with_prefix_and_indent():
    assert hashing.stable_format(INSTANCE).decode() == (
        '{\n    "Plugin": "file",\n    "Properties": {\n      "note": "wire-test"\n    }\n  }'
    )


def test_stable_format_keeps_only_the_struct_fields_infrakit_decodes():
    with_options = {**INSTANCE, "Options": {"x": 1}}
    assert hashing.stable_format(with_options) == hashing.stable_format(INSTANCE)
    assert hashing.stable_format({"Plugin": "file"}).decode() == '{\n    "Plugin": "file",\n    "Properties": null\n  }'


def test_key_order_and_number_spelling_do_not_change_the_hash():
    a = {"Plugin": "p", "Properties": {"b": 1, "a": [1.0, 2.50]}}
    b = {"Properties": {"a": [1, 2.5], "b": 1.0}, "Plugin": "p"}
    assert hashing.config_hash(a, INSTANCE) == hashing.config_hash(b, INSTANCE)


def test_a_change_anywhere_in_either_section_changes_the_hash():
    base = hashing.config_hash(INSTANCE, flavor_section("x"))
    assert hashing.config_hash(INSTANCE, flavor_section("y")) != base
    assert hashing.config_hash({"Plugin": "file2", "Properties": {"note": "wire-test"}}, flavor_section("x")) != base


@pytest.mark.parametrize(
    ("text", "go"),
    [
        ("a<b && c>d", r'"a\u003cb \u0026\u0026 c\u003ed"'),
        ('q"\\', r'"q\"\\"'),
        ("\n\r\t", r'"\n\r\t"'),
        ("\x00\x08\x0c\x1f\x7f", '"\\u0000\\u0008\\u000c\\u001f\x7f"'),
        ("\u2028\u2029", r'"\u2028\u2029"'),
        ("é😀", '"é😀"'),
        ("\ud800", '"\ufffd"'),
    ],
)
def test_strings_are_escaped_as_go_escapes_them(text, go):
    assert hashing.go_string(text) == go


@pytest.mark.parametrize(
    ("number", "go"),
    [
        (1.0, "1"), (-2.0, "-2"), (1.5, "1.5"), (0.1, "0.1"), (0.0, "0"), (-0.0, "-0"),
        (1e20, "100000000000000000000"), (123456789.0, "123456789"), (1e21, "1e+21"), (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"), (1e-7, "1e-7"), (1.25e-10, "1.25e-10"), (-3e-9, "-3e-9"),
        (2.0**70, "1.1805916207174113e+21"), (12345678901234567890.0, "12345678901234567000"),
    ],
)
def test_floats_are_printed_as_go_prints_them(number, go):
    assert hashing.go_float(number) == go


def test_integers_beyond_float64_are_rounded_like_go():
    assert hashing.stable_format({"Plugin": "p", "Properties": 2**53 + 1}) == hashing.stable_format(
        {"Plugin": "p", "Properties": 2**53})


def test_values_go_cannot_marshal_are_refused():
    with pytest.raises(ValueError):
        hashing.config_hash({"Plugin": "p", "Properties": float("nan")}, INSTANCE)
    with pytest.raises(ValueError):
        hashing.config_hash({"Plugin": "p", "Properties": 10**400}, INSTANCE)


def test_empty_containers_print_compactly():
    assert hashing.go_marshal_indent({"a": {}, "b": []}) == '{\n    "a": {},\n    "b": []\n  }'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(json_values)
def test_go_output_is_json_that_reads_back_as_the_same_values(value):
    text = hashing.go_marshal_indent(hashing._through_float64(value))
    # Go reads every number back as a float64; so does this comparison.
    assert json.loads(text, parse_int=float) == hashing._through_float64(value)
    assert "<" not in text and ">" not in text and "&" not in text
