"""The metrics' bounded vocabularies and hooks, checked against the real planner (no daemons)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infrakit_runtime.group import events as ev
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.plan import Destroy, plan_group
from infrakit_runtime.manager.metrics import ControllerMetrics, destroy_cause, provision_failure_reason
from tests.runtime.group import world


def _destroys(spec, members, health, memory=None):
    plan = plan_group(spec=spec, observed=members, health=health, memory=memory or Memory(), now=100.0)
    return [a for a in plan.actions if isinstance(a, Destroy)]


def test_every_destroy_reason_the_planner_writes_maps_back_to_its_cause():
    s = world.spec(2)
    h = s.config_hash
    cases = [
        # scale down
        _destroys(s, [world.member(f"i{n}", h) for n in range(4)], {f"i{n}": world.ready() for n in range(4)}),
        # unhealthy
        _destroys(world.spec(3, health={"GracePeriod": "0s", "UnhealthyThreshold": 1, "MaxUnhealthy": 2}),
                  [world.member(f"i{n}", world.spec(3).config_hash) for n in range(3)],
                  {"i0": world.failing(), "i1": world.ready(), "i2": world.ready()}),
        # rolling update and outdated scale-down
        _destroys(world.spec(2, init="v2", updating={"MaxUnavailable": 1}),
                  [world.member("old1", h), world.member("old2", h)], {"old1": world.ready(), "old2": world.ready()}),
        _destroys(world.spec(1, init="v2"), [world.member("new", world.spec(1, init="v2").config_hash),
                                             world.member("old", h)], {"new": world.ready(), "old": world.ready()}),
    ]
    pets = world.spec(logical_ids=["a", "b"])
    ph = pets.config_hash
    cases += [
        _destroys(pets, [world.member("x", ph, "a"), world.member("y", ph, "b"), world.member("z", ph, "zz")],
                  {i: world.ready() for i in "xyz"}),
        _destroys(pets, [world.member("x", ph, "a"), world.member("x2", ph, "a"), world.member("y", ph, "b")],
                  {i: world.ready() for i in ("x", "x2", "y")}),
        _destroys(world.spec(logical_ids=["a"], init="v2"),
                  [world.member("old", ph, "a"), world.member("new", world.spec(logical_ids=["a"], init="v2").config_hash, "a")],
                  {"old": world.ready(), "new": world.ready()}),
    ]
    seen = set()
    for destroys in cases:
        assert destroys, "each case must plan a destroy"
        for d in destroys:
            assert destroy_cause(d.reason) == d.cause, d
            seen.add(d.cause)
    assert seen == {"scale_down", "unhealthy", "rolling_update", "not_in_allocation", "duplicate"}
    assert destroy_cause("destroyed on request") == "request"
    assert destroy_cause("something new") == "other"


def test_provision_failures_are_labelled_by_the_side_that_failed():
    assert provision_failure_reason("flavor vanilla could not prepare the instance: boom") == "flavor_prepare"
    assert provision_failure_reason("cannot reach plugin process at /x: refused") == "unreachable"
    assert provision_failure_reason("cannot start instance process-1 (/bin/x): No such file") == "instance_plugin"


def test_events_are_counted_as_they_are_emitted_and_histograms_fill_from_the_hooks():
    class Controller:
        events = ev.EventLog()
        clock = staticmethod(lambda: 0.0)

        @staticmethod
        def supervisors():
            return {}

    metrics = ControllerMetrics()
    controller = Controller()
    metrics.attach(controller=controller)  # type: ignore[arg-type]
    try:
        controller.events.emit(ev.PROVISIONED, group="g", instance="i1")
        controller.events.emit(ev.DESTROYED, group="g", instance="i1", reason="unhealthy for 3 consecutive checks")
        controller.events.emit(ev.PROVISION_FAILED, group="g", reason="cannot start instance x: gone")
        metrics.observe_call("process", "Instance.Provision", 0.002, "error")
        assert len(controller.events.recent(limit=0)) == 3, "observing keeps the ring intact"
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in f.samples}
        assert samples[("infrakit_instances_provisioned_total", (("group", "g"),))] == 1
        assert samples[("infrakit_instances_destroyed_total", (("group", "g"), ("reason", "unhealthy")))] == 1
        assert samples[("infrakit_provision_failures_total", (("group", "g"), ("reason", "instance_plugin")))] == 1
        assert samples[("infrakit_rpc_duration_seconds_count",
                        (("method", "Instance.Provision"), ("outcome", "error"), ("plugin", "process")))] == 1
    finally:
        metrics.close()
    controller.events.emit(ev.PROVISIONED, group="g", instance="i2")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(metrics.registry).decode()) for s in f.samples}
    assert samples[("infrakit_instances_provisioned_total", (("group", "g"),))] == 1, "closed metrics count no more"
