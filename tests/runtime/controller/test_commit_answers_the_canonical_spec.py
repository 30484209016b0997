"""CommitGroup answers the spec as the controller reads it and whether it changed (issue 14, item 2).

The collection's module and any other client compare these instead of re-implementing the grammar.
"""

from __future__ import annotations

import copy


def commit(stack, spec, pretend=False):
    return stack.call("Group.CommitGroup", {"Spec": spec, "Pretend": pretend})


def test_a_new_group_is_a_change_and_its_canonical_spec_spells_out_every_default(stack):
    spec = stack.spec(size=0)
    spec["Properties"]["Updating"] = {"ProgressDeadline": "600s"}
    for pretend in (True, False):
        answer = commit(stack, spec, pretend)
        assert answer["Changed"] is True and answer["Previous"] is None
        assert answer["Details"] == "Managing 0 instances"
        props = answer["Spec"]["Properties"]
        assert props["Updating"]["ProgressDeadline"] == "10m0s"
        assert props["Health"] == {"GracePeriod": "1s", "UnhealthyThreshold": 2, "HealthyThreshold": 1,
                                   "MaxUnhealthy": "40%", "Interval": None}
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"][0]["ID"] == "web"


def test_the_same_spec_in_another_spelling_is_no_change(stack):
    spec = stack.spec(size=0)
    first = commit(stack, spec)
    spelled = copy.deepcopy(spec)
    spelled["Properties"]["Updating"] = {"ProgressDeadline": "10m", "MaxSurge": "1", "Duration": "0s"}
    spelled["Properties"]["Health"]["MaxUnhealthy"] = "40%"
    for pretend in (True, False):
        answer = commit(stack, spelled, pretend)
        assert answer["Changed"] is False
        assert answer["Spec"] == answer["Previous"] == first["Spec"]


def test_a_real_change_answers_the_stored_and_the_new_canonical_spec(stack):
    spec = stack.spec(size=0)
    before = commit(stack, spec)["Spec"]
    options = copy.deepcopy(spec)
    options["Properties"]["Instance"]["Options"] = {"Resolve": True}
    options["Properties"]["Health"]["Interval"] = "15s"
    options["Properties"]["Updating"] = {"SkipBeforeInstanceDestroy": "skip"}
    pretend = commit(stack, options, pretend=True)
    assert pretend["Changed"] is True and pretend["Previous"] == before
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"][0]["Properties"]["Instance"].get("Options") is None
    answer = commit(stack, options)
    assert answer["Changed"] is True and answer["Previous"] == before
    assert answer["Spec"]["Properties"]["Instance"]["Options"] == {"Resolve": True}
    assert answer["Spec"]["Properties"]["Health"]["Interval"] == "15s"
    assert answer["Spec"]["Properties"]["Updating"]["SkipBeforeInstanceDestroy"] == "skip"
    inspected = stack.call("Group.InspectGroups", {"ID": ""})["Groups"][0]["Properties"]
    assert inspected["Instance"]["Options"] == {"Resolve": True}
    assert commit(stack, options)["Changed"] is False
