"""A spec that can never start is refused before anything is stored (issue 12, case 7).

Linux refuses an exec whose argument and environment strings exceed its limits
(``Argument list too long``): one string may hold at most MAX_ARG_STRLEN (128 KiB), and all
of them together, with their pointers, at most a quarter of the stack limit (capped at
6 MiB; ``getconf ARG_MAX``). The process plugin's Validate checks both, naming the field.
"""

from __future__ import annotations

import os
import sys

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.controller.harness import Stack
from tests.runtime.plugins import process_helpers as ph

MAX_ARG_STRLEN = 128 * 1024


@pytest.fixture
def call(daemons, reaper):
    daemons.start("process")
    c = ph.Call(daemons.client("process"))
    yield c
    c.client.close()


def arg_max() -> int:
    return min(max(os.sysconf("SC_ARG_MAX"), 128 * 1024), 6 * 1024 * 1024)


def test_an_environment_value_over_the_per_string_limit_is_refused_naming_it(call, daemons):
    huge = {"Command": ["sleep", "60"], "Env": {"BIG": "x" * 3_000_000}}
    with pytest.raises(RemoteError) as err:
        call("Validate", Properties=huge)
    assert "Env.BIG" in err.value.message and "131072" in err.value.message
    with pytest.raises(RemoteError, match=r"Env\.BIG"):
        call.provision(huge)
    with pytest.raises(RemoteError, match=r"Command\[1\]"):
        call("Validate", Properties={"Command": ["echo", "y" * MAX_ARG_STRLEN]})
    with pytest.raises(RemoteError, match=r"Command .*131072"):
        call("Validate", Properties={"Command": "echo " + "z" * MAX_ARG_STRLEN})
    # Just under the limit is fine.
    assert call("Validate", Properties={"Command": ["sleep", "60"], "Env": {"A": "a" * (MAX_ARG_STRLEN - 10)}})["OK"]
    assert call.describe() == []
    assert not list(ph.state_dir(daemons).glob("process-*"))


def test_arguments_and_environment_over_arg_max_together_are_refused_naming_the_fields(call):
    value = "v" * (100 * 1024)
    many = {f"VAR{i}": value for i in range(arg_max() // len(value) + 2)}
    with pytest.raises(RemoteError) as err:
        call("Validate", Properties={"Command": ["sleep", "60"], "Env": many})
    message = err.value.message
    assert "Command and Env" in message and str(arg_max()) in message, message
    with pytest.raises(RemoteError, match="Command and Env"):
        call.provision({"Command": ["sleep", "60"], "Env": many})
    assert call.describe() == []


def test_a_spec_that_can_never_start_is_refused_by_commit_and_pretend_and_nothing_is_stored(daemons, reaper):
    stack = Stack(daemons)
    spec = stack.spec("huge", size=1)
    spec["Properties"]["Instance"]["Properties"]["Env"]["PASSWORD"] = "p" * 3_000_000
    for pretend in (True, False):
        with pytest.raises(RemoteError) as err:
            stack.commit(spec, pretend=pretend)
        assert "Properties.Instance (process)" in err.value.message and "Env.PASSWORD" in err.value.message
        assert "ppppp" not in err.value.message, "the value itself is never echoed"
    assert not stack.call("Group.InspectGroups", {})["Groups"], "nothing was stored"
    assert stack.instances("huge") == []
    assert stack.live_processes() == 0


def test_a_spec_just_within_the_limits_starts(call, marker):
    iid = call.provision({"Command": [sys.executable, "-c", ph.SLEEP_PY, marker], "Port": False,
                          "Env": {"A": "a" * (MAX_ARG_STRLEN - 10)}})
    [found] = call.describe(properties=True)
    assert found["ID"] == iid and ph.running(found["Properties"]["PID"])
    call.destroy(iid)
