"""A self-hosted control plane from one host: bootstrap it, let it grow itself, tear it down.

Guarantee: ``up`` is idempotent. It provisions a bootstrap etcd member only when the etcd group
has no instance at all (the flavor refuses a bootstrap while any member answers), and a
bootstrap replica only when the manager group has none; both are tagged
``infrakit.config.hash=bootstrap``, so the groups adopt them as members when committed. It then
commits the two groups through a replica (only a spec that differs from the stored one) and
waits until both are converged and healthy. A second ``up`` on a running plane changes nothing
and says so. ``down`` frees both groups (nothing replaces what goes next), destroys every replica
and then every etcd member through their instance plugins, and with ``purge`` removes the data
and configuration directories the two specs name.
Limit: one host runs this; it reaches the plugins through the local plugin directory and the
replicas at the URLs their logical IDs give (with the manager flavor's ``TokenFile``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.flavor.selfhost import etcd_props, manager_props
from infrakit_runtime.rpc import discovery, tokens
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

__all__ = ["ControlPlane", "GroupSpec"]

HEALTHY = 1


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """The parts of a group's wire spec this module uses."""

    raw: dict[str, Any]
    id: str
    logical_ids: tuple[str, ...]
    instance_plugin: str
    instance_properties: JSON
    flavor_plugin: str
    flavor_properties: JSON

    @classmethod
    def parse(cls, raw: Any, what: str) -> GroupSpec:
        problems = []
        if not isinstance(raw, dict) or not isinstance(raw.get("ID"), str) or not isinstance(raw.get("Properties"), dict):
            raise ValidationError(f"the {what} spec must be a group spec {{ID, Properties}}")
        props = raw["Properties"]
        ids = (props.get("Allocation") or {}).get("LogicalIDs")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            problems.append(f"the {what} group must list its members in Properties.Allocation.LogicalIDs")
        sections = {}
        for section in ("Instance", "Flavor"):
            s = props.get(section)
            if not isinstance(s, dict) or not isinstance(s.get("Plugin"), str) or not s.get("Plugin"):
                problems.append(f"the {what} spec needs Properties.{section}.Plugin")
                s = {"Plugin": "", "Properties": None}
            sections[section] = s
        if problems:
            raise ValidationError(problems)
        return cls(raw=raw, id=raw["ID"], logical_ids=tuple(ids or ()), instance_plugin=sections["Instance"]["Plugin"],
                   instance_properties=sections["Instance"].get("Properties"),
                   flavor_plugin=sections["Flavor"]["Plugin"], flavor_properties=sections["Flavor"].get("Properties"))


