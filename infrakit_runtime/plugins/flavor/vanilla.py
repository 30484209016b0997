"""Vanilla flavor: InfraKit's init/tags/attachments, plus real health probes and a drain hook.

Guarantee: Prepare keeps InfraKit's vanilla semantics exactly (spec Init
first, then the flavor's Init lines or its template, joined with newlines; Tags
merged over the spec's; Attachments appended), so Go groups behave the same on
our daemon. Healthy runs the declared ``Health`` probes (HTTP, TCP, Command) on
the event loop and says HEALTHY only when all pass; with no probe declared it
says HEALTHY, as InfraKit does - and says so (``flavor.Probing``), so the controller stops asking about
an instance once it has proved itself. Validate lists every problem, naming the field.
Limit: ``InitScriptTemplateURL`` is fetched (``file://``, ``str://``) but not
rendered: a template holding Go template actions (``{{ ... }}``) is refused with
a precise error rather than shipped half-rendered. Prepare, Healthy and Drain
ignore unknown properties, as InfraKit's Go decoder does; only Validate rejects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.plugins import fields
from infrakit_runtime.plugins.flavor import probes
from infrakit_runtime.rpc.flavor import FlavorService, healthy_each
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

# InfraKit's exact text (shared/wire/error-flavor-validate-both.json).
BOTH_INIT_AND_TEMPLATE = 'Either "Init" or "InitScriptTemplateURL" can be specified but not both'
KNOWN_KEYS = ("Attachments", "Drain", "Health", "Init", "InitScriptTemplateURL", "Tags")
HEALTH_KEYS = ("Command", "ExpectStatus", "HTTP", "TCP", "Timeout")
DRAIN_KEYS = ("Command", "Timeout")
# A probe slower than this says more about the instance than any answer it might still give.
DEFAULT_PROBE_TIMEOUT = 5.0
# Draining moves work away; give it time, but never forever.
DEFAULT_DRAIN_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """The declared probes; every one given must pass."""

    http: str | None = None
    tcp: str | None = None
    command: tuple[str, ...] | None = None
    timeout: float = DEFAULT_PROBE_TIMEOUT
    expect_status: int | None = None


@dataclasses.dataclass(frozen=True)
class DrainHook:
    """A command run before an instance is destroyed."""

    command: tuple[str, ...]
    timeout: float = DEFAULT_DRAIN_TIMEOUT


@dataclasses.dataclass(frozen=True)
class Properties:
    """The vanilla flavor's Properties, checked."""

    init: tuple[str, ...] = ()
    template_url: str = ""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    attachments: tuple[instance.Attachment, ...] = ()
    health: HealthCheck | None = None
    drain: DrainHook | None = None


def template_url_problems(url: str) -> list[str]:
    """Why ``url`` cannot be fetched as an init script template (empty when it can)."""
    parts = urlsplit(url)
    if parts.scheme == "str":
        return []
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            return [f"InitScriptTemplateURL {url!r} names host {parts.netloc!r}; use file:///absolute/path"]
        if not parts.path.startswith("/"):
            return [f"InitScriptTemplateURL {url!r} has no absolute path; use file:///absolute/path"]
        return []
    scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
    return [f"InitScriptTemplateURL {url!r} has {scheme}; supported: file:///absolute/path, str://script-text"]


async def fetch_template(url: str) -> str:
    """The init script at ``url``; ``PluginError`` naming the URL when it cannot be had or used."""
    problems = template_url_problems(url)
    if problems:
        raise PluginError(problems[0])
    if url.startswith("str://"):
        text = url[len("str://"):]
    else:
        path = Path(unquote(urlsplit(url).path))
        try:
            text = await asyncio.to_thread(path.read_text)
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise PluginError(f"InitScriptTemplateURL {url!r}: cannot read {path}: {reason}") from None
    if "{{" in text:
        raise PluginError(
            f"InitScriptTemplateURL {url!r} holds Go template actions ({{{{ ... }}}}), which this flavor does not "
            "render; render the script first or list its lines in Init"
        )
    return text


def _probe_text_problems(f: fields.Fields, key: str) -> str | None:
    text = f.string(key)
    if text is not None:
        f.problems.extend(probes.placeholder_problems(text, f.path(key)))
    return text


