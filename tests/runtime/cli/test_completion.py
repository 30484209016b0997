"""``infrakit completion``: a real bash completes from the script the parser generates."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from infrakit_runtime.cli import app, completion


def complete(*words: str) -> list[str]:
    """What bash offers for the last of ``words`` (``infrakit`` first), with the generated script."""
    script = subprocess.run([sys.executable, "-m", "infrakit_runtime", "completion", "bash"], capture_output=True,
                            text=True, check=True, timeout=60).stdout
    quoted = " ".join(f"'{w}'" for w in words)
    probe = f'{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _infrakit_complete; printf "%s\\n" "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True, timeout=60)
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
