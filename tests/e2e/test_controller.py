"""The installed collection end to end: demo.yml with ansible-playbook, cluster.yml with
ansible-runner (what AWX runs), the supervisor's self-healing, and teardown.yml.

The tests share one controller (installed by the demo) and run in this file's order. Outcomes are
read from the controller itself (DescribeGroup over its socket) and from /proc, not from Ansible's
output alone.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import ansible_runner
import pytest

from tests.e2e.conftest import BIN, E2E, ours, wait_until

pytestmark = pytest.mark.timeout(420)


def answer(instance: dict) -> str | None:
    address = (instance.get("Properties") or {}).get("Address")
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=2) as resp:
            return resp.read().decode().split(" from ")[0].strip()
    except Exception:
        return None


def test_demo_playbook_leaves_five_healthy_v2_instances_and_a_running_controller(e2e: E2E) -> None:
    started = time.monotonic()
    run = e2e.playbook("demo.yml", "-e", f"demo_prefix={e2e.prefix}")
    assert run.rc == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert run.recap()["failed"] == 0
    # The sampler's verdict is part of the playbook; check it was reached and passed.
    assert "never fewer than 3 healthy instances" in run.stdout
    desc = e2e.describe("web")
    instances = desc["Instances"]
    assert desc["Converged"] is True
    assert len(instances) == 5
    assert len({i["Tags"]["infrakit.config.hash"] for i in instances}) == 1
    assert [answer(i) for i in instances] == ["v2"] * 5
    # The controller was left running under the supervisor, in the prefix.
    up = e2e.pid("infrakit-up")
    assert up is not None and up in ours(str(e2e.prefix))
    print(f"demo.yml took {time.monotonic() - started:.0f}s")


def test_second_run_of_the_role_changes_nothing(e2e: E2E) -> None:
    up = e2e.pid("infrakit-up")
    run = e2e.playbook("demo.yml", "--tags", "controller", "-e", f"demo_prefix={e2e.prefix}")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.recap()["changed"] == 0, run.stdout[-6000:]
    assert e2e.pid("infrakit-up") == up


def test_check_mode_of_a_config_change_reports_it_and_changes_nothing(e2e: E2E) -> None:
    before = e2e.config.read_text()
    up = e2e.pid("infrakit-up")
    run = e2e.playbook("demo.yml", "--tags", "controller", "--check", "-e", f"demo_prefix={e2e.prefix}",
                       "-e", "demo_poll=2s")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.recap()["changed"] >= 1
    assert e2e.config.read_text() == before
    assert e2e.pid("infrakit-up") == up


def test_a_config_change_restarts_the_supervisor_and_the_groups_carry_on(e2e: E2E) -> None:
    up = e2e.pid("infrakit-up")
    manager = e2e.pid("group")
    run = e2e.playbook("demo.yml", "--tags", "controller", "-e", f"demo_prefix={e2e.prefix}", "-e", "demo_poll=2s")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.recap()["changed"] >= 1
    assert "poll_interval: 2s" in e2e.config.read_text()
    assert e2e.pid("infrakit-up") not in (None, up)
    assert e2e.pid("group") not in (None, manager)
    assert manager not in ours(str(e2e.prefix))
    # The new manager took the stored spec over: the same five instances, still converged.
    desc = wait_until(lambda: (d := e2e.describe("web"))["Converged"] and d, 60, "web converged again")
    assert len(desc["Instances"]) == 5


def _runner(e2e: E2E, name: str):
    private = e2e.root / f"runner-{name}"
    (private / "env").mkdir(parents=True, exist_ok=True)
    (private / "inventory").mkdir(exist_ok=True)
    (private / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={BIN / 'python'}\n")
    venv_python = e2e.prefix / "root" / "opt" / "infrakit" / "venv" / "bin" / "python"
    # Written as AWX writes extra vars: YAML, with the Go-template placeholder marked !unsafe.
    (private / "env" / "extravars").write_text(f"""
infrakit_controller_url: {e2e.plugins_dir / 'group'}
infrakit_groups:
  - name: api
    size: 2
    instance:
      plugin: process
      properties:
        Command: ["{venv_python}", -m, infrakit_runtime.examples.webapp]
    flavor:
      plugin: vanilla
      properties:
        Init: [export MESSAGE=api]
        Health: {{HTTP: !unsafe "http://{{{{address}}}}/healthz", Timeout: 1s}}
    health: {{grace_period: 5s, unhealthy_threshold: 2}}
    wait_timeout: 120
