"""The ansible extra is declared once in three places that must agree: pyproject's optional
dependencies, requirements/ansible.txt (the role's pins) and requirements/test.txt (what is tested)."""

from __future__ import annotations

import re
import tomllib

from tests.runtime.conftest import REPO


def pins(name: str) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO / "requirements" / name).read_text(), re.MULTILINE)
    return {k.lower(): v for k, v in found}


def test_the_extra_pins_what_the_tests_run_and_pyproject_declares_it():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ansible"]
    names = {re.split(r"[<>=!~ ]", req, maxsplit=1)[0].lower() for req in extra}
    assert names == {"ansible-core", "ansible-runner"}
    ansible, tested = pins("ansible.txt"), pins("test.txt")
    assert {k: ansible[k] for k in names} == {k: tested[k] for k in names}
    # Nothing the runtime itself pins is pinned again, differently.
    runtime = pins("runtime.txt")
    assert all(runtime[k] == v for k, v in ansible.items() if k in runtime)
