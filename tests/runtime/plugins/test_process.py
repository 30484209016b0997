"""The process instance plugin, with real processes: they serve, die, outlive the daemon, and never leak.

Daemon tests run ``infrakit plugin run process`` through the ``daemons`` fixture;
the in-process tests drive ``ProcessInstancePlugin`` with ``asyncio.run``. Every
test ends by killing whatever instance process it left, and fails if one was left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.plugins.instance import process_os, process_props, process_store
from infrakit_runtime.plugins.instance.process import ProcessInstancePlugin
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.plugins import process_helpers as ph

# A tiny HTTP server: answers GET with the environment the plugin gave it and what Init left behind.
SERVER = """
import http.server, json, os
seen = {k: os.environ.get(k) for k in ("INFRAKIT_INSTANCE_ID", "INFRAKIT_LOGICAL_ID", "INFRAKIT_PORT", "PORT",
                                        "INFRAKIT_GROUP", "GREETING", "FROM_ENV")}
seen["init_file_before_start"] = os.path.exists("init-ran")
seen["cwd"] = os.getcwd()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("serving", os.environ["PORT"], flush=True)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
SLEEPER = ["sleep", "60"]


# --- helpers --------------------------------------------------------------------------------------

eventually, running = ph.eventually, ph.running


def http_get(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
        return json.loads(resp.read())


@pytest.fixture
def plugin_daemon(daemons, reaper):
    """A process plugin daemon (1 s stop timeout) and a call helper."""
    daemons.start("process", "-o", "stop_timeout=1s")
    client = daemons.client("process")

    def call(method: str, **params: Any) -> Any:
        return client.call(f"Instance.{method}", {"Type": "", **params})

    call.client = client  # type: ignore[attr-defined]
    yield call
    client.close()


def spec(properties: dict[str, Any], *, tags: dict[str, str] | None = None, init: str = "",
         logical_id: str | None = None) -> dict[str, Any]:
    return instance.Spec(properties=properties, tags=tags or {}, init=init, logical_id=logical_id).to_wire()


def describe(call, tags: dict[str, str] | None = None, properties: bool = False) -> list[dict[str, Any]]:
    return call("DescribeInstances", Tags=tags or {}, Properties=properties)["Descriptions"]


def state_dir(daemons) -> Path:
    return daemons.home / "instance-process"


# --- over the daemon -------------------------------------------------------------------------------


def test_a_provisioned_process_serves_on_its_port_with_the_plugins_environment_after_init(daemons, plugin_daemon,
                                                                                          tmp_path):
    call = plugin_daemon
    work = tmp_path / "work"
    work.mkdir()
    props = {"Command": [sys.executable, "-c", SERVER], "Env": {"FROM_ENV": "yes"}, "Dir": str(work)}
    iid = call("Provision", Spec=spec(props, tags={"infrakit.group": "web"}, logical_id="web-1",
                                      init="echo ran > init-ran\nexport GREETING=hello"))["ID"]

    [found] = describe(call, properties=True)
    assert found["ID"] == iid and found["LogicalID"] == "web-1"
    p = found["Properties"]
    port, pid = p["Port"], p["PID"]
    assert p["Address"] == f"127.0.0.1:{port}" and p["Host"] == "127.0.0.1" and p["StartedAt"]
    assert p["Spec"]["Properties"] == props
    seen = eventually(lambda: http_get(port))
    assert seen == {
        "INFRAKIT_INSTANCE_ID": iid, "INFRAKIT_LOGICAL_ID": "web-1", "INFRAKIT_PORT": str(port), "PORT": str(port),
        "INFRAKIT_GROUP": "web", "GREETING": "hello", "FROM_ENV": "yes",
        "init_file_before_start": True, "cwd": str(work),
    }
    # Detached: its own session, stdin from /dev/null, output in a per-instance log in the state dir.
    assert os.getsid(pid) == pid
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{pid}/fd/1") == str(state_dir(daemons) / f"{iid}.log")
    assert "serving" in eventually(lambda: (state_dir(daemons) / f"{iid}.log").read_text())
    record = json.loads((state_dir(daemons) / f"{iid}.json").read_text())
    assert record["PID"] == pid and record["StartTime"] == process_os.read_stat(pid).start_time

    call("Destroy", Instance=iid, Context={"Reason": "terminate"})
    assert not running(pid)
    assert describe(call) == []
    assert not (state_dir(daemons) / f"{iid}.json").exists()


def test_a_string_command_runs_in_sh_and_port_false_allocates_none(plugin_daemon, tmp_path):
    call = plugin_daemon
    out = tmp_path / "out"
    iid = call("Provision", Spec=spec({"Command": f'echo "$INFRAKIT_INSTANCE_ID port=${{PORT:-none}}" > {out}; exec sleep 60',
                                       "Port": False}))["ID"]
    assert eventually(lambda: out.read_text()) == f"{iid} port=none\n"
    [found] = describe(call, properties=True)
    assert found["Properties"]["Port"] is None and found["Properties"]["Address"] == "127.0.0.1"
    call("Destroy", Instance=iid, Context={"Reason": "terminate"})


def test_provision_many_reports_each_slots_outcome(plugin_daemon):
    call = plugin_daemon
    assert "InstanceBatch/0.1.0" in call.client.hello()
    results = call("ProvisionMany", Specs=[spec({"Command": SLEEPER, "Port": False}, tags={"batch": "1"}),
                                           spec({"Command": 5}, tags={"batch": "1"})])["Results"]
    assert results[0]["Error"] is None and results[0]["ID"].startswith("process-")
    assert results[1]["ID"] is None and "Command must be a list of strings or a string" in results[1]["Error"]
    assert [d["ID"] for d in describe(call, {"batch": "1"})] == [results[0]["ID"]]
    call("Destroy", Instance=results[0]["ID"], Context={"Reason": "terminate"})


def test_describe_ands_tags_omits_properties_unless_asked_and_label_persists(daemons, plugin_daemon):
    call = plugin_daemon
    ids = {
        name: call("Provision", Spec=spec({"Command": SLEEPER, "Port": False}, tags=tags))["ID"]
        for name, tags in {"a1": {"g": "a", "tier": "x"}, "a2": {"g": "a"}, "b": {"g": "b", "tier": "x"}}.items()
    }
    assert {d["ID"] for d in describe(call, {"g": "a"})} == {ids["a1"], ids["a2"]}
    assert [d["ID"] for d in describe(call, {"g": "a", "tier": "x"})] == [ids["a1"]]
    assert describe(call, {"g": "nope"}) == []
    assert all("Properties" not in d for d in describe(call))

    call("Label", Instance=ids["a2"], Labels={"tier": "x", "new": "1"})
    [labelled] = describe(call, {"new": "1"})
    assert labelled["ID"] == ids["a2"] and labelled["Tags"] == {"g": "a", "tier": "x", "new": "1"}
    assert json.loads((state_dir(daemons) / f"{ids['a2']}.json").read_text())["Tags"]["new"] == "1"
    with pytest.raises(RemoteError, match="not found"):
        call("Label", Instance="process-0000000000000000", Labels={"x": "y"})
    for iid in ids.values():
        call("Destroy", Instance=iid, Context={"Reason": "terminate"})
    assert describe(call) == []


def test_destroy_sends_sigterm_to_the_group_then_sigkill_and_tolerates_gone_instances(plugin_daemon, tmp_path):
    call = plugin_daemon
    polite, stubborn = tmp_path / "polite", tmp_path / "stubborn"
    # A background child that ignores SIGTERM shares the group: destroy must take it down too.
    polite_id = call("Provision", Spec=spec({"Command": f"(trap '' TERM; exec sleep 60) & "
                                                        f"trap 'echo TERM > {polite}; exit 0' TERM; "
                                                        "echo $! > bg; wait", "Port": False, "Dir": str(tmp_path)}))["ID"]
    stubborn_id = call("Provision", Spec=spec({"Command": f"trap 'echo TERM >> {stubborn}' TERM; "
                                                          "while :; do sleep 0.1; done", "Port": False}))["ID"]
    pids = {d["ID"]: d["Properties"]["PID"] for d in describe(call, properties=True)}
    background = int(eventually(lambda: (tmp_path / "bg").read_text().strip()))
    assert running(background)

    call("Destroy", Instance=polite_id, Context={"Reason": "terminate"})
    assert polite.read_text() == "TERM\n"
    assert not running(pids[polite_id]) and not running(background)

    call("Destroy", Instance=stubborn_id, Context={"Reason": "rolling_update"})
    assert stubborn.read_text().startswith("TERM\n"), "SIGTERM comes first"
    assert not running(pids[stubborn_id]), "then SIGKILL after stop_timeout"
    assert describe(call) == []

    # Destroying what is already gone, or never was, is not an error; a malformed ID is.
    call("Destroy", Instance=stubborn_id, Context={"Reason": "terminate"})
    call("Destroy", Instance="process-0123456789abcdef", Context={"Reason": "terminate"})
    with pytest.raises(RemoteError, match="not a process instance ID"):
        call("Destroy", Instance="../plugins/process", Context={"Reason": "terminate"})


def test_an_instance_killed_with_sigkill_disappears_and_its_record_is_removed(daemons, plugin_daemon):
    call = plugin_daemon
    keep = call("Provision", Spec=spec({"Command": SLEEPER, "Port": False}))["ID"]
    victim = call("Provision", Spec=spec({"Command": SLEEPER, "Port": False}))["ID"]
    pid = {d["ID"]: d["Properties"]["PID"] for d in describe(call, properties=True)}[victim]
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: [d["ID"] for d in describe(call)] == [keep])
    # Buried in a task of its own after describe stops listing it: reaped by the daemon (not left a
    # zombie) and its record removed, soon but not necessarily at once on a busy machine.
    eventually(lambda: process_os.read_stat(pid) is None and not (state_dir(daemons) / f"{victim}.json").exists())
    assert (state_dir(daemons) / f"{keep}.json").exists()
    call("Destroy", Instance=keep, Context={"Reason": "terminate"})


