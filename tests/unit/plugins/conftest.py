# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19 reads the arguments from basic._ANSIBLE_ARGS

    @contextlib.contextmanager
    def patch_module_args(args=None):
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved

from ansible_collections.infrakit.core.tests.unit.plugins.fake_controller import FakeController


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super().__init__(result.get("msg"))
        self.result = result
        self.failed = failed


@pytest.fixture
def sockdir():
    # pytest's tmp_path can exceed the ~107 bytes an AF_UNIX path may have.
    path = tempfile.mkdtemp(prefix="ik-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def tls_pair(sockdir):
    """A self-signed certificate and key for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = os.path.join(sockdir, "cert.pem"), os.path.join(sockdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def tls_controller(tls_pair):
    """A controller on an https URL with a certificate nobody trusts."""
    fake = FakeController(tls_cert=tls_pair[0], tls_key=tls_pair[1]).start()
    yield fake
    fake.stop()


@pytest.fixture
def controller(sockdir):
    fake = FakeController(sockdir + "/group").start()
    yield fake
    fake.stop()


@pytest.fixture
def run_module(monkeypatch):
    """Run a module's ``main`` with arguments; return its result dict (``failed`` set on fail_json)."""

    def exit_json(self, **kwargs):
        kwargs.setdefault("changed", False)
        json.dumps(kwargs)  # results must be serialisable
        raise ModuleExit(kwargs, failed=False)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        kwargs["failed"] = True
        json.dumps(kwargs)
        raise ModuleExit(kwargs, failed=True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(main, args, check_mode=False, diff=False):
        args = dict(args)
        if check_mode:
            args["_ansible_check_mode"] = True
        if diff:
            args["_ansible_diff"] = True
        with patch_module_args(args):
            with pytest.raises(ModuleExit) as caught:
                main()
        return caught.value.result

    return run


@pytest.fixture
def logged(monkeypatch):
    """What AnsibleModule would send to syslog (the journal is turned off so syslog is used)."""
    lines = []
    monkeypatch.setattr(basic, "has_journal", False)
    monkeypatch.setattr(basic.AnsibleModule, "_log_to_syslog", lambda self, msg: lines.append(msg))
    return lines


@pytest.fixture
def printed(capsys):
    """Run a module's main through the real exit_json/fail_json; return (result, everything printed)."""

    def run(main, args, check_mode=False, diff=False):
        args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        with patch_module_args(args):
            with pytest.raises(SystemExit):
                main()
        out = capsys.readouterr()
        text = out.out + out.err
        return json.loads(out.out.strip().splitlines()[-1]), text

    return run
