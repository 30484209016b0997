"""Bad input gets the right JSON-RPC code and a message naming the problem; the daemon keeps serving."""

from __future__ import annotations

import http.client
import json
import socket

import pytest


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("h", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def post(path, body: bytes | str, content_type: str | None = "application/json", method: str = "POST", url: str = "/"):
    conn = UnixHTTP(str(path))
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request(method, url, body=body.encode() if isinstance(body, str) else body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.fixture
def file_socket(daemons):
    daemons.start("file")
    return daemons.plugins_dir / "file"


def rpc(path, method, params, id_=1):
    status, data = post(path, json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": id_}))
    assert status == 200
    return json.loads(data)


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ('{"jsonrpc":"2.0","method":', -32700, "not valid JSON"),
        ('{"jsonrpc":"1.0","method":"Instance.DescribeInstances","params":{},"id":1}', -32600, "jsonrpc must be 2.0"),
        # Go InfraKit answers a method that is not a string with -32700 (its decoder fails on it): so do we.
        ('{"jsonrpc":"2.0","method":5,"params":{},"id":1}', -32700, "method must be a string"),
        ('{"jsonrpc":"2.0","method":"Instance.Nope","params":{},"id":1}', -32601, "Instance.Nope"),
        ('{"jsonrpc":"2.0","method":"Group.DescribeGroup","params":{"ID":"x"},"id":1}', -32601, "can't find service"),
        ('{"jsonrpc":"2.0","method":"Instance.DescribeInstances","params":{"Tags":"x"},"id":1}', -32602, "Tags must be an object"),
        ('{"jsonrpc":"2.0","method":"Instance.DescribeInstances","params":5,"id":1}', -32602, "params must be an object"),
        ('{"jsonrpc":"2.0","method":"Instance.Destroy","params":{"Context":{}},"id":1}', -32602, "Instance is required"),
        ('{"jsonrpc":"2.0","method":"Instance.Provision","params":{"Spec":{"Tags":{"a":1}}},"id":1}', -32602, "Spec.Tags.a must be a string"),
        ('{"jsonrpc":"2.0","method":"Instance.Validate","params":{"Type":"nosuch"},"id":1}', -32000, "nosuch"),
        ("[" * 10000 + "]" * 10000, -32700, "nested"),
    ],
)
def test_bad_requests_get_a_precise_error_and_the_daemon_keeps_serving(file_socket, body, code, words):
    status, data = post(file_socket, body)
    assert status == 200
    answer = json.loads(data)
    assert answer["error"]["code"] == code, answer
    assert words in answer["error"]["message"]
    assert rpc(file_socket, "Instance.DescribeInstances", {})["result"]["Descriptions"] == []


def test_huge_body_is_refused_with_a_json_rpc_error(file_socket):
    body = json.dumps({"jsonrpc": "2.0", "method": "Instance.Validate", "params": {"Properties": "x" * (9 * 1024 * 1024)}, "id": 1})
    status, data = post(file_socket, body)
    assert status == 200
    assert json.loads(data)["error"]["code"] == -32600
    assert "exceeds the limit" in json.loads(data)["error"]["message"]
    assert rpc(file_socket, "Instance.DescribeInstances", {})["result"]["Descriptions"] == []


def test_http_level_errors_match_infrakit(file_socket):
    assert post(file_socket, "", method="GET")[0] == 405
    assert post(file_socket, "{}", content_type="text/plain")[0] == 415
    assert post(file_socket, "{}", content_type="application/x-www-form-urlencoded")[0] == 415
    assert post(file_socket, "{}", url="/nope")[0] == 404
    status, data = post(file_socket, '{"jsonrpc":"2.0","method":"Instance.DescribeInstances","params":{},"id":1}', content_type=None)
    assert status == 200 and "result" in json.loads(data)


def test_notification_gets_no_answer_and_batches_are_answered_per_call(file_socket):
    status, data = post(file_socket, '{"jsonrpc":"2.0","method":"Instance.DescribeInstances","params":{}}')
    assert (status, data) == (200, b"")
    status, data = post(file_socket, json.dumps([
        {"jsonrpc": "2.0", "method": "Instance.DescribeInstances", "params": {}, "id": "a"},
        {"jsonrpc": "2.0", "method": "Instance.Nope", "params": {}, "id": "b"},
    ]))
    answers = {a["id"]: a for a in json.loads(data)}
    assert answers["a"]["result"]["Descriptions"] == []
    assert answers["b"]["error"]["code"] == -32601
