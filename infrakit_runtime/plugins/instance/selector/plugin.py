"""A selector instance plugin: places members on choices, describes them as one group, moves them back.

Guarantee: a new member goes to the choice ``placement`` names among the choices not backing
off (pets pinned by ``Instances`` always to theirs); a choice whose plugin fails a provision is
backed off (``group.plan.memory``'s schedule, per group and choice) and the slot is placed again on
another choice in the same call, so the share of a zone without capacity goes to the others.
DescribeInstances asks each distinct plugin once (choices sharing a plugin share the call) and
fails rather than report an incomplete group, unless the plugin that cannot answer held none of
the group's members. Once a backed-off choice is tried again, members on over-full choices are
described with ``infrakit.config.hash: rebalance``: the group controller sees them outdated and
replaces them within the group's own rollout bounds (``MaxSurge``/``MaxUnavailable``), and each
replacement is placed on the emptier choice. The selector never destroys anything on its own.

Limit: choices live in the group spec (this plugin's Properties), and DescribeInstances carries
none, so the selector remembers, in its state file, the plugins Validate and Provision named and
each group's choices from its last Provision; until it has seen either it cannot describe.
A timed-out provision is treated as failed, so its slot may be filled on another choice while
the first launch completes: the group is then one member over and scales it down.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from infrakit_runtime import fsutil
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.plugins.instance import revisions
from infrakit_runtime.plugins.instance.selector import choices as ch
from infrakit_runtime.plugins.instance.selector import placement
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

Lookup = Callable[[str], instance.Extended]
# What a member reports as its config hash while the selector wants it moved.
REBALANCE_HASH = "rebalance"
# A member provisioned but not yet described (EC2 is eventually consistent) still counts this long.
UNSEEN_GRACE = 30.0


@dataclasses.dataclass(frozen=True)
class Seen:
    """One member as the selector last knew it: where it is and what its plugin said about it."""

    choice: str | None
    plugin: str
    description: instance.Description | None = None
    provisioned_at: float | None = None


@dataclasses.dataclass
class GroupState:
    """What the selector knows about one group (``infrakit.group``), rebuilt from calls and the state file."""

    choices: tuple[ch.Choice, ...] = ()
    raw: JSON = None
    config_hash: str | None = None
    view: dict[instance.ID, Seen] = dataclasses.field(default_factory=dict)
    described: bool = False
    marks: frozenset[instance.ID] = frozenset()
    marked_with: frozenset[str] = frozenset()


class SelectorPlugin:
    """``InstancePlugin`` (plus ``provision_many``) delegating to the choices' plugins through ``lookup``."""

    def __init__(self, *, policy: str, lookup: Lookup, self_name: str = "",
                 clock: Callable[[], float] = time.monotonic, memory: Memory | None = None,
                 state_file: Path | None = None) -> None:
        if policy not in ch.POLICIES:
            raise ValueError(f"policy must be one of {', '.join(ch.POLICIES)}, got {policy!r}")
        self.policy = policy
        self.lookup = lookup
        self.self_name = self_name
        self.clock = clock
        self.memory = memory or Memory(base_delay=5.0, max_delay=300.0)
        self.state_file = state_file
        self.groups: dict[str, GroupState] = {}
        self.known_plugins: set[str] = set()
        self._load()

    # -- remembered choices --------------------------------------------------------------------

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            saved = json.loads(self.state_file.read_text())
            self.known_plugins = {str(p) for p in saved.get("plugins", [])}
            for gid, g in (saved.get("groups") or {}).items():
                self.groups[gid] = GroupState(choices=ch.parse(g.get("choices"), policy=self.policy,
                                                               self_name=self.self_name),
                                              raw=g.get("choices"), config_hash=g.get("hash"))
        except (OSError, ValueError, AttributeError, ValidationError) as e:
            log.warning("ignoring the selector state file %s: %s", self.state_file, e)

    def _save(self) -> None:
        if self.state_file is None:
            return
        data = {"plugins": sorted(self.known_plugins),
                "groups": {gid: {"choices": g.raw, "hash": g.config_hash} for gid, g in sorted(self.groups.items())
                           if g.choices}}
        try:
            fsutil.atomic_write(self.state_file, json.dumps(data, indent=1, sort_keys=True).encode())
        except OSError as e:
            log.warning("cannot save the selector state to %s: %s", self.state_file, e)

    def _learn(self, choices: Sequence[ch.Choice], *, group: str | None = None, raw: JSON = None,
               config_hash: str | None = None) -> None:
        changed = not {c.plugin for c in choices} <= self.known_plugins
        self.known_plugins |= {c.plugin for c in choices}
        if group is not None:
            state = self.groups.setdefault(group, GroupState())
            if state.raw != raw or state.config_hash != config_hash:
                state.choices, state.raw, state.config_hash = tuple(choices), raw, config_hash
                changed = True
        if changed:
            self._save()

    def _choices(self, properties: JSON) -> tuple[ch.Choice, ...]:
        return ch.parse(properties, policy=self.policy, self_name=self.self_name)

    # -- Validate ------------------------------------------------------------------------------

    async def validate(self, properties: JSON) -> None:
        """Every problem with the choices, then each choice's Properties as its own plugin sees them."""
        choices = self._choices(properties)

        async def one(i: int, c: ch.Choice) -> list[str]:
            try:
                await self.lookup(c.plugin).validate(c.properties)
            except ValidationError as e:
                return [f"{c.label(i)}: {p}" for problem in e.problems for p in problem.split("; ")]
            except PluginError as e:
                return [f"{c.label(i)}: plugin {c.plugin!r} could not validate: {e}"]
            return []

        found = await asyncio.gather(*(one(i, c) for i, c in enumerate(choices)))
        problems = [p for per_choice in found for p in per_choice]
        if problems:
            raise ValidationError(problems)
        self._learn(choices)

    # -- placement -----------------------------------------------------------------------------

    def _key(self, group: str, choice: str) -> str:
        return f"{group}\0{choice}"

    def _available(self, group: str, choices: Sequence[ch.Choice]) -> list[ch.Choice]:
        now = self.clock()
        return [c for c in choices if not self.memory.backing_off(self._key(group, c.name), now)]

    def _counts(self, state: GroupState) -> dict[str, int]:
        """Members per choice that stay: carrying the group's latest config hash and not marked to move."""
        counts: dict[str, int] = {c.name: 0 for c in state.choices}
        for iid, seen in state.view.items():
            if seen.choice in counts and iid not in state.marks and self._current(state, seen.description):
                counts[seen.choice] += 1
        return counts

    @staticmethod
    def _current(state: GroupState, d: instance.Description | None) -> bool:
        if d is None or state.config_hash is None:
            return True
        tag = d.tags.get(instance.TAG_CONFIG_HASH)
        return tag in (state.config_hash, instance.BOOTSTRAP_CONFIG_HASH)

    def _pick(self, group: str, state: GroupState, choices: Sequence[ch.Choice], counts: dict[str, int],
              excluded: set[str]) -> ch.Choice | None:
        """The choice for one unpinned member, skipping ``excluded``; backing-off choices only when nothing else is left."""
        allowed = [c for c in choices if c.name not in excluded]
        if not allowed:
            return None
        available = self._available(group, allowed) or allowed
        order = [c.name for c in choices]
        if self.policy == ch.TIERED:
            name = placement.first_available(order, {c.name for c in available})
        else:
            name = placement.place(counts, {c.name: c.weight for c in available}, order)
        return next(c for c in choices if c.name == name)

    # -- Provision -----------------------------------------------------------------------------

    async def provision(self, spec: instance.Spec) -> instance.ID:
        result = (await self.provision_many([spec]))[0]
        if result.id is None:
            raise PluginError(result.error or "no choice provisioned the instance")
        return result.id

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        """Place each spec on a choice and provision it there; a slot refused by one choice tries the next."""
        results: list[instance.ProvisionResult | None] = [None] * len(specs)
        parsed: dict[str, tuple[ch.Choice, ...]] = {}
        todo: list[int] = []
        for i, spec in enumerate(specs):
            key = json.dumps(spec.properties, sort_keys=True, default=str)
            try:
                if key not in parsed:
                    parsed[key] = self._choices(spec.properties)
            except ValidationError as e:
                results[i] = instance.ProvisionResult(error=f"Specs[{i}].{e}")
                continue
            group = spec.tags.get(instance.TAG_GROUP, "")
            self._learn(parsed[key], group=group, raw=spec.properties,
                        config_hash=spec.tags.get(instance.TAG_CONFIG_HASH))
            todo.append(i)
        tried: dict[int, list[tuple[str, str]]] = {i: [] for i in todo}
        counts: dict[str, dict[str, int]] = {}
        while todo:
            placed: dict[int, ch.Choice] = {}
            for i in todo:
                spec = specs[i]
                group = spec.tags.get(instance.TAG_GROUP, "")
                state = self.groups[group]
                group_counts = counts.setdefault(group, self._counts(state))
                excluded = {name for name, _ in tried[i]}
                pinned = ch.pinned_choice(state.choices, spec.logical_id)
                if pinned is not None:
                    choice = pinned if pinned.name not in excluded else None  # a pinned pet has nowhere else to go
                else:
                    choice = self._pick(group, state, state.choices, group_counts, excluded)
                if choice is None:
                    why = "; ".join(f"{name}: {error}" for name, error in tried[i]) or "no choice"
                    results[i] = instance.ProvisionResult(error=f"no choice could provision the instance ({why})")
                    continue
                placed[i] = choice
                group_counts[choice.name] = group_counts.get(choice.name, 0) + 1
            failed_now = await self._provision_placed(specs, placed, results)
            todo = []
            for i, (choice, error) in failed_now.items():
                group = specs[i].tags.get(instance.TAG_GROUP, "")
                counts[group][choice.name] -= 1
                tried[i].append((choice.name, error))
                state = self.groups[group]
                if state.marks and ch.pinned_choice(state.choices, specs[i].logical_id) is None:
                    # A move toward a choice that still fails: placing it elsewhere would only make the
                    # group surge and shrink again. Fail it; the marks go at the next describe.
                    results[i] = instance.ProvisionResult(error=f"moving a member to {choice.name} failed: {error}")
                else:
                    todo.append(i)
        return [r if r is not None else instance.ProvisionResult(error="not attempted") for r in results]

    def _delegated(self, spec: instance.Spec, choice: ch.Choice) -> instance.Spec:
        tags = {**spec.tags, ch.TAG_CHOICE: choice.name}
        slot = spec.tags.get(instance.TAG_SLOT)
        if slot:
            # Another choice is another request: its idempotency token must differ (see aws_launch).
            tags[instance.TAG_SLOT] = f"{slot}@{choice.name}"
        return dataclasses.replace(spec, properties=choice.properties, tags=tags)

    async def _provision_placed(self, specs: list[instance.Spec], placed: dict[int, ch.Choice],
                                results: list[instance.ProvisionResult | None]) -> dict[int, tuple[ch.Choice, str]]:
        """Provision every placed spec, one call per plugin; the slots that failed, with their choice and error."""
        by_plugin: dict[str, list[int]] = {}
        for i, choice in placed.items():
            by_plugin.setdefault(choice.plugin, []).append(i)
        failed: dict[int, tuple[ch.Choice, str]] = {}

        async def on(plugin: str, slots: list[int]) -> None:
            outcome = await self._provision_on(plugin, [self._delegated(specs[i], placed[i]) for i in slots])
            now = self.clock()
            noted: set[str] = set()
            for i, r in zip(slots, outcome, strict=True):
                group, choice = specs[i].tags.get(instance.TAG_GROUP, ""), placed[i]
                key = self._key(group, choice.name)
                if r.id is not None:
                    results[i] = r
                    self.memory = self.memory.succeeded(key)
                    self.groups[group].view[r.id] = Seen(choice=choice.name, plugin=plugin, provisioned_at=now)
                    continue
                failed[i] = (choice, r.error or "no instance ID returned")
                if key not in noted:
                    noted.add(key)
                    self.memory = self.memory.failed(key, now, r.error or "")
                    retry = self.memory.get(key)
                    log.warning("choice %s of group %s failed to provision (backing off %.0fs): %s", choice.name,
                                group or "-", (retry.retry_at - now) if retry else 0, r.error)

        await asyncio.gather(*(on(p, slots) for p, slots in by_plugin.items()))
        return failed

    async def _provision_on(self, plugin: str, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        # Batched or one by one is the plugin's business (its client decides from the handshake).
        try:
            results = await self.lookup(plugin).provision_many(specs)
        except PluginError as e:
            return [instance.ProvisionResult(error=str(e))] * len(specs)
        return [results[n] if n < len(results) else instance.ProvisionResult(error="the plugin answered for fewer slots")
                for n in range(len(specs))]

    # -- DescribeInstances ---------------------------------------------------------------------

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        """The members of every choice carrying ``tags``; members to move report ``infrakit.config.hash: rebalance``."""
        group = tags.get(instance.TAG_GROUP)
        state = self.groups.setdefault(group, GroupState()) if group is not None else None
        plugins = sorted({c.plugin for c in state.choices}) if state and state.choices else sorted(self.known_plugins)
        if not plugins:
            raise PluginError(f"the {self.policy} selector does not know which instance plugins to ask yet: it learns "
                              "them from Validate and Provision (commit the group again)")
        answers = await asyncio.gather(*(self._describe_on(p, tags, properties, group, state) for p in plugins))
        found: dict[instance.ID, tuple[instance.Description, str]] = {}
        for plugin, descriptions in zip(plugins, answers, strict=True):
            for d in descriptions:
                found.setdefault(d.id, (d, plugin))
        if group is None or state is None:
            return [d for d, _ in found.values()]
        now = self.clock()
        view = {iid: Seen(choice=self._attribute(state, d, plugin), plugin=plugin, description=d)
                for iid, (d, plugin) in found.items()}
        for iid, seen in state.view.items():
            if iid not in view and seen.provisioned_at is not None and now - seen.provisioned_at < UNSEEN_GRACE:
                view[iid] = seen  # launched moments ago, not yet visible: it still takes its place
        state.view, state.described = view, True
        self._rebalance(group, state)
        return [self._reported(state, d) for d, _ in found.values()]

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """``instance.Revised`` by content (``revisions``): the listing asked for again, and no list when
        ``revision`` names the very same one, so an unchanged group costs its caller no decoding or plan."""
        return await revisions.listing_since(self.describe_instances(tags, properties), revision)

    async def _describe_on(self, plugin: str, tags: dict[str, str], properties: bool, group: str | None,
                           state: GroupState | None) -> list[instance.Description]:
        try:
            return await self.lookup(plugin).describe_instances(tags, properties)
        except PluginError as e:
            held = state is not None and any(seen.plugin == plugin for seen in state.view.values())
            if group is None or state is None or not state.described or held:
                raise PluginError(f"instance plugin {plugin} could not describe the group's members: {e}") from None
            # It held none of this group's members: its choices back off, the others carry on.
            for c in state.choices:
                if c.plugin == plugin:
                    self.memory = self.memory.failed(self._key(group, c.name), self.clock(), str(e))
            log.warning("instance plugin %s is not answering (%s); it holds no member of group %s, so its "
                        "choices are skipped", plugin, e, group)
            return []

    @staticmethod
    def _attribute(state: GroupState, d: instance.Description, plugin: str) -> str | None:
        """The choice a member is on: its tag, else the only choice of the plugin that reported it."""
        mine = [c for c in state.choices if c.plugin == plugin]
        tagged = d.tags.get(ch.TAG_CHOICE)
        if any(c.name == tagged for c in mine):
            return tagged
        return mine[0].name if len(mine) == 1 else None

    def _rebalance(self, group: str, state: GroupState) -> None:
        if self.policy == ch.TIERED or not state.choices:
            state.marks = frozenset()
            return
        available = self._available(group, state.choices)
        names = frozenset(c.name for c in available)
        if not state.marked_with <= names:
            state.marks = frozenset()  # a choice the moves were heading for is failing again: stop moving
        movable: dict[str, list[instance.ID]] = {c.name: [] for c in available}
        for iid, seen in state.view.items():
            d = seen.description
            if seen.choice in movable and d is not None and d.logical_id is None \
                    and d.tags.get(instance.TAG_LOGICAL_ID) is None and self._current(state, d):
                movable[seen.choice].append(iid)
        before = state.marks
        state.marks = placement.rebalance(members=movable, weights={c.name: c.weight for c in available},
                                          order=[c.name for c in state.choices], marked=state.marks)
        state.marked_with = names if state.marks else frozenset()
        if state.marks - before:
            log.info("group %s: moving %d member(s) to rebalance over %s", group or "-", len(state.marks - before),
                     ", ".join(sorted(names)))

    @staticmethod
    def _reported(state: GroupState, d: instance.Description) -> instance.Description:
        if d.id not in state.marks:
            return d
        return dataclasses.replace(d, tags={**d.tags, instance.TAG_CONFIG_HASH: REBALANCE_HASH})

    # -- Label, Destroy ------------------------------------------------------------------------

    def _owner(self, instance_id: instance.ID) -> str | None:
        for state in self.groups.values():
            seen = state.view.get(instance_id)
            if seen is not None:
                return seen.plugin
        return None

    def _forget(self, instance_id: instance.ID) -> None:
        for state in self.groups.values():
            state.view.pop(instance_id, None)
            if instance_id in state.marks:
                state.marks = state.marks - {instance_id}

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        """Label on the owning plugin; unknown owner: on each known plugin until one knows the instance."""
        owner = self._owner(instance_id)
        errors = []
        for plugin in [owner] if owner else sorted(self.known_plugins):
            try:
                await self.lookup(plugin).label(instance_id, labels)
                return
            except PluginError as e:
                errors.append(f"{plugin}: {e}")
        raise PluginError(f"no choice plugin could label instance {instance_id}: " + ("; ".join(errors) or "none known"))

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        """Destroy on the owning plugin; unknown owner (a restart): on every known plugin, as InfraKit did.

        Plugins answer a destroy of an instance they do not hold as done (aws: already gone),
        so only asking all of them reaches the one that holds it.
        """
        owner = self._owner(instance_id)
        plugins = [owner] if owner else sorted(self.known_plugins)
        if not plugins:
            raise PluginError(f"instance {instance_id} is not known to any choice plugin")

        async def one(plugin: str) -> str | None:
            try:
                await self.lookup(plugin).destroy(instance_id, context)
            except PluginError as e:
                return f"{plugin}: {e}"
            return None

        errors = [e for e in await asyncio.gather(*(one(p) for p in plugins)) if e]
        if len(errors) == len(plugins):
            raise PluginError(f"no choice plugin could destroy instance {instance_id}: " + "; ".join(errors))
        self._forget(instance_id)
