# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Controller client: JSON-RPC 2.0 calls to the InfraKit manager, nothing else.

Guarantee: every call either returns the JSON-RPC ``result`` or raises one
``ControllerError`` subclass carrying a sentence a person can act on; a request
is retried only when it never reached the controller (connection refused, socket
missing), never after an answer. Limit: it speaks to one controller address and
follows no leader redirects (followers forward Group calls themselves).

Standard library and ``ansible.module_utils.urls`` only, so modules need nothing
installed on the target and the inventory plugin can share it on the controller.
"""

from __future__ import annotations

import json
import os
import ssl
import time

from ansible.module_utils.basic import env_fallback
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.module_utils.six.moves.urllib.error import HTTPError, URLError
from ansible.module_utils.six.moves.urllib.parse import urlsplit, urlunsplit
from ansible.module_utils.urls import open_url

# The manager serves the Group SPI on this well-known socket.
CONTROLLER_SOCKET = "group"
# Object names on the manager socket, as InfraKit's keyed resolver wants them:
# ``group/groups`` is always present; ``group/<ID>`` exists once the group does.
ALL_GROUPS = "group/groups"

USER_AGENT = "infrakit.core-ansible"

# JSON-RPC codes a client sees.
METHOD_NOT_FOUND = -32601
APPLICATION_ERROR = -32000

CONTROLLER_ARGUMENT_SPEC = dict(
    controller_url=dict(type="str", fallback=(env_fallback, ["INFRAKIT_CONTROLLER_URL"])),
    controller_token=dict(type="str", no_log=True, fallback=(env_fallback, ["INFRAKIT_CONTROLLER_TOKEN"])),
    validate_certs=dict(type="bool", default=True, fallback=(env_fallback, ["INFRAKIT_VALIDATE_CERTS"])),
    timeout=dict(type="int", default=30),
)


class ControllerError(Exception):
    """Anything that kept a controller call from returning a result."""

    def __init__(self, message, method=None, code=None, data=None):
        super().__init__(message)
        self.message = message
        self.method = method
        self.code = code
        self.data = data

    def to_result(self):
        """The fields a module adds to ``fail_json``."""
        out = dict(msg=self.message)
        if self.method is not None:
            out["rpc_method"] = self.method
        if self.code is not None:
            out["rpc_code"] = self.code
        return out


class UnreachableError(ControllerError):
    """The request never got an answer: no socket, connection refused, timeout, TLS failure."""


class RemoteError(ControllerError):
    """The controller answered with a JSON-RPC error (or a non-200 HTTP status)."""


def default_controller_url():
    """The local manager socket: ``$INFRAKIT_PLUGINS_DIR/group``, else ``$INFRAKIT_HOME/plugins/group``,
    else ``~/.infrakit/plugins/group`` (InfraKit's plugin discovery)."""
    plugins = os.environ.get("INFRAKIT_PLUGINS_DIR")
    if not plugins:
        home = os.environ.get("INFRAKIT_HOME") or os.path.join(os.path.expanduser("~"), ".infrakit")
        plugins = os.path.join(home, "plugins")
    return os.path.join(plugins, CONTROLLER_SOCKET)


def parse_controller_url(url):
    """``(unix_socket_path, http_url)`` for a controller address; raises ``ValueError`` with the reason."""
    url = (url or "").strip() or default_controller_url()
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        if not path:
            raise ValueError("controller_url %r names no socket path" % url)
        return path, "http://controller/"
    if "://" not in url:
        return os.path.expanduser(url), "http://controller/"
    parts = urlsplit(url)
    if parts.scheme == "https":
        if not parts.netloc:
            raise ValueError("controller_url %r has no host" % url)
        return None, urlunsplit((parts.scheme, parts.netloc, parts.path or "/", parts.query, ""))
    raise ValueError(
        "controller_url %r must be a Unix socket path or an https:// URL (the controller's TCP "
        "listener always uses TLS)" % url
    )


def location_text(location):
    """InfraKit's ``LeaderLocation`` is Go's ``url.URL`` struct; ours may be a string. Return a URL string or None."""
    if location is None:
        return None
    if isinstance(location, str):
        return location or None
    if not isinstance(location, dict):
        return to_text(location)
    scheme, host = location.get("Scheme") or "", location.get("Host") or ""
    if not scheme and not host:
        return None
    text = "%s://%s%s" % (scheme, host, location.get("Path") or "")
    if location.get("RawQuery"):
        text += "?" + location["RawQuery"]
    return text


class ControllerClient:
    """Calls on the manager's Group and Manager interfaces.

    ``retries`` counts extra attempts after a failure to connect; ``sleep`` is
    injectable so tests do not wait.
    """

    def __init__(self, url=None, token=None, validate_certs=True, timeout=30, retries=3, retry_delay=0.5,
                 sleep=time.sleep):
        self.url = url or default_controller_url()
        self.unix_socket, self.http_url = parse_controller_url(self.url)
        self.token = token
        self.validate_certs = validate_certs
        self.timeout = timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self._sleep = sleep
        self._next_id = 1

    @classmethod
    def from_params(cls, params, **kwargs):
        """A client from the options of ``CONTROLLER_ARGUMENT_SPEC``; raises ``ControllerError`` for a bad URL."""
        try:
            return cls(
                url=params.get("controller_url"),
                token=params.get("controller_token"),
                validate_certs=params.get("validate_certs", True),
                timeout=params.get("timeout") or 30,
                **kwargs
            )
        except ValueError as e:
            raise ControllerError(to_native(e))

    def describe_address(self):
        return self.unix_socket if self.unix_socket is not None else self.http_url

    # --- transport ---------------------------------------------------------------------------

    def call(self, method, params):
        """Send one JSON-RPC request and return its ``result``."""
        request_id = self._next_id
        self._next_id += 1
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": request_id},
                          separators=(",", ":"), sort_keys=False)
        # When the call was made: the controller refuses a change older than one it already applied
        # (a request stuck in a paused replica must not undo a later one).
        headers = {"Content-Type": "application/json", "X-Infrakit-Origin": repr(time.time())}
        if self.token:
            headers["Authorization"] = "Bearer %s" % self.token
        attempt = 0
        while True:
            try:
                payload = self._post(body, headers)
                break
            except URLError as e:
                if isinstance(getattr(e, "reason", None), ssl.SSLCertVerificationError):
                    # No retry changes a certificate.
                    raise UnreachableError(
                        "the InfraKit controller at %s (%s) presented a certificate that cannot be verified: %s. "
                        "Give the CA to the host running this, or for a self-signed certificate on a trusted "
                        "network set validate_certs: false (environment: INFRAKIT_VALIDATE_CERTS=false)"
                        % (self.describe_address(), method, to_native(e.reason)),
                        method=method,
                    )
                # urllib raises URLError only when connecting or sending failed: the controller never
                # saw the request, so trying again cannot apply anything twice.
                attempt += 1
                if attempt > self.retries:
                    raise UnreachableError(
                        "cannot reach the InfraKit controller at %s (%s) after %d attempts: %s. Is the manager "
                        "running (infrakit plugin start manager ...) and is controller_url right?"
                        % (self.describe_address(), method, attempt, to_native(getattr(e, "reason", e))),
                        method=method,
                    )
                self._sleep(self.retry_delay * (2 ** (attempt - 1)))
        return self._result(method, request_id, payload)

    def _post(self, body, headers):
        try:
            response = open_url(
                self.http_url,
                data=body,
                headers=headers,
                method="POST",
                timeout=self.timeout,
                validate_certs=self.validate_certs,
                unix_socket=self.unix_socket,
                http_agent=USER_AGENT,
                follow_redirects="none",
                use_proxy=self.unix_socket is None,
            )
            return response.read()
        except HTTPError as e:
            detail = ""
            try:
                detail = to_text(e.read(), errors="surrogate_or_replace").strip()
            except Exception:  # pylint: disable=broad-except
                pass
            hint = ""
            if e.code in (401, 403):
                hint = " (check controller_token)"
            raise RemoteError(
                "the InfraKit controller at %s answered HTTP %s%s%s"
                % (self.describe_address(), e.code, hint, ": " + detail if detail else ""),
                code=e.code,
            )
        except URLError:
            raise
        except (OSError, ValueError) as e:
            # A timeout or a connection dropped after the request was sent: it may have been applied,
            # so it is not retried.
            raise UnreachableError(
                "no answer from the InfraKit controller at %s within %ss: %s"
                % (self.describe_address(), self.timeout, to_native(e))
            )

    def _result(self, method, request_id, payload):
        try:
            message = json.loads(to_text(payload, errors="surrogate_or_strict"))
        except ValueError as e:
            raise RemoteError("the InfraKit controller sent invalid JSON for %s: %s" % (method, to_native(e)),
                              method=method)
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise RemoteError("the InfraKit controller sent a malformed JSON-RPC answer to %s" % method, method=method)
        error = message.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise RemoteError("the InfraKit controller sent a malformed error for %s: %r" % (method, error),
                                  method=method)
            code = error.get("code")
            text = to_text(error.get("message") or "no message")
            raise RemoteError(
                "the InfraKit controller refused %s (JSON-RPC error %s): %s" % (method, code, text),
                method=method,
                code=code,
                data=error.get("data"),
            )
        if "result" not in message:
            raise RemoteError("the InfraKit controller answered %s with neither result nor error" % method,
                              method=method)
        return message["result"]

    # --- Group/0.1.1 ---------------------------------------------------------------------------

    def commit_group(self, spec, pretend=False, exists=True):
        """Commit (or with ``pretend`` only plan) a wire spec; return the controller's answer.

        The answer is ``{details, spec, previous, changed}``: InfraKit's plan text, then our
        controller's canonical form of the committed and of the enforced spec and whether they
        differ; Go InfraKit answers only the text, and the other three are None.
        An existing group is addressed as ``group/<ID>``; a new one through ``group/groups``, which
        InfraKit's manager resolves whatever groups exist.
        """
        name = _group_object(spec["ID"]) if exists else ALL_GROUPS
        result = self.call("Group.CommitGroup", {"Name": name, "Spec": spec, "Pretend": bool(pretend)}) or {}
        changed = result.get("Changed")
        return dict(
            details=to_text(result.get("Details") or ""),
            spec=result.get("Spec") if isinstance(result.get("Spec"), dict) else None,
            previous=result.get("Previous") if isinstance(result.get("Previous"), dict) else None,
            changed=changed if isinstance(changed, bool) else None,
        )

    def describe_group(self, group_id):
        """The group's ``Description``: ``Instances``, ``Converged`` and, from our controller, ``Status``."""
        result = self.call("Group.DescribeGroup", {"Name": _group_object(group_id), "ID": group_id})
        return (result or {}).get("Description") or {}

    def inspect_groups(self):
        """Every managed group's stored wire spec (InfraKit answers null for none)."""
        result = self.call("Group.InspectGroups", {"Name": ALL_GROUPS, "ID": ""})
        return list((result or {}).get("Groups") or [])

    def find_group(self, group_id):
        """The stored spec of one group, or None when the controller does not manage it."""
        for spec in self.inspect_groups():
            if isinstance(spec, dict) and spec.get("ID") == group_id:
                return spec
        return None

    def destroy_group(self, group_id):
        self.call("Group.DestroyGroup", {"Name": _group_object(group_id), "ID": group_id})

    def free_group(self, group_id):
        self.call("Group.FreeGroup", {"Name": _group_object(group_id), "ID": group_id})

    def set_size(self, group_id, size):
        self.call("Group.SetSize", {"Name": _group_object(group_id), "ID": group_id, "Size": int(size)})

    # --- Manager (Stack/0.1.1) -----------------------------------------------------------------

    def is_leader(self):
        return bool((self.call("Manager.IsLeader", {}) or {}).get("Leader"))

    def leader_location(self):
        return location_text((self.call("Manager.LeaderLocation", {}) or {}).get("Location"))

    def status(self):
        """Our ``Manager.Status`` (``{Leader, Location, Backend: {Type, Healthy, Reason}}``), or None when
        the controller does not have it (Go InfraKit)."""
        try:
            return self.call("Manager.Status", {}) or {}
        except RemoteError as e:
            if is_unknown_method(e):
                return None
            raise


def is_unknown_method(error):
    """True when a RemoteError says the method does not exist (standard code, or Go's -32000 texts)."""
    if error.code == METHOD_NOT_FOUND:
        return True
    text = (error.message or "").lower()
    return error.code == APPLICATION_ERROR and (
        "can't find" in text or "not implemented" in text or "unknown method" in text or "method not found" in text
    )


def _group_object(group_id):
    return "%s/%s" % (CONTROLLER_SOCKET, group_id)
