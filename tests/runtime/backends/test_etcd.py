"""etcd backend against a real 3-member cluster: elections, deadlines, fencing, lost members and quorum."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import etcd3gw
import pytest

from infrakit_runtime.backends.etcd import EtcdBackend
from infrakit_runtime.manager.backend import BackendError, LeaderTimings, Lease, LostLeadership
from tests.runtime.backends.conftest import EtcdCluster, free_ports

FAST = LeaderTimings(ttl=2.0, renew_interval=0.3, renew_deadline=1.2, retry_interval=0.3)
# For tests about who wins rather than how fast a lost lease is noticed: a busy machine can
# starve renewals for a second or two, which with FAST loses a lease no test asked to lose.
STEADY = LeaderTimings(ttl=6.0, renew_interval=0.5, renew_deadline=4.0, retry_interval=0.3)


class Campaign:
    """One candidate's ``leadership()`` entered in a task, so a test can watch several at once."""

    def __init__(self, backend: EtcdBackend, name: str) -> None:
        self.backend = backend
        self.name = name
        self.cm = backend.leadership(candidate=name, location=f"tcp://{name}:24864")
        self.task: asyncio.Task[Lease] = asyncio.create_task(self.cm.__aenter__(), name=f"campaign/{name}")
        self.won_at: float | None = None
        self.task.add_done_callback(lambda _: setattr(self, "won_at", time.monotonic()))

    @property
    def lease(self) -> Lease:
        return self.task.result()

    async def resign(self) -> None:
        await self.cm.__aexit__(None, None, None)

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        elif not self.task.cancelled() and self.task.exception() is None and not self.lease.handle.lost.is_set():
            await self.resign()


@contextlib.asynccontextmanager
async def candidates(etcd: EtcdCluster, prefix: str, names: list[str],
                     timings: LeaderTimings = FAST) -> AsyncIterator[list[Campaign]]:
    # Each candidate starts on a different member, so endpoint rotation is exercised too.
    started = []
    for i, name in enumerate(names):
        endpoints = etcd.endpoints[i % 3:] + etcd.endpoints[: i % 3]
        started.append(Campaign(EtcdBackend(endpoints, prefix, timings, timeout=1.0), name))
    try:
        yield started
    finally:
        for c in started:
            await c.stop()
            await c.backend.close()


async def first_winner(campaigns: list[Campaign], timeout: float) -> Campaign:
    done, _ = await asyncio.wait([c.task for c in campaigns], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    assert done, f"nobody was elected within {timeout}s"
    return next(c for c in campaigns if c.task in done)


def raw_client(etcd: EtcdCluster) -> etcd3gw.Etcd3Client:
    url = urllib.parse.urlsplit(etcd.endpoints[0])
    return etcd3gw.client(host=url.hostname, port=url.port, timeout=2)


def key_meta(etcd: EtcdCluster, key: str) -> dict[str, Any] | None:
    found = raw_client(etcd).get(key, metadata=True)
    return found[0][1] if found else None


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:8]}/"


def test_three_candidates_elect_one_leader_at_a_time_with_growing_terms(etcd: EtcdCluster, prefix: str) -> None:
    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b", "c"], STEADY) as cs:
            terms = []
            for round_ in range(3):
                leader = await first_winner([c for c in cs if not c.task.done()], 5)
                await asyncio.sleep(0.5)  # a window in which a second winner would show
                assert sum(c.task.done() and not c.lease.handle.lost.is_set() for c in cs) == 1, \
                    f"round {round_}: more than one leader"
                assert await leader.backend.leader_location() == f"tcp://{leader.name}:24864"
                terms.append(leader.lease.term)
                await leader.resign()
            assert terms == sorted(terms) and len(set(terms)) == 3, terms
            assert await cs[0].backend.leader_location() is None

    asyncio.run(scenario())


def test_graceful_resign_hands_over_without_waiting_for_the_lease(etcd: EtcdCluster, prefix: str) -> None:
    # A lease that would outlive its holder by a minute: only a revoked lease lets the follower in sooner.
    patient = LeaderTimings(ttl=60.0, renew_interval=1.0, renew_deadline=40.0, retry_interval=0.3)

    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b"], patient) as cs:
            leader = await first_winner(cs, 10)
            follower = next(c for c in cs if c is not leader)
            resigned = time.monotonic()
            await leader.resign()
            await asyncio.wait_for(follower.task, 30)  # half the TTL: the lease was revoked, not expired
            took = (follower.won_at or 0) - resigned
            print(f"etcd takeover after a graceful resign: {took * 1000:.0f} ms (bench.failover measures it)")
            assert follower.lease.term > leader.lease.term
            assert await leader.backend.wait_lost(leader.lease) == "resigned"

    asyncio.run(scenario())


