"""Health probes: a verdict on one instance from HTTP, TCP or a command, never blocking the loop.

Guarantee: every probe is asyncio-native (aiohttp, ``asyncio.open_connection``,
``asyncio`` subprocesses), bounded by its timeout, and a command that overruns
is killed with its whole process group. A probe answers UNHEALTHY only for a
definite failure of the instance (refused, wrong status, non-zero exit,
timeout); anything that says nothing about the instance (a placeholder with no
value yet, a command that cannot be started here, a URL that does not parse)
is UNKNOWN, so a typo never gets a whole group replaced.
Limit: a probe sees the instance from the flavor daemon's host and network;
it says nothing about reachability from anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
from collections.abc import Iterable

import aiohttp

from infrakit_runtime.spi import flavor, instance

log = logging.getLogger(__name__)

# Where an instance's address may come from, besides Properties.Address and the logical ID.
TAG_ADDRESS = "infrakit.address"

_PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_SIMPLE_NAMES = ("address", "host", "port", "id", "logical_id")
KNOWN_PLACEHOLDERS = "{{address}}, {{host}}, {{port}}, {{id}}, {{logical_id}}, {{tags.NAME}}"
# How much of a failing command's stderr goes into the verdict's reason.
_STDERR_TAIL = 300


class Unfilled(Exception):
    """A placeholder has no value for this instance (yet): the verdict is UNKNOWN, not a failure."""

    def __init__(self, placeholder: str, instance_id: str) -> None:
        self.placeholder = placeholder
        super().__init__(f"instance {instance_id} has no value for {{{{{placeholder}}}}}")


def placeholder_problems(text: str, field: str) -> list[str]:
    """Every placeholder in ``text`` we would not know how to fill, named by ``field``."""
    problems = []
    for name in _PLACEHOLDER.findall(text):
        if name in _SIMPLE_NAMES or (name.startswith("tags.") and len(name) > len("tags.") and " " not in name):
            continue
        problems.append(f"{field} uses unknown placeholder {{{{{name}}}}} (known: {KNOWN_PLACEHOLDERS})")
    return problems


def _text(value: object) -> str | None:
    """A property as placeholder text: strings and integers only; empty means absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def _value(name: str, d: instance.Description) -> str | None:
    props = d.properties if isinstance(d.properties, dict) else {}
    address = _text(props.get("Address")) or _text(d.tags.get(TAG_ADDRESS)) or _text(d.logical_id)
    if name == "address":
        return address
    if name == "host":
        return _text(props.get("Host")) or address
    if name == "port":
        return _text(props.get("Port"))
    if name == "id":
        return _text(d.id)
    if name == "logical_id":
        return _text(d.logical_id)
    if name.startswith("tags."):
        return d.tags.get(name[len("tags."):])
    return None


def fill(text: str, description: instance.Description) -> str:
    """``text`` with every placeholder replaced from ``description``; ``Unfilled`` if one has no value.

    The address is Properties.Address, else the ``infrakit.address`` tag, else the
    logical ID; the host is Properties.Host, else the address; the port is
    Properties.Port. Values are inserted as they are: commands never go through a
    shell, so an argument cannot turn into two.
    """

    def one(match: re.Match[str]) -> str:
        value = _value(match.group(1), description)
        if value is None:
            raise Unfilled(match.group(1), description.id)
        return value

    return _PLACEHOLDER.sub(one, text)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One probe's answer and why, for logs and for the operator reading them."""

    health: flavor.Health
    reason: str


def combine(verdicts: Iterable[Verdict]) -> flavor.Health:
    """Any UNHEALTHY wins, then any UNKNOWN; HEALTHY only when every verdict is (and none is missing)."""
    healths = [v.health for v in verdicts]
    if flavor.Health.UNHEALTHY in healths:
        return flavor.Health.UNHEALTHY
    if not healths or flavor.Health.UNKNOWN in healths:
        return flavor.Health.UNKNOWN
    return flavor.Health.HEALTHY


def _unhealthy(reason: str) -> Verdict:
    return Verdict(flavor.Health.UNHEALTHY, reason)


def _unknown(reason: str) -> Verdict:
    return Verdict(flavor.Health.UNKNOWN, reason)


async def http_probe(session: aiohttp.ClientSession, url: str, *, timeout: float,
                     expect_status: int | None) -> Verdict:
    """GET ``url`` without following redirects: ``expect_status`` if given, else any 2xx, passes."""
    try:
        async with session.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            status = resp.status
    except TimeoutError:
        return _unhealthy(f"GET {url} did not answer within {timeout:g}s")
    except aiohttp.InvalidURL as e:
        return _unknown(f"cannot probe {url!r}: not a valid URL ({e})")
    except aiohttp.ClientConnectionError as e:
        return _unhealthy(f"GET {url} failed: {e}")
    except aiohttp.ClientError as e:
        return _unhealthy(f"GET {url} failed: {type(e).__name__}: {e}")
    ok = status == expect_status if expect_status is not None else 200 <= status < 300
    if ok:
        return Verdict(flavor.Health.HEALTHY, f"GET {url} answered {status}")
    wanted = str(expect_status) if expect_status is not None else "2xx"
    return _unhealthy(f"GET {url} answered {status}, expected {wanted}")


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ``ValueError`` naming what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{address!r} has no numeric port") from None
    if not 0 < port < 65536:
        raise ValueError(f"{address!r} has port {port} outside 1-65535")
    return host, port


async def tcp_probe(address: str, *, timeout: float) -> Verdict:
    """Open (and at once close) a TCP connection to ``host:port``."""
    try:
        host, port = split_host_port(address)
    except ValueError as e:
        return _unknown(f"cannot probe TCP {e}")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return _unhealthy(f"TCP connect to {address} did not complete within {timeout:g}s")
    except OSError as e:
        return _unhealthy(f"TCP connect to {address} failed: {e.strerror or e}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Verdict(flavor.Health.HEALTHY, f"TCP connect to {address} succeeded")


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """How a command ended: its exit status, or ``timed_out``, or ``error`` when it never started."""

    returncode: int | None = None
    timed_out: bool = False
    error: str | None = None
    stderr: str = ""

    def describe(self, argv: list[str], timeout: float) -> str:
        shown = " ".join(argv)
        if self.error is not None:
            return f"cannot run {shown!r}: {self.error}"
        if self.timed_out:
            return f"{shown!r} did not finish within {timeout:g}s and was killed"
        tail = f": {self.stderr}" if self.stderr else ""
        return f"{shown!r} exited with status {self.returncode}{tail}"


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill the command and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_command(argv: list[str], *, timeout: float) -> CommandResult:
    """Run ``argv`` (no shell) in its own session; kill the whole group past ``timeout``."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
    except OSError as e:
        return CommandResult(error=e.strerror or str(e))
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return CommandResult(timed_out=True)
    except asyncio.CancelledError:
        _kill_group(proc)
        await asyncio.shield(proc.wait())
        raise
    stderr = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
    return CommandResult(returncode=proc.returncode, stderr=stderr)


async def command_probe(argv: list[str], *, timeout: float) -> Verdict:
    """Exit status 0 passes; a non-zero status or an overrun fails; a command that cannot start is UNKNOWN."""
    result = await run_command(argv, timeout=timeout)
    reason = result.describe(argv, timeout)
    if result.error is not None:
        return _unknown(reason)
    if result.timed_out or result.returncode != 0:
        return _unhealthy(reason)
    return Verdict(flavor.Health.HEALTHY, reason)
