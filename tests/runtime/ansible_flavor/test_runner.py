"""One playbook run through ansible-runner, for real: what it reports, and which secrets it never shows."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from infrakit_runtime.plugins.flavor.ansible import hosts, props, runner
from infrakit_runtime.plugins.flavor.ansible.plugin import check_syntax
from infrakit_runtime.spi import instance

PLAYBOOKS = Path(__file__).parent / "playbooks"
SECRET = "tok-3f9a1c77-secret"


def job(tmp_path: Path, playbook: str = "unit.yml", timeout: float = 120, **extra) -> runner.Job:
    d = instance.Description(id="inst-7", tags={instance.TAG_GROUP: "web", instance.TAG_CONFIG_HASH: "h1"},
                             properties={"Address": "127.0.0.1:8123"})
    return runner.Job(purpose=runner.CONFIGURE, instance_id=d.id, config="h1", group="web",
                      playbook=str(PLAYBOOKS / playbook), timeout=timeout,
                      extra_vars={"out_dir": str(tmp_path), "api_token": SECRET, **extra},
                      host_vars=hosts.host_vars(d, props.Connection()))


def run(executor: runner.Executor, j: runner.Job) -> runner.RunResult:
    return asyncio.run(executor.run(j, attempt=1, cancel=threading.Event()))


def everything_written(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


@pytest.fixture
def executor(tmp_path: Path):
    e = runner.Executor(tmp_path / "state")
    yield e
    e.close()


def test_a_successful_run_counts_its_tasks_and_keeps_a_log_by_instance_with_secrets_masked(tmp_path, executor):
    result = run(executor, job(tmp_path))
    assert result.succeeded, result
    assert (result.ok, result.changed, result.failed) == (3, 1, 0)
    # The host variables carry the inventory plugin's names.
    assert (tmp_path / "inst-7.vars").read_text() == "web 127.0.0.1:8123 127.0.0.1 web\n"
    log = Path(result.log or "")
    assert log.parent == tmp_path / "state" / "runs" / "inst-7" and log.is_file()
    text = log.read_text()
    assert "connecting with ***" in text and "PLAY RECAP" in text
    assert SECRET not in everything_written(tmp_path / "state")
    assert not list((tmp_path / "state" / "work").iterdir())  # the private run directory is gone
    assert "succeeded" in result.sentence("unit.yml") and str(log) in result.sentence("unit.yml")


def test_a_failing_no_log_task_is_named_and_its_output_stays_hidden(tmp_path, executor):
    result = run(executor, job(tmp_path, fail_quietly=True))
    assert not result.succeeded and result.failed == 1
    assert result.task == "Use the secret quietly"
    assert result.message == "the output is hidden: the task has no_log: true"
    assert SECRET not in everything_written(tmp_path / "state") and SECRET not in result.sentence("x")


def test_a_run_past_its_timeout_is_stopped_and_names_the_task_it_was_in(tmp_path, executor):
    # Long enough for ansible-playbook to start on a loaded machine; the task would take five minutes.
    result = run(executor, job(tmp_path, timeout=20, slow=True))
    assert result.status == "timeout" and result.task == "Take a while", result
    assert "timed out" in result.sentence("unit.yml")
    # The task's process went with the run (the local connection starts modules in sessions of their own).
    pid = int((tmp_path / "slow.pid").read_text())
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), f"the timed-out task's process {pid} outlived its run"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_playbook_whose_plays_skip_the_host_is_no_success(tmp_path, executor):
    result = run(executor, job(tmp_path, "nohosts.yml"))
    assert not result.succeeded
    assert "no play of the playbook targets this instance's host" in result.message


def test_a_playbook_that_cannot_start_reports_ansibles_error(tmp_path, executor):
    result = run(executor, job(tmp_path, "missing.yml"))
    assert not result.succeeded and result.status in ("failed", "error")
    assert "missing.yml" in result.message, result


def test_the_syntax_check_names_ansibles_complaint(tmp_path):
    assert asyncio.run(check_syntax(str(PLAYBOOKS / "unit.yml"), None)) is None
    complaint = asyncio.run(check_syntax(str(PLAYBOOKS / "broken.yml"), None))
    assert complaint is not None and "no_such_module_xyz" in complaint, complaint


def test_secret_named_variables_are_masked_at_any_depth():
    mask = runner.Masker({"db": {"password": "hunter22", "user": "app"}, "tokens": {"list": ["t-1234"]},
                          "API_KEY": 12345678, "flag": True})
    assert mask("login app/hunter22 with t-1234 and 12345678") == "login app/*** with *** and ***"
