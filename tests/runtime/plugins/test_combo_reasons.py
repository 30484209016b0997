"""Combo's verdict keeps its members' reasons: every member that is not healthy is named, in its words."""

from __future__ import annotations

from infrakit_runtime.plugins.flavor.combo import _combined
from infrakit_runtime.spi.flavor import Assessment, Health

OK, NO, MAYBE = Health.HEALTHY, Health.UNHEALTHY, Health.UNKNOWN


def test_an_unhealthy_member_decides_and_every_member_not_healthy_is_named():
    a = _combined([("Flavors[0] (vanilla)", Assessment(NO)), ("Flavors[1] (ansible)", Assessment(MAYBE, "configuring")),
                   ("Flavors[2] (x)", Assessment(OK, "fine"))])
    assert a == Assessment(NO, "Flavors[0] (vanilla): unhealthy; Flavors[1] (ansible): configuring")


def test_healthy_when_all_are_with_the_reasons_given():
    a = _combined([("Flavors[0] (vanilla)", Assessment(OK)), ("Flavors[1] (ansible)", Assessment(OK, "playbook ok"))])
    assert a == Assessment(OK, "Flavors[1] (ansible): playbook ok")


def test_unknown_while_a_member_cannot_tell():
    a = _combined([("Flavors[0] (a)", Assessment(OK)), ("Flavors[1] (b)", Assessment(MAYBE))])
    assert a == Assessment(MAYBE, "Flavors[1] (b): no verdict yet")


def test_final_only_when_every_member_says_its_verdict_is_final():
    settled = Assessment(OK, final=True)
    assert _combined([("Flavors[0] (a)", settled), ("Flavors[1] (b)", settled)]).final is True
    assert _combined([("Flavors[0] (a)", settled), ("Flavors[1] (b)", Assessment(OK))]).final is False
    assert _combined([]).final is False
