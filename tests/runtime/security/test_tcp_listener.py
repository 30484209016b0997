"""The TCP listener: off loopback only with TLS and a bearer token; tokens compared in constant time."""

from __future__ import annotations

import asyncio
import hmac
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from infrakit_runtime.manager.daemon import parse_options
from infrakit_runtime.rpc import server
from infrakit_runtime.rpc.dispatch import Dispatcher
from infrakit_runtime.rpc.services import InstanceService
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.conftest import REPO
from tests.runtime.security.conftest import TOKEN, WRONG_TOKEN, client_context, free_port


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "[::]", "example.com", "192.168.0.1"])
def test_the_manager_refuses_a_listener_off_loopback_without_tls_and_token(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_options({"listen": f"{host}:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                      home=tmp_path)
    text = str(e.value)
    assert "requires tls" in text and "requires token_file" in text


def test_the_manager_refuses_a_listener_off_loopback_with_tls_but_no_token(tmp_path: Path,
                                                                          tls: tuple[Path, Path]) -> None:
    cert, key = tls
    with pytest.raises(ValidationError) as e:
        parse_options({"listen": f"0.0.0.0:{free_port()}", "tls": {"cert": str(cert), "key": str(key)},
                       "backend": {"type": "file", "dir": str(tmp_path / "s")}}, home=tmp_path)
    assert "requires token_file" in str(e.value) and "requires tls" not in str(e.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_the_manager_accepts_a_plain_listener_on_loopback(tmp_path: Path, host: str) -> None:
    opts = parse_options({"listen": f"{host}:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                         home=tmp_path)
    assert opts["tcp"] == (host, 7443) and opts["ssl_context"] is None


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {"INFRAKIT_HOME": str(home), "INFRAKIT_PLUGINS_DIR": str(home / "p"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_plugin_run_refuses_a_plain_tcp_listener_off_loopback(tmp_path: Path) -> None:
    """``--tcp`` on any daemon kind: the server itself refuses before binding."""
    port = free_port()
    done = _run(["plugin", "run", "vanilla", "--tcp", f"0.0.0.0:{port}"], tmp_path)
    assert done.returncode != 0
    assert "off loopback requires TLS and a bearer token" in done.stderr, done.stderr


def test_a_manager_daemon_with_listen_off_loopback_and_no_tls_exits_with_the_reason(tmp_path: Path) -> None:
    done = _run(["plugin", "run", "manager", "-o", f"listen=0.0.0.0:{free_port()}"], tmp_path)
    assert done.returncode != 0
    assert "requires tls" in done.stderr and "requires token_file" in done.stderr, done.stderr


class _Recorder:
    """Wraps hmac.compare_digest to prove the token check goes through it."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self._real = hmac.compare_digest  # patched below on the module itself

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((a, b))
        return self._real(a, b)


async def _serve_and_call(tls: tuple[Path, Path], headers_list: list[dict[str, str]]) -> list[tuple[int, str]]:
    cert, key = tls
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = server.make_app(Dispatcher("tcp-test", [InstanceService({"": object()})]), token=TOKEN)
    port = free_port()
    out = []
    async with server.serve(app, socket_path=None, tcp=("127.0.0.1", port), ssl_context=ctx):
        async with aiohttp.ClientSession() as session:
            for headers in headers_list:
                body = json.dumps({"jsonrpc": "2.0", "method": "Handshake.Hello", "params": {}, "id": 1})
                async with session.post(f"https://127.0.0.1:{port}/", data=body, ssl=client_context(cert),
                                        headers={"Content-Type": "application/json", **headers}) as resp:
                    out.append((resp.status, await resp.text()))
    return out


def test_tokens_are_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch, tls: tuple[Path, Path],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(server.hmac, "compare_digest", recorder)
    caplog.set_level("DEBUG")
    answers = asyncio.run(_serve_and_call(tls, [
        {}, {"Authorization": f"Bearer {WRONG_TOKEN}"}, {"Authorization": WRONG_TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN}"},
    ]))
    assert [status for status, _ in answers] == [401, 401, 401, 401, 200]
    assert '"Objects"' in answers[-1][1]
    assert len(recorder.calls) == 5, "every request's token went through compare_digest"
    refusals = [r for r in caplog.records if "bearer token" in r.getMessage()]
    assert len(refusals) == 4
    assert TOKEN not in caplog.text and WRONG_TOKEN not in caplog.text
