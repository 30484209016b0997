"""open_backend: strict config validation that names every bad field and never echoes a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrakit_runtime.backends import open_backend
from infrakit_runtime.backends.etcd import EtcdBackend
from infrakit_runtime.backends.file import FileBackend
from infrakit_runtime.spi.common import ValidationError


def test_the_file_backend_is_the_default_and_lives_under_infrakit_home(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFRAKIT_HOME", str(tmp_path))
    backend = open_backend({})
    assert isinstance(backend, FileBackend)
    assert backend.directory == tmp_path / "store"
    assert open_backend({"type": "file", "dir": str(tmp_path / "elsewhere")}).directory == tmp_path / "elsewhere"


def test_etcd_timings_derive_from_the_ttl_unless_given() -> None:
    backend = open_backend({"type": "etcd", "endpoints": ["http://127.0.0.1:2379", "10.0.0.2"], "ttl": "2s",
                            "renew_deadline": "1500ms", "timeout": "1s", "prefix": "/ik/",
                            "username": "ik", "password": "pw"})
    assert isinstance(backend, EtcdBackend)
    assert (backend.timings.ttl, backend.timings.renew_interval, backend.timings.renew_deadline) == (2.0, 0.4, 1.5)
    assert backend.timeout == 1.0 and backend.prefix == "/ik/"
    assert "pw" not in repr(backend)


def test_every_problem_is_listed_with_its_field_and_no_secret() -> None:
    with pytest.raises(ValidationError) as caught:
        open_backend({"type": "etcd", "endpoints": ["ftp://x", 3, "http://h:notaport"], "ttl": "soon",
                      "renew_interval": "-1s", "bogus": 1, "password": "hunter2", "prefix": "infrakit",
                      "tls": {"ca_cert": "/does/not/exist", "cert": "/also/missing", "color": "blue"}})
    problems = caught.value.problems
    text = "\n".join(problems)
    for expected in ["unknown key 'bogus'", "ttl: 'soon' is not a duration", "renew_interval: '-1s' is not a duration",
                     "endpoints[0]", "endpoints[1] must be a URL string", "endpoints[2]", "tls: unknown key 'color'",
                     "tls.ca_cert: /does/not/exist is not a readable file", "needs both cert and key",
                     "prefix must be a key prefix", "needs both username and password"]:
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert "hunter2" not in text


@pytest.mark.parametrize(("config", "message"), [
    ({"type": "zookeeper"}, "type: 'zookeeper' is not one of file, etcd"),
    ({"type": "etcd"}, "endpoints must be a non-empty list"),
    ({"type": "etcd", "endpoints": ["http://h:2379"], "ttl": "5s", "renew_deadline": "6s"},
     "ttl (5s) must exceed renew_deadline (6s)"),
    ({"type": "file", "dir": ""}, "dir must be a non-empty path"),
    ({"type": "file", "endpoints": []}, "unknown key 'endpoints' for the file backend"),
    ("file", "must be a mapping"),
])
def test_a_single_mistake_is_named(config: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_backend(config)  # type: ignore[arg-type]