def _command(f: fields.Fields, key: str) -> tuple[str, ...] | None:
    argv = f.strings(key)
    if argv is None:
        return None
    if not argv or not argv[0]:
        f.problems.append(f"{f.path(key)} must name a program to run, e.g. [\"/usr/bin/check\", \"{{{{address}}}}\"]")
        return None
    for i, arg in enumerate(argv):
        f.problems.extend(probes.placeholder_problems(arg, f"{f.path(key)}[{i}]"))
    return tuple(argv)


def _health(f: fields.Fields, strict: bool) -> HealthCheck:
    if strict:
        f.unknown(HEALTH_KEYS)
    http = _probe_text_problems(f, "HTTP")
    if http is not None and not http.lower().startswith(("http://", "https://")):
        f.problems.append(f"{f.path('HTTP')} must be an http:// or https:// URL, got {http!r}")
    tcp = _probe_text_problems(f, "TCP")
    if tcp is not None and "{{" not in tcp:
        try:
            probes.split_host_port(tcp)
        except ValueError as e:
            f.problems.append(f"{f.path('TCP')}: {e}")
    command = _command(f, "Command")
    timeout = f.duration("Timeout", DEFAULT_PROBE_TIMEOUT)
    expect: int | None = None
    if f.obj.get("ExpectStatus") is not None:
        expect = f.integer("ExpectStatus", 0, minimum=100, maximum=599) or None
        if expect is not None and f.obj.get("HTTP") is None:
            f.problems.append(f"{f.path('ExpectStatus')} needs {f.path('HTTP')}")
    if all(f.obj.get(k) is None for k in ("HTTP", "TCP", "Command")):
        f.problems.append(f"{f.where} needs at least one probe: HTTP, TCP or Command")
    return HealthCheck(http=http, tcp=tcp, command=command, timeout=timeout, expect_status=expect)


def _drain(f: fields.Fields, strict: bool) -> DrainHook | None:
    if strict:
        f.unknown(DRAIN_KEYS)
    command = _command(f, "Command")
    f.required("Command")
    timeout = f.duration("Timeout", DEFAULT_DRAIN_TIMEOUT)
    return DrainHook(command=command, timeout=timeout) if command else None


def _attachments(f: fields.Fields, strict: bool) -> tuple[instance.Attachment, ...]:
    value = f.obj.get("Attachments")
    if value is None:
        return ()
    if not isinstance(value, list):
        f.problems.append(fields.wrong_type("Attachments", "an array of {ID, Type} objects", value))
        return ()
    found = []
    for i, item in enumerate(value):
        where = f"Attachments[{i}]"
        if not isinstance(item, dict):
            f.problems.append(fields.wrong_type(where, "an object with ID and Type", item))
            continue
        a = fields.Fields(item, where, f.problems)
        if strict:
            a.unknown(("ID", "Type"))
        attachment_id, type_ = a.string("ID"), a.string("Type")
        if item.get("ID") in (None, ""):
            f.problems.append(fields.missing(f"{where}.ID"))
        elif attachment_id is not None:
            found.append(instance.Attachment(id=attachment_id, type=type_ or ""))
    return tuple(found)


def parse_properties(obj: JSON, *, strict: bool) -> Properties:
    """Checked Properties, or ``ValidationError`` listing every problem.

    ``strict`` (Validate) also rejects keys we do not know; Prepare, Healthy and
    Drain skip them as InfraKit's Go decoder does.
    """
    if obj is None:
        return Properties()
    if not isinstance(obj, dict):
        raise ValidationError(fields.wrong_type("Properties", "an object", obj))
    problems: list[str] = []
    f = fields.Fields(obj, "", problems)
    if strict:
        f.unknown(KNOWN_KEYS)
    init = f.strings("Init") or []
    url = f.string("InitScriptTemplateURL") or ""
    if url and init:
        problems.append(BOTH_INIT_AND_TEMPLATE)
    elif url:
        problems.extend(template_url_problems(url))
    tags = f.string_map("Tags")
    attachments = _attachments(f, strict)
    health_fields = f.nested("Health")
    health = _health(health_fields, strict) if health_fields is not None else None
    drain_fields = f.nested("Drain")
    drain = _drain(drain_fields, strict) if drain_fields is not None else None
    if problems:
        raise ValidationError(problems)
    return Properties(init=tuple(init), template_url=url, tags=tags, attachments=attachments,
                      health=health, drain=drain)


