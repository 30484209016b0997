"""Process instance plugin: each instance is a detached OS process tree that outlives the daemon that started it.

The OS is the source of truth. An instance is led by the process the plugin started, named
by its (pid, start time) so that a recycled PID is never mistaken for it, and holds every
process that leader starts: a cgroup of its own where cgroup v2 is writable, otherwise an
environment marker (the plugin's state directory, the instance ID, its tags) that children
inherit, with the daemon as child subreaper. Records (ID, tags, spec, pid, start time, port)
are JSON files in the state directory, written atomically; ``process_track`` keeps them
true to the processes (lost or damaged records rewritten or rebuilt, remains of dead
instances and unproven claimants stopped), so no instance process runs untracked beside a
replacement. Instances may run as another user (``User``/``Group``); specs that Linux could
never start are refused at Validate (``process_limits``).

Limits: Linux only; one daemon per state directory (enforced with a lock); a port is free when
allocated, not reserved; instances do not survive a reboot; a record rebuilt from processes
has the tags the instance started with (later labels are lost) and no spec. Without cgroups,
see ``process_tree`` for what can escape.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.durations import parse_duration
from infrakit_runtime.plugins.instance import (
    process_cgroup,
    process_os,
    process_props,
    process_store,
    process_track,
    revisions,
)
from infrakit_runtime.rpc.instance import InstanceService
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

VENDOR = {"Name": "infrakit-instance-process", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}
HOST = "127.0.0.1"
OPTIONS = ("cgroup", "dir", "stop_timeout")


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ProcessInstancePlugin(process_track.Tracker):
    """``InstancePlugin`` whose instances are OS process trees tracked in ``directory`` (see ``Tracker``)."""

    def __init__(self, directory: Path, *, stop_timeout: float = 5.0, base_env: Mapping[str, str] | None = None,
                 **tracking: Any) -> None:
        super().__init__(directory, **tracking)
        self.stop_timeout = stop_timeout
        self._base_env = dict(base_env) if base_env is not None else None

    def _environ_base(self) -> dict[str, str]:
        return self._base_env if self._base_env is not None else dict(os.environ)

    async def validate(self, properties: JSON) -> None:
        """Raise ``ValidationError`` listing every problem, naming each field (limits included)."""
        props = process_props.parse(properties)
        process_props.launch(props, base=self._environ_base(), instance_id="process-0123456789abcdef",
                             spec=instance.Spec(properties=properties), port=65535 if props.port else None,
                             owner=self.owner)

    def _ports_in_use(self) -> set[int]:
        ports = {p for w in self._watches.values() if isinstance(p := w.record.get("Port"), int)}
        return ports | {p for p in self._provisioning.values() if p is not None}

    async def provision(self, spec: instance.Spec) -> instance.ID:
        """Start one process; return once it runs and its record is on disk."""
        props = process_props.parse(spec.properties)
        identity = process_props.identity(props)
        instance_id = f"process-{secrets.token_hex(8)}"
        port = process_os.free_port(self._ports_in_use()) if props.port else None
        argv, env = process_props.launch(props, base=self._environ_base(), instance_id=instance_id, spec=spec,
                                         port=port, owner=self.owner)
        record: dict[str, Any] = {
            "ID": instance_id, "LogicalID": spec.logical_id, "Tags": dict(spec.tags), "Spec": spec.to_wire(),
            "PID": None, "StartTime": None, "Port": port, "StartedAt": _now_rfc3339(),
            "Log": str(self.store.log_path(instance_id)),
        }
        self._provisioning[instance_id] = port
        pid: int | None = None
        cgroup_fd: int | None = None
        try:
            # Recorded before the start: a daemon killed in between re-adopts the process by its ID.
            await asyncio.to_thread(self.store.write, record)
            if self.cgroups is not None:
                self.cgroups.create(instance_id)
                cgroup_fd = self.cgroups.open_procs(instance_id)
            self._spawning += 1
            try:
                pid = await asyncio.to_thread(process_os.spawn, argv, env, props.dir, self.store.log_path(instance_id),
                                              cgroup_fd=cgroup_fd, identity=identity)
            except OSError as e:
                raise PluginError(f"cannot start instance {instance_id} ({argv[0]}): {e.strerror or e}") from None
            except subprocess.SubprocessError:
                why = self.store.tail(instance_id).rpartition("infrakit: ")[2] or "its setup failed"
                raise PluginError(f"cannot start instance {instance_id} ({argv[0]}): {why}") from None
            finally:
                self._spawning -= 1
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
            if self.cgroups is not None:
                self.cgroups.kill(instance_id)
                self.cgroups.remove(instance_id)
            self._forget(instance_id, "failed")
            raise
        finally:
            if cgroup_fd is not None:
                os.close(cgroup_fd)
            self._provisioning.pop(instance_id, None)
        # Neither argv nor env is logged: either may carry secrets.
        log.info("provisioned %s: pid %d%s", instance_id, pid, f", port {port}" if port else "")
        self._bump()
        if self._watch(instance_id, record) is None:
            # It exited before it could be watched; seen within milliseconds, so its group is still ours.
            self._bury_later(instance_id, (pid, stat.start_time), why="exited")
        return instance_id

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        """Provision concurrently; one slot's failure is its own result, not the batch's."""
        outcomes = await asyncio.gather(*(self.provision(s) for s in specs), return_exceptions=True)
        results = []
        for outcome in outcomes:
            if isinstance(outcome, (PluginError, OSError)):
                results.append(instance.ProvisionResult(error=str(outcome)))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append(instance.ProvisionResult(id=outcome))
        return results

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        """Live instances carrying every tag in ``tags``; records of dead ones are removed here."""
        scanned = self.store.scan()
        on_disk = {r["ID"] for r in scanned}
        if not on_disk.issuperset(self._watches):
            await self._restore_records(on_disk, None)
            scanned = self.store.scan()
        found = []
        for record in scanned:
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

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """``instance.Revised`` by content (``revisions``): the listing asked for again, and no list when
        ``revision`` names the very same one, so an unchanged group costs its caller no decoding or plan."""
        return await revisions.listing_since(self.describe_instances(tags, properties), revision)

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        """Merge ``labels`` into the instance's tags, on disk and in memory."""
        process_store.check_id(instance_id)
        record = self._record(instance_id)
        if record is None or not self._alive(record):
            raise PluginError(f"instance {instance_id} not found in {self.store.directory} (it does not exist or has exited)")
        record["Tags"] = {**(record.get("Tags") or {}), **labels}
        if isinstance(record.get("Spec"), dict):
            record["Spec"]["Tags"] = {**(record["Spec"].get("Tags") or {}), **labels}
        await asyncio.to_thread(self.store.write, record)
        if instance_id in self._watches:
            self._watches[instance_id].record = record

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        """SIGTERM every process of the instance, SIGKILL them all after ``stop_timeout``; forget it.

        Returns once the whole tree is gone. An unknown or already-exited instance is not an
        error: the goal (it is gone) holds.
        """
        process_store.check_id(instance_id)
        record = self._record(instance_id)
        if record is None:
            log.info("destroy %s (%s): no such instance; nothing to do", instance_id, context.reason)
            return
        if not self._alive(record):
            log.info("destroy %s (%s): its process had already exited", instance_id, context.reason)
            await self._burial(instance_id)
            self._forget(instance_id, "destroyed")
            return
        watch = self._watches[instance_id]
        watch.stopping = True
        log.info("destroying %s (pid %d, reason %s): SIGTERM", instance_id, watch.leader[0], context.reason)
        await self.trees.signal(instance_id, watch.leader, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(watch.exited.wait()), self.stop_timeout)
        except TimeoutError:
            log.warning("instance %s did not stop within %gs of SIGTERM: SIGKILL", instance_id, self.stop_timeout)
            if not await self.trees.kill(instance_id, watch.leader):
                log.error("instance %s (pid %d) survived SIGKILL; forgetting it anyway", instance_id, watch.leader[0])
            self._on_exit(instance_id)
        await self._burial(instance_id)
        self._forget(instance_id, "destroyed")
        self._bump()


