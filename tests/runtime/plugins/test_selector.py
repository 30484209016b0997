"""Selectors in-process: parsing, placement, fallback and rebalancing under the real planner and supervisor.

The selector runs over in-memory instance plugins (``Zones``: instances are dict entries, a zone
can be told to refuse capacity) and, for Validate, over the real aws plugin object (its Validate
is offline). The group controller's own ``Supervisor`` and planner drive it on a fake clock, so
the promises tested here - balanced within one, a failing zone's share going elsewhere, moving
back within the rollout bounds and never oscillating - are the selector's and the planner's
together. The same promises against moto, through real daemons, are in ``test_aws_zones``.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrakit_runtime.group import events
from infrakit_runtime.group.plan.health import Verdict, verdict
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.group.plan.spec import parse_spec
from infrakit_runtime.group.supervisor import Supervisor
from infrakit_runtime.plugins.instance import aws
from infrakit_runtime.plugins.instance.selector import choices as ch
from infrakit_runtime.plugins.instance.selector import placement
from infrakit_runtime.plugins.instance.selector.plugin import REBALANCE_HASH, SelectorPlugin
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import PluginError, ValidationError

ZONES = ("a", "b", "c")


class Zones:
    """An in-memory instance plugin whose Properties name a zone; a refused zone answers like EC2 without capacity."""

    def __init__(self, prefix: str = "i") -> None:
        self.prefix = prefix
        self.instances: dict[str, instance.Description] = {}
        self.refused: set[str] = set()
        self.calls: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count()

    async def validate(self, properties: Any) -> None:
        if not isinstance(properties, dict) or properties.get("Zone") not in ZONES:
            raise ValidationError(["Properties.Zone must be one of a, b, c"])

    async def provision(self, spec: instance.Spec) -> str:
        self.calls["provision"] += 1
        zone = spec.properties["Zone"]
        if zone in self.refused:
            raise PluginError(f"RunInstances failed: InsufficientInstanceCapacity: no capacity in zone {zone}")
        iid = f"{self.prefix}-{next(self._ids):04d}"
        self.instances[iid] = instance.Description(id=iid, logical_id=spec.logical_id, tags=dict(spec.tags),
                                                   properties={"Zone": zone})
        return iid

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        self.calls["provision_many"] += 1
        out = []
        for s in specs:
            try:
                out.append(instance.ProvisionResult(id=await self.provision(s)))
            except PluginError as e:
                out.append(instance.ProvisionResult(error=str(e)))
        return out

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        self.calls["describe"] += 1
        return [d for d in self.instances.values() if all(d.tags.get(k) == v for k, v in tags.items())]

    async def label(self, iid: str, labels: dict[str, str]) -> None:
        if iid not in self.instances:
            raise PluginError(f"instance {iid} not found")
        d = self.instances[iid]
        self.instances[iid] = instance.Description(id=iid, logical_id=d.logical_id, tags={**d.tags, **labels},
                                                   properties=d.properties)

    async def destroy(self, iid: str, context: instance.Context) -> None:
        self.instances.pop(iid, None)

    def by_zone(self, group: str = "web") -> dict[str, int]:
        counts = dict.fromkeys(ZONES, 0)
        for d in self.instances.values():
            if d.tags.get(instance.TAG_GROUP) == group:
                counts[d.properties["Zone"]] += 1
        return counts


class Healthy:
    """A flavor that finds every instance healthy at once (vanilla without a probe)."""

    async def prepare_many(self, properties, specs, allocation, indices):
        return list(specs)

    async def healthy_many(self, properties, descriptions):
        return [flavor.Health.HEALTHY] * len(descriptions)

    async def drain(self, properties, description):
        return None


def choices(policy: str = "spread", **extra: Any) -> list[dict[str, Any]]:
    out = []
    for z in ZONES:
        c: dict[str, Any] = {"Name": f"zone-{z}", "Plugin": "zones", "Properties": {"Zone": z}}
        if policy == "weighted":
            c["Affinity"] = {"Weight": {"a": 2, "b": 1, "c": 1}[z]}
        out.append(c)
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def selector(zones: Zones, clock: Clock, policy: str = "spread") -> SelectorPlugin:
    return SelectorPlugin(policy=policy, lookup={"zones": zones}.__getitem__, self_name=policy, clock=clock,
                          memory=Memory(base_delay=10.0, max_delay=40.0))


def group_spec(size: int, policy: str = "spread", surge: int = 1, unavailable: int = 0) -> Any:
    return parse_spec({"ID": "web", "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": policy, "Properties": choices(policy)},
        "Flavor": {"Plugin": "vanilla"},
        "Updating": {"MaxSurge": surge, "MaxUnavailable": unavailable},
        "Health": {"GracePeriod": "0s"},
    }})


# -- Properties ------------------------------------------------------------------------------


def test_every_problem_with_the_choices_is_named_by_its_path():
    with pytest.raises(ValidationError) as err:
        ch.parse([{"Name": "a", "Plugin": "aws", "Instances": ["10.0.0.1"], "Colour": 1},
                  {"Name": "a", "Plugin": "aws"},
                  {"Name": "", "Plugin": "x/y/z"},
                  {"Name": "c", "Plugin": "spread", "Instances": ["10.0.0.1", 5]},
                  {"Name": "d", "Affinity": {"Weight": 2}},
                  "zone-e"], policy="spread", self_name="spread")
    problems = err.value.problems
    expected = [
        "Properties[0].Colour is not a field of a choice",
        "Properties[1].Name 'a' is already the name of Properties[0]",
        "Properties[2].Name must be a non-empty string",
        "Properties[2].Plugin: plugin name 'x/y/z' is not of the form socket[/type]",
        "Properties[3].Plugin 'spread' is this selector itself",
        "Properties[3].Instances[1] must be a non-empty string (a logical ID), got number",
        "Properties[3].Instances: logical ID '10.0.0.1' is already pinned to Properties[0]",
        "Properties[4].Affinity is read by the weighted selector only",
        "Properties[5] must be an object",
    ]
    for e in expected:
        assert any(e in p for p in problems), (e, problems)
    assert len(problems) == len(expected), problems


def test_weighted_needs_a_positive_weight_and_plugin_defaults_to_the_name():
    with pytest.raises(ValidationError) as err:
        ch.parse([{"Name": "a"}, {"Name": "b", "Affinity": {"Weight": 0}}, {"Name": "c", "Affinity": {"W": 1}}],
                 policy="weighted")
    assert err.value.problems == [
        "Properties[0].Affinity must be an object {Weight: N} (the choice's share), got null",
        "Properties[1].Affinity.Weight must be a positive integer, got 0",
        "Properties[2].Affinity.W is not a field of Affinity (known: Weight)",
        "Properties[2].Affinity.Weight must be a positive integer, got None",
    ]
    parsed = ch.parse([{"Name": "aws/ec2-instance", "Affinity": {"Weight": 3}}], policy="weighted")
    assert parsed == (ch.Choice(name="aws/ec2-instance", plugin="aws/ec2-instance", weight=3),)
    with pytest.raises(ValidationError, match="Properties must be a list of choices"):
        ch.parse({"Choices": []}, policy="tiered")


def test_validate_asks_each_choices_plugin_and_names_the_choice():
    plugin = aws.build({"region": "us-east-1"})  # Validate is offline: botocore's model, no client
    sel = SelectorPlugin(policy="spread", lookup={"aws": plugin}.__getitem__)
    with pytest.raises(ValidationError) as err:
        asyncio.run(sel.validate([
            {"Name": "a", "Plugin": "aws", "Properties": {"ImageId": "ami-1", "SubnetId": "subnet-a"}},
            {"Name": "b", "Plugin": "aws", "Properties": {"ImageId": "ami-1", "SubnetID": "subnet-b"}},
            {"Name": "c", "Plugin": "aws", "Properties": {"InstanceType": "t3.micro"}},
        ]))
    assert err.value.problems == [
        "Properties[1] (b): Properties.SubnetID is not a field of RunInstancesRequest (did you mean SubnetId?)",
        "Properties[2] (c): Properties.ImageId is required unless Properties.LaunchTemplate is given",
    ]
    asyncio.run(sel.validate([{"Name": "a", "Plugin": "aws", "Properties": {"ImageId": "ami-1"}}]))
    assert sel.known_plugins == {"aws"}


def test_a_choice_whose_plugin_cannot_be_reached_is_a_validation_problem():
    def lookup(name: str) -> Any:
        class Down:
            async def validate(self, properties):
                raise PluginError("cannot reach plugin zones2: connection refused")
        return Down() if name == "zones2" else Zones()

    with pytest.raises(ValidationError) as err:
        asyncio.run(SelectorPlugin(policy="tiered", lookup=lookup).validate(
            [{"Name": "x", "Plugin": "zones", "Properties": {"Zone": "a"}}, {"Name": "y", "Plugin": "zones2"}]))
    assert err.value.problems == [
        "Properties[1] (y): plugin 'zones2' could not validate: cannot reach plugin zones2: connection refused"]


# -- placement -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(weights=st.lists(st.integers(1, 9), min_size=1, max_size=4), n=st.integers(0, 80))
def test_placing_one_member_at_a_time_keeps_every_choice_within_its_quota(weights, n):
    order = [f"c{i}" for i in range(len(weights))]
    w = dict(zip(order, weights, strict=True))
    counts = dict.fromkeys(order, 0)
    for _ in range(n):
        counts[placement.place(counts, w, order)] += 1
        assert placement.within_quota(counts, w), counts
    if len(set(weights)) == 1:
        assert max(counts.values()) - min(counts.values()) <= 1


@settings(max_examples=400, deadline=None)
@given(weights=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       sizes=st.lists(st.integers(0, 20), min_size=4, max_size=4))
def test_rebalance_marks_only_what_a_balanced_group_needs_and_keeps_its_marks(weights, sizes):
    order = [f"c{i}" for i in range(len(weights))]
    w = dict(zip(order, weights, strict=True))
    members = {c: [f"{c}-{k:02d}" for k in range(sizes[i])] for i, c in enumerate(order)}
    marks = placement.rebalance(members=members, weights=w, order=order)
    counts = {c: len(m) for c, m in members.items()}
    if placement.within_quota(counts, w):
        assert marks == frozenset()
    left = {c: len([i for i in m if i not in marks]) for c, m in members.items()}
    projected = dict(left)
    for c in placement.place_many(left, w, order, len(marks)):
        projected[c] += 1
    assert placement.within_quota(projected, w)
    assert placement.rebalance(members=members, weights=w, order=order, marked=marks) == marks


def test_spread_places_nine_members_three_per_zone_in_one_call_per_plugin():
    zones, clock = Zones(), Clock()
    sel = selector(zones, clock)
    specs = [instance.Spec(properties=choices(), tags={instance.TAG_GROUP: "web", instance.TAG_CONFIG_HASH: "h1",
                                                         instance.TAG_SLOT: f"s{i}"}) for i in range(9)]
    results = asyncio.run(sel.provision_many(specs))
    assert all(r.id for r in results)
    assert zones.by_zone() == {"a": 3, "b": 3, "c": 3}
    assert zones.calls["provision_many"] == 1, "three choices on one plugin share one batch"
    tagged = {d.tags[ch.TAG_CHOICE] for d in zones.instances.values()}
    assert tagged == {"zone-a", "zone-b", "zone-c"}
    slots = sorted(d.tags[instance.TAG_SLOT] for d in zones.instances.values())
    assert all("@zone-" in s for s in slots), "each choice gets its own idempotency slot"


def test_tiered_uses_the_first_choice_until_it_refuses_then_the_next():
    zones, clock = Zones(), Clock()
    sel = selector(zones, clock, "tiered")
    props = choices("tiered")
    spec = instance.Spec(properties=props, tags={instance.TAG_GROUP: "web"})
    asyncio.run(sel.provision_many([spec, spec]))
    assert zones.by_zone() == {"a": 2, "b": 0, "c": 0}
    zones.refused = {"a"}
    asyncio.run(sel.provision_many([spec, spec]))
    assert zones.by_zone() == {"a": 2, "b": 2, "c": 0}
    zones.refused = {"a", "b", "c"}
    with pytest.raises(PluginError) as err:
        asyncio.run(sel.provision(spec))
    # zone-a is backing off since the last call: tried last, when nothing else is left.
    assert str(err.value).startswith("no choice could provision the instance (zone-b: RunInstances failed: "
                                      "InsufficientInstanceCapacity: no capacity in zone b; zone-c: ")
    assert "; zone-a: RunInstances failed" in str(err.value)


def test_weighted_places_members_in_proportion():
    zones, clock = Zones(), Clock()
    sel = selector(zones, clock, "weighted")
    spec = instance.Spec(properties=choices("weighted"), tags={instance.TAG_GROUP: "web"})
    asyncio.run(sel.provision_many([spec] * 8))
    assert zones.by_zone() == {"a": 4, "b": 2, "c": 2}


def test_a_pinned_pet_goes_to_its_choice_or_fails_there():
    zones, clock = Zones(), Clock()
    sel = selector(zones, clock)
    props = choices()
    props[2]["Instances"] = ["db-1"]
    spec = instance.Spec(properties=props, tags={instance.TAG_GROUP: "db"}, logical_id="db-1")
    iid = asyncio.run(sel.provision(spec))
    assert zones.instances[iid].properties == {"Zone": "c"}
    zones.refused = {"c"}
    with pytest.raises(PluginError, match="zone-c: RunInstances failed"):
        asyncio.run(sel.provision(spec))
    assert zones.by_zone("db") == {"a": 0, "b": 0, "c": 1}


def test_destroy_and_label_reach_the_owning_plugin_even_after_a_restart():
    zones, clock = Zones(), Clock()
    other = Zones(prefix="o")
    lookup = {"zones": zones, "other": other}.__getitem__
    sel = SelectorPlugin(policy="spread", lookup=lookup, clock=clock)
    props = [{"Name": "x", "Plugin": "zones", "Properties": {"Zone": "a"}},
             {"Name": "y", "Plugin": "other", "Properties": {"Zone": "b"}}]
    spec = instance.Spec(properties=props, tags={instance.TAG_GROUP: "web"})
    ids = asyncio.run(sel.provision_many([spec, spec]))
    fresh = SelectorPlugin(policy="spread", lookup=lookup, clock=clock)  # knows nothing yet
    fresh.known_plugins = {"zones", "other"}
    for r in ids:
        asyncio.run(fresh.label(r.id, {"k": "v"}))
    assert all(d.tags["k"] == "v" for d in [*zones.instances.values(), *other.instances.values()])
    asyncio.run(fresh.destroy(ids[0].id, instance.Context()))
    assert len(zones.instances) + len(other.instances) == 1


def test_the_selector_remembers_its_groups_choices_across_a_restart(tmp_path):
    zones, clock = Zones(), Clock()
    state = tmp_path / "spread.json"
    sel = SelectorPlugin(policy="spread", lookup={"zones": zones}.__getitem__, clock=clock, state_file=state)
    with pytest.raises(PluginError, match="does not know which instance plugins to ask yet"):
        asyncio.run(sel.describe_instances({instance.TAG_GROUP: "web"}, False))
    spec = instance.Spec(properties=choices(), tags={instance.TAG_GROUP: "web", instance.TAG_CONFIG_HASH: "h"})
    asyncio.run(sel.provision_many([spec] * 3))
    again = SelectorPlugin(policy="spread", lookup={"zones": zones}.__getitem__, clock=clock, state_file=state)
    assert len(asyncio.run(again.describe_instances({instance.TAG_GROUP: "web"}, False))) == 3
    assert again.groups["web"].config_hash == "h" and len(again.groups["web"].choices) == 3


# -- the real supervisor and planner over the selector ------------------------------------------


class World:
    """The group controller's supervisor over a selector over zones, on one fake clock."""

    def __init__(self, size: int = 9, policy: str = "spread", surge: int = 1, unavailable: int = 0) -> None:
        self.zones, self.clock = Zones(), Clock()
        self.selector = selector(self.zones, self.clock, policy)
        self.spec = group_spec(size, policy, surge, unavailable)
        asyncio.run(self.selector.validate(self.spec.instance.properties))  # as the controller does at commit
        self.supervisor = Supervisor(spec=self.spec, instances=self.selector, flavors=Healthy(), clock=self.clock,
                                     poll_interval=1.0, events=events.EventLog())
        self.low_water = None
        self.high_water = 0

    def ready(self) -> int:
        now = self.clock()
        return sum(1 for iid in self.zones.instances
                   if verdict(self.supervisor.health.get(iid), self.spec.health, now) is Verdict.READY)

    def step(self, seconds: float = 1.0) -> None:
        asyncio.run(self.supervisor.reconcile_once())
        self.clock.now += seconds
        members = len(self.zones.instances)
        self.high_water = max(self.high_water, members)

    def converge(self, passes: int = 400, seconds: float = 1.0) -> int:
        """Pass until the plan is a converged no-op; how many passes it took."""
        for n in range(passes):
            self.step(seconds)
            last = self.supervisor.last
            if last is not None and last.plan.converged and not last.plan.actions:
                return n
        raise AssertionError(f"not converged after {passes} passes: {self.zones.by_zone()}, "
                             f"{self.supervisor.last.plan if self.supervisor.last else None}")


