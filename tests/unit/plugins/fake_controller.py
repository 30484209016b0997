# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""A small InfraKit controller stand-in on a real Unix socket, answering like shared/wire.

Guarantee: requests travel the real transport (HTTP over AF_UNIX, or HTTPS over TCP) and
answers are shaped like the recorded Go InfraKit exchanges (``fixtures/wire``): HTTP 200 for
every JSON-RPC outcome, ``text/plain`` content type, ``-32000`` with ``data: null`` for
application errors, ``Groups: null`` for none. Limit: it plans nothing; descriptions are
whatever a test scripts, or a converged group of the declared size by default.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import socketserver
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

WIRE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "wire")


def recording(name):
    with open(os.path.join(WIRE_DIR, name + ".json")) as f:
        return json.load(f)


class RPCError(Exception):
    def __init__(self, message, code=-32000):
        super().__init__(message)
        self.code = code
        self.message = message


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        pass

    def address_string(self):
        return "unix"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server.fake
        fake.headers.append(dict(self.headers.items()))
        if fake.required_token is not None and self.headers.get("Authorization") != "Bearer " + fake.required_token:
            self._send(401, b"unauthorized\n")
            return
        message = json.loads(body)
        fake.requests.append(message)
        try:
            result = fake.dispatch(message["method"], message.get("params") or {})
            answer = {"jsonrpc": "2.0", "result": result, "id": message.get("id")}
        except RPCError as e:
            answer = {"jsonrpc": "2.0", "error": {"code": e.code, "message": e.message, "data": None},
                      "id": message.get("id")}
        self._send(200, (json.dumps(answer, separators=(",", ":")) + "\n").encode())

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        conn, _addr = super().get_request()
        return conn, ("unix", 0)


class _TCPServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


def described_instance(group_id, n, address=None, logical_id=None, config_hash="mvxacvjmbbjytlvshmkgzggqgg3zequ3"):
    """An instance as DescribeGroup lists it (the shape of group-describe.json)."""
    tags = {"infrakit.config.hash": config_hash, "infrakit.group": group_id}
    if logical_id:
        tags["infrakit.logical_id"] = logical_id
    props = {"PID": 4000 + n}
    if address:
        props["Address"] = address
    return {"ID": "instance-%d" % n, "LogicalID": logical_id, "Tags": tags, "Properties": props}