""")
    envvars = {k: v for k, v in e2e.env.items() if k.startswith("ANSIBLE_") or k in ("PATH", "INFRAKIT_HOME")}
    return ansible_runner.run(private_data_dir=str(private), playbook=str(e2e.collection / "playbooks" / "cluster.yml"),
                              envvars=envvars, quiet=True, timeout=300)


def test_cluster_playbook_under_ansible_runner_declares_groups_and_a_rerun_changes_nothing(e2e: E2E) -> None:
    first = _runner(e2e, "first")
    assert first.status == "successful", first.stdout.read()[-4000:]
    assert first.stats["changed"].get("localhost", 0) >= 1
    desc = e2e.describe("api")
    assert desc["Converged"] is True
    assert [answer(i) for i in desc["Instances"]] == ["api", "api"]

    again = _runner(e2e, "again")
    assert again.status == "successful", again.stdout.read()[-4000:]
    assert again.stats["changed"].get("localhost", 0) == 0
    assert sorted(i["ID"] for i in e2e.describe("api")["Instances"]) == sorted(i["ID"] for i in desc["Instances"])


def test_the_supervisor_brings_a_killed_manager_back_within_seconds(e2e: E2E) -> None:
    victim = e2e.pid("group")
    assert victim is not None and e2e.answers("group")
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: e2e.pid("group") not in (None, victim) and e2e.answers("group"), 15, "a new manager")
    print(f"manager back {time.monotonic() - killed:.1f}s after SIGKILL")
    assert victim not in ours(str(e2e.prefix))
    desc = wait_until(lambda: (d := e2e.describe("web"))["Converged"] and d, 60, "web converged under the new manager")
    assert len(desc["Instances"]) == 5


def test_the_supervisor_kills_and_replaces_a_hung_manager(e2e: E2E) -> None:
    victim = e2e.pid("group")
    assert victim is not None and e2e.answers("group")
    os.kill(victim, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        # The demo probes every 1s with a 2s deadline and gives up after 3 misses.
        wait_until(lambda: e2e.pid("group") not in (None, victim) and e2e.answers("group"), 30, "a replacement manager")
        print(f"hung manager replaced {time.monotonic() - stopped:.1f}s after SIGSTOP")
        wait_until(lambda: victim not in ours(str(e2e.prefix)), 10, "the hung manager gone")
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert len(wait_until(lambda: (d := e2e.describe("api"))["Converged"] and d, 60, "api converged")["Instances"]) == 2


def test_the_keeper_brings_a_killed_supervisor_back_and_a_rerun_of_the_role_changes_nothing(e2e: E2E) -> None:
    """Where systemd is absent the role runs `infrakit up --detach`: a keeper restarts the supervisor itself."""
    keeper, up, manager = e2e.pid("infrakit-keeper"), e2e.pid("infrakit-up"), e2e.pid("group")
    marker = str(e2e.prefix)
    assert keeper in ours(marker) and up in ours(marker) and manager in ours(marker)
    os.kill(up, signal.SIGKILL)
    wait_until(lambda: e2e.pid("infrakit-up") not in (None, up) and e2e.pid("infrakit-up") in ours(marker)
               and e2e.pid("group") not in (None, manager) and e2e.answers("group"), 60, "a new supervisor and manager")
    assert up not in ours(marker) and manager not in ours(marker)
    assert e2e.pid("infrakit-keeper") == keeper
    desc = wait_until(lambda: (d := e2e.describe("web"))["Converged"] and d, 60, "web converged under the new manager")
    assert len(desc["Instances"]) == 5
    run = e2e.playbook("demo.yml", "--tags", "controller", "-e", f"demo_prefix={e2e.prefix}", "-e", "demo_poll=2s")
    assert run.rc == 0, run.stdout[-4000:]
    assert run.recap()["changed"] == 0, run.stdout[-6000:]
    assert e2e.pid("infrakit-keeper") == keeper


def test_teardown_destroys_the_groups_stops_everything_and_a_rerun_changes_nothing(e2e: E2E) -> None:
    assert ours(str(e2e.prefix))
    args = ("-e", f"controller_prefix={e2e.prefix / 'root'}", "-e", "controller_user_create=false",
            "-e", "teardown_groups=destroy", "-e", "teardown_remove_install=true",
            "-e", f"ansible_python_interpreter={BIN / 'python'}")
    run = e2e.playbook("teardown.yml", *args)
    assert run.rc == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Daemons, supervisor and every instance process (they run the prefix's venv python) are gone.
    wait_until(lambda: ours(str(e2e.prefix)) == [], 20, "every process of the controller and its groups gone")
    assert not e2e.plugins_dir.exists()
    assert not list((e2e.prefix / "root").rglob("*.pid"))
    sockets = [p for p in e2e.root.rglob("*") if p.is_socket()]
    assert sockets == []

    again = e2e.playbook("teardown.yml", *args)
    assert again.rc == 0, again.stdout[-4000:]
    assert again.recap()["changed"] == 0, again.stdout[-4000:]