def test_a_zone_without_capacity_gives_its_share_to_the_others_and_gets_it_back_within_bounds():
    w = World(size=9)
    w.zones.refused = {"c"}
    w.converge()
    assert sorted(w.zones.by_zone().values()) == [0, 4, 5], w.zones.by_zone()
    w.zones.refused = set()
    floor_ready = []
    for _ in range(400):
        w.step()
        floor_ready.append(w.ready())
        last = w.supervisor.last
        if w.zones.by_zone() == {"a": 3, "b": 3, "c": 3} and last and last.plan.converged and not last.plan.actions:
            break
    else:
        raise AssertionError(f"never rebalanced: {w.zones.by_zone()}")
    assert min(floor_ready) >= 9, "a rebalance never takes the group below size - MaxUnavailable ready"
    assert w.high_water <= 10, "nor above size + MaxSurge"
    # Stable: more passes change nothing.
    before = dict(w.zones.instances)
    for _ in range(30):
        w.step()
    assert w.zones.instances == before


def test_members_marked_for_a_move_report_the_rebalance_hash():
    w = World(size=9)
    w.zones.refused = {"c"}
    w.converge()
    w.zones.refused = set()
    w.clock.now += 100  # past the backoff of zone c
    seen = asyncio.run(w.selector.describe_instances({instance.TAG_GROUP: "web"}, True))
    moving = [d for d in seen if d.tags[instance.TAG_CONFIG_HASH] == REBALANCE_HASH]
    assert len(moving) == 3
    assert all(w.zones.instances[d.id].tags[instance.TAG_CONFIG_HASH] != REBALANCE_HASH for d in moving), \
        "the mark is a report, never written to the instance"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events_=st.lists(st.tuples(st.sampled_from(["refuse", "recover", "kill", "resize", "wait"]),
                                  st.sampled_from(ZONES), st.integers(1, 12)), max_size=12),
       policy=st.sampled_from(["spread", "weighted"]))
