"""Every daemon runs through ``infrakit plugin run``, so what the parser's modules import, each daemon carries.

Guards the footprint figures of docs/benchmarks.md (steady-state RSS of the three daemons): the
supervising (``launcher``, ``keeper``), the self-hosted plane (``controlplane``), ``ctypes`` and
``rich.live`` are loaded by the commands that use them, not by assembling the parser.
"""

from __future__ import annotations

import subprocess
import sys

ONLY_FOR_THEIR_COMMANDS = ("infrakit_runtime.launcher", "infrakit_runtime.keeper", "infrakit_runtime.controlplane",
                           "ctypes", "rich.live")


def test_assembling_the_parser_leaves_other_commands_modules_unloaded():
    probe = ("import sys; from infrakit_runtime.cli import app; app.build_parser(); "
             f"print(' '.join(m for m in {ONLY_FOR_THEIR_COMMANDS!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == []
