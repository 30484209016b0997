"""The manager daemon's own metrics: what the controller sees, decides and pays for.

Guarantee: group state (counts, condition, backoff, leadership) is read from the live
supervisors and the manager at scrape time, so a gauge can never drift from what
DescribeGroup would say; counters are bumped synchronously where the event happens (the
event log, the supervisor's pass hook, the RPC client's observers), so none is lost to a
slow consumer. They join the daemon's registry (``infrakit_runtime.metrics``), beside the
process, build and served-RPC series every daemon exports; two managers in one process
(tests) never mix their numbers.
Limit: counters start at zero when the daemon starts and only the leader has supervisors,
so a follower exports leadership and RPC metrics but no group gauges (with ``sharding:
groups`` each member has the supervisors of the groups it owns, and ``infrakit_group_owned``
says which those are); label values are
bounded (plugin names, RPC methods, group IDs and a fixed vocabulary of reasons), never a
free-text error message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from infrakit_runtime.group import controller as group_controller
from infrakit_runtime.group import events as ev
from infrakit_runtime.group.plan.actions import (
    CAUSE_DUPLICATE,
    CAUSE_NOT_IN_ALLOCATION,
    CAUSE_ROLLING_UPDATE,
    CAUSE_SCALE_DOWN,
    CAUSE_UNHEALTHY,
    CONVERGED,
    DEGRADED,
    PROGRESSING,
)
from infrakit_runtime.metrics import RPC_BUCKETS

if TYPE_CHECKING:
    from infrakit_runtime.group.plan.spec import GroupSpec
    from infrakit_runtime.group.supervisor import Observation
    from infrakit_runtime.manager.manager import Manager, Ownership

log = logging.getLogger(__name__)

__all__ = ["ControllerMetrics", "destroy_cause", "provision_failure_reason"]

CONDITIONS = (CONVERGED, PROGRESSING, DEGRADED)

# A reconcile pass is a describe, a health round and maybe a few provisions: milliseconds to a minute.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# Destroy reasons as the planner words them (group/plan/plan.py, group/plan/pets.py), mapped back to its causes.
_DESTROY_TEXTS: tuple[tuple[str, str], ...] = (
    ("unhealthy for ", CAUSE_UNHEALTHY),
    ("outdated: rolling update", CAUSE_ROLLING_UPDATE),
    ("outdated; replaced for logical ID", CAUSE_ROLLING_UPDATE),
    ("reducing the group size", CAUSE_SCALE_DOWN),
    ("is not in the allocation", CAUSE_NOT_IN_ALLOCATION),
    ("another member already holds", CAUSE_DUPLICATE),
    ("destroyed on request", "request"),
    ("group destroyed", "group_destroyed"),
)


def destroy_cause(reason: str) -> str:
    """The bounded label for a ``destroyed`` event's free-text reason (``other`` if unknown)."""
    for text, cause in _DESTROY_TEXTS:
        if text in reason:
            return cause
    return "other"


def provision_failure_reason(error: str) -> str:
    """The bounded label for a failed provision: which side failed, never the message itself."""
    if error.startswith("flavor ") and "could not prepare" in error:
        return "flavor_prepare"
    if "cannot reach plugin" in error or "did not answer" in error:
        return "unreachable"
    return "instance_plugin"


