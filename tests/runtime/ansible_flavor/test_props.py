"""The ansible flavor's Properties: every problem at once, named by its field; nothing else raised."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.plugins.flavor.ansible import props
from infrakit_runtime.spi.common import ValidationError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def test_defaults_for_a_playbook_alone():
    p = props.parse({"Playbook": "/srv/site.yml"})
    assert (p.playbook, p.connection.type, p.retries, p.concurrency, p.timeout) == ("/srv/site.yml", "local", 1, 5, 600.0)
    assert p.drain is None and p.inner is None


def test_a_collection_playbook_by_fqcn_is_accepted():
    assert props.parse({"Playbook": "acme.web.site"}).playbook == "acme.web.site"
    assert props.is_fqcn("acme.web.site") and not props.is_fqcn("/srv/site.yml")


def test_every_problem_is_reported_at_once_by_field():
    with pytest.raises(ValidationError) as e:
        props.parse({
            "Playbook": "site.yml", "ExtraVars": {"bad-name": 1}, "Timeout": "soon", "Retries": -1, "Concurrency": 0,
            "Connection": {"Type": "telnet", "Port": 70000, "BecomeUser": "root"}, "VaultPasswordFile": "vault.txt",
            "Drain": {"Timeout": "1m"}, "Flavor": {"Properties": {}}, "Bogus": 1,
        })
    text = str(e.value)
    for field in ("Properties.Playbook", "Properties.ExtraVars: 'bad-name'", "Properties.Timeout", "Properties.Retries",
                  "Properties.Concurrency", "Properties.Connection.Type", "Properties.Connection.Port",
                  "Properties.Connection.BecomeUser needs", "Properties.VaultPasswordFile",
                  "Properties.Drain.Playbook is required", "Properties.Flavor must be", "Properties.Bogus is not a field"):
        assert field in text, field
    assert len(e.value.problems) == 12


def test_ssh_settings_on_a_local_connection_are_refused():
    with pytest.raises(ValidationError, match=r"Properties.Connection.User applies to the ssh connection only"):
        props.parse({"Playbook": "/srv/site.yml", "Connection": {"Type": "local", "User": "deploy"}})


def test_a_drain_that_could_outlast_the_controllers_wait_is_refused():
    with pytest.raises(ValidationError, match=r"Drain.Timeout: 3 attempts .* the controller waits 870s"):
        props.parse({"Playbook": "/srv/site.yml", "Retries": 2, "Drain": {"Playbook": "/srv/drain.yml", "Timeout": "5m"}})
    ok = props.parse({"Playbook": "/srv/site.yml", "Retries": 1, "Drain": {"Playbook": "/srv/drain.yml", "Timeout": "5m"}})
    assert ok.drain is not None and props.worst_drain(ok.drain, ok.retries) <= props.MAX_DRAIN_TOTAL


def test_the_flavor_cannot_wrap_itself():
    with pytest.raises(ValidationError, match="is this flavor itself"):
        props.parse({"Playbook": "/srv/site.yml", "Flavor": {"Plugin": "ansible"}}, self_name="ansible")


def test_unknown_fields_pass_outside_validate_as_infrakit_decoders_do():
    assert props.parse({"Playbook": "/srv/site.yml", "Later": 1}, strict=False).playbook == "/srv/site.yml"


def test_retry_delays_double_to_a_minute():
    assert [props.retry_delay(a) for a in (1, 2, 3, 6, 7, 20)] == [2.0, 4.0, 8.0, 60.0, 60.0, 60.0]


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_either_properties_or_a_validation_error(value):
    try:
        parsed = props.parse(value)
    except ValidationError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    else:
        assert isinstance(parsed, props.Properties)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(props.FIELDS), json_values, max_size=6))
def test_any_fields_are_either_properties_or_a_validation_error(value):
    try:
        props.parse({"Playbook": "/srv/site.yml", **value})
    except ValidationError as e:
        assert all(p.startswith("Properties") for p in e.problems), e.problems
