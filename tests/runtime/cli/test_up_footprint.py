"""``infrakit up``'s supervisor lives as long as its daemons, so it carries only what it runs.

Guards the supervisor's RSS of docs/benchmarks.md (44 MiB with the whole CLI, 27 MiB without):
the entry point runs ``up`` without assembling the other commands, and the liveness probe
handshakes the daemons with the blocking client, without aiohttp. Read from the real
supervisor's ``sys.modules`` once it has probed its daemon, not from a figure of RSS.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.runtime.test_launcher import serving, wait_until

CLI_OF_OTHER_COMMANDS = tuple(f"infrakit_runtime.cli.{m}" for m in (
    "app", "plugin", "instance", "flavor", "group", "observe", "selfhost", "completion", "render"))
WHAT_THE_DAEMONS_RUN = ("aiohttp", "prometheus_client", "rich", "infrakit_runtime.rpc.server", "infrakit_runtime.plugins")


def among(loaded: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in packages))

# `python -m infrakit_runtime` as the keeper and the role run it, telling at exit what it had imported.
AS_MAIN = ("import atexit, json, os, runpy, sys\n"
           "atexit.register(lambda: open(os.environ['MODULES_AT_EXIT'], 'w').write(json.dumps(sorted(sys.modules))))\n"
           "runpy.run_module('infrakit_runtime', run_name='__main__', alter_sys=True)\n")


def test_the_supervisor_of_up_imports_neither_the_other_commands_nor_the_daemons_libraries(daemons):
    cfg = daemons.home / "infrakit.yml"
    cfg.write_text("plugins:\n  - {kind: file, name: f1}\n")
    dump = daemons.home / "modules.json"
    log = open(daemons.home / "up.log", "ab")
    up = subprocess.Popen([sys.executable, "-c", AS_MAIN, "--config", str(cfg), "up", "--probe-interval", "0.2",
                           "--probe-timeout", "2", "--probe-failures", "1000"],
                          env={**daemons.env, "MODULES_AT_EXIT": str(dump)}, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    log.close()
    try:
        wait_until(lambda: serving(daemons, "f1"), timeout=60, what="f1 serving")
        # A handshake that fails is logged: the probe has run its client code, the one the answers take too.
        (daemons.plugins_dir / "f1").unlink()
        wait_until(lambda: "f1 missed a liveness handshake" in (daemons.home / "up.log").read_text(errors="replace"),
                   timeout=60, what="the supervisor to probe f1")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
    loaded = set(json.loads(dump.read_text()))
    assert "infrakit_runtime.launcher" in loaded, "it ran the supervisor"
    assert among(loaded, CLI_OF_OTHER_COMMANDS) == []
    assert among(loaded, WHAT_THE_DAEMONS_RUN) == []


def test_help_or_a_mistake_before_up_is_answered_by_the_whole_parser():
    """Only a well-formed ``up`` takes the short way: ``infrakit -h up`` lists every command."""
    helped = subprocess.run([sys.executable, "-m", "infrakit_runtime", "-h", "up"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert all(f"\n    {c} " in helped.stdout for c in ("plugin", "up", "group", "completion")), helped.stdout
    wrong = subprocess.run([sys.executable, "-m", "infrakit_runtime", "--bogus", "up"], capture_output=True, text=True,
                           timeout=60)
    assert wrong.returncode == 2 and "unrecognized arguments: --bogus" in wrong.stderr
