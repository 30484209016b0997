"""moto's standalone EC2 server as a pytest fixture, shared by the aws plugin's test modules.

Guarantee: moto runs as its own process on a free loopback port (never in-process
mocking), answers before the fixture yields, is emptied (``POST /moto-api/reset``) before
every test that asks for ``moto``, and is terminated when the test module ends. It runs behind
``moto_front`` (transparent until told otherwise): ``configure`` injects what moto cannot do
itself (a subnet without capacity, refused spot, target health states, spot interruptions).
Limit: one server per module: tests in a module share it and must not run in parallel.

Import the fixtures a module needs by name (pytest finds fixtures in a module's globals).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

REGION = "us-east-1"
# Distinctive fake credentials: any appearance in a log or answer is a leak.
ACCESS_KEY = "AKIAINFRAKITFAKE0001"
SECRET_KEY = "infrakitFakeSecret/0123456789abcdefSECRET"
CREDS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
         "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
         "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def post(port: int, path: str, body: bytes = b"") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=body)
        return conn.getresponse().status
    finally:
        conn.close()


def front_events(endpoint: str) -> list[tuple[float, str, list[str]]]:
    """Every TerminateInstances, RegisterTargets and DeregisterTargets the front saw: (time, action, IDs)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(endpoint.rsplit(":", 1)[1]), timeout=5)
    try:
        conn.request("GET", "/moto-front/events")
        return [tuple(e) for e in json.loads(conn.getresponse().read())]
    finally:
        conn.close()


def configure(endpoint: str, **state: Any) -> dict[str, Any]:
    """Tell the front what to inject (see ``moto_front``); returns its state with request counts."""
    conn = http.client.HTTPConnection("127.0.0.1", int(endpoint.rsplit(":", 1)[1]), timeout=5)
    try:
        conn.request("POST" if state else "GET", "/moto-front", body=json.dumps(state).encode())
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def reset(endpoint: str) -> None:
    """Empty moto (every instance, reservation and tag goes)."""
    assert post(int(endpoint.rsplit(":", 1)[1]), "/moto-api/reset") == 200


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's standalone server behind ``moto_front`` on a free loopback port (AMI validation on, like EC2)."""
    port = free_port()
    env = {**os.environ, "MOTO_ENABLE_AMI_VALIDATION": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.runtime.plugins.moto_front", str(port)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if post(port, "/moto-api/reset") == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def moto(moto_server: str) -> str:
    """The moto endpoint, emptied before the test."""
    reset(moto_server)
    return moto_server


def observer(endpoint: str) -> Any:
    """A boto3 client with its own credentials, for looking at the world the plugin changed."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="observer",
                        aws_secret_access_key="observer")


@pytest.fixture
def ec2(moto: str) -> Any:
    return observer(moto)


@pytest.fixture
def ami(ec2: Any) -> str:
    return ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]


def start_aws(daemons: Any, moto: str, *options: str, env: dict[str, str] | None = None) -> Any:
    """The aws daemon against ``moto`` (fake credentials in its environment only); a client to it."""
    opts = ["-o", f"endpoint_url={moto}", "-o", f"region={REGION}"]
    for o in options:
        opts += ["-o", o]
    daemons.start("aws", *opts, env={**CREDS, **(env or {})})
    return daemons.client("aws", timeout=30)