class _GroupCollector(Collector):
    """Group and leadership gauges computed from the live objects at each scrape."""

    def __init__(self, owner: ControllerMetrics) -> None:
        self._owner = owner

    def describe(self) -> list[Metric]:  # no auto-describe: collect() needs a bound controller
        return []

    @staticmethod
    def _owned(controller: group_controller.GroupController | None, manager: Manager,
               shares: Ownership | None) -> Metric:
        """``infrakit_group_owned``: with shared groups, 1 for each group this replica owns and 0 for each
        other group it knows of; with one leader, 1 for each group the leader runs (a follower: none)."""
        owned = GaugeMetricFamily("infrakit_group_owned",
                                  "1 when this replica owns the group and acts on it; 0 (sharding: groups only) "
                                  "when another member, or none, owns it", labels=["group"])
        if shares is not None:
            groups = shares.groups
        elif manager.lease is not None and controller is not None:
            groups = dict.fromkeys([*controller.supervisors(), *manager.degraded.ids()], True)
        else:
            groups = {}
        for gid, mine in sorted(groups.items()):
            owned.add_metric([gid], 1.0 if mine else 0.0)
        return owned

    def collect(self) -> Iterator[Metric]:
        controller, manager = self._owner.controller, self._owner.manager
        if manager is not None:
            leader = GaugeMetricFamily("infrakit_manager_leader",
                                       "1 when this replica holds its lease and acts (with sharding: groups, its "
                                       "membership lease: every member acts, on the groups it owns)")
            leader.add_metric([], 1.0 if manager.lease is not None else 0.0)
            yield leader
            shares = manager.ownership()
            sharded = GaugeMetricFamily("infrakit_manager_sharded",
                                        "1 when the replicas share the groups (sharding: groups), 0 with one leader")
            sharded.add_metric([], 1.0 if shares is not None else 0.0)
            yield sharded
            if shares is not None and shares.members is not None:
                members = GaugeMetricFamily("infrakit_manager_members",
                                            "Live members sharing the groups, as this replica last read them")
                members.add_metric([], float(shares.members))
                yield members
            yield self._owned(controller, manager, shares)
            term = GaugeMetricFamily("infrakit_manager_leader_term", "Leadership term held by this replica (0 when following)")
            term.add_metric([], float(manager.lease.term) if manager.lease is not None else 0.0)
            yield term
            changes = CounterMetricFamily("infrakit_manager_leadership_changes",
                                          "Times this replica gained or lost leadership since it started")
            changes.add_metric([], float(manager.leadership_changes))
            yield changes
        if controller is None:
            return
        now = controller.clock()
        counts = {name: GaugeMetricFamily(f"infrakit_group_{name}_instances", text, labels=["group"])
                  for name, text in (
                      ("desired", "Instances the spec asks for"),
                      ("running", "Members the instance plugin reports (not ones provisioned but not described yet)"),
                      ("healthy", "Members judged ready by their health checks"),
                      ("unhealthy", "Members judged failed by their health checks"),
                      ("pending", "Members still within their grace period or healthy threshold"),
                      ("suspect", "Members past their grace period without enough healthy checks"),
                      ("outdated", "Members whose config hash is not the spec's (a rollout is due)"),
                  )}
        converged = GaugeMetricFamily("infrakit_group_converged", "1 when the group matches its spec and is healthy",
                                      labels=["group"])
        condition = GaugeMetricFamily("infrakit_group_condition", "1 for the group's current condition",
                                      labels=["group", "condition"])
        braked = GaugeMetricFamily("infrakit_group_brake_engaged",
                                   "1 while the max-unhealthy brake holds health replacements", labels=["group"])
        backing_off = GaugeMetricFamily("infrakit_group_backoff_slots",
                                        "Slots whose creates are backing off after failures", labels=["group"])
        failures = GaugeMetricFamily("infrakit_group_consecutive_failures",
                                     "Consecutive provision failures summed over failing slots", labels=["group"])
        age = GaugeMetricFamily("infrakit_group_observation_age_seconds",
                                "Seconds since the group's last completed observation", labels=["group"])
        poll = GaugeMetricFamily("infrakit_group_poll_interval_seconds",
                                 "How often the group is observed when nothing wakes it", labels=["group"])
        for gid, supervisor in sorted(controller.supervisors().items()):
            counts["desired"].add_metric([gid], float(supervisor.spec.size))
            poll.add_metric([gid], float(supervisor.poll_interval))
            memory = supervisor.memory
            backing_off.add_metric([gid], float(sum(1 for slot, _ in memory.failures if memory.backing_off(slot, now))))
            failures.add_metric([gid], float(sum(f.count for _, f in memory.failures)))
            last = supervisor.last
            if last is None:
                continue
            c = last.plan.counts
            for name in ("running", "healthy", "unhealthy", "pending", "suspect", "outdated"):
                counts[name].add_metric([gid], float(getattr(c, name)))
            state = last.plan.condition
            converged.add_metric([gid], 1.0 if last.plan.converged else 0.0)
            for name in CONDITIONS:
                condition.add_metric([gid, name], 1.0 if name == state else 0.0)
            braked.add_metric([gid], 1.0 if last.plan.braked else 0.0)
            age.add_metric([gid], max(0.0, now - last.time))
        # Groups the leader keeps but cannot enforce (a refused stored entry, an unreachable plugin).
        degraded = manager.degraded if manager is not None and manager.lease is not None else None
        for gid in degraded.ids() if degraded is not None else ():
            assert degraded is not None
            if gid in controller.supervisors():
                continue
            converged.add_metric([gid], 0.0)
            for name in CONDITIONS:
                condition.add_metric([gid, name], 1.0 if name == DEGRADED else 0.0)
            failure = degraded.memory.get(gid)
            failures.add_metric([gid], float(failure.count if failure else 0))
        yield from counts.values()
        yield from (converged, condition, braked, backing_off, failures, age, poll)


