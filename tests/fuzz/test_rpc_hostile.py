"""Hostile JSON-RPC against real daemons: every answer well-formed, nothing crashes, hangs or half-applies.

Each daemon kind that runs without a cloud (file, process, vanilla, combo, manager; aws against
an endpoint nobody listens on, for the offline Validate) runs once for this module as a real
process on a real Unix socket, logging at debug (so the traffic logger sees every hostile body
too). Hypothesis then fires malformed, wrong-typed, unicode-heavy and oversized params at every
method, garbage bodies, odd envelopes and batches, and odd HTTP. The last test checks each
daemon is alive, its memory stayed bounded and its log holds no traceback.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.rpc import flavor as rpc_flavor
from infrakit_runtime.rpc import group as rpc_group
from infrakit_runtime.rpc import instance as rpc_instance
from infrakit_runtime.rpc import manager as rpc_manager
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import RawClient, check_answer, count, examples, processes_with, rss_bytes, strict_json
from tests.runtime.conftest import Daemons, wait_for_socket

INSTANCE_METHODS = [*rpc_instance.InstanceService.methods, "Instance.ProvisionMany", "Instance.WaitChange"]
FLAVOR_METHODS = list(rpc_flavor.FlavorService.methods)
MANAGER_METHODS = [*rpc_group.GroupService.methods, *rpc_manager.ManagerService.methods]
KIND_METHODS: dict[str, list[str]] = {
    "file": INSTANCE_METHODS,
    "process": INSTANCE_METHODS,
    "vanilla": FLAVOR_METHODS,
    "combo": FLAVOR_METHODS,
    "manager": MANAGER_METHODS,
    # Validate is offline (botocore's model); every other call would wait on the dead endpoint.
    "aws": ["Instance.Validate"],
}
SOCKET = {"manager": "group"}
MUTATING = {
    "Instance.Provision", "Instance.ProvisionMany", "Instance.Label", "Instance.Destroy",
    "Group.CommitGroup", "Group.FreeGroup", "Group.DestroyGroup", "Group.DestroyInstances", "Group.SetSize",
}
# Memory a daemon may gain over the whole run (caches, allocator arenas kept after 8 MiB bodies).
RSS_GROWTH_LIMIT = 128 * 1024 * 1024

_VANILLA_PROPS = {"Init": ["echo hello"], "Tags": {"tier": "web"}, "Attachments": [{"ID": "vol-1", "Type": "ebs"}],
                  "Health": {"HTTP": "http://{{address}}/healthz", "Timeout": "1s"}, "Drain": {"Command": ["true"]}}
_SPEC = {
    "ID": "fuzz",
    "Properties": {
        "Allocation": {"Size": 1, "LogicalIDs": None},
        # Plugins nobody serves: a committed fuzz group must not touch the daemons under test.
        "Instance": {"Plugin": "nowhere", "Properties": {"Command": ["x"]}},
        "Flavor": {"Plugin": "nowhere-flavor", "Properties": {"Init": ["x"]}},
        "Updating": {"MaxSurge": 1, "MaxUnavailable": "25%", "Duration": "1s", "ProgressDeadline": "60s"},
        "Health": {"GracePeriod": "30s", "UnhealthyThreshold": 3, "MaxUnhealthy": "40%", "Interval": "5s"},
    },
}
_INSTANCE = {"ID": "instance-1", "LogicalID": "10.0.0.1", "Tags": {"infrakit.group": "web"},
             "Properties": {"Address": "127.0.0.1:9"}}


def example(kind: str, method: str) -> dict[str, Any]:
    """The method's documented example params, made richer so valid-looking calls reach plugin code."""
    for service in (rpc_instance.InstanceService, rpc_flavor.FlavorService, rpc_group.GroupService, rpc_manager.ManagerService):
        if method in service.methods:
            params = copy.deepcopy(service.methods[method].example)
            break
    else:
        params = copy.deepcopy(rpc_instance.InstanceService.extensions[method][2].example)
    instance_props: Any = {"Command": ["x"], "Env": {"A": "b"}, "Port": True}
    if kind == "aws":
        instance_props = {"ImageId": "ami-12345678", "InstanceType": "t3.micro", "MinCount": 1, "MaxCount": 1,
                          "TagSpecifications": [], "SecurityGroupIds": ["sg-1"]}
    if "Properties" in params and method.startswith("Instance.") and method != "Instance.DescribeInstances":
        params["Properties"] = instance_props
    for key in ("Spec",):
        if key in params and method.startswith(("Instance.", "Flavor.")):
            params[key] = {"Properties": instance_props, "Tags": {"a": "b"}, "Init": "echo", "LogicalID": "x",
                           "Attachments": [{"ID": "a", "Type": "t"}]}
    if "Specs" in params:
        params["Specs"] = [dict(params.get("Spec") or {"Properties": instance_props, "Tags": {"a": "b"}})]
    if method.startswith("Flavor."):
        params["Properties"] = {"Flavors": [{"Plugin": "vanilla", "Properties": _VANILLA_PROPS}]} if kind == "combo" \
            else _VANILLA_PROPS
        if "Instance" in params:
            params["Instance"] = _INSTANCE
        if "Instances" in params:
            params["Instances"] = [_INSTANCE]
        if "Indices" in params:
            params["Indices"] = [{"Group": "web", "Sequence": 1}]
    if method == "Group.CommitGroup":
        params["Spec"] = copy.deepcopy(_SPEC)
    if "ID" in params and method.startswith("Group."):
        params["ID"] = "fuzz"
    return params


