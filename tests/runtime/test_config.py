"""The configuration file: strict validation, and every setting reaching the daemon it is for."""

from __future__ import annotations

from pathlib import Path

import pytest

from infrakit_runtime import config
from infrakit_runtime.cli.plugin import effective_options
from infrakit_runtime.daemon import DaemonSpec
from infrakit_runtime.spi.common import ValidationError


def test_the_files_poll_interval_and_manager_section_reach_the_manager(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("INFRAKIT_GROUP_POLL_INTERVAL", raising=False)
    cfg = config.parse({"poll_interval": "1s", "manager": {"forward": False},
                        "plugins": [{"kind": "manager", "options": {"events_json": True}}, "file"]})
    options = effective_options(DaemonSpec.parse("manager"), cfg)
    assert options == {"forward": False, "poll_interval": 1.0, "events_json": True}
    assert effective_options(DaemonSpec.parse("file"), cfg) == {}


def test_a_plugins_own_options_win_over_the_files_defaults(monkeypatch):
    monkeypatch.delenv("INFRAKIT_GROUP_POLL_INTERVAL", raising=False)
    cfg = config.parse({"poll_interval": "1s", "plugins": [{"kind": "manager", "options": {"poll_interval": "2s"}}]})
    assert effective_options(DaemonSpec.parse("manager"), cfg)["poll_interval"] == "2s"


def test_infrakits_environment_variable_wins_over_the_file(monkeypatch):
    monkeypatch.setenv("INFRAKIT_GROUP_POLL_INTERVAL", "3s")
    assert config.parse({"poll_interval": "1s"}).poll_interval == 3.0


def test_every_problem_in_the_file_is_reported_at_once():
    with pytest.raises(ValidationError) as e:
        config.parse({"bogus": 1, "log_level": "loud", "plugins": [{"kind": "nope"}, {"kind": "file", "extra": 1}]})
    text = str(e.value)
    for words in ("unknown key 'bogus'", "log_level 'loud'", "'nope' is not one of", "unknown keys extra"):
        assert words in text


def test_token_file_is_a_path_and_infrakit_token_file_wins_over_the_file(monkeypatch):
    monkeypatch.delenv("INFRAKIT_TOKEN_FILE", raising=False)
    assert config.parse({"token_file": "/etc/infrakit/token"}).token_file == Path("/etc/infrakit/token")
    assert config.parse({}).token_file is None
    monkeypatch.setenv("INFRAKIT_TOKEN_FILE", "/run/token")
    assert config.parse({"token_file": "/etc/infrakit/token"}).token_file == Path("/run/token")


@pytest.mark.parametrize("bad", [5, ["x"], "", "a\0b"])
def test_a_token_file_that_is_not_a_path_is_refused_naming_the_key(bad, monkeypatch):
    monkeypatch.delenv("INFRAKIT_TOKEN_FILE", raising=False)
    with pytest.raises(ValidationError, match="token_file must be a file path"):
        config.parse({"token_file": bad})
