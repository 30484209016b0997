"""One reader of Properties for the flavors: one wording per kind of mistake, each naming the field's path."""

from __future__ import annotations

import pytest

from infrakit_runtime.plugins import fields
from infrakit_runtime.plugins.flavor import vanilla
from infrakit_runtime.plugins.flavor.ansible import props as ansible_props
from infrakit_runtime.plugins.flavor.selfhost import etcd_props, manager_props
from infrakit_runtime.spi.common import ValidationError


def read(obj, where: str = "Properties"):
    f = fields.Fields(obj, where)
    return f, f.problems


def test_each_kind_of_mistake_has_one_wording_naming_the_path():
    f, problems = read({"Name": 3, "Port": 0, "Timeout": "soon", "Wait": {}, "Dir": "rel", "On": "yes",
                        "Args": ["a", 2, ""], "Tags": {"k": 1}, "Kind": "x", "Extra": 1, "Sub": []})
    f.unknown(("Name", "Port", "Timeout", "Wait", "Dir", "On", "Args", "Tags", "Kind", "Sub", "Need"))
    f.string("Name")
    f.port("Port", 1)
    f.duration("Timeout", 1.0)
    f.duration("Wait", 1.0)
    f.abs_path("Dir")
    f.boolean("On", False)
    f.strings("Args", nonempty=True)
    f.string_map("Tags")
    f.string("Kind", choices=("a", "b"))
    f.required("Need", "what it is for")
    assert f.nested("Sub") is None
    assert problems == [
        "Properties.Extra is not a field (known: Name, Port, Timeout, Wait, Dir, On, Args, Tags, Kind, Sub, Need)",
        "Properties.Name must be a string, got number",
        "Properties.Port must be an integer from 1 to 65535, got 0",
        "Properties.Timeout must be a duration such as \"2s\", got 'soon'",
        'Properties.Wait must be a duration such as "2s", got object',
        "Properties.Dir must be an absolute path, got 'rel'",
        "Properties.On must be true or false, got string",
        "Properties.Args[1] must be a non-empty string, got number",
        "Properties.Args[2] must be a non-empty string, got ''",
        "Properties.Tags.k must be a string, got number",
        "Properties.Kind must be one of a, b, got 'x'",
        "Properties.Need is required: what it is for",
        "Properties.Sub must be an object, got array",
    ]


def test_good_values_are_returned_and_absent_ones_default_without_a_problem():
    f, problems = read({"Port": 8080, "Timeout": "1m", "Args": ["a"], "Sub": {"X": "y"}})
    assert (f.port("Port", 1), f.duration("Timeout", 1.0), f.strings("Args"), f.integer("Keep", 3, minimum=1),
            f.string("Gone", "d"), f.boolean("On", True)) == (8080, 60.0, ["a"], 3, "d", True)
    sub = f.nested("Sub")
    assert sub is not None and sub.string("X") == "y" and sub.path("X") == "Properties.Sub.X"
    assert problems == []


def problems_of(parse, obj) -> list[str]:
    with pytest.raises(ValidationError) as e:
        parse(obj)
    return list(e.value.problems)


@pytest.mark.parametrize(("parse", "base", "where", "timeout"), [
    (lambda o: vanilla.parse_properties(o, strict=True), {}, "", lambda t: {"Drain": {"Command": ["drain"], "Timeout": t}}),
    (lambda o: etcd_props.parse(o, strict=True), {}, "", lambda t: {"Timeout": t}),
    (lambda o: manager_props.parse(o, strict=True), {"TokenFile": "/t", "Backend": {"type": "file"}}, "",
     lambda t: {"Timeout": t}),
    (lambda o: ansible_props.parse(o, strict=True), {"Playbook": "/srv/site.yml"}, "Properties.",
     lambda t: {"Timeout": t}),
], ids=["vanilla", "selfhost/etcd", "selfhost/manager", "ansible"])
def test_the_flavors_word_the_same_mistake_the_same_way(parse, base, where, timeout):
    assert problems_of(parse, {**base, "Colour": 1})[0].startswith(f"{where}Colour is not a field (known: ")
    at = f"{where}{'Drain.' if 'Drain' in timeout(0) else ''}Timeout"
    assert problems_of(parse, {**base, **timeout("soon")}) == [f"{at} must be a duration such as \"2s\", got 'soon'"]
    assert problems_of(parse, {**base, **timeout("0s")}) == [f"{at} must be longer than 0s, got '0s'"]
    assert problems_of(parse, {**base, **timeout([])}) == [f"{at} must be a duration such as \"2s\", got array"]
