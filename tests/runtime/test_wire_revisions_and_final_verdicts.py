"""Our two additive steady-state extensions on the wire: InstanceRevision and HealthyMany's ``Final``.

The real services and clients meet through the real dispatcher in one process (no socket: the
codecs are under test, not HTTP). A file plugin stamps each listing with a revision and answers
"unchanged" for a current one; a restarted plugin never repeats one; a daemon that does not
announce InstanceRevision (InfraKit's) is sent a plain DescribeInstances. Vanilla says ``Final``
exactly when its Properties declare no probe; the single ``Flavor.Healthy`` answer is unchanged
(InfraKit's recording, ``test_wire_replay_flavor.py``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from infrakit_runtime import fsutil
from infrakit_runtime.plugins.flavor.vanilla import VanillaFlavorPlugin
from infrakit_runtime.plugins.instance.file import FileInstancePlugin
from infrakit_runtime.rpc.dispatch import Dispatcher
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.flavor import FlavorClient, FlavorService
from infrakit_runtime.rpc.instance import InstanceClient, InstanceService
from infrakit_runtime.spi import flavor, instance

GROUP = {instance.TAG_GROUP: "web"}


class LocalClient:
    """The ``rpc.client.Client`` surface the SPI clients use, answered by a dispatcher in this process."""

    timeout = 10.0

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.name = dispatcher.name
        self.methods: list[str] = []

    async def call(self, method: str, params: dict[str, Any], *, timeout: float | None = None) -> Any:
        self.methods.append(method)
        answer = await self.dispatcher.handle_message({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert answer is not None
        if "error" in answer:
            raise RemoteError(self.name, method, answer["error"]["code"], answer["error"]["message"])
        return answer["result"]

    async def hello(self, *, timeout: float | None = None) -> dict[str, Any]:
        return dict((await self.call("Handshake.Hello", {}))["Objects"])


class WithoutRevisions:
    """A file plugin as InfraKit's is: no InstanceRevision (nor the other extensions)."""

    def __init__(self, inner: FileInstancePlugin) -> None:
        for name in ("validate", "provision", "label", "destroy", "describe_instances"):
            setattr(self, name, getattr(inner, name))


def _still(directory: Path) -> None:
    """Date the directory's last change back past the listing guard (see ``fsutil.RecordDirectory``)."""
    past = time.time_ns() - 10 * fsutil.LISTING_GUARD_NS
    os.utime(directory, ns=(past, past))


def _file_client(plugin: Any) -> tuple[InstanceClient, LocalClient]:
    local = LocalClient(Dispatcher("file", [InstanceService({"": plugin})]))
    return InstanceClient(local), local  # type: ignore[arg-type]


def test_a_current_revision_gets_no_list_and_any_change_gets_the_whole_list(tmp_path):
    async def main() -> None:
        files = FileInstancePlugin(tmp_path)
        client, local = _file_client(files)
        assert str(instance.REVISION_INTERFACE) in await local.hello()
        first = await files.provision(instance.Spec(tags=GROUP))
        _still(tmp_path)
        listed = await client.describe_since(GROUP, True, "")
        assert [d.id for d in listed.descriptions or []] == [first] and listed.revision
        again = await client.describe_since(GROUP, True, listed.revision)
        assert again.descriptions is None and again.revision == listed.revision
        assert local.methods[-1] == "Instance.DescribeSince"

        second = await files.provision(instance.Spec(tags=GROUP))
        changed = await client.describe_since(GROUP, True, listed.revision)
        assert changed.descriptions is not None and {d.id for d in changed.descriptions} == {first, second}
        assert changed.revision != listed.revision

        restarted, _ = _file_client(FileInstancePlugin(tmp_path))  # same directory, new run of the plugin
        _still(tmp_path)
        after = await restarted.describe_since(GROUP, True, changed.revision)
        assert after.descriptions is not None and {d.id for d in after.descriptions} == {first, second}

    asyncio.run(main())


def test_a_plugin_that_does_not_announce_revisions_is_sent_describe_instances(tmp_path):
    async def main() -> None:
        files = FileInstancePlugin(tmp_path)
        client, local = _file_client(WithoutRevisions(files))
        assert str(instance.REVISION_INTERFACE) not in await local.hello()
        iid = await files.provision(instance.Spec(tags=GROUP))
        for revision in ("", "anything"):
            listed = await client.describe_since(GROUP, True, revision)
            assert [d.id for d in listed.descriptions or []] == [iid] and listed.revision == ""
        assert "Instance.DescribeSince" not in local.methods
        assert local.methods.count("Instance.DescribeInstances") == 2

    asyncio.run(main())


def test_vanilla_says_final_only_without_a_probe_and_keeps_healthy_as_infrakit_answers_it():
    async def main() -> None:
        local = LocalClient(Dispatcher("vanilla", [FlavorService({"": VanillaFlavorPlugin()})]))
        client = FlavorClient(local)  # type: ignore[arg-type]
        member = instance.Description(id="instance-1", tags={})
        plain = await client.assess_many({"Init": ["echo hello"]}, [member])
        assert plain == [flavor.Assessment(flavor.Health.HEALTHY, final=True)]
        probed = await client.assess_many({"Health": {"TCP": "{{address}}:1"}}, [member])  # no address yet
        assert [a.final for a in probed] == [False] and probed[0].health == flavor.Health.UNKNOWN
        single = await local.call("Flavor.Healthy", {"Type": "", "Properties": {"Init": ["echo hello"]},
                                                     "Instance": {"ID": "instance-1", "Tags": {}}})
        assert single == {"Type": "", "Health": 1}

    asyncio.run(main())
