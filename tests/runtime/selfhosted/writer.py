"""A client that writes to etcd every 100 ms and keeps every outcome, to count what a change costs.

Each tick is one write (``/v3/kv/put``), tried on the endpoints in turn - starting with the one
that answered last, as an etcd client does - within ``deadline``; it fails only if no endpoint
accepted it in time. Every answer carries etcd's raft term: a term that changes between two
successful writes is a leader election, and the writes that failed between those two are the
election's cost (``Tally.explained``). Failures outside any such window are ``unexplained``.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import threading
import time
import urllib.request


@dataclasses.dataclass(frozen=True)
class Write:
    at: float           # monotonic time the write was started
    ok: bool
    term: int | None    # the raft term etcd answered with
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Tally:
    writes: int
    failed: int
    elections: int      # raft term changes seen between successful writes
    explained: int      # failed writes inside an election window
    unexplained: int    # failed writes outside any election window
    longest_gap: float  # longest time between two successful writes, seconds

    def line(self) -> str:
        return (f"{self.writes} writes, {self.failed} failed ({self.explained} during {self.elections} etcd leader "
                f"election(s), {self.unexplained} outside any), longest gap between successful writes "
                f"{self.longest_gap:.2f}s")


class Writer:
    """Writes ``key`` every ``interval`` seconds until stopped."""

    def __init__(self, endpoints: list[str], *, key: str = "/bench/writer", interval: float = 0.1,
                 deadline: float = 1.0) -> None:
        self.endpoints = list(endpoints)
        self.key = base64.b64encode(key.encode()).decode()
        self.interval, self.deadline = interval, deadline
        self.writes: list[Write] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="etcd-writer", daemon=True)
        self._current = 0

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.writes.append(self._write(n))
            n += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _write(self, n: int) -> Write:
        started = time.monotonic()
        body = json.dumps({"key": self.key, "value": base64.b64encode(str(n).encode()).decode()}).encode()
        error = ""
        for attempt in range(len(self.endpoints)):
            left = self.deadline - (time.monotonic() - started)
            if left <= 0.05:
                break
            index = (self._current + attempt) % len(self.endpoints)
            request = urllib.request.Request(f"{self.endpoints[index]}/v3/kv/put", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=left) as resp:
                    answer = json.loads(resp.read())
            except Exception as e:  # refused, timed out, no leader: try the next endpoint
                error = f"{self.endpoints[index]}: {e}"
                continue
            if "error" in answer:
                error = f"{self.endpoints[index]}: {answer.get('message') or answer['error']}"
                continue
            self._current = index
            return Write(at=started, ok=True, term=int(answer["header"]["raft_term"]))
        return Write(at=started, ok=False, term=None, error=error or "no time left")

    def tally(self) -> Tally:
        return tally(self.writes)


def tally(writes: list[Write]) -> Tally:
    """Failed writes, split into those inside an election window and those outside any."""
    ok = [w for w in writes if w.ok]
    windows = [(a.at, b.at) for a, b in itertools.pairwise(ok) if a.term != b.term]
    failed = [w for w in writes if not w.ok]
    explained = sum(1 for w in failed if any(lo < w.at < hi for lo, hi in windows))
    gaps = [b.at - a.at for a, b in itertools.pairwise(ok)]
    return Tally(writes=len(writes), failed=len(failed), elections=len(windows), explained=explained,
                 unexplained=len(failed) - explained, longest_gap=max(gaps, default=0.0))
