"""Every daemon runs through ``infrakit plugin run``, so what the command's modules import, each daemon carries.

Guards the daemons' RSS of docs/benchmarks.md: ``infrakit_runtime.cli.main`` runs the ``plugin``
commands with a parser of that family alone, so the daemons' process (``plugin run file vanilla
manager``, what ``infrakit up`` starts) holds neither the other commands nor rich (about 3 MiB);
and assembling the whole parser leaves the supervising (``launcher``, ``keeper``), the
self-hosted plane (``controlplane``), ``ctypes`` and ``rich.live`` to the commands that use them.
Read from the real process's ``sys.modules``, not from a figure of RSS.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from infrakit_runtime import cli
from infrakit_runtime.cli import app
from tests.runtime.cli.test_up_footprint import AS_MAIN, among
from tests.runtime.conftest import wait_for_socket

ONLY_FOR_THEIR_COMMANDS = ("infrakit_runtime.launcher", "infrakit_runtime.keeper", "infrakit_runtime.controlplane",
                           "ctypes", "rich.live")
# What the daemons' process must not hold: the CLI's other command families and what they render with.
CLI_OF_OTHER_COMMANDS = (*(f"infrakit_runtime.cli.{m}" for m in (
    "app", "up", "instance", "flavor", "group", "observe", "selfhost", "completion", "render")), "rich", "difflib")


def test_assembling_the_parser_leaves_other_commands_modules_unloaded():
    probe = ("import sys; from infrakit_runtime.cli import app; app.build_parser(); "
             f"print(' '.join(m for m in {ONLY_FOR_THEIR_COMMANDS!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == []


def test_the_daemons_process_of_up_imports_neither_the_other_commands_nor_rich(daemons):
    """``plugin run file vanilla manager`` as ``infrakit up`` starts it, its modules read once all three serve."""
    dump = daemons.home / "modules.json"
    log = open(daemons.home / "daemons.log", "ab")
    # launcher.child_argv's command line and environment (ctypes is then loaded, for PR_SET_PDEATHSIG).
    proc = subprocess.Popen([sys.executable, "-c", AS_MAIN, "plugin", "run", "file:file", "vanilla:vanilla", "manager:group"],
                            env={**daemons.env, "MODULES_AT_EXIT": str(dump), "INFRAKIT_PARENT_DEATHSIG": "1"},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        for name in ("file", "vanilla", "group"):
            wait_for_socket(daemons.plugins_dir / name, timeout=60, proc=proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    loaded = set(json.loads(dump.read_text()))
    assert {"infrakit_runtime.rpc.server", "infrakit_runtime.cli.plugin"} <= loaded, "it ran the daemons"
    assert among(loaded, CLI_OF_OTHER_COMMANDS) == []
    assert among(loaded, tuple(m for m in ONLY_FOR_THEIR_COMMANDS if m != "ctypes")) == []


@pytest.mark.parametrize("argv", [
    ["plugin", "-h"], ["plugin", "run", "-h"], ["plugin", "start", "-h"], ["plugin", "stop", "-h"],
    ["plugin", "ls", "-h"], ["--log-level", "debug", "plugin", "run", "--help"], ["plugin"], ["plugin", "bogus"],
    ["plugin", "run"], ["plugin", "run", "file", "--bogus"], ["plugin", "ls", "-o", "xml"],
])
def test_the_plugin_commands_answer_help_and_mistakes_as_the_whole_parser_does(argv, capsys):
    """``plugin`` takes the short way (a parser of its family alone): its help and usage errors are unchanged."""
    answers = []
    for main in (cli.main, app.main):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        out, err = capsys.readouterr()
        answers.append((exited.value.code, out, err))
    assert answers[0] == answers[1]
    assert answers[0][1] or answers[0][2]
