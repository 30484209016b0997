"""Vanilla Prepare beyond the recordings (templates, attachments) and Validate listing every problem."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons


@pytest.fixture(scope="module")
def vanilla(tmp_path_factory) -> Iterator[SyncClient]:
    """One vanilla daemon for the module: it keeps no state between calls, and starts cost time."""
    daemons = Daemons(tmp_path_factory.mktemp("vanilla-prepare") / "home")
    try:
        daemons.start("vanilla")
        client = daemons.client("vanilla")
        yield client
        client.close()
    finally:
        daemons.stop_all()


def prepare(client, properties: dict, spec: dict | None = None) -> dict:
    params = {"Type": "", "Properties": properties, "Spec": spec or {"Properties": None, "Init": ""},
              "Allocation": {"Size": 1}, "Index": {"Group": "g", "Sequence": 0}}
    return client.call("Flavor.Prepare", params)["Spec"]


def validate_error(client, properties: object) -> str:
    with pytest.raises(RemoteError) as failed:
        client.call("Flavor.Validate", {"Type": "", "Properties": properties, "Allocation": {"Size": 1}})
    assert failed.value.code == -32000
    return failed.value.message


def test_prepare_appends_attachments_and_keeps_the_logical_id(vanilla):
    spec = {"Init": "l0", "LogicalID": "10.0.0.1", "Tags": {"t": "spec", "keep": "1"},
            "Attachments": [{"ID": "a0", "Type": "ebs"}]}
    out = prepare(vanilla, {"Tags": {"t": "flavor"}, "Attachments": [{"ID": "a1", "Type": "gpu"}]}, spec)
    assert out["Attachments"] == [{"ID": "a0", "Type": "ebs"}, {"ID": "a1", "Type": "gpu"}]
    assert out["Tags"] == {"t": "flavor", "keep": "1"}
    assert out["LogicalID"] == "10.0.0.1"
    assert out["Init"] == "l0"


def test_prepare_appends_a_str_template_after_the_spec_init(vanilla):
    out = prepare(vanilla, {"InitScriptTemplateURL": "str://echo from template"}, {"Init": "l0\nl1"})
    assert out["Init"] == "l0\nl1\necho from template"


def test_prepare_reads_a_file_template_when_it_prepares(vanilla, tmp_path):
    script = tmp_path / "init script.sh"
    script.write_text("#!/bin/sh\necho v1\n")
    url = "file://" + str(script).replace(" ", "%20")
    assert prepare(vanilla, {"InitScriptTemplateURL": url})["Init"] == "#!/bin/sh\necho v1\n"
    script.write_text("#!/bin/sh\necho v2\n")
    assert prepare(vanilla, {"InitScriptTemplateURL": url})["Init"] == "#!/bin/sh\necho v2\n"


def test_prepare_refuses_a_template_it_cannot_fetch_or_render(vanilla, tmp_path):
    with pytest.raises(RemoteError, match=r"scheme 'https'; supported: file:///absolute/path, str://script-text"):
        prepare(vanilla, {"InitScriptTemplateURL": "https://example.com/init.tpl"})
    missing = tmp_path / "missing.tpl"
    with pytest.raises(RemoteError, match=rf"cannot read {missing}: No such file or directory"):
        prepare(vanilla, {"InitScriptTemplateURL": f"file://{missing}"})
    with pytest.raises(RemoteError, match="Go template actions"):
        prepare(vanilla, {"InitScriptTemplateURL": 'str://echo {{ var "x" }}'})


def test_validate_accepts_a_complete_valid_spec(vanilla):
    props = {"Init": ["echo hi"], "Tags": {"tier": "web"}, "Attachments": [{"ID": "vol-1", "Type": "ebs"}],
             "Health": {"HTTP": "http://{{address}}:8080/healthz", "TCP": "{{host}}:{{port}}",
                        "Command": ["check", "{{id}}", "{{tags.role}}"], "Timeout": "2s", "ExpectStatus": 200},
             "Drain": {"Command": ["drain", "{{logical_id}}"], "Timeout": "1m"}}
    answer = vanilla.call("Flavor.Validate", {"Type": "", "Properties": props, "Allocation": {"Size": 1}})
    assert answer == {"Type": "", "OK": True}


def test_validate_lists_every_problem_naming_each_field(vanilla):
    props = {
        "Init": ["ok", 3],
        "Tags": {"tier": 1},
        "Attachments": [{"Type": "ebs"}, "vol-2"],
        "Health": {"HTTP": "ftp://x/{{nope}}", "Timeout": "soon", "ExpectStatus": 99, "Retries": 3},
        "Drain": {"Timeout": "0s"},
        "Healthz": {},
    }
    problems = validate_error(vanilla, props).split("; ")
    assert problems == [
        "Healthz is not a field (known: Attachments, Drain, Health, Init, InitScriptTemplateURL, Tags)",
        "Init[1] must be a string, got number",
        "Tags.tier must be a string, got number",
        "Attachments[0].ID is required",
        "Attachments[1] must be an object with ID and Type, got string",
        "Health.Retries is not a field (known: Command, ExpectStatus, HTTP, TCP, Timeout)",
        "Health.HTTP uses unknown placeholder {{nope}} (known: {{address}}, {{host}}, {{port}}, {{id}}, "
        "{{logical_id}}, {{tags.NAME}})",
        "Health.HTTP must be an http:// or https:// URL, got 'ftp://x/{{nope}}'",
        'Health.Timeout must be a duration such as "2s", got \'soon\'',
        "Health.ExpectStatus must be an integer from 100 to 599, got 99",
        "Drain.Command is required",
        "Drain.Timeout must be longer than 0s, got '0s'",
    ]


def test_validate_requires_at_least_one_probe_and_a_runnable_command(vanilla):
    assert validate_error(vanilla, {"Health": {"Timeout": "2s"}}) == \
        "Health needs at least one probe: HTTP, TCP or Command"
    assert validate_error(vanilla, {"Health": {"Command": []}}) == \
        'Health.Command must name a program to run, e.g. ["/usr/bin/check", "{{address}}"]'
    assert validate_error(vanilla, {"Health": {"TCP": "localhost"}}) == "Health.TCP: 'localhost' is not host:port"
    assert validate_error(vanilla, {"Health": "http://x"}) == "Health must be an object, got string"
    assert validate_error(vanilla, ["Init"]) == "Properties must be an object, got array"


def test_validate_fetches_the_template_and_refuses_unsupported_urls(vanilla, tmp_path):
    assert validate_error(vanilla, {"InitScriptTemplateURL": "http://h/x.tpl"}) == \
        "InitScriptTemplateURL 'http://h/x.tpl' has scheme 'http'; supported: file:///absolute/path, str://script-text"
    assert validate_error(vanilla, {"InitScriptTemplateURL": "file://host/x.tpl"}) == \
        "InitScriptTemplateURL 'file://host/x.tpl' names host 'host'; use file:///absolute/path"
    missing = tmp_path / "gone.tpl"
    assert validate_error(vanilla, {"InitScriptTemplateURL": f"file://{missing}"}) == \
        f"InitScriptTemplateURL 'file://{missing}': cannot read {missing}: No such file or directory"


def test_prepare_ignores_unknown_properties_as_infrakit_does_but_not_wrong_types(vanilla):
    assert prepare(vanilla, {"Init": ["a"], "Future": True})["Init"] == "a"
    with pytest.raises(RemoteError, match=r"^Tags must be an object of strings, got array$"):
        prepare(vanilla, {"Tags": ["a"]})


def test_prepare_many_prepares_each_spec_as_prepare_does_and_fails_each_alike(vanilla, tmp_path):
    template = tmp_path / "init.sh"
    template.write_text("echo from-template")
    for properties in ({"Init": ["echo a", "echo b"], "Tags": {"t": "1"}, "Attachments": [{"ID": "v", "Type": "ebs"}]},
                       {"InitScriptTemplateURL": f"file://{template}"}):
        specs = [{"Properties": None, "Init": "", "Tags": {"n": str(i)}, "LogicalID": f"l{i}"} for i in range(3)]
        many = vanilla.call("Flavor.PrepareMany", {"Type": "", "Properties": properties, "Specs": specs,
                                                   "Allocation": {"Size": 3},
                                                   "Indices": [{"Group": "g", "Sequence": i} for i in range(3)]})
        assert [r["Spec"] for r in many["Results"]] == [prepare(vanilla, properties, s) for s in specs]
    broken = vanilla.call("Flavor.PrepareMany", {
        "Type": "", "Properties": {"InitScriptTemplateURL": f"file://{tmp_path}/missing.sh"},
        "Specs": [{"Init": ""}] * 2, "Allocation": {"Size": 2}, "Indices": [{"Group": "g", "Sequence": 0}] * 2})
    assert [r["Spec"] for r in broken["Results"]] == [None, None]
    assert all("cannot read" in r["Error"] for r in broken["Results"])


def test_healthy_many_without_a_probe_says_healthy_and_final_and_unreadable_properties_unknown(vanilla):
    members = [{"ID": f"instance-{i}", "Tags": {}} for i in range(3)]
    plain = vanilla.call("Flavor.HealthyMany", {"Type": "", "Properties": {"Init": ["x"]}, "Instances": members})
    assert plain["Healths"] == [1, 1, 1] and plain["Final"] is True
    bad = vanilla.call("Flavor.HealthyMany", {"Type": "", "Properties": {"Health": "not an object"}, "Instances": members})
    assert bad["Healths"] == [0, 0, 0] and "Final" not in bad
