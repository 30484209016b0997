"""The manager flavor: pets whose logical IDs are controller replicas.

Guarantee:
- Prepare renders the replica's configuration (``manager_props.render``): its backend, its
  listener and advertised URL from its logical ID, its token file, and its self logical ID.
- Healthy says HEALTHY for a replica that answers ``Manager.Status`` within ``Timeout`` and
  either leads without a problem, or follows: it has no problem and names a leader - the one
  of the same batch that says it leads, when there is one. Not answering, or answering with a
  problem (no backend, no leader), is UNHEALTHY; following another location than the batch's
  leader is UNKNOWN (it has not caught up with an election yet).
- Drain hands leadership over first if the replica leads (``Manager.HandOver``), and returns
  once it no longer does, so a replica is never stopped while it leads.
Limit: replicas are reached at their advertised URL with the token of ``TokenFile`` read on the
host of this flavor daemon (the same path on every host).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from typing import Any

from infrakit_runtime.plugins.flavor.selfhost import manager_props
from infrakit_runtime.plugins.flavor.selfhost.manager_props import ManagerProperties, Replica
from infrakit_runtime.rpc import tokens
from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

__all__ = ["ManagerFlavor"]

# How long Drain waits for a replica that was asked to hand leadership over to stop leading.
HANDOVER_WAIT = 30.0


def _logical_id(description: instance.Description) -> str | None:
    return description.logical_id or description.tags.get(instance.TAG_LOGICAL_ID)


class ManagerFlavor:
    """``FlavorPlugin`` (with the batch health check) for groups of controller replicas."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, float, str | None], Client] = {}

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    @staticmethod
    def _props(properties: JSON) -> ManagerProperties:
        try:
            return manager_props.parse(properties)
        except ValidationError as e:
            raise PluginError(f"manager flavor Properties: {e}") from None

    def _client(self, props: ManagerProperties, me: Replica) -> Client:
        try:
            token = tokens.read(props.token_file)
        except ValidationError as e:
            raise PluginError(f"cannot call replica {me.logical_id}: TokenFile: {e}") from None
        ca = (props.tls or {}).get("ca")
        key = (me.url, token, props.timeout, ca)
        client = self._clients.get(key)
        if client is None:
            context = ssl.create_default_context(cafile=ca) if ca else None
            client = self._clients[key] = Client(Address(url=me.url), name=f"replica {me.logical_id}",
                                                 timeout=props.timeout, token=token, ssl_context=context)
        return client

    # -- Validate / Prepare ------------------------------------------------------------------

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        problems: list[str] = []
        try:
            props = manager_props.parse(properties, strict=True)
        except ValidationError as e:
            problems += e.problems
            props = ManagerProperties(token_file="", backend={})
        problems += manager_props.logical_id_problems(props, allocation.logical_ids)
        if problems:
            raise ValidationError(problems)

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        props = self._props(properties)
        if not spec.logical_id:
            raise PluginError("the manager flavor prepares pets only: the instance has no logical ID "
                              "(give the group Allocation.LogicalIDs)")
        try:
            me = manager_props.replica(props, spec.logical_id)
        except ValueError as e:
            raise PluginError(str(e)) from None
        init = manager_props.render(props, me)
        return dataclasses.replace(spec, init=f"{spec.init}\n{init}" if spec.init.strip() else init)

    # -- Healthy -----------------------------------------------------------------------------

    async def _status(self, props: ManagerProperties, me: Replica) -> dict[str, Any] | str:
        """The replica's ``Manager.Status``, or why it gave none."""
        try:
            status = await self._client(props, me).call("Manager.Status", {})
        except (UnreachableError, RemoteError, PluginError) as e:
            return str(e)
        return status if isinstance(status, dict) else f"replica {me.logical_id} answered {status!r}"

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return (await self.healthy_many(properties, [description]))[0]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        props = self._props(properties)
        replicas: list[Replica | None] = []
        for d in descriptions:
            lid = _logical_id(d)
            try:
                replicas.append(manager_props.replica(props, lid) if lid else None)
            except ValueError:
                replicas.append(None)

        async def status(r: Replica | None) -> dict[str, Any] | str:
            return await self._status(props, r) if r is not None else "no logical ID"

        answers = await asyncio.gather(*(status(r) for r in replicas))
        leaders = [r.url for r, a in zip(replicas, answers, strict=True)
                   if r is not None and isinstance(a, dict) and a.get("Leader")]
        leader = leaders[0] if len(leaders) == 1 else None
        out = []
        for r, answer in zip(replicas, answers, strict=True):
            if not isinstance(answer, dict):
                log.info("replica %s: %s", r.logical_id if r else "?", answer)
                out.append(flavor.Health.UNHEALTHY)
            elif answer.get("Problem"):
                log.info("replica %s: %s", r.logical_id if r else "?", answer["Problem"])
                out.append(flavor.Health.UNHEALTHY)
            elif answer.get("Leader"):
                out.append(flavor.Health.HEALTHY)
            elif not answer.get("Location"):
                out.append(flavor.Health.UNHEALTHY)
            elif leader is not None and answer.get("Location") != leader:
                out.append(flavor.Health.UNKNOWN)
            else:
                out.append(flavor.Health.HEALTHY)
        return out

    # -- Drain -------------------------------------------------------------------------------

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        props = self._props(properties)
        lid = _logical_id(description)
        if not lid:
            return
        try:
            me = manager_props.replica(props, lid)
        except ValueError:
            return
        answer = await self._status(props, me)
        if not isinstance(answer, dict) or not answer.get("Leader"):
            return  # not answering, or following: nothing to hand over
        client = self._client(props, me)
        try:
            await client.call("Manager.HandOver", {})
        except (UnreachableError, RemoteError) as e:
            raise PluginError(f"replica {me.logical_id} leads and did not hand leadership over: {e}") from None
        deadline = asyncio.get_running_loop().time() + HANDOVER_WAIT
        while asyncio.get_running_loop().time() < deadline:
            answer = await self._status(props, me)
            if not isinstance(answer, dict) or not answer.get("Leader"):
                log.info("replica %s handed leadership over before it is stopped", me.logical_id)
                return
            await asyncio.sleep(0.1)
        raise PluginError(f"replica {me.logical_id} still leads {HANDOVER_WAIT:g}s after it was asked to hand "
                          "leadership over; it is not stopped while it leads")
