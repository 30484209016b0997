"""The Group SPI, enforced: one supervisor per committed group, plugins found by name.

Guarantee: a commit is validated completely (spec, then the instance and flavor plugins'
own Validate) before anything changes; an invalid spec leaves the running group as it was.
Free stops watching and touches nothing; Destroy keeps trying to remove every member and
reports the ones it could not (no silent orphans, InfraKit issue 632).
Plugins come from an injected ``PluginLookup``: RPC clients in a daemon, plugin objects in
the same process in a test; this package knows nothing of sockets.
Limit: this is one replica's controller. Persistence and leadership are the manager's job
(``infrakit_runtime.manager``); ``GroupController`` holds only what it can rebuild.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from infrakit_runtime.group import events as ev
from infrakit_runtime.group.plan import observed
from infrakit_runtime.group.plan.health import Verdict
from infrakit_runtime.group.plan.plan import judge_members, plan_group
from infrakit_runtime.group.plan.spec import GroupSpec, parse_spec
from infrakit_runtime.group.plan.summary import describe_commit
from infrakit_runtime.group.supervisor import Observation, Supervisor
from infrakit_runtime.spi import flavor, group, instance
from infrakit_runtime.spi.common import PluginError, PluginName, Unsupported, ValidationError
from infrakit_runtime.spi.lookup import GroupScoped, PluginLookup

log = logging.getLogger(__name__)

DESTROY_ATTEMPTS = 5
# How long one long poll of a plugin's changes (InstanceWatch) may wait.
WATCH_TIMEOUT = 30.0


class GroupController:
    """``GroupPlugin`` for one replica: validates, supervises, describes."""

    def __init__(self, *, plugins: PluginLookup, poll_interval: float = 5.0, events: ev.EventLog | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_pass: Callable[[GroupSpec, Observation, float], None] | None = None,
                 self_id: str | None = None, on_handover: Callable[[str], Coroutine[Any, Any, Any]] | None = None) -> None:
        self.plugins = plugins
        self.self_id = self_id  # the logical ID of the instance this replica runs on
        self.on_handover = on_handover
        self.poll_interval = poll_interval
        self.events = events or ev.EventLog()
        self.clock = clock
        self.on_pass = on_pass
        self._specs: dict[group.ID, GroupSpec] = {}
        self._supervisors: dict[group.ID, Supervisor] = {}
        self._tasks: dict[group.ID, asyncio.Task[None]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}

    # -- validation ------------------------------------------------------------------------

    async def validate(self, wire: group.Spec) -> GroupSpec:
        """Parse the spec and have its plugins validate their Properties; every problem at once.

        Plugin validation runs even when the spec itself has problems, so one answer lists
        them all (a bad size and an unknown plugin are both reported).
        """
        problems: list[str] = []
        spec: GroupSpec | None = None
        try:
            spec = parse_spec(wire)
        except ValidationError as e:
            problems.extend(e.problems)
        props = wire.properties if isinstance(wire.properties, dict) else {}
        for section, interface in (("Instance", instance.INTERFACE), ("Flavor", flavor.INTERFACE)):
            raw = props.get(section)
            if not isinstance(raw, dict) or not isinstance(raw.get("Plugin"), str) or not raw["Plugin"]:
                continue  # parse_spec has already said so
            name = raw["Plugin"]
            try:
                PluginName.parse(name)
                await self.plugins.check(name, interface)
                if section == "Instance":
                    await self.plugins.instance(name).validate(raw.get("Properties"))
                else:
                    allocation = flavor.Allocation(size=spec.size if spec else 0, logical_ids=spec.logical_ids if spec else None)
                    await self.plugins.flavor(name).validate(raw.get("Properties"), allocation)
            except ValidationError as e:
                problems.extend(f"Properties.{section} ({name}): {p}" for p in e.problems)
            except ValueError as e:
                problems.append(f"Properties.{section}.Plugin: {e}")
            except PluginError as e:
                problems.append(f"Properties.{section} ({name}): {e}")
        if problems or spec is None:
            raise ValidationError(problems)
        return spec

    # -- the Group SPI ---------------------------------------------------------------------

    async def plan_commit(self, spec: GroupSpec) -> str:
        """The Details text committing ``spec`` would give, without changing anything."""
        members = await self._members(spec)
        return describe_commit(self._specs.get(spec.id), spec, members)

    async def commit(self, spec: GroupSpec, *, details: str | None = None) -> str:
        """Enforce an already validated spec; returns InfraKit's Details text.

        With ``details`` (from ``plan_commit``, computed before the manager's store write)
        nothing here calls a plugin, so enforcing a stored spec cannot fail on one.
        """
        if details is None:
            details = await self.plan_commit(spec)
        self._specs[spec.id] = spec
        supervisor = self._supervisors.get(spec.id)
        if supervisor is not None and self._same_plugins(supervisor.spec, spec):
            supervisor.update(spec)
        else:
            await self._stop(spec.id)
            self._start(spec)
        self.events.emit(ev.SPEC_COMMITTED, group=spec.id, reason=details)
        return details

    def commit_answer(self, spec: GroupSpec, details: str) -> group.Commit:
        """CommitGroup's answer for ``spec`` (call before enforcing it): both canonical forms, and
        whether it differs from the enforced spec (a group not enforced, new or Degraded, always does)."""
        current = self._specs.get(spec.id)
        return group.Commit(details=details, spec=spec.canonical(),
                            previous=current.canonical() if current is not None else None,
                            changed=current is None or current.normalized() != spec.normalized())

    async def commit_group(self, spec: group.Spec, pretend: bool) -> group.Commit:
        parsed = await self.validate(spec)
        details = await self.plan_commit(parsed)
        answer = self.commit_answer(parsed, details)
        if not pretend:
            await self.commit(parsed, details=details)
        return answer

    async def free_group(self, group_id: group.ID) -> None:
        self._require(group_id)
        await self._stop(group_id)
        del self._specs[group_id]
        self.events.emit(ev.GROUP_FREED, group=group_id, reason="no longer managed; instances left running")

    async def describe_group(self, group_id: group.ID) -> group.Description:
        spec = self._require(group_id)
        supervisor = self._supervisors[group_id]
        members = await self._members(spec)
        now = self.clock()
        plan = plan_group(spec=spec, observed=members, health=supervisor.health, memory=supervisor.memory, now=now,
                          self_id=self.self_id, unseen=supervisor.unseen)
        rows = []
        verdicts = judge_members(spec=spec, observed=members, health=supervisor.health, now=now)
        for d in members:
            record = supervisor.health.get(d.id)
            v = verdicts.get(d.id, Verdict.PENDING)
            health = {Verdict.READY: "healthy", Verdict.FAILED: "unhealthy"}.get(v, "unknown")
            # The last check failed: say so, unless the instance is still inside its grace period
            # (then it is starting, and "unknown" is the honest answer).
            if v not in (Verdict.PENDING, Verdict.UNJUDGED) and record is not None and record.last == flavor.Health.UNHEALTHY:
                health = "unhealthy"
            row = {
                "ID": d.id, "LogicalID": d.logical_id, "Health": health, "Verdict": v.value,
                "UpToDate": d.tags.get(instance.TAG_CONFIG_HASH) in (spec.config_hash, instance.BOOTSTRAP_CONFIG_HASH),
                "Age": round(now - record.first_seen, 3) if record else 0.0,
            }
            if record is not None and record.reason:
                row["Reason"] = record.reason  # what the flavor said with its last verdict (Assessing flavors)
            rows.append(row)
        status = {
            **plan.status(),
            "Plan": plan.summary,
            "LastError": supervisor.memory.last_error(),
            "Instances": rows,
            "Events": [e.to_wire() for e in self.events.recent(group=group_id, limit=20)],
        }
        return group.Description(instances=tuple(members), converged=plan.converged, status=status)

    async def destroy_group(self, group_id: group.ID) -> None:
        spec = self._require(group_id)
        await self._stop(group_id)
        del self._specs[group_id]
        leftover = await self._destroy_members(spec)
        if leftover:
            raise PluginError(f"group {group_id} is no longer managed, but {len(leftover)} instance(s) could not be "
                              f"destroyed and are still running: {', '.join(sorted(leftover))}")
        self.events.emit(ev.GROUP_DESTROYED, group=group_id)

    async def inspect_groups(self) -> list[group.Spec]:
        return [group.Spec.from_wire(s.to_wire()) for _, s in sorted(self._specs.items())]

    async def announced(self) -> list[group.ID]:
        """The groups ``Handshake.Hello`` names (``group.Announcing``)."""
        return sorted(self._specs)

    async def destroy_instances(self, group_id: group.ID, instances: list[instance.ID]) -> None:
        spec = self._require(group_id)
        plugin = self._plugins(group_id).instance(spec.instance.plugin)
        members = {d.id for d in await self._members(spec)}
        unknown = [i for i in instances if i not in members]
        if unknown:
            raise ValidationError(f"not members of group {group_id}: {', '.join(unknown)}")
        for iid in instances:
            await plugin.destroy(iid, instance.Context(reason=instance.REASON_TERMINATE))
            self.events.emit(ev.DESTROYED, group=group_id, instance=iid, reason="destroyed on request")
        self._supervisors[group_id].poke()

    async def size(self, group_id: group.ID) -> int:
        return self._require(group_id).size

    async def set_size(self, group_id: group.ID, size: int) -> None:
        spec = self._require(group_id)
        if spec.is_pets:
            raise ValidationError(f"group {group_id} is allocated by LogicalIDs; change its LogicalIDs instead of its size")
        await self.commit(spec.with_size(size))

    # -- helpers ---------------------------------------------------------------------------

    def spec(self, group_id: group.ID) -> GroupSpec | None:
        return self._specs.get(group_id)

    def supervisors(self) -> dict[group.ID, Supervisor]:
        """The running supervisors by group (a copy; metrics read their last observation)."""
        return dict(self._supervisors)

    def _require(self, group_id: group.ID) -> GroupSpec:
        spec = self._specs.get(group_id)
        if spec is None:
            raise group.UnknownGroup(group_id)
        return spec

    @staticmethod
    def _same_plugins(a: GroupSpec, b: GroupSpec) -> bool:
        return a.instance.plugin == b.instance.plugin and a.flavor.plugin == b.flavor.plugin

    async def _members(self, spec: GroupSpec) -> list[instance.Description]:
        """The group's members: the supervisor's last pass when it is recent, else a fresh look; with
        the members it has provisioned since (``observed.members``: the planner counts them too).

        Reusing the last pass keeps a client polling DescribeGroup (a module's ``wait``) from
        adding a DescribeInstances per poll: the plugin still sees one call per pass. Adding the
        members provisioned since shows a create as soon as the plugin has answered it, not one
        pass later.
        """
        supervisor = self._supervisors.get(spec.id)
        if supervisor is not None and supervisor.spec.instance.plugin == spec.instance.plugin:
            last = supervisor.last
            now = self.clock()
            if last is not None and last.error is None and now - last.time <= min(self.poll_interval, 1.0):
                return observed.members(described=last.members, unseen=supervisor.unseen, now=now)
            return await supervisor.observe()
        return await self.plugins.instance(spec.instance.plugin).describe_instances({instance.TAG_GROUP: spec.id}, True)

    def _plugins(self, group_id: group.ID) -> PluginLookup:
        """The plugins acting for ``group_id``: fenced by that group's own guard when the lookup has one."""
        return self.plugins.for_group(group_id) if isinstance(self.plugins, GroupScoped) else self.plugins

    def _start(self, spec: GroupSpec) -> None:
        plugins = self._plugins(spec.id)
        supervisor = Supervisor(spec=spec, instances=plugins.instance(spec.instance.plugin),
                                flavors=plugins.flavor(spec.flavor.plugin), clock=self.clock,
                                poll_interval=self.poll_interval, events=self.events, on_pass=self.on_pass,
                                self_id=self.self_id, on_handover=self.on_handover)
        self._supervisors[spec.id] = supervisor
        task = asyncio.create_task(supervisor.run(), name=f"supervisor/{spec.id}")
        task.add_done_callback(functools.partial(self._supervisor_exited, spec.id))
        self._tasks[spec.id] = task
        self._watch(spec.instance.plugin)

    def _supervisor_exited(self, group_id: str, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        log.error("supervisor of group %s exited unexpectedly: %r; restarting it", group_id, task.exception())
        if group_id in self._specs and self._tasks.get(group_id) is task:
            self._start(self._specs[group_id])

    async def _stop(self, group_id: group.ID) -> None:
        task = self._tasks.pop(group_id, None)
        self._supervisors.pop(group_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def release(self, group_id: group.ID) -> None:
        """Stop enforcing one group and forget it (another replica takes it over); instances are untouched.

        Returns once its supervisor has really finished, so nothing acts for it after this.
        """
        self._specs.pop(group_id, None)
        await self._stop(group_id)

    async def stop_all(self) -> None:
        """Stop every supervisor at once (leadership lost, or shutdown); instances are untouched."""
        # Cancel everything at once (no supervisor may start a new action), then wait until every
        # task has really finished, so nothing acts after this returns.
        tasks = [*self._tasks.values(), *self._watchers.values()]
        self._tasks.clear()
        self._watchers.clear()
        self._supervisors.clear()
        self._specs.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _watch(self, plugin_name: str) -> None:
        """Long-poll a plugin that can announce changes (a lost process) and poke its groups at once."""
        if plugin_name in self._watchers:
            return
        self._watchers[plugin_name] = asyncio.create_task(self._watch_loop(plugin_name), name=f"watch/{plugin_name}")

    async def _watch_loop(self, plugin_name: str) -> None:
        plugin = self.plugins.instance(plugin_name)
        revision = 0
        while True:
            try:
                new = await plugin.wait_change(revision, WATCH_TIMEOUT)
            except Unsupported:
                return  # the plugin cannot announce changes: polling is all there is
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the plugin restarts, or fails: polling remains the safety net
                log.debug("watch of %s failed: %s; polling remains the safety net", plugin_name, e)
                await asyncio.sleep(self.poll_interval)
                continue
            if new != revision:
                revision = new
                for supervisor in self._supervisors.values():
                    if supervisor.spec.instance.plugin == plugin_name:
                        supervisor.poke()

    async def _destroy_members(self, spec: GroupSpec) -> set[str]:
        """Destroy every member, retrying; the IDs still present after all attempts."""
        plugin = self._plugins(spec.id).instance(spec.instance.plugin)
        remaining: set[str] = set()
        for attempt in range(DESTROY_ATTEMPTS):
            try:
                members = await plugin.describe_instances({instance.TAG_GROUP: spec.id}, False)
            except PluginError as e:
                log.warning("destroy of group %s: cannot list members (attempt %d): %s", spec.id, attempt + 1, e)
                await asyncio.sleep(min(2**attempt * 0.2, 5))
                continue
            remaining = {d.id for d in members}
            if not remaining:
                return set()
            results = await asyncio.gather(*(plugin.destroy(i, instance.Context(reason=instance.REASON_TERMINATE))
                                             for i in sorted(remaining)), return_exceptions=True)
            for iid, r in zip(sorted(remaining), results, strict=True):
                if isinstance(r, Exception):
                    log.warning("destroy of group %s: %s: %s", spec.id, iid, r)
                else:
                    self.events.emit(ev.DESTROYED, group=spec.id, instance=iid, reason="group destroyed")
            await asyncio.sleep(min(2**attempt * 0.1, 2))
        return remaining
