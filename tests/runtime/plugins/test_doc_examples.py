"""Every group spec shown in docs/spec.md and docs/plugins.md is accepted by the real validator.

Each ```yaml block of those pages that is a group spec (``ID`` and ``Properties``) is committed
with ``Pretend: true`` to a real manager whose plugins are real daemons: process, aws (against
moto, behind its front), the three selectors, vanilla and targetgroup. A pretend commit runs the
same validation as a real one (the group's grammar, then each plugin's Validate, through the
selectors down to the aws plugin, which reads a named launch template from EC2 and checks that
target groups exist) and launches nothing. moto holds what the examples name and EC2 would have
to hold: the launch template ``app`` with three versions and the target group ``web-tg``. IDs
that only EC2 could check at launch (``ami-0abc``, ``subnet-aaa``) pass the offline shape check,
as they would in production.

The pages must also show every plugin and property of issue 16 with a worked example.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import Ec2World

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

DOCS = Path(__file__).resolve().parents[3] / "docs"
PAGES = ("spec.md", "plugins.md")
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)


def examples(page: str) -> list[tuple[str, dict[str, Any]]]:
    """(page:line, spec) for every yaml block on ``page`` that is a group spec."""
    text = (DOCS / page).read_text()
    found = []
    for m in BLOCK.finditer(text):
        doc = yaml.safe_load(m.group(1))
        if isinstance(doc, dict) and "ID" in doc and "Properties" in doc:
            found.append((f"{page}:{text.count(chr(10), 0, m.start()) + 1}", doc))
    return found


ALL = [e for page in PAGES for e in examples(page)]


def features(spec: dict[str, Any]) -> set[str]:
    """What an example shows: its plugins, and the aws properties of issue 16 it uses."""
    props = spec["Properties"]
    shown = {props["Instance"]["Plugin"], props["Flavor"]["Plugin"]}
    instance_props = props["Instance"].get("Properties")
    choices = instance_props if isinstance(instance_props, list) else [{"Properties": instance_props}]
    for choice in choices:
        p = choice.get("Properties") or {}
        shown |= {k for k in ("Volumes", "InstanceMarketOptions", "LaunchTemplate") if k in p}
        if "Instances" in choice:
            shown.add("pinned pets")
    if any(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", lid) for lid in props["Allocation"].get("LogicalIDs") or []):
        shown.add("IP logical IDs")
    return shown


ISSUE_16 = {"spread", "tiered", "weighted", "targetgroup", "Volumes", "IP logical IDs", "InstanceMarketOptions",
            "LaunchTemplate"}


@pytest.mark.parametrize("page", PAGES)
def test_each_page_shows_every_plugin_and_property_of_issue_16_in_a_worked_example(page):
    shown = set().union(*(features(spec) for _, spec in examples(page)))
    assert ISSUE_16 <= shown, f"{page} has no worked example for {sorted(ISSUE_16 - shown)}"


@pytest.fixture(scope="module")
def validators(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A manager and every plugin the examples name, once for the module; moto holds what they name."""
    moto_fixture.reset(moto_server)
    daemons = Daemons(tmp_path_factory.mktemp("docs"))
    observer = moto_fixture.observer(moto_server)
    world = Ec2World(daemons, moto_server, observer.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
    world.ec2.create_launch_template(LaunchTemplateName="app", LaunchTemplateData={
        "ImageId": world.ami, "InstanceType": "t3.micro"})
    for size in ("t3.small", "t3.medium"):
        world.ec2.create_launch_template_version(LaunchTemplateName="app", LaunchTemplateData={
            "ImageId": world.ami, "InstanceType": size})
    world.elb.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=world.vpc)
    try:
        world.start_aws()
        for kind in ("process", "spread", "tiered", "weighted", "vanilla"):
            world.start(kind)
        world.start("targetgroup", f"endpoint_url={moto_server}", "region=us-east-1",
                    env=moto_fixture.CREDS)
        world.start_manager()
        yield world
    finally:
        daemons.stop_all()


def pretend(world: Ec2World, spec: dict[str, Any]) -> str:
    deadline = time.monotonic() + 15
    while True:
        try:
            return world.call("Group.CommitGroup", {"Spec": spec, "Pretend": True})["Details"]
        except RemoteError as e:
            if "is not the leader" not in e.message or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def test_the_pages_have_group_spec_examples_to_check():
    assert len(ALL) >= 12, [where for where, _ in ALL]


@pytest.mark.parametrize(("where", "spec"), ALL, ids=[where for where, _ in ALL])
def test_a_documented_group_spec_is_accepted_by_the_real_validator(validators, where, spec):
    try:
        details = pretend(validators, spec)
    except RemoteError as e:
        pytest.fail(f"{where}: the example is refused: {e.message}")
    assert details.startswith("Managing "), (where, details)
    assert not validators.instances(spec["ID"], states=None), "a pretend commit launched nothing"


def test_the_validator_used_here_refuses_a_broken_example(validators):
    """The check above can fail: the first example, its instance type misspelt, is refused by field."""
    where, spec = next((w, s) for w, s in ALL if "Volumes" in features(s))
    broken = yaml.safe_load(yaml.safe_dump(spec))
    broken["Properties"]["Instance"]["Properties"]["InstanceTyp"] = "r6i.large"
    with pytest.raises(RemoteError) as err:
        pretend(validators, broken)
    assert "Properties.InstanceTyp is not a field of RunInstancesRequest (did you mean InstanceType?)" \
        in err.value.message, (where, err.value.message)
