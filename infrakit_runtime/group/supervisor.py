"""One group, kept equal to its spec: observe → plan → act → wait, level-triggered.

Guarantee: everything this loop knows is rebuilt from the plugins each pass (members by
tag, config by hash tag), so killing it at any point and starting it again continues the
work: nothing is duplicated, nothing orphaned. Decisions are ``plan_group``'s; this module
only performs them, with bounded concurrency, Drain before Destroy, and per-slot backoff
recorded as data the planner reads (a failing plugin is not hammered, a crash loop is not
restarted every pass: ``outcomes``). Each member is checked with the probe of the spec that
made it, while this supervisor knows that spec (it was committed since the supervisor
started), so a new spec's probe never condemns the members that were serving before it.
A steady pass costs what changed: a plugin that keeps revisions (``instance.Revised``) answers
"unchanged" instead of the group's whole listing, and a member whose flavor probes nothing is not
asked about again once it has settled (``health.answered``); plugins without either are asked
in full every pass. A pass that gets back the inputs of a converged pass (``Settled``) keeps its
plan instead of planning again. All three are memory the next pass may drop: a restart lists,
asks and plans once more.
Limit: health streaks, backoff and the probes of earlier specs live in memory; after a
restart they start over, which delays a replacement or a retry by one grace period or one
attempt, never hastens one - members made by an earlier spec are then UNJUDGED (presumed
serving) until the current probe has passed on a member the current spec made. A commit
that changes the instance or flavor plugin starts a new supervisor: the same as a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from infrakit_runtime.group import events as ev
from infrakit_runtime.group.plan import observed, outcomes
from infrakit_runtime.group.plan.actions import CAUSE_UNHEALTHY
from infrakit_runtime.group.plan.health import HealthRecord, answered, probe_for
from infrakit_runtime.group.plan.memory import Memory, SlotFailure
from infrakit_runtime.group.plan.observed import Unseen
from infrakit_runtime.group.plan.plan import Create, Destroy, Plan, Relabel, judge_members, plan_group
from infrakit_runtime.group.plan.spec import GroupSpec
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, PluginError

log = logging.getLogger(__name__)

# The shortest rest between two passes: a plan that asks to look again at once (the group is
# moving: ``Plan.requeue_after``) gets this, so a rollout advances as fast as instances get ready.
ACTIVE_INTERVAL = 0.1


@dataclasses.dataclass(frozen=True)
class Settled:
    """A converged pass over a listing whose every member needed no check (``health.answered``).

    While the same listing, spec and failure memory come back and nothing is awaited, the next
    pass would decide the same: a converged plan does not change as only time passes (every member
    is READY, nothing is created, the condition is Converged - the planner model's invariant),
    settled records stay settled, and ``after_checks`` over unchanged records changes nothing.
    """

    described: list[instance.Description]
    spec: GroupSpec
    failures: tuple[tuple[str, SlotFailure], ...]
    retry_tags: tuple[str, ...]
    plan: Plan


@dataclasses.dataclass
class Observation:
    """One pass's view of the world, kept for DescribeGroup."""

    members: list[instance.Description]
    plan: Plan
    time: float
    error: str | None = None


class Supervisor:
    """Drives one group toward its spec through an instance plugin and a flavor plugin."""

    def __init__(self, *, spec: GroupSpec, instances: instance.Extended, flavors: flavor.Extended,
                 clock: Callable[[], float],
                 poll_interval: float, events: ev.EventLog, concurrency: int = 32,
                 on_pass: Callable[[GroupSpec, Observation, float], None] | None = None,
                 self_id: str | None = None, on_handover: Callable[[str], Coroutine[Any, Any, Any]] | None = None) -> None:
        self.spec = spec
        self.instances = instances
        self.flavors = flavors
        self.clock = clock
        self.poll_interval = poll_interval
        self.events = events
        self.health: dict[instance.ID, HealthRecord] = {}
        # Starting is a start of the progress clock: a restarted controller says "stuck" one deadline later.
        self.memory = Memory().progressed(clock())
        # The flavor Properties (the probe) of every spec this supervisor has enforced, by config hash:
        # a member is checked with the probe of the spec that made it, while one of its members remains.
        self._probes: dict[str, JSON] = {spec.config_hash: spec.flavor.properties}
        self.last: Observation | None = None
        # Members provisioned but not described yet: the planner counts them while their grace lasts.
        self.unseen: tuple[Unseen, ...] = ()
        self._wakeup = asyncio.Event()
        self._gate = asyncio.Semaphore(concurrency)
        self._sequence = itertools.count()
        self._known: dict[instance.ID, instance.Description] = {}
        # The plugin's last description of the group and its revision (``_describe``); a restart starts without.
        self._listing: instance.Listing | None = None
        self._described: list[instance.Description] | None = None  # what the last observe was told
        self._asked = True  # did the last health check ask the flavor about anyone?
        self._settled: Settled | None = None
        self._braked = False
        self._on_pass = on_pass
        self.self_id = self_id
        self._on_handover = on_handover
        self._handing_over: asyncio.Task[Any] | None = None
        self.passes = 0

    # -- control ---------------------------------------------------------------------------

    def update(self, spec: GroupSpec) -> None:
        """Replace the spec; the next pass plans against it (a plan in flight finishes its step).

        The previous spec's probe is kept for the members it made: they are still judged by it.
        """
        self.memory = outcomes.after_commit(self.memory, previous=self.spec, spec=spec, now=self.clock())
        self._probes[spec.config_hash] = spec.flavor.properties
        self.spec = spec
        self.poke()

    def poke(self) -> None:
        """Wake the loop for another pass; many pokes during a pass make one more pass."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            started = self.clock()
            requeue_after: float | None = None
            try:
                requeue_after = (await self.reconcile_once()).requeue_after
            except asyncio.CancelledError:
                raise
            except PluginError as e:
                # The instance plugin is unreachable or failing: try again at the poll interval, not at once.
                log.warning("group %s: reconcile pass failed: %s", self.spec.id, e)
                self.last = dataclasses.replace(self.last, error=str(e)) if self.last else None
            except Exception as e:  # a bug in a pass must not end supervision, nor spin
                log.exception("group %s: reconcile pass failed", self.spec.id)
                self.last = dataclasses.replace(self.last, error=str(e)) if self.last else None
            if self._on_pass and self.last:
                self._on_pass(self.spec, self.last, self.clock() - started)
            await self._rest(self.poll_interval if requeue_after is None
                             else min(self.poll_interval, max(ACTIVE_INTERVAL, requeue_after)))

    async def _rest(self, seconds: float) -> None:
        """Until the next pass: ``seconds``, or a poke, or a health probe that changes a verdict.

        With ``Health.Interval`` shorter than the rest, the members of the last pass are probed at
        that interval meanwhile; a probe that changes what the planner would decide about any of
        them ends the rest at once (the probe only wakes the loop; the pass decides).
        """
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            interval = self.spec.health.interval
            if not interval or interval >= left:
                await self._wait(left)
                return
            if await self._wait(interval) or await self._probe():
                return

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless poked first; True when poked.

        ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` loses a cancellation that
        arrives as the event is set (a poke racing ``stop_all``), and the task would never stop.
        """
        poked = True
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            poked = False
        self._wakeup.clear()
        return poked

    async def _probe(self) -> bool:
        """Probe the last pass's members between passes (``Health.Interval``); True when a verdict changed."""
        if self.last is None:
            return False
        awaited = {u.id for u in self.unseen}
        members = [d for d in self.last.members if d.id not in awaited]
        if not members:
            return False
        before = judge_members(spec=self.spec, observed=members, health=self.health, now=self.clock())
        await self.check_health(members)
        return judge_members(spec=self.spec, observed=members, health=self.health, now=self.clock()) != before

    # -- observe ---------------------------------------------------------------------------

    async def observe(self) -> list[instance.Description]:
        """The group's members by tag (one DescribeInstances), plus ones provisioned but not yet seen
        (``observed.members``); one that never appeared within its grace is recorded as a failure."""
        found = self._described = await self._describe()
        now = self.clock()
        self.unseen, vanished = observed.settle(described=found, unseen=self.unseen, now=now)
        for u in vanished:
            self.memory = outcomes.after_vanished(self.memory, spec=self.spec, description=u.description,
                                                  waited=now - u.since, now=now)
        return observed.members(described=found, unseen=self.unseen, now=now)

    async def _describe(self) -> list[instance.Description]:
        """The plugin's description of the group; the last one again, the same list, while the plugin
        says nothing changed since it (``instance.Revised``: no list to decode, nothing to plan again)."""
        tags = {instance.TAG_GROUP: self.spec.id}
        if not isinstance(self.instances, instance.Revised):
            return await self.instances.describe_instances(tags, True)
        last = self._listing
        answer = await self.instances.describe_since(tags, True, last.revision if last is not None else "")
        if answer.descriptions is not None:
            self._listing = answer
            return answer.descriptions
        if last is not None and last.descriptions is not None and answer.revision == last.revision:
            return last.descriptions
        # "Unchanged" since nothing this supervisor holds: never read as an empty group.
        self._listing = None
        return await self.instances.describe_instances(tags, True)

    async def check_health(self, members: list[instance.Description]) -> None:
        """Ask the flavor about every member that needs it, each with the probe of the spec that made it
        when that spec is known here (one batch call per probe when the flavor can), and update the streaks.

        A member the flavor's last answer settled for good (``health.answered``: it probes nothing, and
        the member is READY past its grace) is not asked again: its record stands as it is.
        """
        now = self.clock()
        if not members:
            self.health.clear()
            self._asked = False
            return
        by_probe: dict[str, list[instance.Description]] = {}
        fresh: dict[instance.ID, HealthRecord] = {}
        for d in members:
            probe = probe_for(config_hash=d.tags.get(instance.TAG_CONFIG_HASH), current=self.spec.config_hash,
                              known=self._probes)
            record = self.health.get(d.id)
            if record is not None and answered(record, probe=probe, policy=self.spec.health, now=now):
                fresh[d.id] = record
            else:
                by_probe.setdefault(probe, []).append(d)
        self._asked = bool(by_probe)
        if by_probe:
            self._settled = None  # records move: the next pass plans again
        answers = await asyncio.gather(*(self._ask(self._probes[probe], ds) for probe, ds in by_probe.items()))
        for (probe, ds), verdicts in zip(by_probe.items(), answers, strict=True):
            for d, answer in zip(ds, verdicts, strict=True):
                h = answer.health
                record = (self.health.get(d.id) or HealthRecord(first_seen=now)).judged_by(probe)
                before = record.last
                record = record.checked(h, answer.reason, answer.quorum, final=answer.final)
                booting = now - record.first_seen < self.spec.health.grace_period
                if h == flavor.Health.UNHEALTHY and before != flavor.Health.UNHEALTHY and not booting:
                    # A failing probe inside the grace period is an instance still starting, not news.
                    self.events.emit(ev.INSTANCE_UNHEALTHY, group=self.spec.id, instance=d.id,
                                     reason=answer.reason or "flavor health check failed")
                elif h == flavor.Health.HEALTHY and before != flavor.Health.HEALTHY:
                    self.events.emit(ev.INSTANCE_HEALTHY, group=self.spec.id, instance=d.id, reason=answer.reason)
                fresh[d.id] = record
        self.memory = outcomes.after_checks(self.memory, spec=self.spec, members=members, before=self.health,
                                            after=fresh, now=now)
        self.health = fresh
        # Forget the probes of specs whose members are all gone.
        hashes = {d.tags.get(instance.TAG_CONFIG_HASH) for d in members}
        self._probes = {h: p for h, p in self._probes.items() if h == self.spec.config_hash or h in hashes}

    async def _ask(self, properties: JSON, members: list[instance.Description]) -> list[flavor.Assessment]:
        """The flavor's verdicts, with its reasons when it gives them (``Assessing``: our extension)."""
        try:
            if isinstance(self.flavors, flavor.Assessing):
                verdicts = list(await self.flavors.assess_many(properties, members))
            else:
                verdicts = [flavor.Assessment(h) for h in await self.flavors.healthy_many(properties, members)]
        except PluginError as e:
            log.warning("group %s: health checks failed: %s", self.spec.id, e)
            return [flavor.Assessment(flavor.Health.UNKNOWN, f"no verdict: {e}")] * len(members)
        if len(verdicts) != len(members):  # a short answer says nothing about the members it left out
            return [*verdicts[:len(members)], *[flavor.Assessment()] * (len(members) - len(verdicts))]
        return verdicts

    # -- one pass --------------------------------------------------------------------------

    async def reconcile_once(self) -> Plan:
        """Observe, plan and act once; the plan acted on (its ``requeue_after`` says when to look again)."""
        self.passes += 1
        members = await self.observe()
        if self._repeats_settled_pass():
            # Nothing the planner reads has changed since a converged pass: its plan stands (no checks, no plan).
            assert self._settled is not None
            now = self.clock()
            self.memory = outcomes.after_plan(self.memory, plan=self._settled.plan, now=now)
            self.last = Observation(members=members, plan=self._settled.plan, time=now)
            return self._settled.plan
        ids = {d.id for d in members}
        for gone in set(self._known) - ids:
            self.events.emit(ev.INSTANCE_LOST, group=self.spec.id, instance=gone, reason="no longer described by the instance plugin")
            self.memory = outcomes.after_loss(self.memory, spec=self.spec, description=self._known[gone],
                                              record=self.health.get(gone), now=self.clock())
        self._known = {d.id: d for d in members}
        awaited = {u.id for u in self.unseen}
        await self.check_health([d for d in members if d.id not in awaited])
        now = self.clock()
        plan = plan_group(spec=self.spec, observed=members, health=self.health, memory=self.memory, now=now,
                          self_id=self.self_id, unseen=self.unseen)
        self.memory = outcomes.after_plan(self.memory, plan=plan, now=now)
        self.last = Observation(members=members, plan=plan, time=now)
        settled = plan.converged and not plan.actions and not self._asked and not self.unseen
        self._settled = Settled(described=self._described or [], spec=self.spec, failures=self.memory.failures,
                                retry_tags=self.memory.retry_tags, plan=plan) if settled else None
        braked = plan.braked
        if braked and not self._braked:
            self.events.emit(ev.BRAKE_ENGAGED, group=self.spec.id, reason=plan.reason)
        self._braked = braked
        if plan.handover:
            self._hand_over(plan.handover)
        if plan.actions:
            await self.act(plan, {d.id: d for d in members})
        return plan

    def _repeats_settled_pass(self) -> bool:
        """Is this pass the settled one again: the same listing (the plugin said unchanged), spec and
        failure memory, nothing awaited (``Settled``)?"""
        last = self._settled
        return (last is not None and last.described is self._described and last.spec is self.spec
                and not self.unseen and last.failures == self.memory.failures
                and last.retry_tags == self.memory.retry_tags)

    def _hand_over(self, reason: str) -> None:
        """Ask the manager to hand leadership over, once; in its own task, as it stops this supervisor."""
        if self._on_handover is None or (self._handing_over is not None and not self._handing_over.done()):
            return
        self.events.emit(ev.HANDOVER, group=self.spec.id, reason=reason)
        self._handing_over = asyncio.get_running_loop().create_task(self._on_handover(reason),
                                                                    name=f"handover/{self.spec.id}")

    # -- act -------------------------------------------------------------------------------

    async def act(self, plan: Plan, members: dict[instance.ID, instance.Description]) -> None:
        creates = [a for a in plan.actions if isinstance(a, Create)]
        destroys = [a for a in plan.actions if isinstance(a, Destroy)]
        relabels = [a for a in plan.actions if isinstance(a, Relabel)]
        await asyncio.gather(
            self._create(creates),
            *(self._destroy(a, members.get(a.instance_id)) for a in destroys),
            *(self._relabel(a) for a in relabels),
        )

    def _slot(self, create: Create) -> str:
        if create.logical_id is not None:
            return create.logical_id
        return create.tag or uuid.uuid4().hex[:16]

    def _base_spec(self, create: Create) -> instance.Spec:
        tags = {instance.TAG_GROUP: self.spec.id, instance.TAG_CONFIG_HASH: self.spec.config_hash,
                instance.TAG_SLOT: self._slot(create)}
        if create.logical_id is not None:
            tags[instance.TAG_LOGICAL_ID] = create.logical_id
        return instance.Spec(properties=self.spec.instance.properties, tags=tags, logical_id=create.logical_id)

    def _allocation(self) -> flavor.Allocation:
        return flavor.Allocation(size=0 if self.spec.is_pets else self.spec.size, logical_ids=self.spec.logical_ids)

    async def _create(self, creates: list[Create]) -> None:
        if not creates:
            return
        spec = self.spec
        base = [self._base_spec(c) for c in creates]
        indices = [flavor.Index(group=spec.id, sequence=next(self._sequence)) for _ in creates]
        for c in creates:
            self.events.emit(ev.PROVISIONING, group=spec.id, reason=c.reason + (f" ({c.logical_id})" if c.logical_id else ""))
        try:
            prepared = await self.flavors.prepare_many(spec.flavor.properties, base, self._allocation(), indices)
        except PluginError as e:
            prepared = [e] * len(creates)
        ready: list[tuple[Create, instance.Spec]] = []
        for c, b, p in zip(creates, base, prepared, strict=True):
            if isinstance(p, Exception):
                self._failed(c, f"flavor {spec.flavor.plugin} could not prepare the instance: {p}", b)
                continue
            # The group's own tags win over anything the flavor set: membership depends on them.
            ready.append((c, dataclasses.replace(p, tags={**p.tags, **b.tags}, logical_id=b.logical_id)))
        if not ready:
            return
        # Batched or one by one is the plugin's business (the RPC client decides from the handshake).
        try:
            results = await self.instances.provision_many([s for _, s in ready])
        except PluginError as e:
            for c, s in ready:
                self._failed(c, str(e), s)
            return
        fresh: dict[instance.ID, observed.Unseen] = {}
        for i, (c, s) in enumerate(ready):
            r = results[i] if i < len(results) else None
            if r is not None and r.id:
                self._provisioned(c, s, r.id, fresh)
            else:
                # A plugin that answered for fewer slots than asked left these unfilled.
                self._failed(c, (r.error if r else None) or "the plugin returned no instance ID for this slot", s)
        # The batch joins the awaited (unseen) members in one pass: one pass per instance was quadratic.
        self.unseen = (*(u for u in self.unseen if u.id not in fresh), *fresh.values())

    def _provisioned(self, create: Create, spec: instance.Spec, iid: instance.ID,
                     fresh: dict[instance.ID, observed.Unseen]) -> None:
        now = self.clock()
        self.memory = self.memory.provisioned(create.slot).resolved(spec.tags.get(instance.TAG_SLOT, ""))
        description = instance.Description(id=iid, logical_id=spec.logical_id, tags=dict(spec.tags),
                                           properties=spec.to_wire())
        fresh.pop(iid, None)
        fresh[iid] = observed.Unseen(description=description, since=now)
        self.events.emit(ev.PROVISIONED, group=self.spec.id, instance=iid, reason=create.reason)

    def _failed(self, create: Create, error: str, spec: instance.Spec) -> None:
        slot = spec.tags.get(instance.TAG_SLOT)
        if create.logical_id is None and slot:
            # Bounded: never more remembered slots than the group could need at once.
            self.memory = self.memory.unresolved(slot, keep=self.spec.size + self.spec.max_surge())
        text = f"provision failed for group {self.spec.id}: {error}"
        log.warning("%s", text)
        self.memory = self.memory.failed(create.slot, self.clock(), error)
        self.events.emit(ev.PROVISION_FAILED, group=self.spec.id, reason=error)

    async def _destroy(self, action: Destroy, description: instance.Description | None) -> None:
        async with self._gate:
            if action.drain and description is not None:
                try:
                    await self.flavors.drain(self.spec.flavor.properties, description)
                except PluginError as e:
                    # A failed drain is reported, not fatal: the plan already decided this member goes.
                    log.warning("group %s: drain of %s failed: %s", self.spec.id, action.instance_id, e)
                    self.events.emit(ev.DRAIN_FAILED, group=self.spec.id, instance=action.instance_id,
                                     reason=f"{e}; destroying it anyway")
            try:
                await self.instances.destroy(action.instance_id, action.context)
            except PluginError as e:
                self.events.emit(ev.DESTROY_FAILED, group=self.spec.id, instance=action.instance_id, reason=str(e))
                log.warning("group %s: destroy of %s failed: %s", self.spec.id, action.instance_id, e)
                return
        self.unseen = tuple(u for u in self.unseen if u.id != action.instance_id)
        record = self.health.pop(action.instance_id, None)
        if action.cause == CAUSE_UNHEALTHY and record is not None and record.reason:
            # Why the checks failed, in the flavor's words: the event and the slot's failure say it.
            action = dataclasses.replace(action, reason=f"{action.reason}: {record.reason}")
        self.memory = outcomes.after_destroy(self.memory, spec=self.spec, action=action, description=description,
                                             record=record, now=self.clock())
        self._known.pop(action.instance_id, None)
        self.events.emit(ev.DESTROYED, group=self.spec.id, instance=action.instance_id, reason=action.reason)

    async def _relabel(self, action: Relabel) -> None:
        async with self._gate:
            try:
                await self.instances.label(action.instance_id, action.labels)
            except PluginError as e:
                log.warning("group %s: relabel of %s failed: %s", self.spec.id, action.instance_id, e)
                return
        self.events.emit(ev.RELABELLED, group=self.spec.id, instance=action.instance_id, reason="adopted (bootstrap)")