def _stop_timeout(raw: JSON) -> float:
    try:
        return parse_duration(raw)
    except (ValueError, TypeError) as e:
        raise ValidationError(f"option stop_timeout: {e}") from None


def _shares_process(plugins_dir: Path, name: str) -> bool:
    """Whether another daemon runs in this process (``plugin run process vanilla``): its pid file names our PID."""
    me = str(os.getpid())
    for pid_file in plugins_dir.glob("*.pid"):
        if pid_file.name != f"{name}.pid":
            with contextlib.suppress(OSError):
                if pid_file.read_text().strip() == me:
                    return True
    return False


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """Options: ``dir`` (default ``<home>/instance-process``), ``stop_timeout`` (default 5s),
    ``cgroup`` (``auto``, default: a cgroup per instance where cgroup v2 is writable; ``off``;
    or the path of a cgroup v2 directory to make them in)."""
    unknown = sorted(set(ctx.options) - set(OPTIONS))
    if unknown:
        raise ValidationError(f"unknown option(s) {', '.join(unknown)} for the process plugin; known: {', '.join(OPTIONS)}")
    directory = ctx.options.get("dir")
    path = Path(directory) if directory else ctx.state_dir("instance-process")
    cgroup_option = ctx.options.get("cgroup", "auto")
    if isinstance(cgroup_option, bool):  # YAML reads a bare off/on as a boolean
        cgroup_option = "auto" if cgroup_option else "off"
    if not isinstance(cgroup_option, str):
        raise ValidationError("option cgroup: must be auto, off or an absolute path to a cgroup v2 directory")
    process_os.raise_fd_limit()
    store = process_store.RecordStore(path)
    with store.lock():
        cgroups, how = process_cgroup.open_cgroups(cgroup_option, path)
        log.info("process plugin: %s", how if cgroups is not None else
                 f"no cgroups ({how}); instance trees are tracked by environment marker, the daemon as child subreaper")
        plugin = ProcessInstancePlugin(path, stop_timeout=_stop_timeout(ctx.options.get("stop_timeout", 5.0)),
                                       cgroups=cgroups, subreaper=cgroups is None,
                                       companions=lambda: _shares_process(ctx.plugins_dir, ctx.name))
        await plugin.start()
        try:
            yield Served(services=[InstanceService({"": plugin})], vendor=VENDOR)
        finally:
            await plugin.close()
