"""InstanceRevision by content for the plugins that must ask their source: process, aws, selectors.

Each is driven as a user's controller drives it: the process and aws daemons over their Unix
sockets (real processes; moto's standalone server for EC2), the selector over real file plugins.
The promise under test is ``instance.Revised``'s: a revision the plugin returned gets no list
while the members are the same, and any change to what it lists (a member gone, a new one, a
label) gets the whole list with a new revision.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from infrakit_runtime.plugins.instance import revisions
from infrakit_runtime.plugins.instance.file import FileInstancePlugin
from infrakit_runtime.plugins.instance.selector.plugin import SelectorPlugin
from infrakit_runtime.spi import instance
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins import process_helpers as ph
from tests.runtime.plugins.moto_fixture import start_aws

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

REVISION = str(instance.REVISION_INTERFACE)
WEB = {instance.TAG_GROUP: "web"}


def since(call: Any, revision: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return call("Instance.DescribeSince", {"Type": "", "Tags": tags or WEB, "Properties": True, "Revision": revision})


def _d(iid: str, **tags: str) -> instance.Description:
    return instance.Description(id=iid, tags={instance.TAG_GROUP: "web", **tags}, properties={"n": 1})


def test_a_digest_names_the_members_whatever_their_order_and_changes_with_any_of_them():
    a, b = _d("i-1"), _d("i-2")
    assert revisions.digest([a, b]) == revisions.digest([b, a])
    assert revisions.digest([a, b]).startswith(revisions.PREFIX)
    changed = [
        [a],
        [a, b, _d("i-3")],
        [a, _d("i-2", extra="label")],
        [a, instance.Description(id="i-2", tags=b.tags, properties={"n": 2})],
        [a, instance.Description(id="i-2", logical_id="web-2", tags=b.tags, properties=b.properties)],
    ]
    digests = {revisions.digest(c) for c in changed}
    assert len(digests) == len(changed) and revisions.digest([a, b]) not in digests

    async def answers() -> tuple[instance.Listing, instance.Listing]:
        async def listed() -> list[instance.Description]:
            return [a, b]
        first = await revisions.listing_since(listed(), "")
        return first, await revisions.listing_since(listed(), first.revision)

    first, again = asyncio.run(answers())
    assert first.descriptions == [a, b] and again.descriptions is None and again.revision == first.revision


def test_the_process_daemon_answers_unchanged_until_a_member_dies_or_is_relabelled(start_process_daemon, marker):
    call = start_process_daemon()
    assert REVISION in call.client.hello()
    sleeper = {"Command": [sys.executable, "-c", ph.SLEEP_PY, marker], "Port": False}
    ids = [call.provision(sleeper, tags=WEB) for _ in range(2)]
    other = call.provision(sleeper, tags={instance.TAG_GROUP: "other"})

    first = since(call.client.call, "")
    assert sorted(d["ID"] for d in first["Descriptions"]) == sorted(ids) and first["Unchanged"] is False
    again = since(call.client.call, first["Revision"])
    assert (again["Revision"], again["Unchanged"], again["Descriptions"]) == (first["Revision"], True, None)

    call("Label", Instance=ids[0], Labels={"role": "primary"})
    relabelled = since(call.client.call, first["Revision"])
    assert relabelled["Unchanged"] is False and relabelled["Revision"] != first["Revision"]
    assert {d["ID"]: d["Tags"].get("role") for d in relabelled["Descriptions"]} == {ids[0]: "primary", ids[1]: None}

    pid = call.pids(WEB)[ids[1]]
    os.kill(pid, signal.SIGKILL)
    gone = ph.eventually(lambda: (a := since(call.client.call, relabelled["Revision"]))["Unchanged"] is False and a)
    assert [d["ID"] for d in gone["Descriptions"]] == [ids[0]]
    assert since(call.client.call, gone["Revision"])["Unchanged"] is True
    call.destroy(ids[0])
    call.destroy(other)


def test_the_aws_daemon_answers_unchanged_until_ec2_changes(daemons, moto, ec2, ami):
    plugin = start_aws(daemons, moto)
    assert REVISION in plugin.hello()
    spec = {"Properties": {"ImageId": ami, "InstanceType": "t3.micro"}, "Tags": WEB, "Init": "", "LogicalID": None}
    first_id = plugin.call("Instance.Provision", {"Type": "", "Spec": spec})["ID"]

    first = since(plugin.call, "")
    assert [d["ID"] for d in first["Descriptions"]] == [first_id]
    assert since(plugin.call, first["Revision"])["Unchanged"] is True

    ec2.terminate_instances(InstanceIds=[first_id])  # behind the plugin's back, as an operator or AWS would
    emptied = since(plugin.call, first["Revision"])
    assert emptied["Unchanged"] is False and emptied["Descriptions"] == []
    assert since(plugin.call, emptied["Revision"])["Unchanged"] is True


def test_a_selector_answers_unchanged_until_one_of_its_choices_changes(tmp_path):
    zones = {z: FileInstancePlugin(tmp_path / z) for z in ("a", "b")}
    for plugin in zones.values():
        plugin.directory.mkdir(parents=True, exist_ok=True)
    sel = SelectorPlugin(policy="spread", lookup=zones.__getitem__)
    choices = [{"Name": f"zone-{z}", "Plugin": z, "Properties": {"zone": z}} for z in zones]
    spec = instance.Spec(properties=choices, tags={**WEB, instance.TAG_CONFIG_HASH: "h"})

    async def scenario() -> None:
        placed = await sel.provision_many([spec, spec])
        first = await sel.describe_since(WEB, True, "")
        assert sorted(d.id for d in first.descriptions or []) == sorted(r.id for r in placed if r.id)
        assert (await sel.describe_since(WEB, True, first.revision)).descriptions is None
        await zones["b"].destroy(next(iter(zones["b"].directory.iterdir())).name, instance.Context())
        after = await sel.describe_since(WEB, True, first.revision)
        assert after.descriptions is not None and len(after.descriptions) == 1 and after.revision != first.revision

    asyncio.run(scenario())
