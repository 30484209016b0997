"""Replay InfraKit's recorded exchanges with its file plugin against our file plugin daemon.

Every request recorded on the ``file`` socket in ``shared/wire/`` is sent byte for
byte over a real Unix socket. Results must be equal (the plugin directory is
seeded with the instances the recording saw); errors must carry the same code,
except where InfraKit departs from JSON-RPC 2.0 and we follow the standard —
those departures are listed in ``STANDARD_CODES`` with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.runtime.conftest import WIRE
from tests.runtime.test_rpc_errors import post

# InfraKit code -> our code, where InfraKit is off-standard.
STANDARD_CODES = {
    "error-unknown-method.json": -32601,  # InfraKit: -32000; JSON-RPC 2.0: method not found
    "error-unknown-service.json": -32601,  # same
    "error-params-type.json": -32602,  # InfraKit: -32600; JSON-RPC 2.0: invalid params
}


def recordings() -> list[Path]:
    if not WIRE.is_dir():
        return []
    found = []
    for path in sorted(WIRE.glob("*.json")):
        doc = json.loads(path.read_text())
        if doc.get("socket") == "$INFRAKIT_PLUGINS_DIR/file" and doc.get("request"):
            found.append(path)
    return found


def seed(directory: Path, descriptions: list[dict]) -> None:
    """Write instance files as InfraKit's file plugin would have held them."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for d in descriptions:
        spec = d.get("Properties") or {"Properties": None, "Tags": d.get("Tags"), "Init": "", "LogicalID": d.get("LogicalID"), "Attachments": None}
        record = {"ID": d["ID"], "LogicalID": d.get("LogicalID"), "Tags": d.get("Tags"), "Spec": spec}
        (directory / d["ID"]).write_text(json.dumps(record))


@pytest.fixture
def file_plugin(daemons):
    directory = daemons.home / "instances"
    directory.mkdir()
    daemons.start("file", env={"INFRAKIT_INSTANCE_FILE_DIR": str(directory)})
    return daemons.plugins_dir / "file", directory


@pytest.mark.skipif(not recordings(), reason="shared/wire recordings are not beside the checkout")
@pytest.mark.parametrize("path", recordings(), ids=lambda p: p.name)
def test_recorded_file_plugin_exchange_gives_the_same_answer(file_plugin, path):
    socket_path, directory = file_plugin
    doc = json.loads(path.read_text())
    request, response = doc["request"], doc["response"]
    method = request["request_line"].split()[0]
    url = request["request_line"].split()[1]
    body = request.get("body")
    expected = response.get("body")

    # Put the plugin directory in the state the recording saw.
    if isinstance(body, dict) and body.get("method") == "Instance.DescribeInstances" and expected and "result" in expected:
        seed(directory, expected["result"]["Descriptions"])
    elif isinstance(body, dict) and body.get("method") in ("Instance.Label", "Instance.Destroy") and "result" in (expected or {}):
        seed(directory, [{"ID": body["params"]["Instance"], "Tags": {}}])
    else:
        seed(directory, [])

    headers = {h.split(":", 1)[0].lower(): h.split(":", 1)[1].strip() for h in request["headers"]}
    status, data = post(socket_path, request.get("body_raw") or "", content_type=headers.get("content-type"), method=method, url=url)
    expected_status = response.get("status") or int(response["status_line"].split()[1])
    assert status == expected_status, data

    if status != 200:
        return
    if path.name == "error-malformed-json.json":
        # InfraKit answers a syntax error with an empty body; JSON-RPC 2.0 requires -32700 and so do we.
        assert json.loads(data)["error"]["code"] == -32700
        return
    if url == "/info/api.json":
        ours = json.loads(data)
        assert ours["Implements"] == expected["Implements"]
        theirs_methods = {m["Request"]["method"] for i in expected["Interfaces"] for m in i["Methods"]}
        our_methods = {m["Request"]["method"] for i in ours["Interfaces"] for m in i["Methods"]}
        assert theirs_methods <= our_methods
        return
    if expected is None:
        assert data == b"", "a notification gets no answer"
        return
    ours = json.loads(data)
    assert ours["id"] == expected["id"]
    if "error" in expected:
        assert "error" in ours, ours
        assert ours["error"]["code"] == STANDARD_CODES.get(path.name, expected["error"]["code"])
        if expected["error"]["code"] == -32000 and path.name not in STANDARD_CODES:
            message = expected["error"]["message"].replace("$INFRAKIT_INSTANCE_FILE_DIR", str(directory))
            assert ours["error"]["message"] == message
        return
    result = ours["result"]
    if body.get("method") == "Handshake.Hello":
        # Our extensions are additive: InfraKit's objects must all be there, unchanged.
        for key, objects in expected["result"]["Objects"].items():
            assert result["Objects"][key] == objects
        return
    if body.get("method") == "Instance.Provision":
        assert set(result) == set(expected["result"]) and re.fullmatch(r"instance-\d+", result["ID"])
        return
    assert result == expected["result"]


def test_sample_instance_file_written_by_infrakit_is_described(file_plugin):
    socket_path, directory = file_plugin
    sample = (WIRE / "sample-instance-file.txt").read_text()
    record = json.loads(sample)
    (directory / record["ID"]).write_text(sample)
    _, data = post(socket_path, json.dumps({"jsonrpc": "2.0", "method": "Instance.DescribeInstances",
                                                 "params": {"Tags": {"infrakit.group": "workers"}, "Properties": True}, "id": 1}))
    (only,) = json.loads(data)["result"]["Descriptions"]
    assert only["ID"] == record["ID"] and only["Tags"] == record["Tags"] and only["Properties"] == record["Spec"]
