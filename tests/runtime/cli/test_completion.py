"""``infrakit completion``: a real bash completes from the script the parser generates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infrakit_runtime.cli import app, completion


def complete(*words: str, env: dict[str, str] | None = None) -> list[str]:
    """What bash offers for the last of ``words`` (``infrakit`` first), with the generated script."""
    script = subprocess.run([sys.executable, "-m", "infrakit_runtime", "completion", "bash"], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    quoted = " ".join(f"'{w}'" for w in words)
    probe = f'{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _infrakit_complete; printf "%s\\n" "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return [w for w in done.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completes_commands_actions_and_option_values():
    assert {"group", "plugin", "instance", "flavor", "events", "manager", "up", "completion"} <= set(
        complete("infrakit", ""))
    assert complete("infrakit", "group", "de") == ["describe", "destroy"]
    assert complete("infrakit", "group", "describe", "-o", "") == ["table", "json", "yaml"]
    assert complete("infrakit", "--log-level", "debug", "gr") == ["group"]
    assert complete("infrakit", "completion", "z") == ["zsh"]


def test_every_command_path_the_script_offers_parses():
    parser = app.build_parser()
    words, choices = completion.tree(parser)
    assert "infrakit group watch" in words and "infrakit group watch|-o" in choices
    for path in words:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*path.split()[1:], "--help"])
        assert exit_.value.code == 0, path


def test_the_zsh_script_loads_bash_completion_first():
    script = subprocess.run([sys.executable, "-m", "infrakit_runtime", "completion", "zsh"], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    assert script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -o default -F _infrakit_complete infrakit" in script


def infrakit_on_path(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """``env`` with an ``infrakit`` command first on PATH that runs this checkout's CLI (as the script calls it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "infrakit"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m infrakit_runtime "$@"\n')
    wrapper.chmod(0o755)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.environ['PATH'])}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH", "")]))}


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_group_ids_are_completed_from_the_manager(manager, tmp_path):
    for gid in ("web", "workers", "db"):
        manager.call("Group.CommitGroup", {"Name": "group", "Spec": manager.spec(gid, 0), "Pretend": False})
    env = infrakit_on_path(tmp_path, manager.d.env)
    assert sorted(manager.cli("group", "ls", "-q").stdout.splitlines()) == ["db", "web", "workers"]
    assert sorted(complete("infrakit", "group", "describe", "w", env=env)) == ["web", "workers"]
    assert sorted(complete("infrakit", "group", "set-size", "-o", "json", "", env=env)) == ["db", "web", "workers"]
    assert complete("infrakit", "events", "--group", "d", env=env) == ["db"]
    # After the ID, set-size's next word is a size: options, no IDs.
    assert "web" not in complete("infrakit", "group", "set-size", "web", "", env=env)
    # Option values are not taken for the ID (-o's value), and options still complete.
    assert complete("infrakit", "group", "describe", "--ou", env=env) == ["--output"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_no_manager_means_no_group_ids_and_no_error(tmp_path):
    env = infrakit_on_path(tmp_path, {**os.environ, "INFRAKIT_HOME": str(tmp_path / "home")})
    assert complete("infrakit", "group", "describe", "", env=env) == []
