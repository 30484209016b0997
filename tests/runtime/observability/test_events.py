"""Events as an operator reads them: the SSE stream, Manager.Events, JSON lines, ``infrakit events``."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from infrakit_runtime.cli.observe import stream_events
from infrakit_runtime.rpc.discovery import Address
from tests.runtime.observability.conftest import EVENTS_FILE


class Reader(threading.Thread):
    """Collects the manager's /events stream in the background."""

    def __init__(self, socket_path, since: int) -> None:
        super().__init__(daemon=True)
        self.address, self.since = Address(unix_path=socket_path), since
        self.events: list[dict] = []
        # Set once the stream is open: it replays the event at ``since`` first, and keeps only later ones.
        self.connected = threading.Event()

    def run(self) -> None:
        try:
            for e in stream_events(self.address, since=self.since - 1, group="web", timeout=60):
                self.connected.set()
                if e["Seq"] > self.since:
                    self.events.append(e)
        except Exception:
            pass  # the daemon stopped at teardown


def _kinds_for(events, instance_id=None):
    return [e["Kind"] for e in events if instance_id is None or e["Instance"] == instance_id]


def test_the_event_stream_shows_a_killed_instance_lost_then_replaced_then_healthy(stack):
    stack.commit(stack.spec(size=2))
    desc = stack.wait_converged(2)
    seen = max(e["Seq"] for e in desc["Status"]["Events"])
    reader = Reader(stack.d.plugins_dir / "group", since=seen)
    reader.start()
    assert reader.connected.wait(30), "the event stream did not open"
    victim = desc["Instances"][0]
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    stack.wait(lambda d: d.get("Converged") and victim["ID"] not in {i["ID"] for i in d["Instances"]},
               what="the killed instance replaced")

    def replaced():
        kinds = [e["Kind"] for e in reader.events]
        return "instance_lost" in kinds and "instance_healthy" in kinds[kinds.index("instance_lost"):]

    deadline = time.monotonic() + 10
    while not replaced() and time.monotonic() < deadline:
        time.sleep(0.1)
    events = list(reader.events)
    assert all(e["Seq"] > seen for e in events), "the stream resumes after ?since"
    kinds = [e["Kind"] for e in events]
    lost = kinds.index("instance_lost")
    assert events[lost]["Instance"] == victim["ID"]
    provisioning = kinds.index("provisioning", lost)
    provisioned = kinds.index("provisioned", provisioning)
    newcomer = events[provisioned]["Instance"]
    healthy = next(i for i, e in enumerate(events) if e["Kind"] == "instance_healthy" and e["Instance"] == newcomer)
    assert lost < provisioning < provisioned < healthy
    seqs = [e["Seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_manager_events_answers_since_group_and_limit_and_json_lines_match(stack):
    stack.commit(stack.spec("web", size=1))
    stack.commit(stack.spec("api", size=1))
    stack.wait_converged(1, gid="web")
    stack.wait_converged(1, gid="api")
    everything = stack.call("Manager.Events", {"Limit": 0})["Events"]
    kinds = _kinds_for(everything)
    assert kinds[0] == "leadership_gained" and "spec_committed" in kinds
    web = stack.call("Manager.Events", {"Group": "web", "Limit": 0})["Events"]
    assert web and {e["Group"] for e in web} == {"web"}
    assert [e for e in everything if e["Group"] == "web"] == web
    last_two = stack.call("Manager.Events", {"Limit": 2})["Events"]
    assert last_two == everything[-2:]
    middle = everything[len(everything) // 2]["Seq"]
    after = stack.call("Manager.Events", {"Since": middle, "Limit": 0})["Events"]
    assert after == [e for e in everything if e["Seq"] > middle]
    bad = stack.d.client("group")
    try:
        try:
            bad.call("Manager.Events", {"Limit": -1})
        except Exception as e:
            assert "Limit" in str(e)
        else:
            raise AssertionError("a negative Limit must be refused")
    finally:
        bad.close()

    # events_json=FILE: the same events, one bare JSON object per line.
    lines = (stack.d.home / EVENTS_FILE).read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    by_seq = {e["Seq"]: e for e in logged}
    for e in everything:
        assert by_seq.get(e["Seq"]) == e


def test_infrakit_events_lists_and_follows(stack):
    stack.commit(stack.spec(size=1))
    stack.wait_converged(1)
    listed = stack.cli("events", "--group", "web")
    assert listed.returncode == 0, listed.stderr
    assert "spec_committed" in listed.stdout and "provisioned" in listed.stdout
    latest = stack.call("Manager.Events", {"Limit": 3})["Events"]
    assert json.loads(stack.cli("events", "-o", "json", "--limit", "3").stdout) == latest

    follower = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "events", "--follow", "--group", "web",
                                 "-o", "json", "--limit", "1"], env=stack.d.env, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        first = json.loads(lines.get(timeout=20))
        assert first["Group"] == "web"
        stack.call("Group.SetSize", {"ID": "web", "Size": 2})
        seen = []
        while not seen or seen[-1]["Kind"] != "provisioned":
            seen.append(json.loads(lines.get(timeout=20)))
        kinds = [e["Kind"] for e in seen]
        assert "spec_committed" in kinds and "provisioned" in kinds
        seqs = [first["Seq"], *(e["Seq"] for e in seen)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "nothing printed twice"
    finally:
        follower.terminate()
        follower.wait(10)
