"""File instance plugin: each instance is a JSON file, as in InfraKit (for tests and demos).

Files are named ``instance-<random int63>`` and hold ``{ID, LogicalID, Tags,
Spec}``, so InfraKit's own file plugin and ours read each other's directories.
Tags are ANDed in DescribeInstances, Label merges, Destroy removes. Deleting a
file behind the plugin's back is how tests make an instance "vanish".

Parsed files are cached by (mtime, size), so describing 10,000 instances costs a
directory scan, not 10,000 reads. ``wait_change`` (the InstanceWatch extension) watches
the directory's modification time, so a file deleted behind the plugin's back wakes the
controller within ``WATCH_INTERVAL`` instead of a whole poll interval. ``describe_since`` (the
InstanceRevision extension) answers "unchanged" while the directory listing is the cached one: its
revision is a counter of listings, prefixed with a token drawn at start, so a restarted plugin never
repeats one.

Scans and writes run on a worker thread, never on the event loop: stat-ing 100,000 files takes about
a second, and a flood of commits (hundreds of groups provisioning at once) would otherwise hold the
loop for longer than a caller waits for ``Handshake.Hello``. Scans run one at a time; every describe
is answered by a scan that started after it was asked (so it sees every write that returned before
it), and all describes that arrive while one scan runs share the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from infrakit_runtime import fsutil
from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.rpc.instance import InstanceService
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, PluginError

# How often wait_change looks at the directory: one stat() per tick, whatever the instance count.
WATCH_INTERVAL = 0.05
VENDOR = {"Name": "infrakit-instance-file", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}


class FileInstancePlugin:
    """``InstancePlugin`` storing instances as files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._store = fsutil.RecordDirectory(directory)
        self._index: dict[str, list[dict[str, Any]]] = {}
        # The revision: which listing (a new one per rescan of the directory) of which run of the plugin.
        self._run = secrets.token_hex(8)
        self._listings = 0
        self._listed: list[dict[str, Any]] | None = None
        self._running: asyncio.Future[Listed] | None = None  # the scan in progress
        self._next: asyncio.Future[Listed] | None = None  # the one after it, shared by all who asked since

    async def validate(self, properties: JSON) -> None:
        """Any properties are accepted, as in InfraKit's file plugin."""

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        # Atomic but not fsynced: this plugin is for tests and demos, and speed matters at 10,000.
        fsutil.atomic_write(path, json.dumps(record, indent=2).encode(), mode=0o644, durable=False)

    def _create(self, spec: instance.Spec) -> instance.ID:
        instance_id = f"instance-{secrets.randbits(63)}"
        record = {"ID": instance_id, "LogicalID": spec.logical_id, "Tags": dict(spec.tags), "Spec": spec.to_wire()}
        self._write(self.directory / instance_id, record)
        return instance_id

    def _create_all(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        results = []
        for spec in specs:
            try:
                results.append(instance.ProvisionResult(id=self._create(spec)))
            except OSError as e:
                results.append(instance.ProvisionResult(error=f"cannot write instance file: {e}"))
        return results

    async def provision(self, spec: instance.Spec) -> instance.ID:
        return await asyncio.to_thread(self._create, spec)

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        return await asyncio.to_thread(self._create_all, specs)

    def _path(self, instance_id: str) -> Path:
        # NUL cannot be in a file name (open() raises ValueError, not OSError).
        if not instance_id or "/" in instance_id or "\0" in instance_id or instance_id.startswith("."):
            raise PluginError(f"invalid instance ID {instance_id!r}")
        try:
            os.fsencode(instance_id)
        except UnicodeEncodeError:  # a lone surrogate: no file can have this name
            raise PluginError(f"invalid instance ID {instance_id!r}") from None
        return self.directory / instance_id

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        await asyncio.to_thread(self._label, self._path(instance_id), instance_id, labels)

    def _label(self, path: Path, instance_id: instance.ID, labels: dict[str, str]) -> None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise PluginError(f"instance {instance_id} not found in {self.directory}") from None
        record["Tags"] = {**(record.get("Tags") or {}), **labels}
        if isinstance(record.get("Spec"), dict):
            record["Spec"]["Tags"] = {**(record["Spec"].get("Tags") or {}), **labels}
        self._write(path, record)

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        path = self._path(instance_id)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            raise PluginError(f"remove {path}: no such file or directory") from None
        # A scan running meanwhile may still list it: the unlink moved the directory's mtime, so the
        # next scan reads the directory again whatever this one keeps.
        self._store.forget(instance_id)

    async def _listing(self) -> Listed:
        """The records of a scan that started after this call, with its revision and group index."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._scan_after(self._running))
        return await asyncio.shield(self._next)

    async def _scan_after(self, running: asyncio.Future[Listed] | None) -> Listed:
        if running is not None:
            with contextlib.suppress(Exception):
                await running
        # From here this is the running scan: whoever asks now waits for the next one.
        self._running, self._next = self._next, None
        records, index = await asyncio.to_thread(self._scan, self._listed, self._index)
        if records is not self._listed:  # a new listing (the store reuses one while the directory stands still)
            self._listed, self._index = records, index
            self._listings += 1
        return Listed(records=records, index=index, revision=f"{self._run}.{self._listings}")

    def _scan(self, listed: list[dict[str, Any]] | None,
              index: dict[str, list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """On the worker thread: the store's listing and, for a new one, its index by group."""
        records = self._store.scan()
        if records is listed:
            return records, index
        fresh: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            fresh.setdefault((record.get("Tags") or {}).get(instance.TAG_GROUP, ""), []).append(record)
        return records, fresh

    def _revision(self) -> int:
        try:
            return os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            return 0

    async def wait_change(self, revision: int, timeout: float) -> int:
        """Return the directory's revision (its mtime) once it differs from ``revision``, or at ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        current = self._revision()
        while current == revision and loop.time() < deadline:
            await asyncio.sleep(WATCH_INTERVAL)
            current = self._revision()
        return current

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """``instance.Revised``: no list while the directory's listing is the one ``revision`` was stamped on."""
        listed = await self._listing()
        if revision == listed.revision:
            return instance.Listing(revision=revision)
        return instance.Listing(revision=listed.revision, descriptions=_matching(listed, tags, properties))

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        return _matching(await self._listing(), tags, properties)


@dataclasses.dataclass(frozen=True)
class Listed:
    """One scan of the directory: its records, their index by group, and the listing's revision."""

    records: list[dict[str, Any]]
    index: dict[str, list[dict[str, Any]]]
    revision: str


def _matching(listed: Listed, tags: dict[str, str], properties: bool) -> list[instance.Description]:
    """The instances of ``listed`` that carry every tag in ``tags`` (the group's index when it names one)."""
    group_id = tags.get(instance.TAG_GROUP)
    candidates = listed.records if group_id is None else listed.index.get(group_id, [])
    found = []
    for record in candidates:
        have = record.get("Tags") or {}
        if all(have.get(k) == v for k, v in tags.items()):
            found.append(instance.Description(id=record["ID"], logical_id=record.get("LogicalID"), tags=dict(have),
                                              properties=record.get("Spec") if properties else None))
    return found


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """Options: ``dir`` (default ``$INFRAKIT_INSTANCE_FILE_DIR`` or ``<home>/instance-file``)."""
    directory = ctx.options.get("dir") or os.environ.get("INFRAKIT_INSTANCE_FILE_DIR")
    path = Path(directory) if directory else ctx.state_dir("instance-file")
    yield Served(services=[InstanceService({"": FileInstancePlugin(path)})], vendor=VENDOR)
