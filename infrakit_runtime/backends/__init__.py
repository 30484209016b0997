"""Leader election and spec store backends: ``file`` (one host) and ``etcd`` (many)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infrakit_runtime.durations import parse_duration
from infrakit_runtime.manager.backend import Backend, LeaderTimings
from infrakit_runtime.rpc import discovery
from infrakit_runtime.spi.common import ValidationError, json_type

FILE_KEYS = {"type", "dir", "ttl", "renew_interval", "renew_deadline", "retry_interval"}
ETCD_KEYS = {"type", "endpoints", "prefix", "ttl", "renew_interval", "renew_deadline", "retry_interval",
             "timeout", "tls", "username", "password"}
TLS_KEYS = {"ca_cert", "cert", "key"}


def open_backend(config: dict[str, Any], *, where: str = "manager.backend") -> Backend:
    """A backend from its config mapping, after checking all of it; ``ValidationError`` lists every problem.

    ``{"type": "file", "dir": ...}`` (default ``<INFRAKIT_HOME>/store``) or
    ``{"type": "etcd", "endpoints": [...], "prefix": "/infrakit/", "ttl": "5s",
    "timeout": "2s", "tls": {"ca_cert", "cert", "key"}, "username", "password"}``.
    Both accept ``ttl``, ``renew_interval``, ``renew_deadline``, ``retry_interval``;
    unset ones derive from ``ttl`` (renew every ttl/5, step down after 0.7 * ttl).
    Secrets are never echoed in problems.
    """
    if not isinstance(config, dict):
        raise ValidationError(f"{where} must be a mapping, got {json_type(config)}")
    problems: list[str] = []
    kind = config.get("type", "file")
    if kind not in ("file", "etcd"):
        raise ValidationError(f"{where}.type: {kind!r} is not one of file, etcd")
    known = FILE_KEYS if kind == "file" else ETCD_KEYS
    for key in sorted(set(config) - known, key=str):
        problems.append(f"{where}: unknown key {key!r} for the {kind} backend (known: {', '.join(sorted(known))})")
    timings = _timings(config, where, problems)

    if kind == "file":
        directory = config.get("dir")
        if directory is not None and (not isinstance(directory, str) or not directory):
            problems.append(f"{where}.dir must be a non-empty path, got {json_type(directory)}")
        if problems:
            raise ValidationError(problems)
        from infrakit_runtime.backends.file import FileBackend

        return FileBackend(Path(directory) if directory else discovery.infrakit_home() / "store", timings)

    endpoints = config.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problems.append(f"{where}.endpoints must be a non-empty list of URLs such as http://10.0.0.1:2379")
        endpoints = []
    from infrakit_runtime.backends import etcd

    tls = config.get("tls") or {}
    if not isinstance(tls, dict):
        problems.append(f"{where}.tls must be a mapping with ca_cert, cert, key, got {json_type(tls)}")
        tls = {}
    for key in sorted(set(tls) - TLS_KEYS, key=str):
        problems.append(f"{where}.tls: unknown key {key!r} (known: {', '.join(sorted(TLS_KEYS))})")
    for key in sorted(TLS_KEYS & set(tls)):
        if not isinstance(tls[key], str) or not tls[key]:
            problems.append(f"{where}.tls.{key} must be a file path")
        elif not Path(tls[key]).is_file():
            problems.append(f"{where}.tls.{key}: {tls[key]} is not a readable file")
    if ("cert" in tls) != ("key" in tls):
        problems.append(f"{where}.tls: a client certificate needs both cert and key")
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, str):
            problems.append(f"{where}.endpoints[{i}] must be a URL string, got {json_type(endpoint)}")
            continue
        try:
            scheme, _, _ = etcd.parse_endpoint(endpoint, tls=bool(tls))
        except ValueError as e:
            problems.append(f"{where}.endpoints[{i}]: {e}")
            continue
        if tls and scheme != "https":
            problems.append(f"{where}.endpoints[{i}]: {endpoint} is plain http but tls is configured")
    prefix = config.get("prefix", "/infrakit/")
    if not isinstance(prefix, str) or not prefix.startswith("/"):
        problems.append(f"{where}.prefix must be a key prefix starting with '/', such as /infrakit/")
    username, password = config.get("username"), config.get("password")
    if username is not None and (not isinstance(username, str) or not username):
        problems.append(f"{where}.username must be a non-empty string")
    if password is not None and not isinstance(password, str):
        problems.append(f"{where}.password must be a string")  # never show the value
    if (username is None) != (password is None):
        problems.append(f"{where}: etcd authentication needs both username and password")
    timeout = _duration(config, "timeout", where, problems, 2.0)
    if timeout is None or timeout <= 0:
        problems.append(f"{where}.timeout must be positive")
    if problems or timeout is None:
        raise ValidationError(problems)
    return etcd.EtcdBackend(endpoints, prefix, timings, ca_cert=tls.get("ca_cert"), cert=tls.get("cert"),
                            key=tls.get("key"), username=username, password=password, timeout=timeout)


def _duration(config: dict[str, Any], key: str, where: str, problems: list[str], default: float | None) -> float | None:
    value = config.get(key)
    if value is None:
        return default
    try:
        return parse_duration(value)
    except (ValueError, TypeError):
        problems.append(f"{where}.{key}: {value!r} is not a duration (e.g. 5s, 500ms)")
        return default


def _timings(config: dict[str, Any], where: str, problems: list[str]) -> LeaderTimings:
    """Lease timings from ``ttl`` and optional overrides; inconsistent ones are a problem, not a crash."""
    ttl = _duration(config, "ttl", where, problems, 5.0)
    assert ttl is not None
    renew_interval = _duration(config, "renew_interval", where, problems, ttl / 5)
    renew_deadline = _duration(config, "renew_deadline", where, problems, ttl * 0.7)
    retry_interval = _duration(config, "retry_interval", where, problems, min(1.0, ttl / 5))
    assert renew_interval is not None and renew_deadline is not None and retry_interval is not None
    values = {"ttl": ttl, "renew_interval": renew_interval, "renew_deadline": renew_deadline,
              "retry_interval": retry_interval}
    bad = [f"{where}.{name} must be positive" for name, value in values.items() if value <= 0]
    if bad:
        problems.extend(bad)
        return LeaderTimings()
    try:
        return LeaderTimings(ttl=ttl, renew_interval=renew_interval, renew_deadline=renew_deadline,
                             retry_interval=retry_interval)
    except ValueError as e:
        problems.append(f"{where}: {e}")
        return LeaderTimings()
