"""File backend against the real kernel: flock between processes, atomic renames, a full tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit_runtime.backends.file import FileBackend
from infrakit_runtime.manager.backend import BackendError, LeaderTimings, Lease, LostLeadership

REPO = Path(__file__).resolve().parents[3]
FAST = LeaderTimings(ttl=2.0, renew_interval=0.1, renew_deadline=1.0, retry_interval=0.1)


class Candidate:
    """A ``file_candidate`` process whose output lines can be awaited with a timeout."""

    def __init__(self, directory: Path, name: str, mode: str = "hold") -> None:
        self.name = name
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.runtime.backends.file_candidate", str(directory), name, mode],
            cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str, timeout: float) -> str | None:
        """The next line starting with ``prefix`` within ``timeout`` seconds, else None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            if line.startswith(prefix):
                return line
        return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def candidates() -> Iterator[list[Candidate]]:
    started: list[Candidate] = []
    yield started
    for c in started:
        c.kill()


def term_of(line: str) -> int:
    return int(line.split()[2])


def test_one_of_two_processes_leads_and_the_other_takes_over_after_a_sigkill(
        tmp_path: Path, candidates: list[Candidate]) -> None:
    a, b = Candidate(tmp_path, "a"), Candidate(tmp_path, "b")
    candidates += [a, b]
    first = next(filter(None, (a.expect("LEADER", 10), b.expect("LEADER", 0.5))), None)
    assert first is not None, "nobody became leader"
    leader, follower = (a, b) if first.split()[1] == "a" else (b, a)
    assert follower.expect("LEADER", 1.0) is None, "two processes hold the leader lock at once"
    backend = FileBackend(tmp_path)
    assert asyncio.run(backend.leader_location()) == f"unix:///{leader.name}.sock"

    leader.kill()
    killed = time.monotonic()
    second = follower.expect("LEADER", 5)
    took = time.monotonic() - killed
    assert second is not None, "the follower never took over"
    assert term_of(second) == term_of(first) + 1
    assert asyncio.run(backend.leader_location()) == f"unix:///{follower.name}.sock"
    print(f"file takeover after SIGKILL: {took * 1000:.0f} ms (bench.failover measures it)")

    follower.kill()
    assert asyncio.run(backend.leader_location()) is None, "a dead leader's leader.loc must not count"


def test_two_descriptors_in_one_process_conflict_and_resigning_hands_over(tmp_path: Path) -> None:
    async def scenario() -> None:
        one, two = FileBackend(tmp_path, FAST), FileBackend(tmp_path, FAST)
        async with one.leadership(candidate="one", location="loc-one") as lease_one:
            second = two.leadership(candidate="two", location="loc-two")
            waiting = asyncio.create_task(second.__aenter__())
            await asyncio.sleep(0.6)  # a window: six retry intervals in which a second holder would appear
            assert not waiting.done(), "a second descriptor in the same process got the lock too"
            assert await two.leader_location() == "loc-one"
        lease_two = await asyncio.wait_for(waiting, 30)
        assert lease_two.term == lease_one.term + 1
        assert await one.wait_lost(lease_one) == "resigned"
        assert await two.leader_location() == "loc-two"
        await second.__aexit__(None, None, None)
        assert await two.leader_location() is None
        assert await two.wait_lost(lease_two) == "resigned"

    asyncio.run(scenario())


def test_specs_round_trip_with_awkward_ids_and_deletes_are_durable(tmp_path: Path) -> None:
    ids = ["web", "a/b", ".hidden", "ünïcode", "x" * 60, "..", "%41"]

    async def scenario() -> None:
        backend = FileBackend(tmp_path, FAST)
        async with backend.leadership(candidate="me", location=None) as lease:
            for i, gid in enumerate(ids):
                await backend.put(gid, {"ID": gid, "Properties": {"n": i}}, lease)
            assert (await backend.load_all()).specs == {gid: {"ID": gid, "Properties": {"n": i}} for i, gid in enumerate(ids)}
            await backend.delete("a/b", lease)
            await backend.delete("never-existed", lease)
        again = FileBackend(tmp_path)
        stored = (await again.load_all()).specs
        assert set(stored) == set(ids) - {"a/b"}
        assert not [p for p in (tmp_path / "groups").iterdir() if p.name.startswith(".")]

    asyncio.run(scenario())


