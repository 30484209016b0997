"""Tokens, cloud credentials and secret-named spec values never reach logs, events or metrics.

A manager listens on loopback with TLS and a known token; an aws daemon holds a known fake
secret key and talks to moto; every daemon logs at debug, which dumps all RPC traffic. After
refused and accepted calls and a group the manager provisions through aws, every log, the
/events stream and /metrics are searched for each secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import Daemons
from tests.runtime.security.conftest import TOKEN, WRONG_TOKEN, client_context, free_port, make_cert

AWS_ACCESS_KEY = "AKIALEAKTEST7Q2W9E4R"
AWS_SECRET = "awssecret-Zq8Xw7Vc6Bn5Mm4Ll3Kk2Jj1Hh0Gg"
SPEC_SECRET = "specsecret-4c5d6e7f8a9b0c1d2e3f"


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _https(port: int, cert: Path, path: str, *, token: str | None, body: Any = None,
           stream: bool = False) -> tuple[int, str]:
    """One request over TLS; a stream (SSE) is read until it has been quiet for a second."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, headers=headers,
                                 method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, context=client_context(cert), timeout=1 if stream else 10) as resp:
            if not stream:
                return resp.status, resp.read().decode(errors="replace")
            chunks = []
            with contextlib.suppress(TimeoutError):
                while chunk := resp.read1(65536):
                    chunks.append(chunk)
            return resp.status, b"".join(chunks).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}


def test_no_secret_reaches_a_log_an_event_or_a_metric(moto_endpoint: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ikleak-") as d:
        root = Path(d)
        cert, key = make_cert(root)
        token_file = root / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        daemons = Daemons(root / "home")
        env = {"INFRAKIT_LOG_LEVEL": "debug", "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        port = free_port()
        try:
            daemons.start("aws", "-o", f"endpoint_url={moto_endpoint}", "-o", "region=us-east-1", env=env)
            daemons.start("vanilla", env=env)
            daemons.start("file", env=env)
            daemons.start("manager", "-o", f"listen=127.0.0.1:{port}", "-o", "poll_interval=1s",
                          "--options-file", str(_options_file(root, cert, key, token_file)), env=env)
            _exercise(port, cert, daemons)
            logs = {name: daemons.log(name) for name in ("aws", "vanilla", "file", "group")}
            events = _https(port, cert, "/events?since=0", token=TOKEN, stream=True)[1]
            metrics = _https(port, cert, "/metrics", token=TOKEN)
        finally:
            daemons.stop_all()
        logs = {name: daemons.log(name) for name in ("aws", "vanilla", "file", "group")}
    assert metrics[0] == 200 and "infrakit" in metrics[1], metrics
    assert "event:" in events, events[:500]
    assert "request on group" in logs["group"], "the traffic logger did not run: the test would prove nothing"
    assert "***" in logs["file"], "the secret-named spec values were not masked in the traffic log"
    for secret in (TOKEN, WRONG_TOKEN, AWS_SECRET, AWS_ACCESS_KEY, SPEC_SECRET):
        for name, text in logs.items():
            assert secret not in text, f"{secret[:8]}... leaked into the {name} log"
        assert secret not in events, f"{secret[:8]}... leaked into /events"
        assert secret not in metrics[1], f"{secret[:8]}... leaked into /metrics"


def _options_file(root: Path, cert: Path, key: Path, token_file: Path) -> Path:
    path = root / "manager.json"
    path.write_text(json.dumps({"tls": {"cert": str(cert), "key": str(key)}, "token_file": str(token_file)}))
    return path


def _exercise(port: int, cert: Path, daemons: Daemons) -> None:
    inspect = _rpc("Group.InspectGroups", {"Name": ""})
    # Refused: no token, a wrong token, a token without the scheme, plain HTTP to the TLS port.
    for token in (None, WRONG_TOKEN):
        assert _https(port, cert, "/", token=token, body=inspect)[0] == 401
        assert _https(port, cert, "/metrics", token=token)[0] == 401
        assert _https(port, cert, "/events", token=token, stream=True)[0] == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(inspect).encode(),
                                                      headers={"Authorization": f"Bearer {TOKEN}"}), timeout=10)
    assert "refused a request" in daemons.log("group")
    # Accepted: a group provisioned through aws, with a secret-named tag; a file instance with secret-named properties.
    status, text = _https(port, cert, "/", token=TOKEN, body=inspect)
    assert status == 200 and '"result"' in text, text
    spec = {"ID": "leak", "Properties": {
        "Allocation": {"Size": 1},
        "Instance": {"Plugin": "aws", "Properties": {"ImageId": "ami-12345678", "InstanceType": "t3.micro"}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Tags": {"api_token": SPEC_SECRET}}},
    }}
    status, text = _https(port, cert, "/", token=TOKEN, body=_rpc("Group.CommitGroup", {"Name": "", "Spec": spec}))
    assert status == 200 and '"result"' in text, text
    file_client = daemons.client("file")
    try:
        file_client.call("Instance.Provision", {"Type": "", "Spec": {"Properties": {
            "Password": SPEC_SECRET, "db": {"SecretAccessKey": SPEC_SECRET, "token": SPEC_SECRET}}, "Tags": {}}})
    finally:
        file_client.close()
    aws = daemons.client("aws")
    try:
        deadline = time.monotonic() + 60
        while not aws.call("Instance.DescribeInstances", {"Type": "", "Tags": {"infrakit.group": "leak"}})["Descriptions"]:
            assert time.monotonic() < deadline, "the manager never provisioned through aws"
            time.sleep(0.2)
    finally:
        aws.close()
    status, text = _https(port, cert, "/", token=TOKEN, body=_rpc("Group.DestroyGroup", {"Name": "", "ID": "leak"}))
    assert status == 200, text
