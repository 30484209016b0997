"""``/metrics`` on a TCP listener obeys the listener's bearer token; on the Unix socket the socket's mode guards it."""

from __future__ import annotations

import http.client

from tests.runtime.conftest import Daemons
from tests.runtime.observability.test_daemon_metrics import SERVED, samples, scrape_unix
from tests.runtime.security.conftest import TOKEN, WRONG_TOKEN, free_port


def _get(port: int, headers: dict[str, str]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_metrics_over_tcp_need_the_bearer_token_and_the_unix_socket_does_not(daemons: Daemons) -> None:
    token_file = daemons.home / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    daemons.start("manager", "-o", f"listen=127.0.0.1:{port}", "-o", f"token_file={token_file}")

    for headers in ({}, {"Authorization": f"Bearer {WRONG_TOKEN}"}, {"Authorization": TOKEN}):
        status, body = _get(port, headers)
        assert status == 401, (headers, status)
        assert "infrakit_" not in body
    status, body = _get(port, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    m = samples(body)
    assert any(name == "infrakit_build_info" for name, _ in m)
    assert any(name == f"{SERVED}_count" for name, _ in m)
    assert "infrakit_build_info" in scrape_unix(daemons.plugins_dir / "group")
    assert TOKEN not in daemons.log("group")


def test_a_plugin_daemons_tcp_listener_guards_metrics_with_its_token(daemons: Daemons) -> None:
    token_file = daemons.home / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    daemons.start("vanilla", "--tcp", f"127.0.0.1:{port}", "--token-file", str(token_file))

    assert _get(port, {})[0] == 401
    assert _get(port, {"Authorization": f"Bearer {WRONG_TOKEN}"})[0] == 401
    status, body = _get(port, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    m = samples(body)
    assert any(name == "process_resident_memory_bytes" for name, _ in m)
    assert any(name == f"{SERVED}_count" and dict(labels).get("method") == "Handshake.Hello" for name, labels in m)