def test_a_leader_that_cannot_renew_steps_down_before_the_ttl_and_another_wins(etcd: EtcdCluster, prefix: str) -> None:
    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b"]) as cs:
            leader = await first_winner(cs, 5)
            follower = next(c for c in cs if c is not leader)
            held = leader.lease.handle
            held.renewer.cancel()  # its keepalive dies; nothing else about it changes
            last_renewal = held.renewed_at
            reason = await asyncio.wait_for(leader.backend.wait_lost(leader.lease), FAST.ttl + 1)
            stepped_down = time.monotonic()
            assert "no lease renewal succeeded" in reason
            assert stepped_down - last_renewal < FAST.ttl, "stepped down only after the lease could expire"
            assert not follower.task.done(), "someone else was elected while the old leader still acted"
            await asyncio.wait_for(follower.task, FAST.ttl + 3)
            print(f"etcd: stepped down {stepped_down - last_renewal:.2f}s after the last renewal; "
                  f"successor elected {(follower.won_at or 0) - last_renewal:.2f}s after it (TTL {FAST.ttl:g}s)")
            assert (follower.won_at or 0) > stepped_down
            with pytest.raises(LostLeadership):
                await leader.backend.put("web", {"ID": "web"}, leader.lease)

    asyncio.run(scenario())


def test_the_lease_is_trusted_by_the_injected_clock_and_no_longer_once_it_passes_the_renewal_deadline(
        etcd: EtcdCluster, prefix: str) -> None:
    """The clock lease renewals are timed by is injected: move it past the renewal deadline and the
    backend stops trusting its lease at once (the fence refuses), with no wall-clock wait."""
    class Clock:
        now = 5000.0

        def __call__(self) -> float:
            return self.now

    patient = LeaderTimings(ttl=30.0, renew_interval=10.0, renew_deadline=20.0, retry_interval=0.3)

    async def scenario() -> None:
        clock = Clock()
        backend = EtcdBackend(etcd.endpoints, prefix, patient, clock=clock)
        try:
            async with backend.leadership(candidate="a", location="here") as lease:
                assert backend.holds(lease)
                clock.now += patient.renew_deadline - 1
                assert backend.holds(lease), "still inside the renewal deadline"
                clock.now += 2
                assert not backend.holds(lease), "past the renewal deadline the lease is not trusted any more"
        finally:
            await backend.close()

    asyncio.run(scenario())


def test_a_paused_leaders_write_is_refused_by_etcd_and_changes_nothing(etcd: EtcdCluster, prefix: str) -> None:
    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b"]) as cs:
            old = await first_winner(cs, 5)
            new = next(c for c in cs if c is not old)
            await old.backend.put("web", {"ID": "web", "Properties": {"by": "old"}}, old.lease)
            # A paused process: no renewals, no deadline check; it still believes it leads.
            held = old.lease.handle
            held.renewer.cancel()
            held.watchdog.cancel()
            await asyncio.wait_for(new.task, FAST.ttl + 4)
            await new.backend.put("web", {"ID": "web", "Properties": {"by": "new"}}, new.lease)
            before = key_meta(etcd, prefix + "groups/web")
            assert not held.lost.is_set()

            with pytest.raises(LostLeadership, match="stale"):
                await old.backend.put("web", {"ID": "web", "Properties": {"by": "old, resumed"}}, old.lease)
            assert key_meta(etcd, prefix + "groups/web") == before, "a fenced write changed the key"
            assert (await new.backend.load_all()).specs["web"]["Properties"] == {"by": "new"}
            assert "another replica leads" in await asyncio.wait_for(old.backend.wait_lost(old.lease), 1)
            with pytest.raises(LostLeadership):
                await old.backend.delete("web", old.lease)
            forged = Lease(term=old.lease.term, holder="a", handle=new.lease.handle)
            with pytest.raises(LostLeadership, match="not issued"):
                await old.backend.put("web", {"ID": "web"}, forged)
            assert key_meta(etcd, prefix + "groups/web") == before

    asyncio.run(scenario())


