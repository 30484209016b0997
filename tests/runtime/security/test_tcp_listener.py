"""The TCP listener: always with a bearer token, off loopback with TLS too; tokens compared in constant time."""

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

from infrakit_runtime.backends import open_backend
from infrakit_runtime.manager.daemon import parse_options
from infrakit_runtime.rpc import server, tokens
from infrakit_runtime.rpc.dispatch import Dispatcher
from infrakit_runtime.rpc.instance import InstanceService
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.conftest import REPO
from tests.runtime.security.conftest import TOKEN, WRONG_TOKEN, client_context, free_port


def _token_file(directory: Path) -> Path:
    path = directory / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFRAKIT_TOKEN_FILE", raising=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "[::]", "example.com", "192.168.0.1"])
def test_the_manager_refuses_a_listener_off_loopback_without_tls_and_token(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValidationError) as e:
        parse_options({"listen": f"{host}:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                      home=tmp_path, open_backend=open_backend)
    text = str(e.value)
    assert "requires tls" in text and "requires a bearer token" in text and "token_file" in text


def test_the_manager_refuses_a_listener_off_loopback_with_tls_but_no_token(tmp_path: Path,
                                                                          tls: tuple[Path, Path]) -> None:
    cert, key = tls
    with pytest.raises(ValidationError) as e:
        parse_options({"listen": f"0.0.0.0:{free_port()}", "tls": {"cert": str(cert), "key": str(key)},
                       "backend": {"type": "file", "dir": str(tmp_path / "s")}}, home=tmp_path, open_backend=open_backend)
    assert "requires a bearer token" in str(e.value) and "requires tls" not in str(e.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_the_manager_refuses_a_listener_on_loopback_without_a_token(tmp_path: Path, host: str) -> None:
    """Loopback is no trust boundary: any local user reaches it."""
    with pytest.raises(ValidationError) as e:
        parse_options({"listen": f"{host}:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                      home=tmp_path, open_backend=open_backend)
    assert "requires a bearer token, loopback included" in str(e.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_the_manager_accepts_a_plain_listener_on_loopback_with_a_token(tmp_path: Path, host: str) -> None:
    opts = parse_options({"listen": f"{host}:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")},
                          "token_file": str(_token_file(tmp_path))}, home=tmp_path, open_backend=open_backend)
    assert opts["tcp"] == (host, 7443) and opts["ssl_context"] is None and opts["token"] == TOKEN


def test_the_managers_token_defaults_to_infrakit_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_TOKEN_FILE", str(_token_file(tmp_path)))
    opts = parse_options({"listen": "127.0.0.1:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                         home=tmp_path, open_backend=open_backend)
    assert opts["token"] == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602])
def test_the_manager_refuses_a_token_file_other_users_can_read_or_write(tmp_path: Path, mode: int) -> None:
    path = _token_file(tmp_path)
    path.chmod(mode)
    with pytest.raises(ValidationError) as e:
        parse_options({"listen": "127.0.0.1:7443", "backend": {"type": "file", "dir": str(tmp_path / "s")},
                       "token_file": str(path)}, home=tmp_path, open_backend=open_backend)
    assert str(path) in str(e.value) and "by other users" in str(e.value) and TOKEN not in str(e.value)


def test_the_server_itself_refuses_a_tcp_listener_without_a_token() -> None:
    """The last line of defence, whatever daemon asks for the listener."""
    app = server.make_app(Dispatcher("tcp-test", [InstanceService({"": object()})]))

    async def listen() -> None:
        async with server.serve(app, socket_path=None, tcp=("127.0.0.1", free_port())):
            raise AssertionError("a TCP listener without a token was opened")

    with pytest.raises(ValidationError, match="every TCP listener requires a bearer token, loopback included"):
        asyncio.run(listen())


def _run(args: list[str], home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"INFRAKIT_HOME": str(home), "INFRAKIT_PLUGINS_DIR": str(home / "p"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_plugin_run_refuses_a_plain_tcp_listener_off_loopback(tmp_path: Path) -> None:
    """``--tcp`` on any daemon kind, with a token but without TLS: the server itself refuses before binding."""
    port = free_port()
    done = _run(["plugin", "run", "vanilla", "--tcp", f"0.0.0.0:{port}", "--token-file", str(_token_file(tmp_path))],
                tmp_path)
    assert done.returncode != 0
    assert "off loopback requires TLS and a bearer token" in done.stderr, done.stderr


def test_plugin_run_refuses_a_tcp_listener_without_a_token_and_says_how_to_give_one(tmp_path: Path) -> None:
    done = _run(["plugin", "run", "vanilla", "--tcp", f"127.0.0.1:{free_port()}"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for words in ("requires a bearer token, loopback included", "--token-file FILE", "INFRAKIT_TOKEN_FILE",
                  "token_file in the config file"):
        assert words in done.stderr, done.stderr


def test_plugin_run_takes_the_token_file_from_the_environment_or_the_config_file(tmp_path: Path) -> None:
    """Both are accepted (then the listener starts: the test stops it once it serves)."""
    token = _token_file(tmp_path)
    config = tmp_path / "infrakit.yml"
    config.write_text(f"token_file: {token}\n")
    for args, env in ((["plugin", "run", "vanilla"], {"INFRAKIT_TOKEN_FILE": str(token)}),
                      (["--config", str(config), "plugin", "run", "vanilla"], {})):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", *args, "--tcp", f"127.0.0.1:{port}"],
                                env={"INFRAKIT_HOME": str(tmp_path), "INFRAKIT_PLUGINS_DIR": str(tmp_path / "p"),
                                     "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **env},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            answers = asyncio.run(_wait_and_call(port, tls=None, headers_list=[{}, {"Authorization": f"Bearer {TOKEN}"}],
                                                 proc=proc))
            assert [status for status, _ in answers] == [401, 200]
        finally:
            _stop(proc)


def test_plugin_run_serves_tls_with_tls_cert_and_tls_key(tmp_path: Path, tls: tuple[Path, Path]) -> None:
    cert, key = tls
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "plugin", "run", "vanilla",
                             "--tcp", f"127.0.0.1:{port}", "--token-file", str(_token_file(tmp_path)),
                             "--tls-cert", str(cert), "--tls-key", str(key)],
                            env={"INFRAKIT_HOME": str(tmp_path), "INFRAKIT_PLUGINS_DIR": str(tmp_path / "p"),
                                 "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        answers = asyncio.run(_wait_and_call(port, tls=cert, headers_list=[{"Authorization": f"Bearer {TOKEN}"}],
                                             proc=proc))
        assert answers[0][0] == 200 and '"Objects"' in answers[0][1]
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 20 s: never left running."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def _wait_and_call(port: int, *, tls: Path | None, headers_list: list[dict[str, str]],
                         proc: subprocess.Popen[str]) -> list[tuple[int, str]]:
    scheme = "https" if tls else "http"
    deadline = asyncio.get_running_loop().time() + 60
    body = json.dumps({"jsonrpc": "2.0", "method": "Handshake.Hello", "params": {}, "id": 1})
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                out = []
                for headers in headers_list:
                    async with session.post(f"{scheme}://127.0.0.1:{port}/", data=body,
                                            ssl=client_context(tls) if tls else None,
                                            headers={"Content-Type": "application/json", **headers}) as resp:
                        out.append((resp.status, await resp.text()))
                return out
            except aiohttp.ClientConnectionError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.1)


def test_a_manager_daemon_with_listen_off_loopback_and_no_tls_exits_with_the_reason(tmp_path: Path) -> None:
    done = _run(["plugin", "run", "manager", "-o", f"listen=0.0.0.0:{free_port()}"], tmp_path)
    assert done.returncode != 0
    assert "requires tls" in done.stderr and "requires a bearer token" in done.stderr, done.stderr


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
    monkeypatch.setattr(tokens.hmac, "compare_digest", recorder)
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
