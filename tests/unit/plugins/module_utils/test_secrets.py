# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import importlib.util
import os

import pytest

from ansible_collections.infrakit.core.plugins.module_utils import secrets

# The collection root: tests/unit/plugins/module_utils/<this file>.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))

# One table for both rules: key -> does it name a secret?
KEYS = {
    "password": True, "Password": True, "DB_PASSWORD": True, "db_password": True, "passwd": True,
    "MYSQL_ROOT_PASSWD": True, "secret": True, "client_secret": True, "SecretAccessKey": True,
    "secret_key": True, "secret key": True, "token": True, "INFRAKIT_CONTROLLER_TOKEN": True,
    "X-Auth-Token": True, "credential": True, "Credentials": True, "private_key": True, "PrivateKey": True,
    "api-key": True, "API_KEY": True, "apikey": True, "X-Api-Key": True, "access_key": True, "AccessKey": True,
    "aws_access_key_id": True,
    "Key": False, "KeyName": False, "key": False, "Command": False, "Env": False, "Tags": False, "Port": False,
    "user": False, "username": False, "Address": False, "PID": False, "monkey": False, "keyboard": False,
    "pass": False, "passphrase": False, "HEALTH_FLAG_DIR": False, "Init": False, "public_key": False,
}


def runtime_rule():
    """infrakit_runtime/rpc/redact.py, loaded from the file (module_utils may not import the runtime)."""
    path = os.path.join(ROOT, "infrakit_runtime", "rpc", "redact.py")
    spec = importlib.util.spec_from_file_location("infrakit_runtime_redact_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key", sorted(KEYS))
def test_the_modules_and_the_daemons_judge_every_key_of_the_table_alike(key):
    assert secrets.is_secret_key(key) is KEYS[key]
    assert runtime_rule().is_secret_key(key) is KEYS[key]


def test_the_two_rules_are_the_same_expression():
    daemons = runtime_rule().SECRET_KEY
    assert (secrets.SECRET_KEY.pattern, secrets.SECRET_KEY.flags) == (daemons.pattern, daemons.flags)


def test_values_under_secret_keys_are_found_at_any_depth_with_every_leaf_of_a_nested_value():
    value = {
        "instance": {"properties": {"Env": {"DB_PASSWORD": "hunter2-x", "HOME": "/srv"}, "Command": "run"}},
        "list": [{"api_key": 12345}, {"Credentials": {"user": "u1", "pass": ["p-one", "p-two"]}}],
        "token": "", "secret": None, "private_key": True,
    }
    assert secrets.secret_values(value) == {"hunter2-x", "12345", "u1", "p-one", "p-two"}


def test_redact_masks_by_key_and_leaves_the_input_and_everything_else_alone():
    value = {"Env": {"DB_PASSWORD": "hunter2-x", "HOME": "/srv"}, "Credentials": {"a": 1}, "token": "", "n": [1]}
    masked = secrets.redact(value)
    assert masked == {"Env": {"DB_PASSWORD": secrets.MASK, "HOME": "/srv"}, "Credentials": secrets.MASK,
                      "token": "", "n": [1]}
    assert value["Env"]["DB_PASSWORD"] == "hunter2-x"


@pytest.mark.parametrize("value, everywhere", [
    ("hunter2-x", True), ("abcd", True), ("1234", True),
    ("abc", False), ("1", False), ("true", False), ("False", False), ("yes", False), ("off", False),
])
def test_short_values_and_flag_words_are_masked_under_their_key_only(value, everywhere):
    assert (value in secrets.everywhere({value})) is everywhere


def test_mask_hides_a_listed_value_inside_free_text_and_a_secret_keys_value_wherever_it_is_copied():
    result = {
        "spec": {"Command": "db --password=swordfish9", "Env": {"API_TOKEN": "tok-zz9-plural", "X": "y"}},
        "plan": "Updating: env API_TOKEN=tok-zz9-plural",
        "counts": {"desired": 3},
    }
    masked = secrets.mask(result, ["swordfish9"])
    text = repr(masked)
    assert "swordfish9" not in text and "tok-zz9-plural" not in text
    assert masked["spec"]["Env"] == {"API_TOKEN": secrets.MASK, "X": "y"}
    assert masked["counts"] == {"desired": 3}
