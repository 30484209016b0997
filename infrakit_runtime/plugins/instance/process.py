"""Process instance plugin: each instance is a detached OS process that outlives the daemon that started it.

An instance is the process group led by the process the plugin started, named
by its (pid, start time) so that a recycled PID is never mistaken for it. Its
record (ID, tags, spec, pid, start time, port) is a JSON file in the state
directory, written atomically, so a restarted daemon finds its instances again.
Deaths are seen at once through pidfds (or a 0.5 s /proc poll where pidfds are
unavailable) and bump a revision that ``wait_change`` long-polls on.

Limits: Linux only; one daemon per state directory (enforced with a lock); a
port is free when allocated, not reserved, so another program can take it
before the instance binds it; instances do not survive a reboot.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import resource
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.durations import parse_duration
from infrakit_runtime.plugins.instance import process_os, process_props, process_store
from infrakit_runtime.rpc.services import InstanceService, ProvisionResult
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

VENDOR = {"Name": "infrakit-instance-process", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}
HOST = "127.0.0.1"
POLL_INTERVAL = 0.5
# After SIGKILL a process is gone within milliseconds; this only bounds a stuck (D state) exit.
KILL_WAIT = 5.0
OPTIONS = ("dir", "stop_timeout")
# Descriptors kept for everything but pidfds (sockets, logs, records being written).
RESERVED_FDS = 256


@dataclasses.dataclass
class _Watch:
    """One live instance this daemon watches for exit."""

    pid: int
    start_time: int
    port: int | None
    fd: int | None
    stopping: bool = False
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProcessInstancePlugin:
    """``InstancePlugin`` whose instances are OS processes tracked in ``directory``.

    ``use_pidfd=False`` selects the /proc polling fallback (the path taken on
    kernels without pidfd_open), so it can be exercised on any machine.
    """

    def __init__(self, directory: Path, *, stop_timeout: float = 5.0, use_pidfd: bool = True,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.store = process_store.RecordStore(directory)
        self.stop_timeout = stop_timeout
        self._use_pidfd = use_pidfd
        # Past this many pidfds, watch by polling: running out of descriptors would stop the server.
        self._max_pidfds = max(0, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_FDS)
        self._pidfds = 0
        self._base_env = dict(base_env) if base_env is not None else None
        self._watches: dict[str, _Watch] = {}
        self._children: set[int] = set()
        self._provisioning: dict[str, int | None] = {}  # ID -> port, while Provision runs
        self._poller: asyncio.Task[None] | None = None
        # Microseconds since the epoch: a restarted daemon's revisions exceed its predecessor's,
        # so a caller holding an old revision is answered at once rather than after its timeout.
        self._revision = time.time_ns() // 1000
        self._changed = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the instances a previous daemon left: watch the live ones, forget the dead."""
        found = await self.describe_instances({}, False)
        log.info("process plugin: %d live instance(s) in %s", len(found), self.store.directory)

    async def close(self) -> None:
        """Stop watching; the instances keep running (they must outlive the daemon)."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        loop = asyncio.get_running_loop()
        for watch in self._watches.values():
            if watch.fd is not None:
                loop.remove_reader(watch.fd)
                os.close(watch.fd)
        self._watches.clear()
        self._pidfds = 0

    # --- revision / long poll ---------------------------------------------------------------

    def _bump(self) -> None:
        self._revision += 1
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def revision(self) -> int:
        return self._revision

    async def wait_change(self, revision: int, timeout: float) -> int:
        """The current revision once it differs from ``revision``, or after ``timeout`` seconds.

        A revision above ours (from a daemon that ran with a clock set later) is
        answered at once too, so the caller resynchronises instead of stalling.
        """
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        while self._revision == revision:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self._revision

    def _forget(self, instance_id: str, why: str) -> None:
        """Remove an instance's record and log; a crash's last output goes to the daemon log first."""
        if why == "exited":
            tail = self.store.tail(instance_id)
            log.warning("instance %s exited; removing its record%s", instance_id,
                        f"; last output:\n{tail}" if tail else "")
        self.store.remove(instance_id)

    # --- watching ----------------------------------------------------------------------------

    def _watch(self, instance_id: str, pid: int, start_time: int, port: int | None) -> _Watch | None:
        """Watch a live instance for exit; None when it turns out to be gone already."""
        existing = self._watches.get(instance_id)
        if existing is not None:
            return existing
        fd = None
        if self._use_pidfd and self._pidfds < self._max_pidfds:
            try:
                fd = process_os.open_pidfd(pid)
            except ProcessLookupError:
                return None
        # Checked after opening the pidfd: if the PID was recycled in between, this catches it.
        if not process_os.is_running(pid, start_time):
            if fd is not None:
                os.close(fd)
            return None
        watch = _Watch(pid=pid, start_time=start_time, port=port, fd=fd)
        self._watches[instance_id] = watch
        if fd is not None:
            self._pidfds += 1
            asyncio.get_running_loop().add_reader(fd, self._on_exit, instance_id)
        elif self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="process-plugin/poll")
        return watch

    async def _poll(self) -> None:
        """The fallback without pidfds: look at /proc for every watched instance twice a second."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            for instance_id, watch in list(self._watches.items()):
                if watch.fd is None and not process_os.is_running(watch.pid, watch.start_time):
                    self._on_exit(instance_id)

    def _on_exit(self, instance_id: str) -> None:
        """A watched instance's leader exited: stop watching, then clean up after it."""
        watch = self._watches.pop(instance_id, None)
        if watch is None:
            return
        if watch.fd is not None:
            asyncio.get_running_loop().remove_reader(watch.fd)
            os.close(watch.fd)
            self._pidfds -= 1
        self._gone(instance_id, watch.pid, watch.start_time, sweep=True,
                   why="destroyed" if watch.stopping else "exited")
        watch.exited.set()

    def _gone(self, instance_id: str, pid: int, start_time: int, *, sweep: bool, why: str) -> None:
        """Kill what is left of a dead instance's group (if ``sweep``), reap its leader, forget it.

        Sweep only right after the exit was seen: the group ID cannot name another group
        while the leader is ours (even a zombie), and a leader with another start time
        means the PID was recycled, so that group is left alone. A record found dead
        long after the fact is not swept: its PID may have been recycled and exited again.
        """
        if sweep:
            leader = process_os.read_stat(pid)
            if leader is None or leader.start_time == start_time:
                process_os.signal_group(pid, signal.SIGKILL)
        if pid in self._children and process_os.reap(pid):
            self._children.discard(pid)
        self._forget(instance_id, why)
        self._bump()

    # --- Instance SPI ------------------------------------------------------------------------

    async def validate(self, properties: JSON) -> None:
        """Raise ``ValidationError`` listing every problem, naming each field."""
        process_props.parse(properties)

    def _ports_in_use(self) -> set[int]:
        ports = {w.port for w in self._watches.values() if w.port is not None}
        return ports | {p for p in self._provisioning.values() if p is not None}

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: str | None, log_path: Path) -> int:
        """Start the process in its own session, output appended to ``log_path``; its pid."""
        with open(log_path, "ab") as out:
            child = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                start_new_session=True, close_fds=True,
            )
        # The plugin reaps its children itself (after killing leftovers of their group, which
        # must happen while the zombie still holds the group ID); Popen must not wait or warn.
        child.returncode = 0
        return child.pid

    async def provision(self, spec: instance.Spec) -> instance.ID:
        """Start one process; return once it runs and its record is on disk."""
        props = process_props.parse(spec.properties)
        instance_id = f"process-{secrets.token_hex(8)}"
        port = process_os.free_port(self._ports_in_use()) if props.port else None
        self._provisioning[instance_id] = port
        record: dict[str, Any] = {
            "ID": instance_id, "LogicalID": spec.logical_id, "Tags": dict(spec.tags), "Spec": spec.to_wire(),
            "PID": None, "StartTime": None, "Port": port, "StartedAt": _now_rfc3339(),
            "Log": str(self.store.log_path(instance_id)),
        }
        pid: int | None = None
        try:
            # Recorded before the start: a daemon killed in between re-adopts the process by its ID.
            await asyncio.to_thread(self.store.write, record)
            env = process_props.environment(props, base=self._base_env if self._base_env is not None else dict(os.environ),
                                            instance_id=instance_id, spec=spec, port=port)
            argv = process_props.argv(props, spec.init, env)
            try:
                pid = await asyncio.to_thread(self._spawn, argv, env, props.dir, self.store.log_path(instance_id))
            except OSError as e:
                raise PluginError(f"cannot start instance {instance_id} ({argv[0]}): {e.strerror or e}") from None
            self._children.add(pid)
            stat = process_os.read_stat(pid)
            assert stat is not None, "an unreaped child always has /proc/<pid>/stat"
            record.update(PID=pid, StartTime=stat.start_time, StartedAt=_now_rfc3339())
            await asyncio.to_thread(self.store.write, record)
        except BaseException:
            if pid is not None:
                process_os.signal_group(pid, signal.SIGKILL)
                await asyncio.to_thread(os.waitpid, pid, 0)
                self._children.discard(pid)
            self._forget(instance_id, "failed")
            raise
        finally:
            self._provisioning.pop(instance_id, None)
        # Neither argv nor env is logged: either may carry secrets.
        log.info("provisioned %s: pid %d%s", instance_id, pid, f", port {port}" if port else "")
        self._bump()
        if self._watch(instance_id, pid, stat.start_time, port) is None:
            # It exited before it could be watched; seen within milliseconds, so sweep its group.
            self._gone(instance_id, pid, stat.start_time, sweep=True, why="exited")
        return instance_id

    async def provision_many(self, specs: list[instance.Spec]) -> list[ProvisionResult]:
        """Provision concurrently; one slot's failure is its own result, not the batch's."""
        outcomes = await asyncio.gather(*(self.provision(s) for s in specs), return_exceptions=True)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, (PluginError, OSError)):
                results.append(ProvisionResult(error=str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(ProvisionResult(id=outcome))
        return results

    def _alive(self, record: dict[str, Any]) -> bool:
        """Whether a record's process runs; records left half-written by a killed daemon are settled."""
        instance_id = record["ID"]
        if instance_id in self._provisioning:
            return False
        pid, start_time = record.get("PID"), record.get("StartTime")
        if not isinstance(pid, int) or not isinstance(start_time, int):
            return self._adopt(record)
        if instance_id in self._watches:
            return True
        if self._watch(instance_id, pid, start_time, record.get("Port")) is not None:
            return True
        self._gone(instance_id, pid, start_time, sweep=False, why="exited")
        return False

    def _adopt(self, record: dict[str, Any]) -> bool:
        """Complete a record whose daemon died between writing it and starting the process."""
        instance_id = record["ID"]
        found = process_os.find_by_environ(process_props.ENV_INSTANCE_ID, instance_id)
        if len(found) != 1:
            log.warning("instance %s was never started (its daemon stopped while provisioning); removing it",
                        instance_id)
            self._forget(instance_id, "never started")
            return False
        stat = found[0]
        record = {**record, "PID": stat.pid, "StartTime": stat.start_time}
        self.store.write(record)
        log.info("adopted instance %s (pid %d) left half-provisioned by a previous daemon", instance_id, stat.pid)
        self._bump()
        return self._watch(instance_id, stat.pid, stat.start_time, record.get("Port")) is not None

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        """Live instances carrying every tag in ``tags``; records of dead ones are removed here."""
        found = []
        for record in self.store.scan():
            if not self._alive(record):
                continue
            have = record.get("Tags") or {}
            if not all(have.get(k) == v for k, v in tags.items()):
                continue
            props = None
            if properties:
                port = record.get("Port")
                props = {
                    "Spec": record.get("Spec"), "PID": record["PID"], "Port": port,
                    "Address": f"{HOST}:{port}" if port else HOST, "Host": HOST,
                    "StartedAt": record.get("StartedAt"), "Log": record.get("Log"),
                }
            found.append(instance.Description(id=record["ID"], logical_id=record.get("LogicalID"),
                                              tags=dict(have), properties=props))
        return found

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        """Merge ``labels`` into the instance's tags, on disk."""
        process_store.check_id(instance_id)
        record = self.store.read(instance_id)
        if record is None or not self._alive(record):
            raise PluginError(f"instance {instance_id} not found in {self.store.directory} (it does not exist or has exited)")
        record["Tags"] = {**(record.get("Tags") or {}), **labels}
        if isinstance(record.get("Spec"), dict):
            record["Spec"]["Tags"] = {**(record["Spec"].get("Tags") or {}), **labels}
        await asyncio.to_thread(self.store.write, record)

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        """SIGTERM the instance's process group, SIGKILL it after ``stop_timeout``; forget it.

        An unknown or already-exited instance is not an error: the goal (it is gone) holds.
        """
        process_store.check_id(instance_id)
        record = self.store.read(instance_id)
        if record is None:
            log.info("destroy %s (%s): no such instance; nothing to do", instance_id, context.reason)
            return
        if not self._alive(record):
            log.info("destroy %s (%s): its process had already exited", instance_id, context.reason)
            self._forget(instance_id, "destroyed")
            return
        watch = self._watches[instance_id]
        watch.stopping = True
        log.info("destroying %s (pid %d, reason %s): SIGTERM", instance_id, watch.pid, context.reason)
        process_os.signal_group(watch.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(watch.exited.wait(), self.stop_timeout)
        except TimeoutError:
            log.warning("instance %s did not stop within %gs of SIGTERM: SIGKILL", instance_id, self.stop_timeout)
            process_os.signal_group(watch.pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(watch.exited.wait(), KILL_WAIT)
            except TimeoutError:
                log.error("instance %s (pid %d) survived SIGKILL for %gs; forgetting it anyway",
                          instance_id, watch.pid, KILL_WAIT)
                self._on_exit(instance_id)
        self._forget(instance_id, "destroyed")
        self._bump()


def _stop_timeout(raw: JSON) -> float:
    try:
        return parse_duration(raw)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"option stop_timeout: {e}") from None


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """Options: ``dir`` (default ``<home>/instance-process``), ``stop_timeout`` (default 5s)."""
    unknown = sorted(set(ctx.options) - set(OPTIONS))
    if unknown:
        raise ValidationError(f"unknown option(s) {', '.join(unknown)} for the process plugin; known: {', '.join(OPTIONS)}")
    directory = ctx.options.get("dir")
    path = Path(directory) if directory else ctx.state_dir("instance-process")
    process_os.raise_fd_limit()
    plugin = ProcessInstancePlugin(path, stop_timeout=_stop_timeout(ctx.options.get("stop_timeout", 5.0)))
    with plugin.store.lock():
        await plugin.start()
        try:
            yield Served(services=[InstanceService({"": plugin})], vendor=VENDOR)
        finally:
            await plugin.close()
