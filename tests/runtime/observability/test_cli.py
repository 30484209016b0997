"""The ``infrakit`` CLI as an operator uses it: watch in a real terminal, tables, and -o json for scripts."""

from __future__ import annotations

import json
import re
import sys

import pexpect
import yaml

# SGR colour codes (30-37, 90-97, 38;5;N, 38;2;R;G;B); bold and cursor movement do not count.
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7]|38;[25];[0-9;]+)m")


def _watch_in_terminal(stack, gid: str, env: dict[str, str]) -> tuple[str, int]:
    child = pexpect.spawn(sys.executable, ["-m", "infrakit_runtime", "group", "watch", gid, "--timeout", "60"],
                          env=env, encoding="utf-8", timeout=70, dimensions=(50, 140))
    child.expect(pexpect.EOF)
    child.close()
    return child.before, child.exitstatus


def test_group_watch_in_a_terminal_shows_progress_until_converged(stack):
    stack.commit(stack.spec(size=3))
    env = {k: v for k, v in stack.d.env.items() if k != "NO_COLOR"} | {"TERM": "xterm-256color"}
    screen, status = _watch_in_terminal(stack, "web", env)
    assert status == 0, screen
    assert "group web converged" in screen
    assert "3/3 instances up to date and healthy" in screen
    assert "Converged" in screen
    assert COLOUR.search(screen), "a terminal gets colours"
    # A second watch of the converged group, with NO_COLOR: same words, no colour.
    screen, status = _watch_in_terminal(stack, "web", {**env, "NO_COLOR": "1"})
    assert status == 0 and "group web converged" in screen
    assert not COLOUR.search(screen), "NO_COLOR turns colours off"


def test_json_output_parses_and_matches_describe_group(stack):
    stack.commit(stack.spec(size=2))
    stack.wait_converged(2)
    expected = stack.describe()
    out = stack.cli("group", "describe", "web", "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)

    def stable(desc):
        status = {**desc["Status"], "Instances": [{k: v for k, v in i.items() if k != "Age"}
                                                  for i in desc["Status"]["Instances"]]}
        return {**desc, "Status": status}

    assert stable(got) == stable(expected)
    assert COLOUR.search(out.stdout) is None
    # The -o may also come before the action, and yaml parses to the same document.
    again = yaml.safe_load(stack.cli("group", "-o", "yaml", "describe", "web").stdout)
    assert stable(again) == stable(expected)

    table = stack.cli("group", "describe", "web")
    for i in expected["Instances"]:
        assert i["ID"] in table.stdout
    assert "Converged" in table.stdout and "2 desired, 2 running, 2 healthy" in table.stdout
    assert "\x1b[" not in table.stdout, "no escape codes when stdout is not a terminal"

    groups = json.loads(stack.cli("group", "ls", "-o", "json").stdout)
    assert [(g["ID"], g["Condition"], g["Healthy"], g["Desired"]) for g in groups] == [("web", "Converged", 2, 2)]
    assert groups[0]["Spec"] == stack.call("Group.InspectGroups", {"ID": ""})["Groups"][0]
    ls = stack.cli("group", "ls")
    assert re.search(r"web\s+Converged\s+2\s+2\s+2\s+0\s+Noop", ls.stdout), ls.stdout

    status = json.loads(stack.cli("manager", "status", "-o", "json").stdout)
    assert status["Leader"] is True and status["Backend"]["Healthy"] is True
    assert status == {**stack.d.client("group").call("Manager.Status", {})}
    text = stack.cli("manager", "status").stdout
    assert re.search(r"Leader\s+yes", text) and "file" in text and "healthy" in text


def test_commit_pretend_shows_the_plan_and_the_spec_diff_and_changes_nothing(stack, tmp_path):
    stack.commit(stack.spec(size=2, message="v1"))
    stack.wait_converged(2)
    before = stack.call("Group.InspectGroups", {"ID": ""})["Groups"]
    new = tmp_path / "web.yml"
    new.write_text(yaml.safe_dump(stack.spec(size=3, message="v2")))
    out = stack.cli("group", "commit", str(new), "--pretend")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("web: would: Performing a rolling update on 2 instances")
    assert "--- web (stored)" in out.stdout and "+++ web (new)" in out.stdout
    assert "-    Size: 2" in out.stdout and "+    Size: 3" in out.stdout
    assert "-      - export MESSAGE=v1" in out.stdout and "+      - export MESSAGE=v2" in out.stdout
    # Only the changed lines are marked: defaults the controller fills in are not a difference.
    changed = [line for line in out.stdout.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed) == 4, changed
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"] == before
    as_json = json.loads(stack.cli("group", "commit", str(new), "--pretend", "-o", "json").stdout)
    assert as_json["Pretend"] is True and as_json["Details"].startswith("Performing a rolling update")
    assert "+    Size: 3" in as_json["Diff"]
    same = tmp_path / "same.yml"
    same.write_text(yaml.safe_dump(stack.spec(size=2, message="v1")))
    unchanged = stack.cli("group", "commit", str(same), "--pretend")
    assert "(the spec is unchanged)" in unchanged.stdout and "web: would: Noop" in unchanged.stdout
