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