def raft_leader(etcd: EtcdCluster) -> str:
    """The member etcd itself elected (the worst one to lose: writes stall until a re-election)."""
    for name in etcd.running():
        url = urllib.parse.urlsplit(etcd.endpoint(name))
        status = etcd3gw.client(host=url.hostname, port=url.port, timeout=2).status()
        if status["leader"] == status["header"]["member_id"]:
            return name
    raise AssertionError("no etcd member says it is the raft leader")


def test_losing_etcds_own_leader_member_changes_nothing_for_our_leader_or_followers(
        etcd: EtcdCluster, prefix: str) -> None:
    # Production-like timings: a raft re-election (1-2 s) must not cost our leader its lease.
    timings = LeaderTimings(ttl=5.0, renew_interval=0.5, renew_deadline=3.5, retry_interval=0.5)

    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b", "c"], timings) as cs:
            leader = await first_winner(cs, 5)
            followers = [c for c in cs if c is not leader]
            victim = raft_leader(etcd)
            await asyncio.to_thread(etcd.stop, victim)
            stopped = time.monotonic()
            await asyncio.to_thread(etcd.wait_healthy, 10, members=etcd.running())
            print(f"etcd: the survivors elected a raft leader {time.monotonic() - stopped:.2f}s after {victim} died")
            await leader.backend.put("web", {"ID": "web", "Properties": {"n": 1}}, leader.lease)
            await asyncio.sleep(1.5)  # a window: renewals keep flowing through the other members meanwhile
            assert not leader.lease.handle.lost.is_set()
            assert not any(c.task.done() for c in followers)
            assert all([(await c.backend.status())["healthy"] for c in cs])
            resigned = time.monotonic()
            await leader.resign()
            successor = await first_winner(followers, 2)
            print(f"etcd takeover after a resign with one member down: {(successor.won_at or 0) - resigned:.2f}s")
            await successor.backend.put("db", {"ID": "db"}, successor.lease)
            assert set((await successor.backend.load_all()).specs) == {"web", "db"}

    asyncio.run(scenario())


def test_without_quorum_nobody_acts_and_the_specs_survive_recovery(etcd: EtcdCluster, prefix: str) -> None:
    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a"]) as (leader,):
            await asyncio.wait_for(leader.task, 5)
            specs = {g: {"ID": g, "Properties": {"Allocation": {"Size": i}}} for i, g in enumerate(["web", "db"])}
            for gid, spec in specs.items():
                await leader.backend.put(gid, spec, leader.lease)

            await asyncio.to_thread(etcd.stop, "m2")
            await asyncio.to_thread(etcd.stop, "m3")
            status = await leader.backend.status()
            assert status["healthy"] is False
            assert status["reason"].startswith("etcd has no quorum: "), status["reason"]
            attempted = {"ID": "cache", "Properties": {"Allocation": {"Size": 9}}}
            with pytest.raises(BackendError, match="etcd has no quorum"):
                await leader.backend.put("cache", attempted, leader.lease)
            reason = await asyncio.wait_for(leader.backend.wait_lost(leader.lease), FAST.renew_deadline + 1)
            assert "no lease renewal succeeded" in reason
            with pytest.raises(LostLeadership):
                await leader.backend.put("cache", attempted, leader.lease)

            async with candidates(etcd, prefix, ["b"]) as (newcomer,):
                await asyncio.sleep(2.5)  # a window: more than a TTL in which a leader would be elected
                assert not newcomer.task.done(), "a leader was elected without a quorum"
                await asyncio.to_thread(etcd.start, "m2")
                await asyncio.to_thread(etcd.start, "m3")
                recovered = time.monotonic()
                await asyncio.wait_for(newcomer.task, 15)
                print(f"etcd: a leader again {(newcomer.won_at or 0) - recovered:.2f}s after quorum returned")
                stored = dict((await newcomer.backend.load_all()).specs)
                # A timed-out write has an unknown outcome: raft may commit it once quorum returns
                # (still fenced: no other leader came in between). It is all there or not at all.
                assert stored.pop("cache", attempted) == attempted
                assert stored == specs
                assert (await newcomer.backend.status())["healthy"] is True

    asyncio.run(scenario())