class FakeController:
    """Serves Group/0.1.1 and Manager calls; records every request."""

    known_plugins = ("process", "file", "vanilla")

    def __init__(self, path=None, tls_cert=None, tls_key=None):
        self.path = path
        self.groups = {}          # ID -> wire spec, as InspectGroups returns it
        self.scripts = {}         # ID -> list of Descriptions served in turn (the last one repeats)
        self.requests = []
        self.headers = []
        self.required_token = None
        self.with_status = True   # our controller's additive Status and Manager.Status
        self.sharded = None       # Manager.Status's sharding keys (Sharding, Owners, Owned, Members) to add
        self.stored_extras = {}   # ID -> extra keys the controller adds when storing (like Go's Updating)
        self.plan = None          # Details text to answer CommitGroup with
        self.delays = {}          # method -> seconds to wait before answering
        self.destroy_keeps_listing = False  # DestroyGroup answers but InspectGroups still lists the group
        if path is not None:
            self.server = _UnixServer(path, _Handler)
        else:
            self.server = _TCPServer(("127.0.0.1", 0), _Handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls_cert, tls_key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.fake = self
        self._thread = threading.Thread(target=self.server.serve_forever, name="fake-controller", daemon=True)

    @property
    def url(self):
        if self.path is not None:
            return self.path
        return "https://127.0.0.1:%d" % self.server.server_address[1]

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def calls(self, method=None):
        return [r for r in self.requests if method is None or r["method"] == method]

    def methods(self):
        return [r["method"] for r in self.requests]

    # --- behaviour ---------------------------------------------------------------------------

    def dispatch(self, method, p):
        if self.delays.get(method):
            threading.Event().wait(self.delays[method])
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            raise RPCError("rpc: can't find method \"%s\"" % method, code=-32601)
        return handler(p)

    def _need(self, group_id):
        if group_id not in self.groups:
            raise RPCError("Group '%s' is not being watched" % group_id)

    def _Group_InspectGroups(self, p):
        groups = [copy.deepcopy(self.groups[k]) for k in sorted(self.groups)]
        return {"Name": p.get("Name"), "ID": p.get("ID", ""), "Groups": groups or None}

    def _Group_CommitGroup(self, p):
        spec = p["Spec"]
        props = spec.get("Properties") or {}
        problems = []
        for section in ("Instance", "Flavor"):
            plugin = (props.get(section) or {}).get("Plugin")
            if plugin not in self.known_plugins:
                problems.append("%s.Plugin: no plugin named %r is running" % (section, plugin))
        if problems:
            raise RPCError("invalid group spec %s: %s" % (spec.get("ID"), "; ".join(problems)))
        allocation = props.get("Allocation") or {}
        size = len(allocation.get("LogicalIDs") or []) or allocation.get("Size") or 0
        existed = spec["ID"] in self.groups
        details = self.plan or ("Managing %d instances" % size if not existed else "Updating the group spec")
        if not p.get("Pretend"):
            stored = copy.deepcopy(spec)
            stored["Properties"].setdefault("Allocation", {}).setdefault("LogicalIDs", None)
            for key, value in self.stored_extras.get(spec["ID"], {}).items():
                stored["Properties"][key] = value
            self.groups[spec["ID"]] = stored
        return {"Name": p.get("Name"), "ID": spec["ID"], "Details": details}

    def _description(self, group_id):
        script = self.scripts.get(group_id)
        if script:
            return copy.deepcopy(script.pop(0) if len(script) > 1 else script[0])
        allocation = self.groups[group_id]["Properties"].get("Allocation") or {}
        ids = allocation.get("LogicalIDs") or [None] * int(allocation.get("Size") or 0)
        instances = [described_instance(group_id, n, "127.0.0.1:%d" % (20000 + n), lid) for n, lid in enumerate(ids)]
        description = {"Instances": instances, "Converged": True}
        if self.with_status:
            description["Status"] = {
                "Desired": len(ids), "Running": len(ids), "Healthy": len(ids), "Unhealthy": 0, "Pending": 0,
                "Outdated": 0, "Condition": "Converged", "Reason": None, "Plan": "Managing %d instances" % len(ids),
                "LastError": None,
                "Instances": [{"ID": i["ID"], "LogicalID": i["LogicalID"], "Health": "healthy", "UpToDate": True}
                              for i in instances],
            }
        return description

    def _Group_DescribeGroup(self, p):
        self._need(p["ID"])
        return {"Name": p.get("Name"), "ID": p["ID"], "Description": self._description(p["ID"])}

    def _Group_DestroyGroup(self, p):
        self._need(p["ID"])
        if not self.destroy_keeps_listing:
            del self.groups[p["ID"]]
        return {"Name": p.get("Name"), "ID": p["ID"]}

    def _Group_FreeGroup(self, p):
        self._need(p["ID"])
        del self.groups[p["ID"]]
        return {"Name": p.get("Name"), "ID": p["ID"]}

    def _Group_SetSize(self, p):
        self._need(p["ID"])
        self.groups[p["ID"]]["Properties"]["Allocation"] = {"Size": p["Size"], "LogicalIDs": None}
        return {"Name": p.get("Name"), "ID": p["ID"]}

    def _Manager_IsLeader(self, p):
        return {"Leader": True}

    def _Manager_LeaderLocation(self, p):
        return recording("manager-leaderlocation")["response"]["body"]["result"]

    def _Manager_Status(self, p):
        if not self.with_status:
            raise RPCError("rpc: can't find method \"Manager.Status\"", code=-32601)
        return {"Leader": True, "Term": 3, "Location": None, "Problem": "", "Groups": len(self.groups),
                "Backend": {"Type": "file", "Healthy": True, "Reason": None}, **(self.sharded or {})}


class Replay:
    """Answers with recorded exchanges in order, after checking each request matches its recording."""

    def __init__(self, path, names):
        self.path = path
        self.expected = [recording(n) for n in names]
        self.mismatches = []
        replay = self

        class Handler(_Handler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                rec = replay.expected.pop(0)
                want = dict(rec["request"]["body"])
                got = dict(body)
                want.pop("id")
                got_id = got.pop("id")
                if got != want:
                    replay.mismatches.append((want, got))
                answer = dict(rec["response"]["body"])
                answer["id"] = got_id
                self._send(rec["response"]["status"], (json.dumps(answer) + "\n").encode())

        self.server = _UnixServer(path, Handler)
        self._thread = threading.Thread(target=self.server.serve_forever, name="replay", daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def free_socket_path(directory, name="group"):
    path = os.path.join(str(directory), name)
    # AF_UNIX paths are limited to about 107 bytes.
    if len(path) > 100:
        raise RuntimeError("socket path too long for AF_UNIX: %s" % path)
    return path


def refuse_path(directory):
    """A socket file nobody accepts on: connecting is refused."""
    path = os.path.join(str(directory), "dead")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    return path