class VanillaFlavorPlugin:
    """``FlavorPlugin`` with InfraKit's vanilla semantics and real health probes."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        """One session for every HTTP probe; fresh connections, so each probe tests accepting one."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, limit=100)
            self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": "infrakit-vanilla-probe"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        props = parse_properties(properties, strict=True)
        if props.template_url:
            # InfraKit renders the template at Validate too: a missing file is found before any rollout.
            try:
                await fetch_template(props.template_url)
            except PluginError as e:
                raise ValidationError(str(e)) from None

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        props = parse_properties(properties, strict=False)
        template = await fetch_template(props.template_url) if props.template_url else None
        return _prepared(props, template, spec)

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: flavor.Allocation,
                           indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
        """``flavor.Batch``: ``prepare`` for each spec, the Properties read and the template fetched once."""
        try:
            props = parse_properties(properties, strict=False)
            template = await fetch_template(props.template_url) if props.template_url else None
        except PluginError as e:
            return [e] * len(specs)
        return [_prepared(props, template, s) for s in specs]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        """``flavor.Batch``: ``healthy`` for each instance, the Properties read once; without a probe no
        task per instance (a probe that cannot run answers UNKNOWN, as ``healthy_each`` says)."""
        try:
            check = parse_properties(properties, strict=False).health
        except PluginError:
            return [flavor.Health.UNKNOWN] * len(descriptions)
        if check is None:
            return [flavor.Health.HEALTHY] * len(descriptions)
        return await healthy_each(self, properties, descriptions)

    def has_probe(self, properties: JSON) -> bool:
        """``flavor.Probing``: only a declared ``Health`` probes; without one every instance is HEALTHY."""
        return parse_properties(properties, strict=False).health is not None

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        check = parse_properties(properties, strict=False).health
        if check is None:
            return flavor.Health.HEALTHY
        verdicts = await asyncio.gather(*self._probes(check, description))
        health = probes.combine(verdicts)
        log.debug("instance %s is %s: %s", description.id, health.name,
                  "; ".join(v.reason for v in verdicts))
        return health

    def _probes(self, check: HealthCheck, d: instance.Description) -> list[Any]:
        """One coroutine per declared probe."""
        kinds = [k for k, v in (("HTTP", check.http), ("TCP", check.tcp), ("Command", check.command)) if v is not None]
        return [self._probe(kind, check, d) for kind in kinds]

    async def _probe(self, kind: str, check: HealthCheck, d: instance.Description) -> probes.Verdict:
        """Fill the probe's placeholders and run it; a placeholder with no value yet means UNKNOWN."""
        try:
            if kind == "HTTP":
                return await probes.http_probe(self._http(), probes.fill(check.http or "", d),
                                               timeout=check.timeout, expect_status=check.expect_status)
            if kind == "TCP":
                return await probes.tcp_probe(probes.fill(check.tcp or "", d), timeout=check.timeout)
            argv = [probes.fill(arg, d) for arg in check.command or ()]
            return await probes.command_probe(argv, timeout=check.timeout)
        except probes.Unfilled as e:
            return probes.Verdict(flavor.Health.UNKNOWN, str(e))

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        hook = parse_properties(properties, strict=False).drain
        if hook is None:
            return
        try:
            argv = [probes.fill(arg, description) for arg in hook.command]
        except probes.Unfilled as e:
            raise PluginError(f"cannot drain instance {description.id}: {e}") from None
        result = await probes.run_command(argv, timeout=hook.timeout)
        if result.error is not None or result.timed_out or result.returncode != 0:
            raise PluginError(f"drain of instance {description.id} failed: {result.describe(argv, hook.timeout)}")
        log.info("drained instance %s with %s", description.id, " ".join(argv))


def _prepared(props: Properties, template: str | None, spec: instance.Spec) -> instance.Spec:
    """``spec`` with the flavor's init (its lines, or the fetched ``template``), tags and attachments."""
    lines = [spec.init] if spec.init else []
    if template is not None:
        lines.append(template)
    else:
        lines.extend(props.init)
    attachments = spec.attachments
    if props.attachments:
        attachments = (*(spec.attachments or ()), *props.attachments)
    return dataclasses.replace(spec, init="\n".join(lines), tags={**spec.tags, **props.tags}, attachments=attachments)


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """No options; InfraKit's vanilla announces no vendor, so neither do we."""
    plugin = VanillaFlavorPlugin()
    try:
        yield Served(services=[FlavorService({"": plugin})])
    finally:
        await plugin.close()