def test_a_lease_from_an_old_term_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        old_backend, new_backend = FileBackend(tmp_path, FAST), FileBackend(tmp_path, FAST)
        async with old_backend.leadership(candidate="old", location=None) as old:
            await old_backend.put("web", {"ID": "web", "Properties": {"by": "old"}}, old)
        async with new_backend.leadership(candidate="new", location=None) as new:
            assert new.term == old.term + 1
            with pytest.raises(LostLeadership, match="resigned"):
                await old_backend.put("web", {"ID": "web", "Properties": {"by": "stale"}}, old)
            with pytest.raises(LostLeadership):
                await old_backend.delete("web", old)
            # Even with the live lock behind it, an old term number is refused by the term file.
            forged = Lease(term=old.term, holder="old", handle=new.handle)
            with pytest.raises(LostLeadership, match=f"term is now {new.term}"):
                await new_backend.put("web", {"ID": "web", "Properties": {"by": "forged"}}, forged)
            with pytest.raises(LostLeadership, match="not issued"):
                await old_backend.put("web", {"ID": "web", "Properties": {"by": "foreign"}}, new)
            await new_backend.put("web", {"ID": "web", "Properties": {"by": "new"}}, new)
        assert (await new_backend.load_all()).specs["web"]["Properties"] == {"by": "new"}

    asyncio.run(scenario())


def test_a_crash_before_the_rename_leaves_the_old_spec(tmp_path: Path, candidates: list[Candidate]) -> None:
    async def seed() -> None:
        backend = FileBackend(tmp_path)
        async with backend.leadership(candidate="seed", location=None) as lease:
            await backend.put("web", {"ID": "web", "Properties": {"version": 1}}, lease)

    asyncio.run(seed())
    crasher = Candidate(tmp_path, "crasher", "crash-before-rename")
    candidates.append(crasher)
    assert crasher.expect("LEADER", 10)
    assert crasher.proc.wait(10) == 9
    assert list((tmp_path / "groups").glob(".*.tmp")), "the crash should have left its temp file"
    backend = FileBackend(tmp_path)
    assert asyncio.run(backend.load_all()).specs == {"web": {"ID": "web", "Properties": {"version": 1}}}

    async def next_leader_cleans_up() -> None:
        async with backend.leadership(candidate="next", location=None):
            assert not list((tmp_path / "groups").glob(".*.tmp"))

    asyncio.run(next_leader_cleans_up())


def test_sigkill_during_large_writes_never_leaves_a_partial_spec(tmp_path: Path, candidates: list[Candidate]) -> None:
    backend = FileBackend(tmp_path)
    rng = random.Random(4)
    seen: list[int] = []
    for round_ in range(4):
        writer = Candidate(tmp_path, f"writer{round_}", "write-loop")
        candidates.append(writer)
        assert writer.expect("LEADER", 10)
        assert writer.expect("WROTE", 10)
        time.sleep(rng.uniform(0.01, 0.2))
        writer.kill()
        loaded = asyncio.run(backend.load_all())
        assert loaded.refused == {}, "a torn file"
        stored = loaded.specs
        assert set(stored) == {"big"}
        assert len(stored["big"]["Properties"]["pad"]) == 1 << 20
        seen.append(stored["big"]["Properties"]["version"])
    assert all(v >= 1 for v in seen)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_backend_error_and_leaves_no_partial_file(small_tmpfs: Path) -> None:
    async def scenario() -> None:
        backend = FileBackend(small_tmpfs / "store", FAST)
        async with backend.leadership(candidate="me", location="here") as lease:
            await backend.put("web", {"ID": "web", "Properties": {"version": 1}}, lease)
            huge = {"ID": "web", "Properties": {"version": 2, "pad": "x" * 200_000}}
            with pytest.raises(BackendError, match=r"the spec store at .*store is full: .*No space left"):
                await backend.put("web", huge, lease)
            assert [p.name for p in (small_tmpfs / "store" / "groups").iterdir()] == ["web.json"]
            assert (await backend.load_all()).specs == {"web": {"ID": "web", "Properties": {"version": 1}}}
            status = await backend.status()
            assert status["healthy"] is False and "is full" in status["reason"]
            await backend.put("db", {"ID": "db", "Properties": {}}, lease)  # room for a small one
            assert (await backend.status())["healthy"] is True

            await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
            with pytest.raises(BackendError, match="not writable"):
                await backend.put("web", {"ID": "web", "Properties": {"version": 3}}, lease)
            reason = await asyncio.wait_for(backend.wait_lost(lease), 2)
            assert "no longer writable" in reason
        assert (await FileBackend(small_tmpfs / "store").load_all()).specs == {
            "web": {"ID": "web", "Properties": {"version": 1}}, "db": {"ID": "db", "Properties": {}}}

    asyncio.run(scenario())


