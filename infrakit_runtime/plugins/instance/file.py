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
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._index_of: list[dict[str, Any]] | None = None
        # The revision: which listing (a new one per rescan of the directory) of which run of the plugin.
        self._run = secrets.token_hex(8)
        self._listings = 0
        self._listed: list[dict[str, Any]] | None = None

    async def validate(self, properties: JSON) -> None:
        """Any properties are accepted, as in InfraKit's file plugin."""

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        # Atomic but not fsynced: this plugin is for tests and demos, and speed matters at 10,000.
        fsutil.atomic_write(path, json.dumps(record, indent=2).encode(), mode=0o644, durable=False)

    async def provision(self, spec: instance.Spec) -> instance.ID:
        instance_id = f"instance-{secrets.randbits(63)}"
        record = {"ID": instance_id, "LogicalID": spec.logical_id, "Tags": dict(spec.tags), "Spec": spec.to_wire()}
        self._write(self.directory / instance_id, record)
        return instance_id

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        results = []
        for spec in specs:
            try:
                results.append(instance.ProvisionResult(id=await self.provision(spec)))
            except OSError as e:
                results.append(instance.ProvisionResult(error=f"cannot write instance file: {e}"))
        return results

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
        path = self._path(instance_id)
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
            path.unlink()
        except FileNotFoundError:
            raise PluginError(f"remove {path}: no such file or directory") from None
        self._store.forget(instance_id)

    def _records(self) -> list[dict[str, Any]]:
        records = self._store.scan()
        if records is not self._listed:  # a new listing (the store reuses one while the directory stands still)
            self._listed = records
            self._listings += 1
        return records

    def _listing_revision(self) -> str:
        return f"{self._run}.{self._listings}"

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

    def _candidates(self, tags: dict[str, str]) -> list[dict[str, Any]]:
        """Records that may match: those of the group when ``tags`` names one (an index per listing)."""
        records = self._records()
        group_id = tags.get(instance.TAG_GROUP)
        if group_id is None:
            return records
        if self._index_of is not records:
            index: dict[str, list[dict[str, Any]]] = {}
            for record in records:
                index.setdefault((record.get("Tags") or {}).get(instance.TAG_GROUP, ""), []).append(record)
            self._index, self._index_of = index, records
        return self._index.get(group_id, [])

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """``instance.Revised``: no list while the directory's listing is the one ``revision`` was stamped on."""
        self._records()
        if revision == self._listing_revision():
            return instance.Listing(revision=revision)
        found = await self.describe_instances(tags, properties)  # never suspends: stamped with its own listing
        return instance.Listing(revision=self._listing_revision(), descriptions=found)

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        found = []
        for record in self._candidates(tags):
            have = record.get("Tags") or {}
            if all(have.get(k) == v for k, v in tags.items()):
                found.append(
                    instance.Description(
                        id=record["ID"],
                        logical_id=record.get("LogicalID"),
                        tags=dict(have),
                        properties=record.get("Spec") if properties else None,
                    )
                )
        return found


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """Options: ``dir`` (default ``$INFRAKIT_INSTANCE_FILE_DIR`` or ``<home>/instance-file``)."""
    directory = ctx.options.get("dir") or os.environ.get("INFRAKIT_INSTANCE_FILE_DIR")
    path = Path(directory) if directory else ctx.state_dir("instance-file")
    yield Served(services=[InstanceService({"": FileInstancePlugin(path)})], vendor=VENDOR)
