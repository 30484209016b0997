"""Every request recorded against InfraKit's vanilla flavor gets the same answer from ours.

Each vector in shared/wire/ whose socket is the vanilla plugin is replayed byte
for byte over our daemon's Unix socket. Results are compared as parsed JSON, so
two of Go's encoding quirks deliberately do not count (flavor-prepare-escaping.json):
Go writes ``<``, ``>`` and ``&`` as ``\\u003c``, ``\\u003e``, ``\\u0026`` and keeps the
number text ``1.50`` of a raw Properties value, where we write the characters
themselves and ``1.5``. Both decode to the same JSON value, which is all a JSON
client (Go's included) sees.

One difference is deliberate and additive (DESIGN.md section 2): our daemons also
announce the FlavorBatch extension in Handshake.Hello and list its methods in
/info/api.json. InfraKit's Go client looks up only the interfaces it knows, so
the recorded part must be there unchanged and nothing else may be added.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit_runtime.spi import flavor
from tests.runtime.conftest import Daemons

WIRE = Path(__file__).resolve().parents[3].parent / "shared" / "wire"
VANILLA_SOCKET = "$INFRAKIT_PLUGINS_DIR/vanilla"
# What the brief and the recordings promise; the replay must not silently shrink.
EXPECTED_VECTORS = {
    "error-flavor-validate-both.json",
    "flavor-healthy.json",
    "flavor-prepare-escaping.json",
    "flavor-prepare.json",
    "flavor-validate.json",
    "go-client-flavor-drain-vanilla.json",
    "go-client-flavor-healthy-vanilla.json",
    "go-client-flavor-prepare-vanilla.json",
    "go-client-flavor-validate-vanilla.json",
    "handshake-hello-vanilla.json",
    "info-api-vanilla.json",
    "info-functions-vanilla.json",
}


# Our additive extension: the interface announced beside Flavor/0.1.1 and the methods it adds.
EXTENSION_METHODS = {"Flavor.HealthyMany", "Flavor.PrepareMany"}


def vanilla_vectors() -> list[Path]:
    return sorted(p for p in WIRE.glob("*.json") if json.loads(p.read_text()).get("socket") == VANILLA_SOCKET)


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("h", timeout=10)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def replay(sock: Path, recorded_request: dict) -> tuple[int, bytes]:
    """Send the recorded request line, Content-Type and raw body exactly as captured."""
    method, path, _ = recorded_request["request_line"].split(" ", 2)
    headers = {}
    for line in recorded_request["headers"]:
        name, _, value = line.partition(": ")
        if name.lower() == "content-type":
            headers[name] = value
    body = recorded_request["body_raw"]
    conn = UnixHTTP(sock)
    try:
        conn.request(method, path, body=body.encode() if body is not None else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def vanilla_socket(tmp_path_factory) -> Iterator[Path]:
    """One vanilla daemon for every vector: it keeps no state between calls, and starts cost time."""
    daemons = Daemons(tmp_path_factory.mktemp("wire-vanilla") / "home")
    try:
        daemons.start("vanilla")
        yield daemons.plugins_dir / "vanilla"
    finally:
        daemons.stop_all()


def test_the_replay_covers_every_recorded_vanilla_request():
    assert {p.name for p in vanilla_vectors()} == EXPECTED_VECTORS


@pytest.mark.parametrize("vector", vanilla_vectors(), ids=lambda p: p.stem)
def test_our_vanilla_answers_each_recorded_request_as_infrakit_did(vanilla_socket: Path, vector: Path):
    recorded = json.loads(vector.read_text())
    status, payload = replay(vanilla_socket, recorded["request"])
    expected = recorded["response"]["body"]
    assert status == recorded["response"].get("status", 200)
    answer = json.loads(payload)

    if vector.name == "info-api-vanilla.json":
        # The document's example responses are zero values we do not reproduce; what a
        # client relies on is which interfaces are implemented and which methods exist.
        assert answer["Implements"] == expected["Implements"]
        assert answer["Vendor"] == expected["Vendor"]

        def methods(doc: dict) -> list[tuple[str, str, list[str]]]:
            return [(i["Name"], i["Version"], [m["Request"]["method"] for m in i["Methods"]])
                    for i in doc["Interfaces"]]

        ours, theirs = methods(answer), methods(expected)
        assert [(n, v) for n, v, _ in ours] == [(n, v) for n, v, _ in theirs]
        for (_, _, our_methods), (_, _, their_methods) in zip(ours, theirs, strict=True):
            assert [m for m in our_methods if m not in EXTENSION_METHODS] == their_methods
            assert set(our_methods) - set(their_methods) == EXTENSION_METHODS
        return
    if vector.name == "info-functions-vanilla.json":
        # InfraKit lists the Go template functions it can render under "builtin" (its CLI reads that
        # key); our vanilla renders no template functions, so it honestly lists none, in the same shape.
        assert set(answer) == set(expected) == {"builtin"}
        assert answer["builtin"] == []
        return

    if vector.name == "handshake-hello-vanilla.json":
        objects = dict(answer["result"]["Objects"])
        assert objects.pop(str(flavor.BATCH_INTERFACE)) == expected["result"]["Objects"]["Flavor/0.1.1"]
        answer["result"]["Objects"] = objects
    assert answer["id"] == expected["id"]
    assert answer["jsonrpc"] == "2.0"
    if "error" in expected:
        assert "result" not in answer
        assert answer["error"]["code"] == expected["error"]["code"]
        assert answer["error"]["message"] == expected["error"]["message"]
    else:
        assert "error" not in answer, answer
        assert answer["result"] == expected["result"]
