"""The etcd flavor: pets whose logical IDs are etcd members, joined and removed without losing quorum.

Guarantee:
- Prepare adds the member to the running cluster *before* its instance starts, as a learner (it
  takes no part in quorum until promoted), and renders an init that starts etcd with the current
  membership as its initial cluster and state ``existing``, in a fresh data directory. A member
  left in the cluster under the same logical ID - the dead predecessor of a replacement - is
  removed first (remove, then add); an unstarted learner left by an earlier attempt for the same
  ID is reused, and one for an ID no longer allocated is removed. A bootstrap instance (tagged
  ``infrakit.config.hash=bootstrap``) is rendered as the first member of a new cluster, and only
  if no member answers at the cluster's endpoints: a bootstrap never starts a second cluster.
- Healthy says HEALTHY only for a member that is listed, started, a voter, answers ``/health``
  (which etcd answers true only while it sees a raft leader, i.e. while the cluster has quorum)
  and whose raft index is within ``MaxLag`` of the leader's. A learner that has caught up is
  promoted here, by whichever health check finds it so: level-triggered, it survives any restart.
  Not listed, not started, or not answering is UNHEALTHY; caught up but not yet promoted, or
  trailing, is UNKNOWN (not proven, not condemned). With each verdict goes the cluster's quorum as
  the member list shows it (``flavor.Quorum``: how many voting members answer a status request, of
  how many vote, killed ones included), which the controller's quorum guard reads. When no member
  answers the list (all down, or too slow without a leader on a busy machine), the count is none
  of the voters last listed: "unknown" must hold the guard, since a missing count would leave the
  controller counting only the members its instance plugin still describes.
- Drain removes the member from the cluster, handing raft leadership to the most advanced other
  voter first if it leads (so the cluster does not wait out an election).
- The quorum itself is guarded by the controller (``Updating.Quorum`` in the spec): this flavor
  changes one member per call and etcd refuses a change that would lose quorum.
Limit: membership is managed through the logical IDs' client URLs (or ``Endpoints``): at least one
member of the running cluster must keep its logical ID across a change of the allocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from infrakit_runtime.plugins.flavor.selfhost import etcd_props
from infrakit_runtime.plugins.flavor.selfhost.etcd_members import (
    EtcdError,
    Member,
    Members,
    Refused,
    Status,
    Unavailable,
)
from infrakit_runtime.plugins.flavor.selfhost.etcd_props import EtcdProperties, MemberAddress
from infrakit_runtime.plugins.flavor.selfhost.snapshots import Snapshotter
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

T = TypeVar("T")

log = logging.getLogger(__name__)

__all__ = ["EtcdFlavor"]

# etcd refuses a membership change ("unhealthy cluster") until its leader has been connected to
# every voter for 5 s (etcdserver.HealthInterval), so a change right after another waits that out.
RECONFIG_WAIT = 12.0
RECONFIG_RETRY = 0.25


async def _reconfigure(call: Callable[[], Awaitable[T]], *, wait: float = RECONFIG_WAIT) -> T:
    """``call()``, retried while etcd says the cluster is not settled enough for a membership change."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            return await call()
        except Refused as e:
            if "unhealthy cluster" not in str(e) or asyncio.get_running_loop().time() >= deadline:
                raise
        await asyncio.sleep(RECONFIG_RETRY)


def _logical_id(description: instance.Description) -> str | None:
    return description.logical_id or description.tags.get(instance.TAG_LOGICAL_ID)


