"""The etcd primitives replicas share the groups with (``sharding: groups``), against a real 3-member cluster."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from infrakit_runtime.backends.etcd import EtcdBackend
from infrakit_runtime.manager.backend import LeaderTimings, Lease, LostLeadership
from tests.runtime.backends.conftest import EtcdCluster

STEADY = LeaderTimings(ttl=6.0, renew_interval=0.5, renew_deadline=4.0, retry_interval=0.3)
FAST = LeaderTimings(ttl=2.0, renew_interval=0.3, renew_deadline=1.2, retry_interval=0.3)
SPEC = {"ID": "web", "Properties": {"Allocation": {"Size": 1}}}


@contextlib.asynccontextmanager
async def member(etcd: EtcdCluster, prefix: str, name: str, timings: LeaderTimings = STEADY) -> AsyncIterator[tuple[EtcdBackend, Lease]]:
    backend = EtcdBackend(etcd.endpoints, prefix, timings)
    try:
        async with backend.membership(candidate=name, location=f"http://{name}:24864") as lease:
            yield backend, lease
    finally:
        await backend.close()


def run(coro) -> None:
    asyncio.run(coro)


def test_a_group_is_claimed_once_written_only_by_its_owner_and_handed_over_in_one_step(etcd):
    prefix = f"/share-{uuid.uuid4().hex[:8]}/"

    async def scenario() -> None:
        async with member(etcd, prefix, "a") as (a, la), member(etcd, prefix, "b") as (b, lb):
            view = await a.view()
            assert set(view.members) == {"a", "b"} and view.members["b"].location == "http://b:24864"
            assert await a.claim("web", la) is True
            assert await b.claim("web", lb) is False  # create-if-absent: one owner
            assert await a.claim("web", la) is True  # already ours
            await a.put("web", SPEC, la)
            with pytest.raises(LostLeadership, match=r"does not own group web any more .*owned by a"):
                await b.put("web", {**SPEC, "Properties": {}}, lb)
            assert b.holds(lb), "a refused group write must not cost the membership"
            assert await b.transfer("web", lb, view.members["a"]) is False  # only the owner hands over
            assert await a.transfer("web", la, view.members["b"]) is True
            assert (await b.view()).owners == {"web": "b"}
            with pytest.raises(LostLeadership):
                await a.put("web", SPEC, la)
            await b.put("web", {**SPEC, "Properties": {"Allocation": {"Size": 2}}}, lb)
            assert (await a.load_all()).specs["web"]["Properties"] == {"Allocation": {"Size": 2}}
            await b.delete("web", lb)  # the spec and its owner key go together
            view = await a.view()
            assert view.owners == {} and view.groups == frozenset()

    run(scenario())


def test_a_members_owner_keys_go_with_its_lease_and_leaving_revokes_it_at_once(etcd):
    prefix = f"/share-{uuid.uuid4().hex[:8]}/"

    async def scenario() -> None:
        async with member(etcd, prefix, "a") as (a, la):
            async with member(etcd, prefix, "b") as (b, lb):
                assert await b.claim("x", lb)
                await b.put("x", {**SPEC, "ID": "x"}, lb)
                view = await a.view()
                assert view.owners == {"x": "b"} and view.groups == frozenset({"x"})
            view = await a.view()  # b left: record and owner key gone without waiting for a TTL
            assert set(view.members) == {"a"} and view.owners == {} and view.groups == frozenset({"x"})
            assert await a.claim("x", la)

    run(scenario())


def test_a_watch_on_the_members_wakes_when_one_joins(etcd):
    prefix = f"/share-{uuid.uuid4().hex[:8]}/"

    async def scenario() -> None:
        async with member(etcd, prefix, "a") as (a, _):
            view = await a.view()
            waiting = asyncio.create_task(a.wait_change(view.revision, 30))
            await asyncio.sleep(0)
            async with member(etcd, prefix, "b"):
                await asyncio.wait_for(waiting, 20)  # well before the 30 s timeout
                assert "b" in (await a.view()).members

    run(scenario())


def test_a_member_whose_renewals_stop_loses_its_groups_and_cannot_write_them(etcd):
    prefix = f"/share-{uuid.uuid4().hex[:8]}/"

    async def scenario() -> None:
        async with member(etcd, prefix, "a", FAST) as (a, la), member(etcd, prefix, "b") as (b, lb):
            assert await a.claim("web", la)
            la.handle.renewer.cancel()  # as by SIGSTOP: nothing renews any more
            deadline = time.monotonic() + 30
            while "web" in (await b.view()).owners:
                assert time.monotonic() < deadline, "the owner key outlived its lease"
                await asyncio.sleep(0.1)
            assert not a.holds(la)
            with pytest.raises(LostLeadership):
                await a.put("web", SPEC, la)
            assert await b.claim("web", lb)

    run(scenario())


def test_a_single_leader_and_sharing_replicas_never_act_on_one_prefix_together(etcd):
    """Mixed modes on one prefix: whichever mode came first keeps the prefix; a replica of the other
    mode does not lead or register (the check is inside the writing transaction), retries, and says
    why in its status until the others leave."""
    prefix = f"/mixed-{uuid.uuid4().hex[:8]}/"

    async def wait_status(backend: EtcdBackend, healthy: bool) -> dict:
        deadline = time.monotonic() + 30
        while (status := await backend.status())["healthy"] != healthy:
            assert time.monotonic() < deadline, (status["healthy"], status["reason"])
            await asyncio.sleep(0.1)
        return status

    async def scenario() -> None:
        single = EtcdBackend(etcd.endpoints, prefix, STEADY)
        sharing = EtcdBackend(etcd.endpoints, prefix, STEADY)
        try:
            leading = single.leadership(candidate="solo", location="http://solo:24864")
            lease = await leading.__aenter__()
            registered = sharing.membership(candidate="a", location="http://a:24864")  # held: its exit revokes
            joining = asyncio.create_task(registered.__aenter__())
            status = await wait_status(sharing, healthy=False)
            assert status["reason"].startswith("mixed modes: a single-leader replica (solo) holds "), status
            assert not joining.done() and (await single.view()).members == {}
            assert single.holds(lease)
            await leading.__aexit__(None, None, None)  # the single leader goes: the sharing replica registers
            member_lease = await asyncio.wait_for(joining, 30)
            assert set((await sharing.view()).members) == {"a"} and (await wait_status(sharing, True))["reason"] == "ok"

            again = single.leadership(candidate="solo", location=None)
            campaign = asyncio.create_task(again.__aenter__())
            status = await wait_status(single, healthy=False)
            assert status["reason"].startswith("mixed modes: replicas sharing the groups (a) are registered"), status
            assert not campaign.done() and await single.leader_location() is None
            assert sharing.holds(member_lease)
            campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await campaign
            await registered.__aexit__(None, None, None)
        finally:
            await single.close()
            await sharing.close()

    run(scenario())