@pytest.fixture
def etcd_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A separate one-member etcd with authentication on (root / s3cret), so the shared cluster stays open."""
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not on PATH (install Debian's etcd-server)")
    client_port, peer_port = free_ports(2)
    url, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    proc = subprocess.Popen(
        ["etcd", "--name", "solo", "--data-dir", str(tmp_path_factory.mktemp("etcd-auth")),
         "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"solo={peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        parts = urllib.parse.urlsplit(url)
        admin = etcd3gw.client(host=parts.hostname, port=parts.port, timeout=2)
        deadline = time.monotonic() + 15
        while True:
            try:
                admin.get("/probe")
                break
            except etcd3gw.exceptions.Etcd3Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for path, body in [("/auth/role/add", {"name": "root"}), ("/auth/user/add", {"name": "root", "password": "s3cret"}),
                           ("/auth/user/grant", {"user": "root", "role": "root"}), ("/auth/enable", {})]:
            admin.post(admin.get_url(path), json=body)
        yield url
    finally:
        proc.kill()
        proc.wait(10)


def test_username_and_password_log_in_and_a_stale_token_is_renewed(etcd_with_auth: str) -> None:
    async def scenario() -> None:
        anonymous = EtcdBackend([etcd_with_auth], "/a/", FAST, timeout=1.0)
        with pytest.raises(BackendError, match="user name is empty"):
            await anonymous.load_all()
        wrong = EtcdBackend([etcd_with_auth], "/a/", FAST, username="root", password="wrong-pw", timeout=1.0)
        with pytest.raises(BackendError, match="authentication failed") as caught:
            await wrong.load_all()
        assert "wrong-pw" not in str(caught.value) and "wrong-pw" not in repr(wrong)

        backend = EtcdBackend([etcd_with_auth], "/a/", FAST, username="root", password="s3cret", timeout=1.0)
        async with backend.leadership(candidate="x", location="here") as lease:
            await backend.put("web", {"ID": "web"}, lease)
            backend._clients[0].session.headers["Authorization"] = "expired"  # as after etcd's token TTL
            await backend.put("web", {"ID": "web", "Properties": {"v": 2}}, lease)
            assert (await backend.load_all()).specs == {"web": {"ID": "web", "Properties": {"v": 2}}}
            await asyncio.sleep(FAST.renew_deadline + 0.3)  # a window: past the renewal deadline
            assert not lease.handle.lost.is_set(), "renewals failed under authentication"
        assert await backend.leader_location() is None
        for b in (anonymous, wrong, backend):
            await b.close()

    asyncio.run(scenario())


def test_writes_and_renewals_sharing_a_session_survive_a_token_that_is_replaced_under_them(etcd_with_auth: str) -> None:
    """Issue 12 #9: a put that re-authenticated must not be sent while another thread swaps the token.

    Each round makes the session's token stale (as when etcd forgets it: a restart, its TTL),
    then sends several fenced puts and reads at once while the lease renews every 20 ms:
    every one of them must land after at most one fresh login, and the lease must hold.
    """
    timings = LeaderTimings(ttl=2.0, renew_interval=0.02, renew_deadline=1.2, retry_interval=0.3)

    async def scenario() -> None:
        backend = EtcdBackend([etcd_with_auth], "/race/", timings, username="root", password="s3cret", timeout=2.0)
        try:
            async with backend.leadership(candidate="x", location="here") as lease:
                session = backend._clients[0].session
                failures: list[str] = []
                for round_ in range(40):
                    session.headers["Authorization"] = f"forgotten-{round_}"
                    writes = [backend.put(f"g{i}", {"ID": f"g{i}", "Properties": {"round": round_}}, lease)
                              for i in range(4)]
                    results = await asyncio.gather(*writes, backend.load_all(), return_exceptions=True)
                    failures += [f"round {round_}: {r}" for r in results if isinstance(r, BaseException)]
                assert failures == [], f"{len(failures)} calls failed, first: {failures[0]}"
                stored = (await backend.load_all()).specs
                assert stored == {f"g{i}": {"ID": f"g{i}", "Properties": {"round": 39}} for i in range(4)}
                assert backend.holds(lease), "renewals failed while the token was replaced"
        finally:
            await backend.close()

    asyncio.run(scenario())


def test_a_key_whose_name_and_id_disagree_or_whose_value_is_not_json_is_refused_alone(etcd: EtcdCluster,
                                                                                        prefix: str) -> None:
    raw = raw_client(etcd)
    raw.put(f"{prefix}groups/web", '{"ID": "web", "Properties": {}}')
    raw.put(f"{prefix}groups/rt1", '{"ID": "other", "Properties": {}}')
    raw.put(f"{prefix}groups/junk", "not json at all")
    raw.put(f"{prefix}groups/bin", b"\xff\xfe{")

    async def scenario() -> Any:
        backend = EtcdBackend(etcd.endpoints, prefix, FAST, timeout=1.0)
        try:
            return await backend.load_all()
        finally:
            await backend.close()

    stored = asyncio.run(scenario())
    assert stored.specs == {"web": {"ID": "web", "Properties": {}}}
    assert set(stored.refused) == {"rt1", "junk", "bin"}
    assert f"etcd key {prefix}groups/rt1 is refused: it is stored as group 'rt1' but its ID is 'other'" \
        in stored.refused["rt1"]
    assert f"etcd key {prefix}groups/junk is not valid JSON" in stored.refused["junk"]
    assert f"etcd key {prefix}groups/bin is not valid JSON" in stored.refused["bin"]
    assert raw.get(f"{prefix}groups/rt1") == [b'{"ID": "other", "Properties": {}}']  # left as the operator wrote it


# -- renewal never waits behind request work (issue 12) --------------------------------------


def test_a_leader_keeps_its_lease_while_request_work_fills_the_shared_thread_pool(etcd: EtcdCluster, prefix: str) -> None:
    """Store reads, status and plugin I/O all queue in asyncio's default executor; renewal must not."""
    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b"]) as cs:
            leader = await first_winner(cs, 5)
            release = threading.Event()
            loop = asyncio.get_running_loop()
            # Far more blocking jobs than the pool has workers, each holding one for the attack's length.
            blockers = [loop.run_in_executor(None, release.wait, 3 * FAST.ttl) for _ in range(64)]
            try:
                # Three TTLs of saturation: an in-pool renewal would miss its deadline twice over.
                await asyncio.sleep(2 * FAST.ttl)
                assert not leader.lease.handle.lost.is_set(), leader.lease.handle.reason
                assert leader.backend.holds(leader.lease)
            finally:
                release.set()
                await asyncio.gather(*blockers)
            await leader.backend.put("web", {"ID": "web"}, leader.lease)

    asyncio.run(scenario())