class Fleet:
    """The daemons under fuzz, a raw client for each, and what they looked like at the start."""

    def __init__(self, daemons: Daemons, spawn_log: Path) -> None:
        self.daemons = daemons
        self.spawn_log = spawn_log
        self.clients: dict[str, RawClient] = {}
        self.rss_before: dict[str, int] = {}

    def socket(self, kind: str) -> str:
        return SOCKET.get(kind, kind)

    def client(self, kind: str) -> RawClient:
        if kind not in self.clients:
            self.clients[kind] = RawClient(self.daemons.plugins_dir / self.socket(kind))
        return self.clients[kind]

    def pid(self, kind: str) -> int:
        return self.daemons.procs[self.socket(kind)].pid

    def assert_alive(self, kind: str) -> None:
        proc = self.daemons.procs[self.socket(kind)]
        assert proc.poll() is None, f"{kind} daemon exited with {proc.returncode}:\n{self.daemons.log(self.socket(kind))[-3000:]}"
        answer = self.client(kind).call("Handshake.Hello")
        assert "result" in answer, answer

    def observe(self, kind: str) -> Any:
        """Everything a rejected call must leave unchanged."""
        c = self.client(kind)
        if kind == "manager":
            return c.call("Group.InspectGroups", {"Name": ""})
        if kind in ("file", "process"):
            return (c.call("Instance.DescribeInstances", {"Type": "", "Tags": None, "Properties": True}),
                    self.spawned())
        return None

    def spawned(self) -> list[str]:
        try:
            return self.spawn_log.read_text().split()
        except FileNotFoundError:
            return []


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    # A short directory: AF_UNIX paths are limited to ~107 bytes.
    home = Path(tempfile.mkdtemp(prefix="ikfz-"))
    daemons = Daemons(home / "home")
    spawn_log = home / "spawned.pids"
    env = {"INFRAKIT_LOG_LEVEL": "debug", "AWS_ACCESS_KEY_ID": "AKIAFUZZFUZZFUZZFUZZ",
           "AWS_SECRET_ACCESS_KEY": "fuzz-secret", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "INFRAKIT_CLIENT_TIMEOUT": "5s"}
    procs = {}
    for kind, args in (("file", ()), ("process", ()), ("vanilla", ()), ("combo", ()),
                       ("manager", ("-o", "poll_interval=1s")),
                       ("aws", ("-o", "endpoint_url=http://127.0.0.1:9", "-o", "region=us-east-1",
                                "-o", "max_attempts=1"))):
        procs[kind] = daemons.start(kind, *args, env=env, wait=False)
    fleet = Fleet(daemons, spawn_log)
    try:
        for kind, proc in procs.items():
            wait_for_socket(daemons.plugins_dir / fleet.socket(kind), timeout=30, proc=proc)
        for kind in procs:
            fleet.assert_alive(kind)
            fleet.rss_before[kind] = rss_bytes(fleet.pid(kind))
        yield fleet
    finally:
        _teardown(fleet)


