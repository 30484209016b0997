# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import socket
import threading

import pytest

from ansible_collections.infrakit.core.plugins.module_utils import controller as ctl
from ansible_collections.infrakit.core.tests.unit.plugins.fake_controller import (
    FakeController,
    Replay,
    recording,
    refuse_path,
)

WORKERS = recording("group-commit")["request"]["body"]["params"]["Spec"]
WORKERS_V2 = recording("group-commit-update")["request"]["body"]["params"]["Spec"]


def client_for(url, **kwargs):
    sleeps = []
    kwargs.setdefault("sleep", sleeps.append)
    c = ctl.ControllerClient(url=url, **kwargs)
    c.sleeps = sleeps
    return c


def test_client_requests_match_the_recorded_infrakit_wire(sockdir):
    replay = Replay(sockdir + "/group", [
        "group-inspect-empty",
        "group-commit-pretend",
        "group-commit",
        "group-inspect",
        "group-describe",
        "group-commit-update",
        "group-setsize",
        "group-free",
        "group-destroy",
        "manager-isleader",
        "manager-leaderlocation",
    ])
    # A new group is committed through the object every InfraKit manager has, "group/groups"
    # (the recording's bare "group" only resolves while no group exists yet).
    for rec in replay.expected[1:3]:
        rec["request"]["body"]["params"]["Name"] = "group/groups"
    try:
        c = client_for(sockdir + "/group")
        assert c.inspect_groups() == []
        # Go InfraKit answers the plan text only: no canonical spec, no verdict.
        go_answer = dict(details="Managing 3 instances", spec=None, previous=None, changed=None)
        assert c.commit_group(WORKERS, pretend=True, exists=False) == go_answer
        assert c.commit_group(WORKERS, pretend=False, exists=False) == go_answer
        assert [g["ID"] for g in c.inspect_groups()] == ["workers"]
        description = c.describe_group("workers")
        assert description["Converged"] is True and len(description["Instances"]) == 3
        assert c.commit_group(WORKERS_V2, exists=True)["details"] == "Performing a rolling update on 3 instances"
        c.set_size("workers", 12)
        c.free_group("workers")
        c.destroy_group("workers")
        assert c.is_leader() is True
        assert c.leader_location() == "http://127.0.0.1:24864"
    finally:
        replay.stop()
    assert replay.mismatches == []
    assert replay.expected == []


def test_json_rpc_error_becomes_remote_error_with_code_and_message(controller):
    c = client_for(controller.url)
    with pytest.raises(ctl.RemoteError) as caught:
        c.describe_group("nosuch")
    assert caught.value.code == -32000
    assert caught.value.method == "Group.DescribeGroup"
    assert "Group 'nosuch' is not being watched" in caught.value.message
    assert caught.value.to_result()["rpc_code"] == -32000


def test_an_error_answer_is_never_retried(controller):
    c = client_for(controller.url)
    with pytest.raises(ctl.RemoteError):
        c.destroy_group("nosuch")
    assert controller.methods() == ["Group.DestroyGroup"]
    assert c.sleeps == []


def test_a_refused_connection_is_retried_with_backoff_then_reported(sockdir):
    c = client_for(refuse_path(sockdir), retries=3, retry_delay=0.5)
    with pytest.raises(ctl.UnreachableError) as caught:
        c.inspect_groups()
    assert c.sleeps == [0.5, 1.0, 2.0]
    assert "cannot reach the InfraKit controller" in caught.value.message
    assert "after 4 attempts" in caught.value.message


def test_a_missing_socket_is_retried_and_succeeds_once_the_controller_is_up(sockdir):
    path = sockdir + "/group"
    started = []

    def start_on_first_retry(delay):
        if not started:
            started.append(FakeController(path).start())

    c = ctl.ControllerClient(url=path, sleep=start_on_first_retry)
    try:
        assert c.inspect_groups() == []
    finally:
        started[0].stop()
    assert started[0].methods() == ["Group.InspectGroups"]


