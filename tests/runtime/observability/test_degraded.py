"""A group whose instance plugin fails every provision: Degraded with the plugin's words everywhere, and backing off."""

from __future__ import annotations

import itertools
import json

from tests.runtime.ha.cluster import wait_for
from tests.runtime.observability.conftest import MISSING_PROGRAM, value

PLUGIN_ERROR = "No such file or directory"


def test_a_failing_provision_is_degraded_with_the_plugins_error_and_backs_off(stack):
    assert stack.commit(stack.failing_spec("broken")) == "Managing 1 instances"
    desc = stack.wait(lambda d: d["Status"]["Condition"] == "Degraded" and d["Status"].get("LastError"),
                      what="broken reported Degraded", gid="broken")
    status = desc["Status"]
    assert MISSING_PROGRAM in status["LastError"] and PLUGIN_ERROR in status["LastError"]
    assert MISSING_PROGRAM in status["Reason"], "the reason names the plugin's error"
    assert not desc["Converged"] and status["Running"] == 0

    # Watch three more retries: the controller keeps passing but calls Provision ever more rarely.
    first = stack.scrape()

    def attempts_so_far() -> list[float]:
        events = stack.call("Manager.Events", {"Group": "broken", "Limit": 0})["Events"]
        return [e["Time"] for e in events if e["Kind"] == "provision_failed"]

    before = len(attempts_so_far())
    wait_for(lambda: len(attempts_so_far()) >= before + 3, 120, "three more retries")
    later = stack.scrape()
    attempts = attempts_so_far()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # Backoff doubles (with jitter in [50%, 100%]); a pass may land up to one poll (0.5 s) late.
    for earlier, next_gap in itertools.pairwise(gaps):
        assert next_gap >= earlier - 0.6, f"retries are not backing off: gaps {gaps}"
    passes = (value(later, "infrakit_reconcile_duration_seconds_count", group="broken")
              - value(first, "infrakit_reconcile_duration_seconds_count", group="broken"))
    calls = (value(later, "infrakit_rpc_duration_seconds_count", plugin="process", method="Instance.Provision",
                   outcome="error")
             - value(first, "infrakit_rpc_duration_seconds_count", plugin="process", method="Instance.Provision",
                     outcome="error"))
    assert passes > 2 * max(calls, 1), f"{calls:g} provisions in {passes:g} passes: the plugin is being hammered"

    # The metrics say the same: Degraded, failures by the side that failed, a slot backing off.
    m = later
    assert value(m, "infrakit_group_condition", group="broken", condition="Degraded") == 1
    assert value(m, "infrakit_group_converged", group="broken") == 0
    # (scraped just before the events were read: at most the one attempt in between differs)
    failures = value(m, "infrakit_provision_failures_total", group="broken", reason="instance_plugin")
    assert len(attempts) - 1 <= failures <= len(attempts)
    assert len(attempts) - 1 <= value(m, "infrakit_group_consecutive_failures", group="broken") <= len(attempts)
    assert value(m, "infrakit_instances_provisioned_total", group="broken") == 0

    # And the CLI: describe shows the condition and the plugin's message; watch gives up non-zero.
    out = stack.cli("group", "describe", "broken")
    assert out.returncode == 0, out.stderr
    assert "Degraded" in out.stdout and MISSING_PROGRAM in out.stdout and PLUGIN_ERROR in out.stdout
    as_json = json.loads(stack.cli("group", "describe", "broken", "-o", "json").stdout)
    assert as_json["Status"]["Condition"] == "Degraded" and MISSING_PROGRAM in as_json["Status"]["LastError"]
    watch = stack.cli("group", "watch", "broken", "--timeout", "1.5")
    assert watch.returncode == 1
    assert "did not converge" in watch.stderr and "Degraded" in watch.stderr and MISSING_PROGRAM in watch.stderr