def test_instances_outlive_a_killed_daemon_and_a_restarted_one_finds_and_manages_them(daemons, plugin_daemon):
    call = plugin_daemon
    props = {"Command": [sys.executable, "-c", SERVER]}
    ids = [call("Provision", Spec=spec(props, tags={"infrakit.group": "web"}))["ID"] for _ in range(2)]
    before = {d["ID"]: d["Properties"] for d in describe(call, properties=True)}
    for p in before.values():
        eventually(lambda p=p: http_get(p["Port"]))

    daemons.kill("process")  # SIGKILL: no chance to clean up
    call.client.close()
    assert all(running(p["PID"]) for p in before.values())
    daemons.start("process", "-o", "stop_timeout=1s")
    after = {d["ID"]: d["Properties"] for d in describe(call, {"infrakit.group": "web"}, properties=True)}
    assert after == before
    assert all(http_get(p["Port"])["INFRAKIT_INSTANCE_ID"] == iid for iid, p in after.items())

    daemons.kill("process", signal.SIGTERM)  # a clean shutdown leaves the instances running too
    call.client.close()
    assert all(running(p["PID"]) for p in before.values())
    daemons.start("process", "-o", "stop_timeout=1s")
    assert {d["ID"]: d["Properties"] for d in describe(call, properties=True)} == before

    # The restarted daemon is not their parent, yet it sees one die and destroys the other.
    os.kill(after[ids[0]]["PID"], signal.SIGKILL)
    eventually(lambda: [d["ID"] for d in describe(call)] == [ids[1]])
    call("Destroy", Instance=ids[1], Context={"Reason": "terminate"})
    assert not running(after[ids[1]]["PID"])
    assert describe(call) == []


