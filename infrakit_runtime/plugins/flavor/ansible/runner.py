"""One playbook run on one instance through ansible-runner (the engine AWX uses), as a value.

Guarantee: ``Executor.run`` never raises for anything the run does: a playbook that fails, times
out, is cancelled or cannot start is a ``RunResult`` naming the failing task and its message; a
run that times out or is cancelled leaves no process of its own behind on this host (each carries
``RUN_MARK`` in its environment, and those left are killed).
Secrets stay where they are: ExtraVars reach ansible-playbook through a file (mode 0600, in a
private directory removed after the run), never its command line; ansible-runner's event data
is read for counts and the failing task and never stored (``no_log`` results, which Ansible
censors, are not even read); the run's log, kept by instance, is Ansible's own display with
the value of every secret-named ExtraVar (``redact``'s rule: ``password``, ``token``,
``private_key``...) masked, as is every message that leaves here. SSH keys and vault passwords
are files the run names, never read by this module.
Limit: a secret passed under an innocent name, or printed by a task of its own accord (a
``debug`` of it), is shown as Ansible shows it: mark such tasks ``no_log: true``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.flavor.ansible.props import label
from infrakit_runtime.rpc.redact import MASK, is_secret_key

log = logging.getLogger(__name__)

CONFIGURE = "configure"
DRAIN = "drain"
# How much of a task's message goes into a reason (events, describe); the log has all of it.
MESSAGE_LIMIT = 400
# Threads that wait on ansible-playbook processes (the work is in the processes, not the threads).
MAX_THREADS = 64
# In the environment of every process of a run: how a timed-out or cancelled run's leftovers are found.
RUN_MARK = "INFRAKIT_ANSIBLE_RUN"
INSTALL_HINT = "install the runtime's ansible extra: pip install 'infrakit-runtime[ansible]'"


@dataclasses.dataclass(frozen=True)
class Job:
    """What one run does: a playbook on one instance's host, for one configuration."""

    purpose: str  # CONFIGURE or DRAIN
    instance_id: str
    config: str
    group: str
    playbook: str
    extra_vars: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    host_vars: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False)
    timeout: float = 600.0
    vault_password_file: str | None = None