def test_a_leader_whose_event_loop_stalls_for_less_than_the_ttl_keeps_its_lease(etcd: EtcdCluster, prefix: str) -> None:
    async def scenario() -> None:
        async with candidates(etcd, prefix, ["a", "b"]) as cs:
            leader = await first_winner(cs, 5)
            follower = next(c for c in cs if c is not leader)
            time.sleep(FAST.renew_deadline + 0.3)  # noqa: ASYNC251 - the point: one blocking burst past the renewal deadline
            await asyncio.sleep(2 * FAST.renew_interval)
            assert not leader.lease.handle.lost.is_set(), leader.lease.handle.reason
            assert leader.backend.holds(leader.lease)
            assert not follower.task.done()
            await leader.backend.put("web", {"ID": "web"}, leader.lease)

    asyncio.run(scenario())


def test_a_leader_whose_event_loop_is_wedged_lets_its_lease_lapse_and_another_candidate_leads(
        etcd: EtcdCluster, prefix: str) -> None:
    won = threading.Event()
    done = threading.Event()

    async def follow() -> None:  # on its own thread and loop: the leader's loop is about to be wedged
        backend = EtcdBackend(etcd.endpoints, prefix, FAST, timeout=1.0)
        try:
            async with backend.leadership(candidate="b", location="b"):
                won.set()
                await asyncio.to_thread(done.wait, 60)
        finally:
            await backend.close()

    async def scenario() -> None:
        backend = EtcdBackend(etcd.endpoints, prefix, FAST, timeout=1.0)
        async with backend.leadership(candidate="a", location="a") as lease:
            follower = threading.Thread(target=asyncio.run, args=(follow(),), name="follower")
            follower.start()
            try:
                await asyncio.sleep(0.5)  # the follower is watching the leader key
                # Wedged: the loop does not run for a TTL (the keeper stops renewing) plus a TTL (the lease lapses).
                assert won.wait(2 * FAST.ttl + 5), "nobody else led while the leader's loop was wedged"
                reason = await asyncio.wait_for(backend.wait_lost(lease), 2)
                assert "event loop" in reason, reason
                assert not backend.holds(lease)
                with pytest.raises(LostLeadership):
                    await backend.put("web", {"ID": "web"}, lease)
            finally:
                done.set()
                follower.join(30)
        await backend.close()

    asyncio.run(scenario())
