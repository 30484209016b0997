"""Hostile documents against the validators: a refusal is always a ValidationError naming its field.

``parse_spec`` (group specs), ``config.parse`` (the runtime's config file) and the Ansible
``group`` module's spec builder (``plugins/module_utils/groups.build_spec``, which parses nothing and
leaves the judging to ``parse_spec``) see documents
derived from valid ones with hostile leaves, dropped keys and wrong types, and arbitrary JSON.
A validator that raises anything else — or accepts something it cannot render again — fails.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime import config
from infrakit_runtime.group.plan.spec import parse_spec
from infrakit_runtime.spi.common import ValidationError
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import count, examples

REPO = Path(__file__).resolve().parents[2]

VALID_SPEC: dict[str, Any] = {
    "ID": "web",
    "Properties": {
        "Allocation": {"Size": 3, "LogicalIDs": None},
        "Instance": {"Plugin": "process", "Properties": {"Command": ["sleep", "60"]}, "Options": {}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["echo"]}},
        "Updating": {"Duration": "0s", "Count": 0, "SkipBeforeInstanceDestroy": None, "MaxSurge": "25%",
                     "MaxUnavailable": 1, "ProgressDeadline": "600s"},
        "Health": {"GracePeriod": "30s", "UnhealthyThreshold": 3, "HealthyThreshold": 1, "MaxUnhealthy": "40%",
                   "Interval": "5s"},
    },
}
# Values a duration, amount or count field might be given by a careless or hostile user.
ODD_FIELD_VALUES = st.sampled_from([
    "nan", "inf", "-inf", "NaN", "1e400s", "9" * 400 + "s", "9" * 400, "²", "٣", "1" * 5000, "1" * 5000 + "%",
    "100%", "101%", "-1%", " 3 ", "3.5", "0x10", "1_000", "", "0", 0, -1, 1e300, 10**30, 2**63, True, None,
    "1m30s", "1h1h", ".5s", "5.s", "µs", "1µs", "1e3s",
])
PATH_WORDS = ("ID", "Properties", "spec")


def _spec_strategy() -> st.SearchStrategy[Any]:
    def with_odd_leaves(spec: dict[str, Any], picks: list[tuple[str, str, Any]]) -> dict[str, Any]:
        out = copy.deepcopy(spec)
        for section, key, value in picks:
            props = out.get("Properties")
            if isinstance(props, dict) and isinstance(props.get(section), dict):
                props[section][key] = value
        return out

    leaf = st.tuples(
        st.sampled_from(["Allocation", "Updating", "Health"]),
        st.sampled_from(["Size", "LogicalIDs", "Duration", "Count", "MaxSurge", "MaxUnavailable", "ProgressDeadline",
                         "GracePeriod", "UnhealthyThreshold", "HealthyThreshold", "MaxUnhealthy", "Interval"]),
        st.one_of(ODD_FIELD_VALUES, fz.json_values),
    )
    return st.one_of(
        # The valid spec with a few odd leaves reaches the acceptance path; a mutated one the refusals.
        st.builds(with_odd_leaves, st.just(VALID_SPEC), st.lists(leaf, max_size=2)),
        st.builds(with_odd_leaves, fz.params_like(VALID_SPEC), st.lists(leaf, max_size=4)),
        fz.json_values,
    )


@settings(max_examples=examples(500))
@given(spec=_spec_strategy())
def test_parse_spec_accepts_a_renderable_spec_or_names_every_problem(spec: Any) -> None:
    count("parse_spec")
    try:
        parsed = parse_spec(spec)
    except ValidationError as e:
        count("parse_spec", "rejected")
        assert e.problems, "a refusal without a problem"
        for problem in e.problems:
            assert any(word in problem for word in PATH_WORDS), f"problem names no field: {problem!r}"
        return
    # Accepted: it renders as strict JSON, numbers are finite, and the rendering parses to the same spec.
    wire = parsed.to_wire()
    text = json.dumps(wire, allow_nan=False)
    again = parse_spec(json.loads(text))
    assert again.config_hash == parsed.config_hash and again.size == parsed.size
    json.dumps(parsed.normalized(), allow_nan=False)
    for seconds in (parsed.updating.duration, parsed.updating.progress_deadline, parsed.health.grace_period):
        assert math.isfinite(seconds), seconds
    parsed.max_surge(), parsed.max_unavailable(), parsed.max_unhealthy()


# --- config file ---------------------------------------------------------------------------

VALID_CONFIG: dict[str, Any] = {
    "home": "/tmp/ik", "plugins_dir": "/tmp/ik/plugins", "client_timeout": "30s", "log_level": "info",
    "log_format": "text", "poll_interval": "5s",
    "plugins": ["file", {"kind": "process", "name": "proc", "options": {"dir": "/tmp/x"}}, {"kind": "manager"}],
    "manager": {"backend": {"type": "file"}},
}


@settings(max_examples=examples(400))
@given(raw=st.one_of(fz.params_like(VALID_CONFIG), fz.json_values,
                     # YAML mappings may have non-string keys.
                     st.dictionaries(st.one_of(st.integers(), st.booleans(), fz.hostile_text), fz.json_values, max_size=4),
                     st.builds(lambda v, k, doc: {**doc, k: v}, ODD_FIELD_VALUES,
                               st.sampled_from(sorted(config.TOP_KEYS)), st.just(VALID_CONFIG))))
def test_config_parse_raises_only_validation_errors(raw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("INFRAKIT_HOME", "INFRAKIT_PLUGINS_DIR", "INFRAKIT_CLIENT_TIMEOUT", "INFRAKIT_GROUP_POLL_INTERVAL"):
        monkeypatch.delenv(var, raising=False)
    count("config.parse")
    try:
        cfg = config.parse(raw)
    except ValidationError as e:
        count("config.parse", "rejected")
        assert e.problems
        return
    assert math.isfinite(cfg.client_timeout) and math.isfinite(cfg.poll_interval) and cfg.poll_interval > 0


# --- the Ansible group module's spec builder -----------------------------------------------


def _load_groups() -> Any:
    """``plugins/module_utils/groups.py`` by path: it needs only the standard library."""
    spec = importlib.util.spec_from_file_location("infrakit_fuzz_groups", REPO / "plugins" / "module_utils" / "groups.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


groups = _load_groups()
# What AnsibleModule hands the module after its own type checks: str, int, list of str, dicts of raw.
raw_option = st.one_of(st.none(), ODD_FIELD_VALUES, fz.scalars)
plugin_section = st.one_of(st.none(), st.fixed_dictionaries({"plugin": fz.hostile_text, "properties": fz.json_values}))
module_params = st.fixed_dictionaries({
    "name": fz.hostile_text.filter(lambda s: s.strip() and "/" not in s),
    "size": st.one_of(st.none(), st.integers(-5, 10**6)),
    "logical_ids": st.one_of(st.none(), st.lists(fz.hostile_text, max_size=5)),
    "instance": plugin_section,
    "flavor": plugin_section,
    "updating": st.one_of(st.none(), st.fixed_dictionaries({
        k: raw_option for k in ("max_surge", "max_unavailable", "progress_deadline", "duration")
    } | {"count": st.one_of(st.none(), st.integers(-3, 10**9))})),
    "health": st.one_of(st.none(), st.fixed_dictionaries({
        "grace_period": raw_option, "max_unhealthy": raw_option,
        "unhealthy_threshold": st.one_of(st.none(), st.integers(-3, 100)),
        "healthy_threshold": st.one_of(st.none(), st.integers(-3, 100)),
    })),
})


@settings(max_examples=examples(400))
@given(params=module_params, stored=st.one_of(st.none(), st.just(VALID_SPEC)))
def test_ansible_build_spec_fails_cleanly_or_returns_a_spec_the_controller_can_judge(params: dict[str, Any],
                                                                                     stored: Any) -> None:
    count("ansible.build_spec")
    try:
        spec = groups.build_spec(params, stored)
    except groups.SpecError as e:
        count("ansible.build_spec", "rejected")
        assert str(e)
        return
    json.dumps(spec, allow_nan=False)
    assert spec["ID"] == params["name"]
    assert {"Allocation", "Instance", "Flavor"} <= set(spec["Properties"])
    # The controller then accepts it or lists what is wrong; it never trips over it.
    try:
        parse_spec(json.loads(json.dumps(spec)))
    except ValidationError:
        count("ansible.build_spec", "refused-by-controller")


@pytest.mark.parametrize(("option", "value"), [
    ("duration", float("inf")), ("duration", float("nan")), ("duration", "9" * 400 + "h"),
    ("max_surge", "1" * 5000), ("max_surge", float("inf")),
], ids=["inf", "nan", "400-digit-hours", "5000-digit-count", "inf-count"])
def test_ansible_build_spec_absurd_numbers_are_refused_naming_the_field(option: str, value: Any) -> None:
    params = {"name": "web", "size": 1, "logical_ids": None,
              "instance": {"plugin": "process", "properties": {}}, "flavor": {"plugin": "vanilla", "properties": {}},
              "updating": {option: value}, "health": None}
    try:
        spec = groups.build_spec(params, None)
    except groups.SpecError as e:
        assert "not finite" in str(e)
        return
    with pytest.raises(ValidationError) as refused:
        parse_spec(json.loads(json.dumps(spec, allow_nan=False)))
    key = {"duration": "Duration", "max_surge": "MaxSurge"}[option]
    assert any(f"Properties.Updating.{key}" in problem for problem in refused.value.problems)