def test_wait_lost_returns_when_the_lock_file_is_replaced(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = FileBackend(tmp_path, FAST)
        async with backend.leadership(candidate="me", location=None) as lease:
            (tmp_path / "leader.lock").unlink()
            reason = await asyncio.wait_for(backend.wait_lost(lease), 2)
            assert "removed or replaced" in reason
            with pytest.raises(LostLeadership):
                await backend.put("web", {"ID": "web"}, lease)

    asyncio.run(scenario())


def test_each_bad_spec_file_is_refused_by_name_and_the_others_still_load(tmp_path: Path) -> None:
    groups = tmp_path / "groups"
    groups.mkdir()
    files = {
        "web.json": b'{"ID": "web", "Properties": {}}',
        "torn.json": b"{not json",
        "rt1.json": b'{"ID": "other", "Properties": {}}',
        "list.json": b"[1, 2]",
        "latin.json": b'{"ID": "latin\xe9"}',
        "a%2Fb.json": b'{"ID": "a/b"}',
        "a%2fb.json": b'{"ID": "a/b"}',
        "notes.txt": b"ignored: not a spec file",
    }
    for name, data in files.items():
        (groups / name).write_bytes(data)
    stored = asyncio.run(FileBackend(tmp_path).load_all())
    assert stored.specs == {"web": {"ID": "web", "Properties": {}}}
    assert set(stored.refused) == {"torn", "rt1", "list", "latin", "a/b"}
    assert "torn.json is not valid JSON" in stored.refused["torn"]
    assert "rt1.json is refused: it is stored as group 'rt1' but its ID is 'other'" in stored.refused["rt1"]
    assert "list.json is not a JSON object" in stored.refused["list"]
    assert "latin.json is not valid JSON" in stored.refused["latin"]
    assert "a%2Fb.json, a%2fb.json" in stored.refused["a/b"]
    for name, data in files.items():  # the operator's files are left exactly as they were
        assert (groups / name).read_bytes() == data


# -- a wedged leader steps down; a busy one does not (issue 12) ------------------------------


def test_a_leader_whose_event_loop_is_wedged_releases_the_lock_to_another_process(
        tmp_path: Path, candidates: list[Candidate]) -> None:
    async def scenario() -> None:
        backend = FileBackend(tmp_path, FAST)
        async with backend.leadership(candidate="me", location=None) as lease:
            other = Candidate(tmp_path, "other")
            candidates.append(other)
            # The loop is wedged while it waits here (a blocking call): only a keeper thread can let go.
            assert other.expect("LEADER other", 3 * FAST.ttl + 10), "the wedged leader kept the lock"
            reason = await asyncio.wait_for(backend.wait_lost(lease), 2)
            assert "event loop" in reason, reason
            assert not backend.holds(lease)
            with pytest.raises(LostLeadership):
                await backend.put("web", {"ID": "web"}, lease)

    asyncio.run(scenario())


def test_a_leader_whose_event_loop_stalls_for_less_than_the_ttl_keeps_the_lock(
        tmp_path: Path, candidates: list[Candidate]) -> None:
    async def scenario() -> None:
        backend = FileBackend(tmp_path, FAST)
        async with backend.leadership(candidate="me", location=None) as lease:
            other = Candidate(tmp_path, "other")
            candidates.append(other)
            assert other.expect("LEADER", FAST.ttl / 2) is None  # the loop blocked for half a TTL
            await asyncio.sleep(2 * FAST.renew_interval)
            assert backend.holds(lease)
            await backend.put("web", {"ID": "web"}, lease)

    asyncio.run(scenario())


def test_a_leader_paused_longer_than_the_ttl_is_not_taken_for_a_wedged_one(
        tmp_path: Path, candidates: list[Candidate]) -> None:
    """SIGSTOP stops the keeper too: the time it did not run is not held against the loop."""
    one = Candidate(tmp_path, "one")
    candidates.append(one)
    assert one.expect("LEADER one", 15)
    two = Candidate(tmp_path, "two")
    candidates.append(two)
    os.kill(one.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(LeaderTimings().ttl + 1)  # the candidates run with the default timings
    finally:
        os.kill(one.proc.pid, signal.SIGCONT)
    assert one.expect("LOST", 3 * LeaderTimings().renew_interval) is None, "a paused leader resigned on resuming"
    assert two.expect("LEADER", 0.1) is None