def _teardown(fleet: Fleet) -> None:
    with contextlib.suppress(Exception):
        described = fleet.client("process").call("Instance.DescribeInstances", {"Type": ""})
        for d in described.get("result", {}).get("Descriptions") or []:
            fleet.client("process").call("Instance.Destroy", {"Type": "", "Instance": d["ID"]})
    for c in fleet.clients.values():
        c.close()
    fleet.daemons.stop_all()
    # Instances the process plugin started for fuzzed Provisions outlive it by design; stop ours.
    for pid in processes_with(fz.MARKER):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _clamp(method: str, params: Any) -> Any:
    """Keep long polls short: WaitChange may hold a call for up to a minute by design."""
    if method == "Instance.WaitChange" and isinstance(params, dict):
        timeout = params.get("Timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            params["Timeout"] = 0
        elif "Timeout" not in params or timeout is None:
            params["Timeout"] = 0
    return params


def _expected(body: bytes) -> Any:
    """What the server should take the body to be, or ``UNPARSEABLE``."""
    try:
        # As the server decodes: bytes with a BOM or in UTF-16/32 are detected, NaN is refused.
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return UNPARSEABLE


UNPARSEABLE = object()


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _check(status: int, payload: bytes, request: Any) -> list[dict[str, Any]]:
    if request is UNPARSEABLE:
        assert status == 200, (status, payload[:200])
        decoded = strict_json(payload)
        assert isinstance(decoded, dict) and "error" in decoded and decoded["id"] is None, decoded
        return [decoded]
    return check_answer(status, payload, request)


ALL_CASES = [(kind, method) for kind, methods in KIND_METHODS.items() for method in methods]
ids = st.one_of(st.integers(-(2**64), 2**64), fz.hostile_text, st.none(), st.floats(allow_nan=False, allow_infinity=False),
                fz.json_values)


@pytest.mark.parametrize(("kind", "method"), ALL_CASES, ids=[f"{k}-{m}" for k, m in ALL_CASES])
def test_every_method_answers_hostile_params_with_a_well_formed_response(fleet: Fleet, kind: str, method: str) -> None:
    client = fleet.client(kind)
    name = f"rpc-params[{kind}-{method}]"

    @settings(max_examples=examples(60))
    @given(params=fz.params_like(example(kind, method)), wrap=st.sampled_from(["object", "array", "bad-array"]),
           req_id=ids, ascii_only=st.booleans())
    def run(params: dict[str, Any], wrap: str, req_id: Any, ascii_only: bool) -> None:
        params = _clamp(method, fz.defang(params, spawn_log=str(fleet.spawn_log)))
        wire_params: Any = {"object": params, "array": [params], "bad-array": [params, params]}[wrap]
        message = {"jsonrpc": "2.0", "method": method, "params": wire_params, "id": req_id}
        body = fz.encode(message, ascii_only=ascii_only)
        before = fleet.observe(kind) if method in MUTATING else None
        status, payload = client.request(body)
        (answer,) = _check(status, payload, _expected(body))
        count(name)
        if "error" in answer:
            count(name, "rejected")
            if method in MUTATING:
                assert fleet.observe(kind) == before, f"a rejected {method} changed the daemon's state"
        id_ok = req_id is None or (isinstance(req_id, (str, int, float)) and not isinstance(req_id, bool))
        if wrap == "bad-array" and id_ok and _expected(body) is not UNPARSEABLE:
            assert answer["error"]["code"] == -32602, answer

    run()
    fleet.assert_alive(kind)


envelopes = st.fixed_dictionaries({}, optional={
    "jsonrpc": st.one_of(st.just("2.0"), fz.json_values),
    "method": st.one_of(st.sampled_from([*MANAGER_METHODS, *INSTANCE_METHODS, *FLAVOR_METHODS, "Handshake.Hello",
                                         "Instance.", ".", "", "Handshake", "Nope.Hello", "Instance.validate"]),
                        fz.hostile_text, fz.json_values),
    "params": st.one_of(st.just({}), fz.json_values, st.lists(fz.json_values, max_size=3)),
    "id": ids,
})


@pytest.mark.parametrize("kind", list(KIND_METHODS))
def test_odd_envelopes_and_batches_get_well_formed_responses(fleet: Fleet, kind: str) -> None:
    client = fleet.client(kind)
    name = f"rpc-envelopes[{kind}]"

    @settings(max_examples=examples(200))
    @given(message=st.one_of(envelopes, st.lists(envelopes, max_size=6), fz.json_values), ascii_only=st.booleans())
    def run(message: Any, ascii_only: bool) -> None:
        message = fz.defang(message, spawn_log=str(fleet.spawn_log))
        if isinstance(message, dict):
            message = _clamp(str(message.get("method")), message)
        body = fz.encode(message, ascii_only=ascii_only)
        status, payload = client.request(body)
        _check(status, payload, _expected(body))
        count(name)

    run()
    fleet.assert_alive(kind)


@pytest.mark.parametrize("kind", list(KIND_METHODS))
def test_garbage_bodies_get_a_parse_or_request_error(fleet: Fleet, kind: str) -> None:
    client = fleet.client(kind)
    name = f"rpc-garbage[{kind}]"
    for body in fz.GARBAGE_BODIES:
        status, payload = client.request(body)
        _check(status, payload, _expected(body))
        count(name)

    @settings(max_examples=examples(200))
    @given(body=st.one_of(st.binary(max_size=300),
                          st.builds(lambda b, cut: b[:cut], st.sampled_from(fz.GARBAGE_BODIES), st.integers(0, 80))))
    def run(body: bytes) -> None:
        status, payload = client.request(body)
        _check(status, payload, _expected(body))
        count(name)

    run()
    fleet.assert_alive(kind)


_HTTP_METHODS = ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "BREW"]
content_types = st.one_of(
    st.sampled_from(["text/plain", "application/xml", "multipart/form-data; boundary=x", "", "application/jsonx",
                     "application", "*/*", "application/x-www-form-urlencoded", "json"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40),
)
paths = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="#?%"),
                max_size=30).map(lambda p: "/" + p)


