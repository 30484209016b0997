"""``check_entry``: the pure check every backend applies to what it reads, before the manager trusts it."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from infrakit_runtime.manager.backend import check_entry

ids = st.text(min_size=1, max_size=20)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=10)


@given(group_id=ids, properties=json_values)
def test_a_spec_stored_under_its_own_id_is_returned_unchanged(group_id: str, properties: object) -> None:
    spec = {"ID": group_id, "Properties": properties}
    assert check_entry(group_id, json.dumps(spec).encode(), where="x") == spec


@given(group_id=ids, claimed=json_values, properties=json_values)
def test_an_entry_whose_id_is_not_its_name_is_refused_naming_both(group_id: str, claimed: object,
                                                                   properties: object) -> None:
    if claimed == group_id:
        return
    reason = check_entry(group_id, json.dumps({"ID": claimed, "Properties": properties}), where="/s/groups/x.json")
    assert isinstance(reason, str)
    assert "/s/groups/x.json" in reason and repr(group_id) in reason
    if isinstance(claimed, str):
        assert repr(claimed) in reason


@given(group_id=ids, data=st.binary(max_size=64))
def test_any_bytes_give_a_spec_or_a_reason_never_an_exception(group_id: str, data: bytes) -> None:
    checked = check_entry(group_id, data, where="etcd key /p/groups/g")
    if isinstance(checked, dict):
        assert checked["ID"] == group_id
    else:
        assert "etcd key /p/groups/g" in checked


@given(group_id=ids, value=json_values)
def test_json_that_is_not_an_object_is_refused(group_id: str, value: object) -> None:
    if isinstance(value, dict):
        return
    assert "is not a JSON object" in check_entry(group_id, json.dumps(value), where="w")  # type: ignore[operator]


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    assert "not valid JSON" in check_entry("g", "[" * 100_000 + "]" * 100_000, where="w")  # type: ignore[operator]