class ControlPlane:
    """The etcd group and the manager group of one control plane, driven from this host."""

    def __init__(self, *, etcd: dict[str, Any], managers: dict[str, Any], plugins_dir: Path | None = None,
                 timeout: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.etcd = GroupSpec.parse(etcd, "etcd")
        self.managers = GroupSpec.parse(managers, "manager")
        try:
            self.replica_props = manager_props.parse(self.managers.flavor_properties)
            self.etcd_props = etcd_props.parse(self.etcd.flavor_properties)
        except ValidationError as e:
            raise ValidationError([f"flavor Properties: {p}" for p in e.problems]) from None
        self.plugins_dir = plugins_dir or discovery.plugins_dir()
        self.timeout = timeout
        self.clock, self.sleep = clock, sleep
        self._clients: dict[str, SyncClient] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # -- plugins and replicas ----------------------------------------------------------------

    def _plugin(self, name: str) -> tuple[SyncClient, str]:
        pn = discovery.PluginName.parse(name)
        if pn.socket not in self._clients:
            self._clients[pn.socket] = SyncClient(discovery.resolve(pn, self.plugins_dir), name=pn.socket,
                                                  timeout=self.timeout)
        return self._clients[pn.socket], pn.type

    def members(self, group: GroupSpec) -> list[dict[str, Any]]:
        client, type_ = self._plugin(group.instance_plugin)
        found = client.call("Instance.DescribeInstances", {"Type": type_, "Tags": {instance.TAG_GROUP: group.id},
                                                            "Properties": True})
        return list(found.get("Descriptions") or [])

    def healthy(self, group: GroupSpec, description: dict[str, Any]) -> bool:
        client, type_ = self._plugin(group.flavor_plugin)
        answer = client.call("Flavor.Healthy", {"Type": type_, "Properties": group.flavor_properties,
                                                "Instance": description})
        return answer.get("Health") == HEALTHY

    def bootstrap(self, group: GroupSpec) -> str:
        """Provision the group's first logical ID as a ``bootstrap`` instance the group will adopt."""
        lid = group.logical_ids[0]
        flavor, ftype = self._plugin(group.flavor_plugin)
        plugin, itype = self._plugin(group.instance_plugin)
        spec = instance.Spec(properties=group.instance_properties, logical_id=lid, tags={
            instance.TAG_GROUP: group.id, instance.TAG_LOGICAL_ID: lid,
            instance.TAG_CONFIG_HASH: instance.BOOTSTRAP_CONFIG_HASH})
        prepared = flavor.call("Flavor.Prepare", {
            "Type": ftype, "Properties": group.flavor_properties, "Spec": spec.to_wire(),
            "Allocation": {"Size": 0, "LogicalIDs": list(group.logical_ids)}, "Index": {"Group": group.id, "Sequence": 0},
        })["Spec"]
        iid = str(plugin.call("Instance.Provision", {"Type": itype, "Spec": prepared})["ID"])
        log.info("bootstrapped %s member %s as %s", group.id, lid, iid)
        return iid

    def replica_urls(self) -> list[str]:
        return [manager_props.replica(self.replica_props, lid).url for lid in self.managers.logical_ids]

    def _replica(self, url: str) -> SyncClient:
        key = f"replica:{url}"
        if key not in self._clients:
            token = tokens.read(self.replica_props.token_file)
            self._clients[key] = SyncClient(Address(url=url), name=f"replica {url}", timeout=self.timeout, token=token)
        return self._clients[key]

    def status(self) -> dict[str, Any] | None:
        """The leader's URL and each replica's answer (None: no replica answers)."""
        answers: dict[str, Any] = {}
        for url in self.replica_urls():
            try:
                answers[url] = self._replica(url).call("Manager.Status", {})
            except (RemoteError, UnreachableError) as e:
                answers[url] = str(e)
                self._drop(url)
        if not any(isinstance(a, dict) for a in answers.values()):
            return None
        leader = next((url for url, a in answers.items() if isinstance(a, dict) and a.get("Leader")), None)
        return {"Leader": leader, "Replicas": answers}

    def _drop(self, url: str) -> None:
        client = self._clients.pop(f"replica:{url}", None)
        if client is not None:
            client.close()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """A Group call through the leader (or any replica, which forwards it)."""
        status = self.status()
        if status is None:
            raise UnreachableError(f"no replica answers at {', '.join(self.replica_urls())}")
        urls = [status["Leader"]] if status["Leader"] else [u for u, a in status["Replicas"].items() if isinstance(a, dict)]
        return self._replica(urls[0]).call(method, {"Name": "group", **params})

    # -- up ----------------------------------------------------------------------------------

    def wait(self, what: str, timeout: float, predicate: Callable[[], Any]) -> Any:
        """``predicate()``'s first true answer; a call that fails is retried, and its error reported at the end."""
        deadline = self.clock() + timeout
        error = ""
        while self.clock() < deadline:
            try:
                found = predicate()
            except (RemoteError, UnreachableError, PluginError) as e:
                error = str(e)
            else:
                if found:
                    return found
            self.sleep(0.2)
        raise PluginError(f"timed out after {timeout:g}s waiting for {what}" + (f" (last error: {error})" if error else ""))

    def _committed(self, group: GroupSpec) -> tuple[bool, bool]:
        """``commit``'s answer, and True: a commit that answers at all is done waiting."""
        return self.commit(group), True

    def commit(self, group: GroupSpec) -> bool:
        """Commit the group's spec unless the stored one is the same; whether anything changed."""
        stored = {s.get("ID"): s for s in self.call("Group.InspectGroups", {}).get("Groups") or []}
        if group.id in stored and _same(stored[group.id], group.raw):
            return False
        self.call("Group.CommitGroup", {"Spec": group.raw, "Pretend": False})
        return True

    def converged(self, group: GroupSpec) -> dict[str, Any] | None:
        description = self.call("Group.DescribeGroup", {"ID": group.id})["Description"]
        ok = description.get("Converged") and len(description.get("Instances") or []) == len(group.logical_ids)
        return description if ok else None

    def up(self, *, timeout: float = 180.0) -> dict[str, Any]:
        """Bootstrap what is missing, commit both groups, wait for both to converge; a report."""
        started = self.clock()
        report: dict[str, Any] = {"changed": False, "bootstrapped": [], "committed": [], "seconds": {}}
        if not self.members(self.etcd):
            report["bootstrapped"].append(self.bootstrap(self.etcd))
        self.wait("a healthy etcd member", timeout, lambda: any(self.healthy(self.etcd, d) for d in self.members(self.etcd)))
        report["seconds"]["etcd_member"] = round(self.clock() - started, 2)
        if not self.members(self.managers):
            report["bootstrapped"].append(self.bootstrap(self.managers))
        self.wait("a replica to lead", timeout, lambda: (s := self.status()) is not None and s["Leader"])
        report["seconds"]["leader"] = round(self.clock() - started, 2)
        for group in (self.etcd, self.managers):
            if self.wait(f"the commit of group {group.id}", timeout, functools.partial(self._committed, group))[0]:
                report["committed"].append(group.id)
        for group in (self.etcd, self.managers):
            self.wait(f"group {group.id} to converge with {len(group.logical_ids)} healthy members", timeout,
                      functools.partial(self.converged, group))
            report["seconds"][f"{group.id}_converged"] = round(self.clock() - started, 2)
        report["changed"] = bool(report["bootstrapped"] or report["committed"])
        report["leader"] = (self.status() or {}).get("Leader")
        return report

    # -- down --------------------------------------------------------------------------------

    def down(self, *, purge: bool = False) -> dict[str, Any]:
        """Free both groups, destroy every replica then every etcd member; with ``purge`` remove their files."""
        report: dict[str, Any] = {"changed": False, "freed": [], "destroyed": [], "purged": []}
        if self.status() is not None:
            for group in (self.managers, self.etcd):
                with contextlib.suppress(RemoteError):
                    self.call("Group.FreeGroup", {"ID": group.id})
                    report["freed"].append(group.id)
        for group in (self.managers, self.etcd):
            client, type_ = self._plugin(group.instance_plugin)
            for d in self.members(group):
                client.call("Instance.Destroy", {"Type": type_, "Instance": d["ID"], "Context": {"Reason": "terminate"}})
                report["destroyed"].append(d["ID"])
        if purge:
            for path in (Path(self.etcd_props.data_dir), Path(self.replica_props.config_dir)):
                if path.exists():
                    shutil.rmtree(path)
                    report["purged"].append(str(path))
        report["changed"] = bool(report["freed"] or report["destroyed"] or report["purged"])
        return report


def _same(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Is the stored spec the wanted one? (Compared as the controller canonicalises both.)"""
    from infrakit_runtime.group.plan.spec import parse_spec

    try:
        return parse_spec(stored).normalized() == parse_spec(wanted).normalized()
    except ValidationError:
        return json.dumps(stored, sort_keys=True) == json.dumps(wanted, sort_keys=True)