@pytest.mark.parametrize("kind", list(KIND_METHODS))
def test_wrong_http_methods_content_types_and_paths_get_the_documented_status(fleet: Fleet, kind: str) -> None:
    client = fleet.client(kind)
    name = f"http[{kind}]"
    hello = b'{"jsonrpc":"2.0","method":"Handshake.Hello","params":{},"id":1}'
    for verb in _HTTP_METHODS:
        status, _ = client.request(hello if verb != "HEAD" else None, method=verb)
        # aiohttp's parser answers 400 itself for a method it does not know.
        assert status == (400 if verb == "BREW" else 405), (verb, status)
        count(name)

    @settings(max_examples=examples(60))
    @given(ctype=content_types)
    def run_ctypes(ctype: str) -> None:
        status, payload = client.request(hello, headers={"Content-Type": ctype})
        if ctype.split(";", 1)[0].strip().lower() in ("application/json", "application/json-rpc",
                                                       "application/jsonrequest"):
            check_answer(status, payload, json.loads(hello))
        else:
            assert status == 415, (ctype, status, payload[:200])
        count(name)

    @settings(max_examples=examples(60))
    @given(path=paths, verb=st.sampled_from(["GET", "POST"]))
    def run_paths(path: str, verb: str) -> None:
        status, payload = client.request(hello, method=verb, target=path)
        known = {"/", "/info/api.json", "/info/functions.json"} | ({"/events"} if kind == "manager" else set())
        if path in known:
            return
        assert status in (404, 405), (path, status, payload[:200])
        count(name)

    run_ctypes()
    run_paths()
    fleet.assert_alive(kind)


@pytest.mark.parametrize("kind", list(KIND_METHODS))
def test_bodies_past_the_limits_are_refused_with_an_error(fleet: Fleet, kind: str) -> None:
    from infrakit_runtime.rpc.dispatch import MAX_NESTING
    from infrakit_runtime.rpc.server import MAX_BODY_BYTES

    client = fleet.client(kind)
    big = b'{"jsonrpc":"2.0","method":"Handshake.Hello","params":{"x":"' + b"a" * MAX_BODY_BYTES + b'"},"id":1}'
    for body in (big, b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1), b"[" * 200_000 + b"]" * 200_000):
        status, payload = client.request(body)
        (answer,) = _check(status, payload, UNPARSEABLE if body is big else _expected(body))
        assert answer["error"]["code"] in (-32600, -32700), answer
        count(f"limits[{kind}]")
    fleet.assert_alive(kind)


def unexpected_tracebacks(log: str) -> list[str]:
    """Tracebacks in a daemon log, except aiohttp's own for a malformed HTTP request line (answered 400)."""
    found = []
    for block in log.split("Traceback (most recent call last):")[1:]:
        last = next((line for line in block.splitlines() if line and not line.startswith((" ", "\t"))), "")
        if not last.startswith("aiohttp.http_exceptions."):
            found.append(block[:4000])
    return found


@pytest.mark.parametrize("kind", list(KIND_METHODS))
def test_daemons_survived_with_bounded_memory_and_no_traceback(fleet: Fleet, kind: str) -> None:
    fleet.assert_alive(kind)
    grown = rss_bytes(fleet.pid(kind)) - fleet.rss_before[kind]
    assert grown < RSS_GROWTH_LIMIT, f"{kind} grew by {grown / 2**20:.0f} MiB"
    log = fleet.daemons.log(fleet.socket(kind))
    assert not unexpected_tracebacks(log), unexpected_tracebacks(log)[0]
    count(f"survivors[{kind}]")


def test_rejected_provisions_spawned_no_process(fleet: Fleet) -> None:
    """Every recorded spawn belongs to an instance the process plugin reports (none leaked on refusal)."""
    described = fleet.client("process").call("Instance.DescribeInstances", {"Type": "", "Properties": True})
    live = processes_with(fz.MARKER)
    spawned = {int(p) for p in fleet.spawned()}
    count("process-spawns", "spawned", len(spawned))
    count("process-spawns", "instances", len(described["result"]["Descriptions"] or []))
    # Each running marker process was spawned by an accepted Provision and is still described.
    assert live <= spawned, live - spawned
    assert len(described["result"]["Descriptions"] or []) >= len(live)