def test_a_recycled_pid_is_never_taken_for_an_instance_nor_signalled(daemons, plugin_daemon, reaper):
    call = plugin_daemon
    bystander = reaper.spawn(["sleep", "60"])
    stat = eventually(lambda: process_os.read_stat(bystander.pid))
    directory = state_dir(daemons)
    for n, start_time in (("0000000000000001", stat.start_time - 1), ("0000000000000002", stat.start_time + 7)):
        iid = f"process-{n}"
        (directory / f"{iid}.json").write_text(json.dumps({
            "ID": iid, "LogicalID": None, "Tags": {"forged": "yes"}, "Spec": {}, "PID": bystander.pid,
            "StartTime": start_time, "Port": None, "StartedAt": "2020-01-01T00:00:00Z",
        }))
    assert describe(call, {"forged": "yes"}) == []
    eventually(lambda: not list(directory.glob("process-000000000000000*.json")))  # dead records are collected
    # Destroy of a forged record must not signal the bystander either.
    (directory / "process-0000000000000003.json").write_text(json.dumps({
        "ID": "process-0000000000000003", "Tags": {}, "PID": bystander.pid, "StartTime": stat.start_time + 1}))
    call("Destroy", Instance="process-0000000000000003", Context={"Reason": "terminate"})
    time.sleep(0.2)  # a window in which a wrongly sent signal would have ended the bystander
    assert bystander.poll() is None and running(bystander.pid)


def test_validation_lists_every_problem_naming_each_field(plugin_daemon, daemons, tmp_path):
    call = plugin_daemon
    with pytest.raises(RemoteError) as err:
        call("Validate", Properties={"Command": 5, "Env": {"A": 1, "INFRAKIT_PORT": "9"}, "Dir": str(tmp_path / "nope"),
                                     "Cmd": ["x"], "Port": "yes"})
    message = err.value.message
    assert err.value.code == -32000
    for words in ("Command must be a list of strings or a string, got number", "Env.A must be a string, got number",
                  "Env.INFRAKIT_PORT is set by the plugin", "does not exist", "unknown property 'Cmd'",
                  "known properties: Command, Dir, Env, Group, Port, User", "Port must be true or false, got string"):
        assert words in message
    with pytest.raises(RemoteError, match=r"Command is required"):
        call("Validate", Properties={})
    with pytest.raises(RemoteError, match=r"Command\[1\] must be a string, got null"):
        call("Validate", Properties={"Command": ["echo", None]})
    assert call("Validate", Properties={"Command": SLEEPER, "Env": {"A": "1"}, "Dir": str(tmp_path)})["OK"] is True

    # Provision refuses the same way, and a program that cannot be executed leaves nothing behind.
    with pytest.raises(RemoteError, match="Command is required"):
        call("Provision", Spec=spec({"Env": {}}))
    with pytest.raises(RemoteError, match=r"cannot start instance .*/no/such/program.*No such file"):
        call("Provision", Spec=spec({"Command": ["/no/such/program"]}))
    assert describe(call) == []
    assert not list(state_dir(daemons).glob("process-*"))


