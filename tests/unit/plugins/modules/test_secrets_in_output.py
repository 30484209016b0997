# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""What the modules print and log, through AnsibleModule's real exit path (its no_log masking included)."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.infrakit.core.plugins.modules import group, group_info
from ansible_collections.infrakit.core.tests.unit.plugins.fake_controller import RPCError, described_instance

PASSWORD = "hunter2-Sup3r"      # under a secret-named key
SHORT = "Q7x"                   # under a secret-named key, too short to mask everywhere
LISTED = "swordfish-42"         # in free text, listed by the user
TOKEN = "bearer-tok-0xfeed"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(group, "POLL_INTERVAL", 0.01)


def secret_spec(controller, **overrides):
    args = dict(
        name="db",
        size=1,
        instance=dict(plugin="process", properties={
            "Command": "db-server --admin-password=%s" % LISTED,
            "Env": {"DB_PASSWORD": PASSWORD, "PIN_SECRET": SHORT, "HOME": "/srv/db"},
        }),
        flavor=dict(plugin="vanilla", properties={"Tags": {"tier": "db"}}),
        controller_url=controller.url,
        controller_token=TOKEN,
        secret_values=[LISTED],
        wait_timeout=5,
    )
    args.update(overrides)
    return args


def describe_with_properties(controller, group_id):
    """The controller reports the instance's properties, Env included, as the process plugin does."""
    instance = described_instance(group_id, 0, "127.0.0.1:20000")
    instance["Properties"].update(copy.deepcopy(controller.groups[group_id]["Properties"]["Instance"]["Properties"]))
    status = {"Condition": "Converged", "Desired": 1, "Running": 1, "Healthy": 1, "Unhealthy": 0, "Pending": 0,
              "Outdated": 0, "Plan": "Managing 1 instances",
              "Instances": [{"ID": "instance-0", "Health": "healthy", "UpToDate": True}]}
    controller.scripts[group_id] = [{"Instances": [instance], "Converged": True, "Status": status}]


def assert_hidden(text):
    for secret in (PASSWORD, SHORT, LISTED, TOKEN):
        assert secret not in text, "%r leaked in:\n%s" % (secret, text)


@pytest.mark.parametrize("check_mode", [False, True])
def test_group_masks_secret_keys_and_listed_values_in_invocation_spec_diff_and_instances(
        controller, printed, logged, check_mode):
    result, text = printed(group.main, secret_spec(controller))     # create
    describe_with_properties(controller, "db")
    changed = secret_spec(controller, size=2)
    result, text = printed(group.main, changed, check_mode=check_mode, diff=True)
    assert_hidden(text)
    assert_hidden("\n".join(logged))
    assert logged, "the module logged no invocation"
    env = result["spec"]["instance"]["properties"]["Env"]
    assert env["HOME"] == "/srv/db" and env["DB_PASSWORD"] != PASSWORD and env["PIN_SECRET"] != SHORT
    assert result["invocation"]["module_args"]["instance"]["properties"]["Env"]["HOME"] == "/srv/db"
    assert result["diff"]["before"]["size"] == 1 and result["diff"]["after"]["size"] == 2
    assert result["instances"][0]["properties"]["Env"]["HOME"] == "/srv/db"
    assert result["counts"]["desired"] == 1 and result["changed"] is True


def test_group_commits_the_real_values_and_compares_them_unmasked(controller, printed, logged):
    printed(group.main, secret_spec(controller))
    stored = controller.groups["db"]["Properties"]["Instance"]["Properties"]
    assert stored["Env"]["DB_PASSWORD"] == PASSWORD and LISTED in stored["Command"]
    result, _text = printed(group.main, secret_spec(controller))
    assert result["changed"] is False
    rotated = secret_spec(controller)
    rotated["instance"]["properties"]["Env"]["DB_PASSWORD"] = "rotated-Pw-2"
    result, text = printed(group.main, rotated, check_mode=True)
    assert result["changed"] is True and "rotated-Pw-2" not in text


def test_a_plan_or_an_error_that_quotes_a_secret_is_masked(controller, printed, logged, monkeypatch):
    controller.plan = "Updating DB_PASSWORD=%s" % PASSWORD
    result, text = printed(group.main, secret_spec(controller))
    assert result["plan"].startswith("Updating DB_PASSWORD=")
    assert_hidden(text)

    def refuse(params):
        raise RPCError("Env.DB_PASSWORD %r is refused; so is %s" % (PASSWORD, LISTED))

    monkeypatch.setattr(controller, "_Group_CommitGroup", refuse)
    result, text = printed(group.main, secret_spec(controller, size=3))
    assert result["failed"] is True and "is refused" in result["msg"]
    assert_hidden(text)


def test_group_info_masks_secrets_stored_by_someone_else(controller, printed, logged):
    properties = {"Env": {"DB_PASSWORD": PASSWORD}, "Command": "db --admin-password=%s" % LISTED}
    controller.groups["db"] = {"ID": "db", "Properties": {
        "Allocation": {"Size": 1, "LogicalIDs": None},
        "Instance": {"Plugin": "process", "Properties": properties},
        "Flavor": {"Plugin": "vanilla", "Properties": {}},
    }}
    describe_with_properties(controller, "db")
    result, text = printed(group_info.main, dict(controller_url=controller.url, secret_values=[LISTED]))
    assert_hidden(text)
    assert_hidden("\n".join(logged))
    (db,) = result["groups"]
    assert db["spec"]["instance"]["properties"]["Env"]["DB_PASSWORD"] != PASSWORD
    assert db["instances"][0]["properties"]["PID"] == 4000