def test_any_history_of_failures_ends_balanced_and_stable_once_every_zone_recovers(events_, policy):
    w = World(size=6, policy=policy)
    w.converge()
    size = 6
    for kind, zone, n in events_:
        if kind == "refuse":
            w.zones.refused.add(zone)
        elif kind == "recover":
            w.zones.refused.discard(zone)
        elif kind == "kill":
            for iid in sorted(w.zones.instances)[: n % 3]:
                del w.zones.instances[iid]
        elif kind == "resize":
            size = n
            w.spec = group_spec(size, policy)
            w.supervisor.update(w.spec)
        for _ in range(n):
            w.step(seconds=float(n))
    w.zones.refused = set()
    w.clock.now += 60  # past the longest backoff (40 s): every zone is tried again
    w.converge(passes=800, seconds=5.0)
    counts = w.zones.by_zone()
    weights = {"a": 2, "b": 1, "c": 1} if policy == "weighted" else dict.fromkeys(ZONES, 1)
    assert sum(counts.values()) == size
    assert placement.within_quota(counts, weights), counts
    before = dict(w.zones.instances)
    for _ in range(20):
        w.step(seconds=5.0)
    assert w.zones.instances == before, "balanced groups stay put"


def test_trying_a_zone_that_still_refuses_launches_nothing_extra():
    w = World(size=9)
    w.zones.refused = {"c"}
    w.converge()
    for _ in range(10):
        w.clock.now += 60  # the zone's backoff expires: the selector wants members moved back
        for _ in range(5):
            w.step()
    launched = next(w.zones._ids)
    assert launched == 9, f"{launched - 9} instances launched and destroyed again while zone c refused"
    assert sorted(w.zones.by_zone().values()) == [0, 4, 5]
    assert w.zones.calls["provision"] > 9, "zone c was tried again"


def test_selector_daemon_options_are_checked_every_problem_listed():
    from infrakit_runtime.plugins.instance.selector import daemon

    assert daemon.options({}) == {"backoff_base": 5.0, "backoff_max": 300.0}
    assert daemon.options({"backoff_base": 1, "backoff_max": 2.5}) == {"backoff_base": 1.0, "backoff_max": 2.5}
    with pytest.raises(ValidationError) as err:
        daemon.options({"backof_base": 1, "backoff_max": "soon"})
    assert err.value.problems == [
        "unknown option 'backof_base' for a selector; known: backoff_base, backoff_max",
        "option backoff_max must be a positive number of seconds, got 'soon'",
    ]
    with pytest.raises(ValidationError, match=r"backoff_max \(1s\) must be at least backoff_base \(5s\)"):
        daemon.options({"backoff_max": 1})