def test_a_controller_that_never_answers_times_out_without_retry(sockdir):
    path = sockdir + "/slow"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    c = client_for(path, timeout=1)
    try:
        with pytest.raises(ctl.UnreachableError) as caught:
            c.commit_group(WORKERS, exists=False)
    finally:
        stop.set()
        server.close()
        for conn in accepted:
            conn.close()
    assert "no answer from the InfraKit controller" in caught.value.message
    assert len(accepted) == 1
    assert c.sleeps == []


def test_manager_status_is_none_when_the_controller_lacks_it(controller):
    c = client_for(controller.url)
    assert c.status()["Backend"]["Type"] == "file"
    controller.with_status = False
    assert c.status() is None


def test_unknown_method_detection_covers_go_infrakit_texts():
    go = ctl.RemoteError("x", code=-32000)
    go.message = 'rpc: can\'t find service "Manager.Status"'
    assert ctl.is_unknown_method(go)
    assert ctl.is_unknown_method(ctl.RemoteError("x", code=-32601))
    assert not ctl.is_unknown_method(ctl.RemoteError("Group 'x' is not being watched", code=-32000))


def test_default_url_follows_infrakit_plugin_discovery(monkeypatch):
    monkeypatch.setenv("INFRAKIT_PLUGINS_DIR", "/run/ik/plugins")
    monkeypatch.setenv("INFRAKIT_HOME", "/srv/ik")
    assert ctl.default_controller_url() == "/run/ik/plugins/group"
    monkeypatch.delenv("INFRAKIT_PLUGINS_DIR")
    assert ctl.default_controller_url() == "/srv/ik/plugins/group"
    monkeypatch.delenv("INFRAKIT_HOME")
    monkeypatch.setenv("HOME", "/home/op")
    assert ctl.default_controller_url() == "/home/op/.infrakit/plugins/group"


@pytest.mark.parametrize("url, expected", [
    ("/var/lib/infrakit/plugins/group", ("/var/lib/infrakit/plugins/group", "http://controller/")),
    ("unix:///tmp/p/group", ("/tmp/p/group", "http://controller/")),
    ("https://ik.example.com:24864", (None, "https://ik.example.com:24864/")),
    ("https://ik.example.com/rpc", (None, "https://ik.example.com/rpc")),
])
def test_controller_url_forms(url, expected):
    assert ctl.parse_controller_url(url) == expected


def test_plain_http_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="always uses TLS"):
        ctl.parse_controller_url("http://ik.example.com:24864")
    with pytest.raises(ctl.ControllerError, match="https:// URL"):
        ctl.ControllerClient.from_params({"controller_url": "http://x"})


def test_leader_location_accepts_go_url_struct_and_plain_string():
    assert ctl.location_text({"Scheme": "https", "Host": "10.0.0.5:24864", "Path": ""}) == "https://10.0.0.5:24864"
    assert ctl.location_text("https://a:1") == "https://a:1"
    assert ctl.location_text({"Scheme": "", "Host": ""}) is None
    assert ctl.location_text(None) is None


def test_https_sends_the_bearer_token(tls_pair):
    fake = FakeController(tls_cert=tls_pair[0], tls_key=tls_pair[1]).start()
    fake.required_token = "s3cret"
    try:
        c = client_for(fake.url, token="s3cret", validate_certs=False)
        assert c.is_leader() is True
        assert fake.headers[-1]["Authorization"] == "Bearer s3cret"

        wrong = client_for(fake.url, token="nope", validate_certs=False)
        with pytest.raises(ctl.RemoteError) as caught:
            wrong.is_leader()
        assert caught.value.code == 401
        assert "check controller_token" in caught.value.message
        assert wrong.sleeps == []

        verifying = client_for(fake.url, token="s3cret", validate_certs=True)
        with pytest.raises(ctl.UnreachableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed") as bad:
            verifying.is_leader()
        # Not retried (no retry changes a certificate), and the sentence says what to do.
        assert verifying.sleeps == []
        assert "INFRAKIT_VALIDATE_CERTS=false" in bad.value.message
    finally:
        fake.stop()