# --- in process --------------------------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path, daemons, reaper) -> Path:
    """A state dir for an in-process plugin whose instances the reaper can find (same INFRAKIT_HOME)."""
    return tmp_path / "inproc"


def base_env(daemons) -> dict[str, str]:
    return {**os.environ, "INFRAKIT_HOME": str(daemons.home)}


@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "polling"])
def test_wait_change_returns_as_soon_as_an_instance_dies(plugin_dir, daemons, use_pidfd):
    async def scenario() -> None:
        plugin = ProcessInstancePlugin(plugin_dir, use_pidfd=use_pidfd, base_env=base_env(daemons))
        await plugin.start()
        try:
            rev0 = plugin.revision
            assert await plugin.wait_change(rev0, 0.1) == rev0, "nothing changed: returns after the timeout"
            iid = await plugin.provision(instance.Spec(properties={"Command": SLEEPER, "Port": False}))
            rev1 = await plugin.wait_change(rev0, 5)
            assert rev1 > rev0, "a provision is a change"
            [found] = await plugin.describe_instances({}, True)
            waiter = asyncio.create_task(plugin.wait_change(rev1, 30))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            os.kill(found.properties["PID"], signal.SIGKILL)
            rev2 = await asyncio.wait_for(waiter, 5)  # returns on the death, long before its 30 s timeout
            assert rev2 > rev1
            assert await plugin.describe_instances({}, False) == []
            assert process_os.read_stat(found.properties["PID"]) is None, "the plugin reaps its own children"
            assert not plugin.store.path(iid).exists()
        finally:
            await plugin.close()

    asyncio.run(scenario())


def test_a_record_left_half_written_by_a_killed_daemon_is_adopted_or_dropped(plugin_dir, daemons, reaper):
    store = process_store.RecordStore(plugin_dir)
    adopted, lost = "process-00000000000000aa", "process-00000000000000bb"
    for iid in (adopted, lost):
        store.write({"ID": iid, "LogicalID": None, "Tags": {"g": "x"}, "Spec": {}, "PID": None, "StartTime": None,
                     "Port": None, "StartedAt": "2020-01-01T00:00:00Z"})
    orphan = reaper.spawn(SLEEPER, env={**base_env(daemons), "INFRAKIT_INSTANCE_ID": adopted,
                                        process_props.ENV_OWNER: str(plugin_dir.resolve())})

    async def scenario() -> None:
        plugin = ProcessInstancePlugin(plugin_dir, base_env=base_env(daemons))
        await plugin.start()
        try:
            [found] = await plugin.describe_instances({"g": "x"}, True)
            assert found.id == adopted and found.properties["PID"] == orphan.pid
            assert store.read(lost) is None
            await plugin.destroy(adopted, instance.Context())
        finally:
            await plugin.close()

    asyncio.run(scenario())
    assert orphan.wait(5) == -signal.SIGTERM


def test_two_daemons_cannot_share_a_state_directory(tmp_path):
    store = process_store.RecordStore(tmp_path)
    with store.lock(), pytest.raises(ValidationError, match="another process plugin daemon"), \
            process_store.RecordStore(tmp_path).lock():
        pass
    with store.lock():  # released with its holder
        pass



def test_argv_commands_expand_the_instances_variables_like_a_shell_would():
    props = process_props.parse({"Command": ["python3", "-m", "http.server", "$PORT", "--id=${INFRAKIT_INSTANCE_ID}",
                                             "echo $$ $HOME $UNSET"]})
    env = {"PORT": "8123", "INFRAKIT_INSTANCE_ID": "process-1", "HOME": "/root"}
    # Only the plugin's own variables are filled in; other $ text (a shell script's) passes through.
    assert process_props.argv(props, "", env) == ["python3", "-m", "http.server", "8123", "--id=process-1",
                                                  "echo $$ $HOME $UNSET"]
    assert process_props.argv(props, "export X=1", env)[-3:] == ["8123", "--id=process-1", "echo $$ $HOME $UNSET"]
