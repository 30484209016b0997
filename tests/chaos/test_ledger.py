"""The split-brain checker must catch what it claims to: synthetic replica logs, good and bad."""

from __future__ import annotations

from tests.chaos import ledger

PROVISION = 'call process: {"jsonrpc":"2.0","method":"Instance.Provision","params":{},"id":1}'
DESCRIBE = 'call process: {"jsonrpc":"2.0","method":"Instance.DescribeInstances","params":{},"id":2}'


def line(second: float, logger: str, message: str, level: str = "INFO") -> str:
    whole, ms = int(second), round((second - int(second)) * 1000)
    return f"2030-01-01 12:00:{whole:02d},{ms:03d} {level:<7} {logger}: {message}"


def gained(second: float, term: int, who: str = "a") -> str:
    return line(second, "infrakit_runtime.backends.etcd", f"{who} is the leader (term {term}) in etcd at /x/leader")


def call(second: float, body: str = PROVISION) -> str:
    return line(second, "infrakit_runtime.rpc.traffic", body, "DEBUG")


def incarnation(name: str, *lines: str, alive: bool = False) -> ledger.Incarnation:
    return ledger.parse(name, "\n".join(lines) + "\n", alive=alive)


def test_a_clean_handover_passes():
    a = incarnation("a#1", gained(1, 5), call(2), line(3, "infrakit_runtime.backends.etcd", "a resigned leadership (term 5)"))
    b = incarnation("b#1", gained(4, 9, "b"), call(5), call(6, DESCRIBE))
    assert ledger.split_brain([a, b]) == []
    assert ledger.action_count([a, b]) == 2


def test_a_paused_leader_acting_after_a_newer_term_began_is_caught():
    a = incarnation("a#1", gained(1, 5), call(2), call(9),
                    line(10, "infrakit_runtime.backends.etcd", "giving up leadership (term 5): renewal deadline", "ERROR"))
    b = incarnation("b#1", gained(6, 9, "b"), call(7), alive=True)
    problems = ledger.split_brain([a, b])
    assert any("in term 5, after b#1 gained term 9" in p for p in problems)
    assert any("both led" in p and "both acted" in p for p in problems)


def test_acting_without_a_term_is_caught():
    a = incarnation("a#1", call(1), gained(2, 3), line(3, "infrakit_runtime.manager.manager", "a stopped acting: lost"),
                    call(4))
    problems = ledger.split_brain([a])
    assert len(problems) == 2 and all("holding no term" in p for p in problems)


def test_a_term_gained_twice_is_caught():
    a = incarnation("a#1", gained(1, 3))
    b = incarnation("b#1", gained(2, 3, "b"))
    assert ledger.split_brain([a, b]) == ["term 3 was gained by 2 incarnations: a#1, b#1"]


def test_a_killed_leader_tenure_ends_at_its_last_line():
    a = incarnation("a#1", gained(1, 3), call(2), line(3, "x", "last words"))
    assert a.tenures[0].end == ledger.stamp("2030-01-01 12:00:03,000")
    b = incarnation("a#2", gained(4, 4), call(5))
    assert ledger.split_brain([a, b]) == []
