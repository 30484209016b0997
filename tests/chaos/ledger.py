"""Who held which term, and who changed the world when: read back from the replicas' debug logs.

Guarantee: ``split_brain(incarnations)`` returns every violation of "one actor per term" it can
prove from the logs, each as a sentence naming the replica, the term and the log times.
Limit: log times are wall-clock stamps truncated to the millisecond (all daemons run on one
host, so their clocks agree); two events less than ``SLACK`` apart are not ordered.

The method (also the chaos suite's documented contract):

1. Each replica *incarnation* (one process run: a restarted replica gets a new log file) is
   parsed line by line. ``<name> is the leader (term N)`` (both backends log it once the term
   is taken) opens a **tenure** for term N. It closes at the first of: ``resigned leadership
   (term N)`` / ``giving up leadership (term N)`` (backend), ``stopped acting:`` (manager), the
   incarnation's next ``is the leader`` line, or, for an incarnation that is dead, the last line
   it ever wrote (a SIGKILLed process writes nothing after its death, so its last line bounds
   what it did); a running incarnation's open tenure lasts until now.
   A tenure is what the replica *believed*: a SIGSTOPped leader's tenure spans its pause.
2. **Actions** are the ``infrakit_runtime.rpc.traffic`` lines ``call <plugin>: <JSON-RPC body>``
   whose method is in ``MUTATING``. The client writes that line after the plugin fence let the
   call through and right before it sends it, so the stamp is when the change left the replica.
3. Violations:
   a. a term gained by two incarnations;
   b. an action outside every tenure of its own incarnation (acting without a term);
   c. an action in term N later (by more than ``SLACK``) than the moment another incarnation
      gained a term M > N (acting in a superseded term);
   d. two tenures of different incarnations overlapping in time (by more than ``SLACK``) with
      actions from *both* inside the overlap.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path

MUTATING = frozenset({"Instance.Provision", "Instance.ProvisionMany", "Instance.Destroy", "Instance.Label",
                      "Flavor.Drain"})
SLACK = 0.001  # the log stamps' resolution

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\S+)\s+(\S+): (.*)$")
_GAINED = re.compile(r" is the leader \(term (\d+)\)")
_ENDED = re.compile(r"(?:resigned leadership|giving up leadership) \(term (\d+)\)")
_STOPPED = re.compile(r" stopped acting: ")
_CALL = re.compile(r"^call (\S+): (\{.*)$")


@dataclasses.dataclass(frozen=True)
class Action:
    time: float
    method: str
    plugin: str


@dataclasses.dataclass
class Tenure:
    term: int
    start: float
    end: float


@dataclasses.dataclass
class Incarnation:
    """One process run of one replica: its tenures and its mutating calls."""

    name: str
    tenures: list[Tenure]
    actions: list[Action]

    def tenure_at(self, t: float) -> Tenure | None:
        for tenure in self.tenures:
            if tenure.start - SLACK <= t <= tenure.end + SLACK:
                return tenure
        return None


def stamp(text: str) -> float:
    """The text log format's local-time stamp (``2025-01-31 12:00:00,123``) as epoch seconds."""
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def parse(name: str, text: str, *, alive: bool = False) -> Incarnation:
    """Tenures and actions of one incarnation, from its log text (see the module docstring).

    ``alive``: the process still runs, so an open tenure lasts until now, not its last line.
    """
    tenures: list[Tenure] = []
    actions: list[Action] = []
    open_: Tenure | None = None
    last = 0.0
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue  # a traceback's continuation, or the launcher's own output
        t, logger, message = stamp(m.group(1)), m.group(3), m.group(4)
        last = max(last, t)
        gained = _GAINED.search(message)
        if gained:
            if open_ is not None:
                open_.end = t
            open_ = Tenure(term=int(gained.group(1)), start=t, end=float("inf"))
            tenures.append(open_)
            continue
        ended = _ENDED.search(message)
        if open_ is not None and (_STOPPED.search(message) or (ended and int(ended.group(1)) == open_.term)):
            open_.end = t
            open_ = None
            continue
        if logger == "infrakit_runtime.rpc.traffic":
            call = _CALL.match(message)
            if call:
                try:
                    method = json.loads(call.group(2)).get("method", "")
                except ValueError:
                    continue
                if method in MUTATING:
                    actions.append(Action(time=t, method=method, plugin=call.group(1)))
    if open_ is not None and not alive:
        open_.end = last
    return Incarnation(name=name, tenures=tenures, actions=actions)


def read(logs: dict[str, tuple[Path, bool]]) -> list[Incarnation]:
    """Parse each incarnation's log file: ``{incarnation name: (path, whether it still runs)}``."""
    return [parse(name, path.read_text(errors="replace"), alive=alive) for name, (path, alive) in sorted(logs.items())]


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def split_brain(incarnations: list[Incarnation]) -> list[str]:
    """Every violation of one-actor-per-term found in the logs (empty when all held)."""
    problems: list[str] = []
    holders: dict[int, list[str]] = {}
    for inc in incarnations:
        for tenure in inc.tenures:
            holders.setdefault(tenure.term, []).append(inc.name)
    for term, names in sorted(holders.items()):
        if len(names) > 1:
            problems.append(f"term {term} was gained by {len(names)} incarnations: {', '.join(names)}")
    starts = [(t.start, t.term, inc.name) for inc in incarnations for t in inc.tenures]
    for inc in incarnations:
        for action in inc.actions:
            tenure = inc.tenure_at(action.time)
            if tenure is None:
                problems.append(f"{inc.name} sent {action.method} at {_when(action.time)} holding no term")
                continue
            for start, term, other in starts:
                if other != inc.name and term > tenure.term and start < action.time - SLACK:
                    problems.append(f"{inc.name} sent {action.method} at {_when(action.time)} in term {tenure.term}, "
                                    f"after {other} gained term {term} at {_when(start)}")
                    break
    for i, a in enumerate(incarnations):
        for b in incarnations[i + 1:]:
            for ta in a.tenures:
                for tb in b.tenures:
                    lo, hi = max(ta.start, tb.start), min(ta.end, tb.end)
                    if hi - lo <= SLACK:
                        continue
                    in_a = [x for x in a.actions if lo < x.time <= hi]
                    in_b = [x for x in b.actions if lo < x.time <= hi]
                    if in_a and in_b:
                        problems.append(
                            f"{a.name} (term {ta.term}) and {b.name} (term {tb.term}) both led from {_when(lo)} to "
                            f"{_when(hi)} and both acted: {a.name} {len(in_a)} call(s) from {_when(in_a[0].time)}, "
                            f"{b.name} {len(in_b)} call(s) from {_when(in_b[0].time)}")
    return problems


def action_count(incarnations: list[Incarnation]) -> int:
    return sum(len(inc.actions) for inc in incarnations)
