"""JSON log lines: every line parses, and a group's events carry ``group``, ``instance`` and ``event`` as fields."""

from __future__ import annotations

import io
import json
import logging

from infrakit_runtime import logs
from infrakit_runtime.group import events as ev
from tests.runtime.observability.conftest import EVENTS_FILE, ObservedStack
from tests.runtime.observability.test_metrics import wait_for


def _formatted(record_extra: dict, msg: str = "something happened") -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("tests.observability.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("%s", msg, extra=record_extra)
    finally:
        logger.removeHandler(handler)
    return json.loads(stream.getvalue())


def test_structured_extras_become_fields_and_unset_ones_are_left_out():
    line = _formatted({"group": "web", "instance": "i-1", "event": "destroyed"})
    assert line["group"] == "web" and line["instance"] == "i-1" and line["event"] == "destroyed"
    assert line["level"] == "warning" and line["msg"] == "something happened"
    bare = _formatted({})
    assert set(bare) == {"time", "level", "logger", "msg"}
    empty = _formatted({"group": "", "instance": ""})
    assert "group" not in empty and "instance" not in empty


def test_an_emitted_event_is_logged_with_its_group_instance_and_kind(caplog):
    log = ev.EventLog()
    with caplog.at_level(logging.INFO, logger=ev.event_log.name):
        log.emit(ev.DESTROYED, group="web", instance="i-9", reason="reducing the group size")
    [record] = [r for r in caplog.records if r.name == ev.event_log.name]
    assert (record.group, record.instance, record.event) == ("web", "i-9", "destroyed")
    assert "web" in record.getMessage() and "i-9" in record.getMessage()
    assert "reducing the group size" in record.getMessage()


class JsonStack(ObservedStack):
    """The controller stack with every daemon logging JSON lines (and the manager's events_json file)."""

    def __init__(self, daemons) -> None:
        daemons.env["INFRAKIT_LOG_FORMAT"] = "json"
        super().__init__(daemons)


def test_a_real_groups_events_reach_the_json_log_as_fields(daemons):
    stack = JsonStack(daemons)
    try:
        stack.commit(stack.spec(size=2))
        desc = stack.wait_converged(2)
        ids = {i["ID"] for i in desc["Instances"]}

        def provisioned_lines():
            lines = [json.loads(line) for line in daemons.log("group").splitlines() if line.strip()]
            found = [x for x in lines if x.get("event") == "provisioned"]
            return lines if {x.get("instance") for x in found} >= ids else None

        lines = wait_for(provisioned_lines, what="a provisioned line per instance in the manager's JSON log")
        committed = [x for x in lines if x.get("event") == "spec_committed"]
        assert committed and all(x["group"] == "web" for x in committed)
        for x in lines:
            assert {"time", "level", "logger", "msg"} <= set(x), x
        for x in (x for x in lines if x.get("event") == "provisioned"):
            assert x["group"] == "web" and x["logger"] == ev.event_log.name and x["level"] == "info"
            assert x["instance"] in x["msg"], "the message still reads as a sentence"
        gained = [x for x in lines if x.get("event") == "leadership_gained"]
        assert gained and "group" not in gained[0], "a manager-wide event has no group field"
        # events_json=FILE keeps its bare wire objects; the log keeps its own lines beside it.
        wired = [json.loads(line) for line in (daemons.home / EVENTS_FILE).read_text().splitlines()]
        assert {e["Instance"] for e in wired if e["Kind"] == "provisioned"} >= ids
        assert all(set(e) == {"Seq", "Time", "Kind", "Group", "Instance", "Reason"} for e in wired)
        # The other daemons' lines parse too.
        for name in ("process", "vanilla"):
            for line in daemons.log(name).splitlines():
                if line.strip():
                    json.loads(line)
    finally:
        daemons.stop_all()
        stack.kill_instances()