@dataclasses.dataclass(frozen=True)
class RunResult:
    """How one run ended: ansible-runner's status, the host's counts, and the failing task if any."""

    status: str  # successful, failed, timeout, canceled, error
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    task: str | None = None
    message: str = ""
    duration: float = 0.0
    log: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "successful" and self.failed == 0 and self.unreachable == 0

    def counts(self) -> str:
        text = f"ok={self.ok} changed={self.changed} failed={self.failed}"
        return text + (f" unreachable={self.unreachable}" if self.unreachable else "")

    def sentence(self, playbook: str) -> str:
        """The run as a person reads it in an event or in ``infrakit group describe``."""
        playbook = label(playbook)
        where = f" (log: {self.log})" if self.log else ""
        if self.succeeded:
            return f"playbook {playbook} succeeded in {self.duration:.1f}s: {self.counts()}{where}"
        what = {"timeout": f"timed out after {self.duration:.0f}s", "canceled": "was cancelled",
                "error": "could not run"}.get(self.status, "failed")
        if self.unreachable and self.status != "timeout":
            what = "could not reach the instance"
        at = f" at task {self.task!r}" if self.task else ""
        message = f": {self.message}" if self.message else ""
        return f"playbook {playbook} {what}{at}{message} ({self.counts()}){where}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Masker:
    """Replaces secret values in text: the values of secret-named variables, at any depth."""

    def __init__(self, *variables: dict[str, Any]) -> None:
        found: set[str] = set()
        for v in variables:
            _secrets(v, found, secret=False)
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted((s for s in found if len(s) >= 3), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


def _secrets(value: Any, out: set[str], *, secret: bool) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _secrets(v, out, secret=secret or (isinstance(k, str) and is_secret_key(k)))
    elif isinstance(value, list):
        for v in value:
            _secrets(v, out, secret=secret)
    elif secret and value is not None and not isinstance(value, bool):
        out.add(str(value))


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _task_message(res: Any) -> str:
    """What a failed or unreachable result says, without anything Ansible censored (no_log)."""
    if not isinstance(res, dict):
        return ""
    if "censored" in res or res.get("_ansible_no_log"):
        return "the output is hidden: the task has no_log: true"
    parts = []
    for key in ("msg", "reason", "stderr", "module_stderr", "stdout"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            parts.append(value.strip())
            if key in ("msg", "reason"):
                break
    if not parts and isinstance(res.get("results"), list):  # a loop: the first failed item's message
        for item in res["results"]:
            if isinstance(item, dict) and item.get("failed"):
                return _task_message(item)
    return parts[0] if parts else ""


class _Tally:
    """Reads ansible-runner's events for one host as they arrive; keeps no event data."""

    def __init__(self, host: str, log_file: Any, mask: Masker) -> None:
        self.host, self.log_file, self.mask = host, log_file, mask
        self.task: str | None = None
        self.failed_task: str | None = None
        self.message = ""
        self.errors: list[str] = []
        self.stats: dict[str, int] | None = None
        self.processed = False
        self.counts = {"ok": 0, "changed": 0, "failed": 0, "unreachable": 0, "skipped": 0}

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        stdout = event.get("stdout")
        if stdout and self.log_file is not None:
            self.log_file.write(self.mask(stdout) + "\n")
            self.log_file.flush()
        if kind in ("verbose", "error") and stdout:
            self.errors.extend(errors(stdout))
        if kind == "playbook_on_task_start":
            self.task = data.get("task") or data.get("name")
        elif kind == "runner_on_ok":
            self.counts["ok"] += 1
            if isinstance(data.get("res"), dict) and data["res"].get("changed"):
                self.counts["changed"] += 1
        elif kind == "runner_on_skipped":
            self.counts["skipped"] += 1
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                self.counts["ok"] += 1
            else:
                self.counts["failed" if kind == "runner_on_failed" else "unreachable"] += 1
                if self.failed_task is None:
                    self.failed_task = data.get("task") or self.task
                    self.message = _task_message(data.get("res"))
        elif kind == "playbook_on_stats":
            self.processed = self.host in (data.get("processed") or {})
            self.stats = {
                key: int((data.get(field) or {}).get(self.host, 0))
                for key, field in (("ok", "ok"), ("changed", "changed"), ("failed", "failures"),
                                   ("unreachable", "dark"), ("skipped", "skipped"))
            }
        return False  # ansible-runner keeps no copy of the event on disk

    def result(self, status: str, duration: float, log_path: str | None) -> RunResult:
        counts = self.stats or self.counts
        task, message = self.failed_task, self.message
        if status == "timeout" and task is None:
            task = self.task
        if status == "successful" and self.stats is not None and not self.processed:
            # Every play skipped this host: nothing was configured, which is no success.
            status = "failed"
            message = message or ("no play of the playbook targets this instance's host: use hosts: all, or the "
                                  "Ansible group named after the InfraKit group")
        if not message and status != "successful" and self.errors:
            message = self.errors[-1]
        return RunResult(status=status, task=task, message=_short(self.mask(message)), duration=duration,
                         log=log_path, **counts)


def ansible_env() -> dict[str, str]:
    """The environment of every run: this interpreter's ansible-playbook first on PATH, no colours, no retry files."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return {
        "PATH": f"{bin_dir}{os.pathsep}{path}" if bin_dir not in path.split(os.pathsep) else path,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }


def available() -> str | None:
    """Why runs cannot happen here (the extra is not installed), or None."""
    try:
        import ansible_runner  # noqa: F401
    except ImportError:
        return f"ansible-runner is not installed: {INSTALL_HINT}"
    if shutil.which("ansible-playbook", path=ansible_env()["PATH"]) is None:
        return f"ansible-playbook (ansible-core) is not installed: {INSTALL_HINT}"
    return None


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


class Executor:
    """Runs jobs with ansible-runner in worker threads, one private directory per run.

    ``state_dir`` holds ``work/`` (private run directories, removed after each run) and
    ``runs/<instance>/`` (each run's log and result, kept for the operator).
    """

    def __init__(self, state_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.work_dir = state_dir / "work"
        self.runs_dir = state_dir / "runs"
        for d in (state_dir, self.work_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Left over by a daemon that died mid-run: private, possibly holding ExtraVars.
        for stale in self.work_dir.iterdir():
            shutil.rmtree(stale, ignore_errors=True)
        self.env = {**ansible_env(), **(env or {})}
        self._threads = concurrent.futures.ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="ansible-run")

    def log_dir(self, instance_id: str) -> Path:
        return self.runs_dir / _safe(instance_id)

    async def run(self, job: Job, *, attempt: int, cancel: threading.Event) -> RunResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._run, job, attempt, cancel)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job, attempt: int, cancel: threading.Event) -> RunResult:
        started, started_at = time.monotonic(), time.time()
        mask = Masker(job.extra_vars)
        logs = self.log_dir(job.instance_id)
        logs.mkdir(parents=True, exist_ok=True, mode=0o750)
        base = logs / f"{_stamp()}-{job.purpose}-{job.config[:12]}-{attempt}"
        log_path = base.with_suffix(".log")
        work = Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))
        try:
            with open(log_path, "w", encoding="utf-8") as log_file:
                log_file.write(f"# {job.purpose} instance {job.instance_id} (config {job.config}) with "
                               f"{job.playbook}, attempt {attempt}, {_stamp()}\n")
                tally = _Tally(job.instance_id, log_file, mask)
                status = self._execute(job, work, tally, cancel)
                result = tally.result(status, time.monotonic() - started, str(log_path))
                log_file.write(f"# {mask(result.sentence(job.playbook))}\n")
        except OSError as e:
            result = RunResult(status="error", message=_short(f"cannot prepare the run: {e}"),
                               duration=time.monotonic() - started)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with contextlib.suppress(OSError):
            base.with_suffix(".json").write_text(json.dumps({"job": {"purpose": job.purpose, "instance": job.instance_id,
                                                                     "config": job.config, "playbook": job.playbook,
                                                                     "attempt": attempt, "started": started_at,
                                                                     "finished": time.time()},
                                                             "result": result.to_json()}, indent=2))
        return result

    def _execute(self, job: Job, work: Path, tally: _Tally, cancel: threading.Event) -> str:
        try:
            import ansible_runner
        except ImportError:
            tally.errors.append(f"ansible-runner is not installed: {INSTALL_HINT}")
            return "error"
        (work / "env").mkdir(mode=0o700)
        (work / "inventory").mkdir(mode=0o700)
        _write_private(work / "env" / "extravars", json.dumps(job.extra_vars))
        _write_private(work / "inventory" / "hosts.json", json.dumps(inventory(job)))
        cmdline = f"--vault-password-file {_quote(job.vault_password_file)}" if job.vault_password_file else None
        # Every process of the run inherits this mark, those in sessions of their own included.
        mark = f"{os.getpid()}-{work.name}"
        try:
            runner = ansible_runner.run(
                private_data_dir=str(work), playbook=job.playbook, ident="run", quiet=True,
                timeout=max(1, math.ceil(job.timeout)), event_handler=tally, cancel_callback=cancel.is_set,
                envvars={**self.env, RUN_MARK: mark}, cmdline=cmdline, suppress_env_files=True,
                # ansible-runner checks the cancel flag and the timeout once per pexpect timeout (5 s by
                # default): once a second, a drain or a shutdown stops a run within a second.
                settings={"pexpect_timeout": 1},
            )
        except Exception as e:  # ansible-runner's own configuration errors: a result, not a crash
            tally.errors.append(str(e))
            kill_marked(mark)
            return "error"
        if runner.status in ("timeout", "canceled"):
            # ansible-runner kills ansible-playbook's process group; the local connection runs each module
            # in a session of its own, which outlives it (a `sleep` task would run on for its full length).
            kill_marked(mark)
        if runner.status == "failed" and not tally.failed_task and not tally.errors:
            tally.errors.extend(_error_lines(work))
        return str(runner.status or "error")


def kill_marked(mark: str, rounds: int = 5) -> int:
    """SIGKILL every process of this user whose environment carries ``RUN_MARK=mark``; how many were.

    A few rounds, as a process being killed may have forked a moment before."""
    needle = f"{RUN_MARK}={mark}".encode()
    killed = 0
    for _ in range(rounds):
        found = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    marked = needle in f.read().split(b"\0")
            except OSError:  # gone, or another user's
                continue
            if marked:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    found += 1
        killed += found
        if not found:
            break
    if killed:
        log.info("killed %d process(es) left by run %s", killed, mark)
    return killed


def inventory(job: Job) -> dict[str, Any]:
    """The run's inventory: the instance's host, also in an Ansible group named after its InfraKit group
    (as the inventory plugin names it), so ``hosts: all`` and ``hosts: <group>`` both reach it."""
    out: dict[str, Any] = {"all": {"hosts": {job.instance_id: job.host_vars}}}
    if job.group:
        out["all"]["children"] = {group_name(job.group): {"hosts": {job.instance_id: None}}}
    return out


def group_name(group_id: str) -> str:
    """An InfraKit group ID as an Ansible group name (the inventory plugin's rule)."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", group_id)
    return out if out and not out[0].isdigit() else "_" + out


def errors(text: str) -> list[str]:
    """ansible-playbook's error sentences in ``text`` (``[ERROR]: ...`` since ansible-core 2.19, ``ERROR! ...`` before)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        for prefix in ("[ERROR]:", "ERROR!"):
            if line.startswith(prefix):
                out.append(line.removeprefix(prefix).strip())
    return out


def _error_lines(work: Path) -> Iterable[str]:
    """ansible-playbook's last error when it stopped before any task (a missing playbook, bad YAML)."""
    stdout = work / "artifacts" / "run" / "stdout"
    try:
        text = stdout.read_text(errors="replace")
    except OSError:
        return []
    return errors(text)[-1:]


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _safe(name: str) -> str:
    """An instance ID as one path component."""
    out = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)
    return out.lstrip(".") or "_"