class EtcdFlavor:
    """``FlavorPlugin`` (with the batch health check and ``flavor.Assessing``) for groups of etcd members."""

    def __init__(self, *, snapshotter: Snapshotter | None = None) -> None:
        self._clients: dict[tuple[tuple[str, ...], float], Members] = {}
        self.snapshots = snapshotter or Snapshotter()
        # The client URLs of the cluster each member (by peer or client URL) was last seen in: a
        # learner answers no member list, so its health is judged through its cluster's voters.
        self._cluster_of: dict[str, tuple[str, ...]] = {}
        # How many voting members that cluster had when last listed (the count when none answers).
        self._voting_of: dict[str, int] = {}

    def _remember(self, members: list[Member]) -> None:
        urls = tuple(dict.fromkeys(u for m in members for u in m.client_urls))
        voting = sum(1 for m in members if not m.learner)
        for m in members:
            for url in (*m.peer_urls, *m.client_urls):
                self._cluster_of[url] = urls
                self._voting_of[url] = voting

    def _unanswered(self, addressed: list[MemberAddress | None]) -> flavor.Quorum | None:
        """The quorum when no member lists the cluster: none answering of the most voters last listed
        for these members (None when no list ever answered: nothing is known to count)."""
        voting = max((self._voting_of.get(a.peer_url) or self._voting_of.get(a.client_url) or 0
                      for a in addressed if a is not None), default=0)
        return flavor.Quorum(answering=0, voting=voting) if voting else None

    def _known_cluster(self, me: MemberAddress) -> tuple[str, ...]:
        return self._cluster_of.get(me.peer_url) or self._cluster_of.get(me.client_url) or ()

    def _members(self, endpoints: list[str], timeout: float) -> Members:
        key = (tuple(endpoints), timeout)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = Members(endpoints, timeout=timeout)
        return client

    async def close(self) -> None:
        await self.snapshots.close()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    @staticmethod
    def _props(properties: JSON) -> EtcdProperties:
        try:
            return etcd_props.parse(properties)
        except ValidationError as e:
            raise PluginError(f"etcd flavor Properties: {e}") from None

    # -- Validate ----------------------------------------------------------------------------

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        problems: list[str] = []
        try:
            props = etcd_props.parse(properties, strict=True)
        except ValidationError as e:
            problems += e.problems
            props = EtcdProperties()  # still check the logical IDs, so one answer lists everything
        problems += etcd_props.logical_id_problems(props, allocation.logical_ids)
        if problems:
            raise ValidationError(problems)

    # -- Prepare -----------------------------------------------------------------------------

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        props = self._props(properties)
        lid = spec.logical_id
        if not lid:
            raise PluginError("the etcd flavor prepares pets only: the instance has no logical ID "
                              "(give the group Allocation.LogicalIDs)")
        try:
            me = etcd_props.member(props, lid)
        except ValueError as e:
            raise PluginError(str(e)) from None
        endpoints = etcd_props.cluster_endpoints(props, allocation.logical_ids, besides=lid)
        data_dir = f"{props.data_dir.rstrip('/')}/{me.name}.{secrets.token_hex(4)}"
        if spec.tags.get(instance.TAG_CONFIG_HASH) == instance.BOOTSTRAP_CONFIG_HASH:
            init = await self._bootstrap(props, me, endpoints, data_dir)
        else:
            init = await self._join(props, me, endpoints, allocation, data_dir)
        joined = f"{spec.init}\n{init}" if spec.init.strip() else init
        return dataclasses.replace(spec, init=joined)

    async def _bootstrap(self, props: EtcdProperties, me: MemberAddress, endpoints: list[str], data_dir: str) -> str:
        """The first member of a new cluster, refused while any member of the cluster answers."""
        if endpoints:
            try:
                found = await self._members(endpoints, props.timeout).list()
            except Unavailable:
                found = []
            except Refused as e:
                raise PluginError(f"cannot bootstrap etcd member {me.logical_id}: {e}") from None
            if found:
                raise PluginError(
                    f"cannot bootstrap etcd member {me.logical_id}: an etcd cluster of {len(found)} member(s) already "
                    f"answers at {', '.join(endpoints)}; a bootstrap member would start a second, separate cluster. "
                    "Commit the etcd group instead: it joins new members to the running cluster")
        log.info("rendering etcd member %s as the first member of a new cluster", me.name)
        return etcd_props.render(props, me, initial_cluster=[(me.name, me.peer_url)], state="new", data_dir=data_dir)

    async def _join(self, props: EtcdProperties, me: MemberAddress, endpoints: list[str], allocation: flavor.Allocation,
                    data_dir: str) -> str:
        if not endpoints:
            raise PluginError(f"cannot add etcd member {me.logical_id}: no other member to join (the allocation names "
                              "no other logical ID and Endpoints is not set); bootstrap the cluster first")
        client = self._members(endpoints, props.timeout)
        try:
            current = await client.list()
            allocated = {etcd_props.member(props, lid).peer_url for lid in allocation.logical_ids or ()
                         if _parses(props, lid)}
            reuse: Member | None = None
            for m in current:
                if me.peer_url in m.peer_urls:
                    if not m.started and m.learner and reuse is None:
                        reuse = m  # added by an earlier attempt whose instance never started
                        continue
                    log.info("removing etcd member %x (%s) of logical ID %s before adding its replacement",
                             m.id, m.name or "never started", me.logical_id)
                    await _reconfigure(functools.partial(client.remove, m.id))
                elif not m.started and not (set(m.peer_urls) & allocated):
                    log.info("removing etcd learner %x (%s): added for a logical ID no longer allocated, never started",
                             m.id, ", ".join(m.peer_urls))
                    await _reconfigure(functools.partial(client.remove, m.id))
            if reuse is not None:
                log.info("etcd learner %x for %s was added earlier and never started: reusing it", reuse.id, me.name)
                members = await client.list()
            else:
                added, members = await _reconfigure(lambda: client.add([me.peer_url], learner=True))
                log.info("added etcd member %x for %s as a learner", added.id, me.name)
            self._remember(members)
        except EtcdError as e:
            raise PluginError(f"cannot add etcd member {me.logical_id} ({me.peer_url}): {e}") from None
        initial = [(m.name, m.peer_urls[0]) for m in members if m.started and m.peer_urls and me.peer_url not in m.peer_urls]
        initial.append((me.name, me.peer_url))
        return etcd_props.render(props, me, initial_cluster=initial, state="existing", data_dir=data_dir)

    # -- Healthy -----------------------------------------------------------------------------

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return (await self.healthy_many(properties, [description]))[0]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        return [a.health for a in await self.assess_many(properties, descriptions)]

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        """Each member's verdict, with the cluster's quorum whenever a member list answers."""
        props = self._props(properties)
        addressed: list[MemberAddress | None] = []
        for d in descriptions:
            lid = _logical_id(d)
            try:
                addressed.append(etcd_props.member(props, lid) if lid else None)
            except ValueError:
                addressed.append(None)
        endpoints = list(props.endpoints or ()) + [a.client_url for a in addressed if a is not None]
        endpoints += [u for a in addressed if a is not None for u in self._known_cluster(a)]
        if not endpoints:
            return [flavor.Assessment(flavor.Health.UNHEALTHY, "no etcd member address")] * len(descriptions)
        client = self._members(list(dict.fromkeys(endpoints)), props.timeout)
        try:
            members = await client.list()
        except Unavailable as e:
            log.info("etcd health: no member lists the cluster: %s", e)
            return [flavor.Assessment(flavor.Health.UNHEALTHY, f"no etcd member lists the cluster: {e}",
                                      self._unanswered(addressed))] * len(descriptions)
        except Refused as e:
            log.warning("etcd health: member list refused: %s", e)
            return [flavor.Assessment(flavor.Health.UNKNOWN, f"etcd member list refused: {e}")] * len(descriptions)
        self._remember(members)
        statuses: dict[str, Status | None] = {}
        leader_status: list[Status | None] = []
        verdicts = await asyncio.gather(*(self._judge(props, client, a, members, statuses, leader_status)
                                          for a in addressed))
        quorum = await self._quorum(client, members, statuses)
        if props.snapshot is not None:
            healthy = [a for a, v in zip(addressed, verdicts, strict=True) if a is not None and v is flavor.Health.HEALTHY]
            if healthy:
                self.snapshots.maybe_start(props.snapshot, members=client, endpoint=healthy[0].client_url)
        reason = "" if quorum.held else (f"the etcd cluster has no quorum: {quorum.answering} of {quorum.voting} "
                                         "voting members answer")
        return [flavor.Assessment(v, reason, quorum) for v in verdicts]

    async def _quorum(self, client: Members, members: list[Member], statuses: dict[str, Status | None]) -> flavor.Quorum:
        """How many of the cluster's voting members answer a status request (one request per member per check)."""
        voters = [m for m in members if not m.learner]
        answers = await asyncio.gather(*(self._status(client, m.client_urls[0], statuses)
                                         for m in voters if m.client_urls))
        return flavor.Quorum(answering=sum(1 for a in answers if a is not None), voting=len(voters))

    async def _status(self, client: Members, url: str, cache: dict[str, Status | None]) -> Status | None:
        if url not in cache:
            try:
                cache[url] = await client.status(url)
            except EtcdError:
                cache[url] = None
        return cache[url]

    async def _judge(self, props: EtcdProperties, client: Members, me: MemberAddress | None, members: list[Member],
                     statuses: dict[str, Status | None], leader_status: list[Status | None]) -> flavor.Health:
        if me is None:
            return flavor.Health.UNHEALTHY
        mine = next((m for m in members if me.peer_url in m.peer_urls), None)
        if mine is None:
            log.info("etcd member %s is not in the cluster's member list", me.name)
            return flavor.Health.UNHEALTHY
        if not mine.started:
            return flavor.Health.UNHEALTHY  # added, not (yet) joined: the grace period covers a start
        ok, why = await client.healthy(me.client_url)
        if not ok:
            log.info("etcd member %s: %s", me.name, why)
            return flavor.Health.UNHEALTHY
        own = await self._status(client, me.client_url, statuses)
        if own is None:
            return flavor.Health.UNHEALTHY
        leader = next((m for m in members if m.id == own.leader), None)
        if leader is None or not leader.client_urls:
            return flavor.Health.UNKNOWN
        lead = await self._status(client, leader.client_urls[0], statuses)
        if lead is None:
            return flavor.Health.UNKNOWN
        lag = lead.raft_index - own.raft_index
        if lag > props.max_lag:
            log.info("etcd member %s trails the leader by %d raft entries (MaxLag %d)", me.name, lag, props.max_lag)
            return flavor.Health.UNKNOWN
        if mine.learner:
            try:
                await client.promote(mine.id)
            except EtcdError as e:
                log.info("etcd learner %s (%x) is not promoted yet: %s", me.name, mine.id, e)
                return flavor.Health.UNKNOWN
            log.info("promoted etcd learner %s (%x): it trailed the leader by %d raft entries", me.name, mine.id, lag)
        return flavor.Health.HEALTHY

    # -- Drain -------------------------------------------------------------------------------

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        props = self._props(properties)
        lid = _logical_id(description)
        if not lid:
            return
        try:
            me = etcd_props.member(props, lid)
        except ValueError:
            return
        client = self._members(list(dict.fromkeys([me.client_url, *(props.endpoints or ()), *self._known_cluster(me)])),
                               props.timeout)
        try:
            members = await client.list()
        except Unavailable as e:
            # Not answering: its replacement's Prepare removes it (remove, then add).
            log.info("etcd member %s cannot be removed now (%s); its replacement removes it", me.name, e)
            return
        except Refused as e:
            raise PluginError(f"cannot remove etcd member {me.logical_id}: {e}") from None
        mine = next((m for m in members if me.peer_url in m.peer_urls), None)
        if mine is None:
            return
        # The removal goes through another member: the removed one stops, maybe before it answers.
        others = [u for m in members if m.id != mine.id and not m.learner for u in m.client_urls]
        remover = self._members(list(dict.fromkeys([*others, me.client_url])), props.timeout) if others else client
        try:
            await self._step_down(client, me, mine, members)
            await _reconfigure(lambda: remover.remove(mine.id))
        except EtcdError as e:
            # The answer may be lost while the removal committed ("server stopped"): ask again.
            with contextlib.suppress(EtcdError):
                if all(m.id != mine.id for m in await remover.list()):
                    log.info("removed etcd member %s (%x) from the cluster (%s)", me.name, mine.id, e)
                    return
            raise PluginError(f"cannot remove etcd member {me.logical_id} ({mine.id:x}) from the cluster: {e}") from None
        log.info("removed etcd member %s (%x) from the cluster", me.name, mine.id)

    async def _step_down(self, client: Members, me: MemberAddress, mine: Member, members: list[Member]) -> None:
        """If ``mine`` leads the raft group, hand leadership to the most advanced other started voter."""
        try:
            own = await client.status(me.client_url)
        except EtcdError:
            return
        if own.leader != mine.id:
            return
        best: tuple[int, Member] | None = None
        for m in members:
            if m.id == mine.id or m.learner or not m.started or not m.client_urls:
                continue
            try:
                st = await client.status(m.client_urls[0])
            except EtcdError:
                continue
            if best is None or st.raft_index > best[0]:
                best = (st.raft_index, m)
        if best is None:
            return
        try:
            await client.move_leader(leader_endpoint=me.client_url, target=best[1].id)
            log.info("moved etcd leadership from %s to %s before removing it", me.name, best[1].name)
        except EtcdError as e:
            log.info("could not move etcd leadership away from %s before removing it: %s", me.name, e)


def _parses(props: EtcdProperties, lid: str) -> bool:
    try:
        etcd_props.member(props, lid)
    except ValueError:
        return False
    return True