class ControllerMetrics:
    """The controller's metrics on a daemon's registry, and the hooks that feed them.

    Build it first (on the daemon's registry; a fresh one by default), hand ``observe_pass``
    to the ``GroupController``, then ``attach`` the controller and manager; ``close`` unhooks
    the RPC observer.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.controller: group_controller.GroupController | None = None
        self.manager: Manager | None = None
        r = self.registry
        self.reconcile = Histogram("infrakit_reconcile_duration_seconds", "Duration of one observe-plan-act pass",
                                   ["group"], registry=r, buckets=RECONCILE_BUCKETS)
        self.reconcile_errors = Counter("infrakit_reconcile_errors_total", "Passes that ended with an error",
                                        ["group"], registry=r)
        self.provisioned = Counter("infrakit_instances_provisioned_total", "Instances provisioned", ["group"], registry=r)
        self.provision_failures = Counter("infrakit_provision_failures_total",
                                          "Provisions that failed, by the side that failed", ["group", "reason"], registry=r)
        self.destroyed = Counter("infrakit_instances_destroyed_total", "Instances destroyed, by why",
                                 ["group", "reason"], registry=r)
        self.destroy_failures = Counter("infrakit_destroy_failures_total", "Destroys the instance plugin refused",
                                        ["group"], registry=r)
        self.lost = Counter("infrakit_instances_lost_total", "Members that vanished from the instance plugin",
                            ["group"], registry=r)
        self.turned_unhealthy = Counter("infrakit_instances_unhealthy_total",
                                        "Times a member's health check started failing", ["group"], registry=r)
        self.brakes = Counter("infrakit_brake_engaged_total", "Times the max-unhealthy brake engaged", ["group"], registry=r)
        self.events = Counter("infrakit_events_total", "Controller events, by kind", ["kind"], registry=r)
        self.rpc = Histogram("infrakit_rpc_duration_seconds", "Plugin calls made by the controller",
                             ["plugin", "method", "outcome"], registry=r, buckets=RPC_BUCKETS)
        r.register(_GroupCollector(self))

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, *, controller: group_controller.GroupController, manager: Manager | None = None) -> None:
        """Read group state from ``controller`` and leadership from ``manager``; count the controller's events.

        Plugin calls are counted by ``observe_call``, which the daemon gives its plugin directory.
        """
        self.controller, self.manager = controller, manager
        controller.events.add_observer(self.observe_event)

    def close(self) -> None:
        """Stop counting the controller's events."""
        if self.controller is not None:
            self.controller.events.remove_observer(self.observe_event)

    # -- hooks -----------------------------------------------------------------------------

    def observe_pass(self, spec: GroupSpec, observation: Observation, seconds: float) -> None:
        """The controller's ``on_pass``: one reconcile pass of ``spec``'s group took ``seconds``."""
        self.reconcile.labels(spec.id).observe(max(0.0, seconds))
        if observation.error:
            self.reconcile_errors.labels(spec.id).inc()

    def observe_call(self, plugin: str, method: str, seconds: float, outcome: str) -> None:
        """A ``CallObserver`` for the controller's plugin clients (``rpc.lookup.PluginDirectory``)."""
        self.rpc.labels(plugin, method, outcome).observe(max(0.0, seconds))

    def observe_event(self, event: ev.Event) -> None:
        self.events.labels(event.kind).inc()
        g = event.group
        if event.kind == ev.PROVISIONED:
            self.provisioned.labels(g).inc()
        elif event.kind == ev.PROVISION_FAILED:
            self.provision_failures.labels(g, provision_failure_reason(event.reason)).inc()
        elif event.kind == ev.DESTROYED:
            self.destroyed.labels(g, destroy_cause(event.reason)).inc()
        elif event.kind == ev.DESTROY_FAILED:
            self.destroy_failures.labels(g).inc()
        elif event.kind == ev.INSTANCE_LOST:
            self.lost.labels(g).inc()
        elif event.kind == ev.INSTANCE_UNHEALTHY:
            self.turned_unhealthy.labels(g).inc()
        elif event.kind == ev.BRAKE_ENGAGED:
            self.brakes.labels(g).inc()
