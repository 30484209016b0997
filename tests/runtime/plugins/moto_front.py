"""moto's standalone server behind a front that does what moto cannot: faults, draining, interruptions.

Run as ``python -m tests.runtime.plugins.moto_front PORT``: moto's own WSGI app (as ``python -m
moto.server`` serves it), wrapped. Clients talk real boto3 over HTTP to it exactly as to moto;
only these behaviours are added, each one what EC2 or ELBv2 does and moto 5.2 does not:

* **Capacity.** RunInstances into a subnet listed in ``refuse_subnets`` (``SubnetId`` or the first
  network interface's), or any spot launch while ``refuse_spot`` is set, fails as EC2 fails:
  HTTP 500, ``InsufficientInstanceCapacity``.
* **Released addresses.** moto keeps a terminated instance's private IP reserved forever; EC2
  releases it. After each TerminateInstances the front releases them, so a pet's replacement can
  take its address again.
* **Target health.** moto reports a registered target ``healthy`` at once and forgets a
  deregistered one at once. The front reports a fresh target ``initial`` for ``elb_initial``
  seconds, a target listed in ``unhealthy`` as ``unhealthy``, and a deregistered one as
  ``draining`` for the target group's ``deregistration_delay.timeout_seconds``.
* **Spot interruptions.** An instance listed in ``interrupt`` gets a spot request in status
  ``marked-for-termination`` (DescribeSpotInstanceRequests), and is terminated
  ``interruption_notice`` seconds later, as EC2 does two minutes after its notice.

Control: ``POST /moto-front`` with a JSON object sets any of the keys above; ``GET /moto-front``
returns them with per-action request counts; ``GET|POST /moto-front/records`` returns (and with
POST clears) one ``[action, first page, start, end]`` record per request, for benchmarks;
``GET /moto-front/events`` returns ``[time, action, IDs]`` for every RunInstances (the IDs
launched), TerminateInstances, RegisterTargets and DeregisterTargets, so a test can check what
happened in which order.
``POST /moto-api/reset`` empties moto and the front alike.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape

ACCOUNT = "123456789012"
ELB_NS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15"
ET.register_namespace("", ELB_NS)


def _region(environ: dict[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    # AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, ...
    try:
        return auth.split("Credential=", 1)[1].split("/")[2]
    except IndexError:
        return "us-east-1"


def _members(query: dict[str, list[str]], prefix: str, suffix: str = "") -> list[str]:
    """Values of ``prefix.N[suffix]`` query parameters (the query protocol's lists), in order."""
    found = []
    for key, values in query.items():
        if key.startswith(prefix + ".") and key.endswith(suffix):
            index = key[len(prefix) + 1:len(key) - len(suffix)] if suffix else key[len(prefix) + 1:]
            if index.isdigit():
                found.append((int(index), values[0]))
    return [v for _, v in sorted(found)]


class Front:
    """WSGI middleware around moto's app (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.refuse_subnets: set[str] = set()
        self.refuse_spot = False
        self.elb_initial = 0.0
        self.unhealthy: set[str] = set()
        self.interruption_notice = 120.0
        self.interrupted: dict[str, float] = {}  # instance -> when the notice was given
        self.registered: dict[tuple[str, str], float] = {}  # (target group, target) -> registered at
        self.draining: dict[tuple[str, str], tuple[float, int]] = {}  # -> (until, port)
        self.records: list[tuple[str, bool, float, float]] = []
        self.counts: dict[str, int] = {}
        self.events: list[tuple[float, str, list[str]]] = []  # (time, action, target or instance IDs)

    # -- control -------------------------------------------------------------------------------

    def _control(self, environ: dict[str, Any], body: bytes, start_response: Any) -> list[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        with self.lock:
            if path == "/moto-front/records":
                out: Any = self.records
                if method == "POST":
                    self.records = []
            elif path == "/moto-front/events":
                out = self.events
            else:
                if method == "POST":
                    self._configure(json.loads(body or b"{}"))
                out = {"refuse_subnets": sorted(self.refuse_subnets), "refuse_spot": self.refuse_spot,
                       "elb_initial": self.elb_initial, "unhealthy": sorted(self.unhealthy),
                       "interrupt": sorted(self.interrupted), "interruption_notice": self.interruption_notice,
                       "counts": dict(self.counts)}
        data = json.dumps(out).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _configure(self, doc: dict[str, Any]) -> None:
        if "refuse_subnets" in doc:
            self.refuse_subnets = set(doc["refuse_subnets"])
        if "refuse_spot" in doc:
            self.refuse_spot = bool(doc["refuse_spot"])
        if "elb_initial" in doc:
            self.elb_initial = float(doc["elb_initial"])
        if "unhealthy" in doc:
            self.unhealthy = set(doc["unhealthy"])
        if "interruption_notice" in doc:
            self.interruption_notice = float(doc["interruption_notice"])
        for iid in doc.get("interrupt", []):
            self.interrupted.setdefault(iid, time.time())

    # -- the request path ----------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if environ.get("PATH_INFO", "").startswith("/moto-front"):
            return self._control(environ, body, start_response)
        if environ.get("PATH_INFO") == "/moto-api/reset":
            with self.lock:
                self.reset()
            return self.app(environ, start_response)
        query = urllib.parse.parse_qs(body.decode(errors="replace"))
        action = (query.get("Action") or [""])[0]
        region = _region(environ)
        t0 = time.time()
        self._interrupt_due(region)
        refusal = self._refusal(action, query)
        if refusal is not None:
            chunks: list[bytes] = [refusal]
            start_response("500 Internal Server Error", [("Content-Type", "text/xml"),
                                                        ("Content-Length", str(len(refusal)))])
        elif action in ("DescribeTargetHealth", "DescribeSpotInstanceRequests"):
            chunks = self._rewritten(action, environ, query, region, start_response)
        else:
            chunks = list(self.app(environ, start_response))
            self._after(action, query, region)
            if action == "RunInstances":
                launched = re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", b"".join(chunks).decode(errors="replace"))
                with self.lock:
                    self.events.append((time.time(), action, sorted(set(launched))))
        if action:
            with self.lock:
                self.counts[action] = self.counts.get(action, 0) + 1
                self.records.append((action, "NextToken" not in query, t0, time.time()))
        return chunks

    def _refusal(self, action: str, query: dict[str, list[str]]) -> bytes | None:
        if action != "RunInstances":
            return None
        subnets = set(query.get("SubnetId", [])) | set(_members(query, "NetworkInterface", ".SubnetId"))
        spot = (query.get("InstanceMarketOptions.MarketType") or [""])[0] == "spot"
        with self.lock:
            if subnets & self.refuse_subnets:
                message = "We currently do not have sufficient capacity in the Availability Zone you requested."
            elif spot and self.refuse_spot:
                message = "There is no Spot capacity available that matches your request."
            else:
                return None
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>InsufficientInstanceCapacity'
                f'</Code><Message>{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID>'
                f'</Response>').encode()

    def _after(self, action: str, query: dict[str, list[str]], region: str) -> None:
        ids = _members(query, "InstanceId") if action == "TerminateInstances" else _members(query, "Targets.member", ".Id")
        if action in ("TerminateInstances", "RegisterTargets", "DeregisterTargets"):
            with self.lock:
                self.events.append((time.time(), action, ids))
        if action == "TerminateInstances":
            self._release_addresses(region, _members(query, "InstanceId"))
        elif action in ("RegisterTargets", "DeregisterTargets"):
            arn = (query.get("TargetGroupArn") or [""])[0]
            ids = _members(query, "Targets.member", ".Id")
            ports = dict(zip(ids, _members(query, "Targets.member", ".Port"), strict=False))
            now = time.time()
            with self.lock:
                for target in ids:
                    if action == "RegisterTargets":
                        self.registered[(arn, target)] = now
                        self.draining.pop((arn, target), None)
                    elif self.registered.pop((arn, target), None) is not None:
                        delay, port = self._target_group(region, arn)
                        self.draining[(arn, target)] = (now + delay, int(ports.get(target) or port))

    # -- moto's own state (read, or repaired where EC2 would differ) -----------------------------

    @staticmethod
    def _release_addresses(region: str, instance_ids: list[str]) -> None:
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[ACCOUNT][region]
        for iid in instance_ids:
            try:
                inst = backend.get_instance(iid)
                subnet = backend.get_subnet(inst.subnet_id) if inst.subnet_id else None
            except Exception:  # unknown instance or subnet: nothing reserved
                continue
            if subnet is not None and inst.state == "terminated":
                for ip in list(inst._private_ips):
                    subnet.del_subnet_ip(ip)

    @staticmethod
    def _target_group(region: str, arn: str) -> tuple[float, int]:
        from moto.elbv2.models import elbv2_backends

        tg = elbv2_backends[ACCOUNT][region].target_groups.get(arn)
        if tg is None:
            return 0.0, 0
        return float(tg.attributes.get("deregistration_delay.timeout_seconds", 300)), int(tg.port or 0)

    def _interrupt_due(self, region: str) -> None:
        now = time.time()
        with self.lock:
            due = [i for i, at in self.interrupted.items() if now - at >= self.interruption_notice]
        if not due:
            return
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[ACCOUNT][region]
        for iid in due:
            try:
                backend.terminate_instances([iid])
            except Exception:
                pass
            self._release_addresses(region, [iid])
            with self.lock:
                self.interrupted.pop(iid, None)

    # -- rewritten answers ---------------------------------------------------------------------

    def _rewritten(self, action: str, environ: dict[str, Any], query: dict[str, list[str]], region: str,
                   start_response: Any) -> list[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        raw = b"".join(self.app(environ, capture))
        if captured.get("status", "").startswith("200"):
            raw = (self._target_health(raw, query) if action == "DescribeTargetHealth"
                   else self._spot_requests(raw))
        headers = [(k, v) for k, v in captured.get("headers", []) if k.lower() != "content-length"]
        start_response(captured.get("status", "500 Internal Server Error"),
                       [*headers, ("Content-Length", str(len(raw)))])
        return [raw]

    def _target_health(self, raw: bytes, query: dict[str, list[str]]) -> bytes:
        arn = (query.get("TargetGroupArn") or [""])[0]
        asked = _members(query, "Targets.member", ".Id")
        root = ET.fromstring(raw)
        q = f"{{{ELB_NS}}}"
        descriptions = root.find(f"{q}DescribeTargetHealthResult/{q}TargetHealthDescriptions")
        if descriptions is None:
            return raw
        now = time.time()
        with self.lock:
            draining = {t: v for (g, t), v in self.draining.items() if g == arn and now < v[0]}
            for member in list(descriptions):
                target = member.findtext(f"{q}Target/{q}Id") or ""
                health = member.find(f"{q}TargetHealth")
                if health is None:
                    continue
                state = health.findtext(f"{q}State")
                if state == "healthy" and target in self.unhealthy:
                    _set_health(health, "unhealthy", "Target.FailedHealthChecks", "Health checks failed")
                elif state == "healthy" and now - self.registered.get((arn, target), 0.0) < self.elb_initial:
                    _set_health(health, "initial", "Elb.RegistrationInProgress",
                                "Target registration is in progress")
                elif state == "unused" and target in draining:
                    _set_health(health, "draining", "Target.DeregistrationInProgress",
                                "Target deregistration is in progress")
                    draining.pop(target)
            for target, (_, port) in draining.items():
                if asked and target not in asked:
                    continue
                member = ET.SubElement(descriptions, f"{q}member")
                t = ET.SubElement(member, f"{q}Target")
                ET.SubElement(t, f"{q}Id").text = target
                ET.SubElement(t, f"{q}Port").text = str(port)
                ET.SubElement(member, f"{q}HealthCheckPort").text = "traffic-port"
                _set_health(ET.SubElement(member, f"{q}TargetHealth"), "draining", "Target.DeregistrationInProgress",
                            "Target deregistration is in progress")
        return ET.tostring(root, encoding="utf-8")

    def _spot_requests(self, raw: bytes) -> bytes:
        with self.lock:
            interrupted = dict(self.interrupted)
        if not interrupted:
            return raw
        items = "".join(
            f"<item><spotInstanceRequestId>sir-{iid[2:14]}</spotInstanceRequestId><instanceId>{escape(iid)}"
            f"</instanceId><state>active</state><type>one-time</type><status><code>marked-for-termination</code>"
            f"<message>Your Spot Instance is marked for termination.</message></status></item>"
            for iid in sorted(interrupted))
        return (f'<?xml version="1.0" encoding="utf-8"?>\n<DescribeSpotInstanceRequestsResponse xmlns="{EC2_NS}">'
                f"<spotInstanceRequestSet>{items}</spotInstanceRequestSet><requestId>{uuid.uuid4()}</requestId>"
                f"</DescribeSpotInstanceRequestsResponse>").encode()


def _set_health(health: ET.Element, state: str, reason: str, description: str) -> None:
    q = f"{{{ELB_NS}}}"
    for child in list(health):
        health.remove(child)
    ET.SubElement(health, f"{q}State").text = state
    ET.SubElement(health, f"{q}Reason").text = reason
    ET.SubElement(health, f"{q}Description").text = description


def serve(port: int) -> None:
    """moto's standalone server (what ``python -m moto.server`` runs) behind ``Front``, on loopback."""
    from moto import server
    from werkzeug.serving import run_simple

    app = server.DomainDispatcherApplication(server.create_backend_app)
    run_simple("127.0.0.1", port, Front(app), threaded=True, request_handler=server.MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
