"""Running one plugin daemon: build its objects, serve them, stop cleanly.

``infrakit plugin run kind[:name]`` lands here. The daemon writes a pid file
beside its socket (so ``infrakit plugin stop`` can find it), tells systemd it
is ready and alive when ``NOTIFY_SOCKET`` is set, and on SIGTERM/SIGINT
closes its listener and removes its socket before exiting.

Cost: the server side (aiohttp's web, the RPC server, metrics) is imported when a daemon
runs, not with this module: the configuration (``KINDS``, ``DaemonSpec``) and the supervisor
of ``infrakit up`` use the rest without serving anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infrakit_runtime.rpc import discovery
from infrakit_runtime.spi.common import ValidationError

if TYPE_CHECKING:
    from aiohttp import web

    from infrakit_runtime.metrics import DaemonMetrics
    from infrakit_runtime.rpc.dispatch import Dispatcher
    from infrakit_runtime.rpc.service import Service

log = logging.getLogger(__name__)

# kind -> "module:function"; imported lazily so one daemon loads only what it runs.
KINDS: dict[str, str] = {
    "file": "infrakit_runtime.plugins.instance.file:open_daemon",
    "process": "infrakit_runtime.plugins.instance.process:open_daemon",
    "aws": "infrakit_runtime.plugins.instance.aws:open_daemon",
    "spread": "infrakit_runtime.plugins.instance.selector.daemon:open_spread",
    "tiered": "infrakit_runtime.plugins.instance.selector.daemon:open_tiered",
    "weighted": "infrakit_runtime.plugins.instance.selector.daemon:open_weighted",
    "vanilla": "infrakit_runtime.plugins.flavor.vanilla:open_daemon",
    "combo": "infrakit_runtime.plugins.flavor.combo:open_daemon",
    "targetgroup": "infrakit_runtime.plugins.flavor.targetgroup:open_daemon",
    "selfhost": "infrakit_runtime.plugins.flavor.selfhost.daemon:open_daemon",
    "ansible": "infrakit_runtime.plugins.flavor.ansible.plugin:open_daemon",
    "manager": "infrakit_runtime.wiring:open_manager",
}
# The socket a kind listens on unless told otherwise (the manager is InfraKit's ``group``).
DEFAULT_NAMES = {"manager": "group"}


@dataclasses.dataclass(frozen=True)
class DaemonSpec:
    """``kind[:name]`` plus the kind's options."""

    kind: str
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, options: dict[str, Any] | None = None) -> DaemonSpec:
        kind, _, name = text.partition(":")
        if kind not in KINDS:
            raise ValidationError(f"unknown plugin kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        name = name or DEFAULT_NAMES.get(kind, kind)
        discovery.PluginName.parse(name)
        if "/" in name:
            raise ValidationError(f"daemon name {name!r} must not contain '/'")
        return cls(kind, name, dict(options or {}))


def _daemon_metrics() -> DaemonMetrics:
    from infrakit_runtime.metrics import DaemonMetrics  # imported by a daemon that runs (module docstring)

    return DaemonMetrics()


@dataclasses.dataclass(frozen=True)
class DaemonContext:
    """What a daemon kind needs to know to build its objects."""

    name: str
    options: dict[str, Any]
    plugins_dir: Path
    home: Path
    # The registry ``GET /metrics`` serves; a kind with metrics of its own adds them here.
    metrics: DaemonMetrics = dataclasses.field(default_factory=_daemon_metrics)

    def state_dir(self, sub: str) -> Path:
        path = self.home / sub
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        return path


@dataclasses.dataclass
class Served:
    """What a daemon kind hands the runner: services and optional extra HTTP routes."""

    services: list[Service]
    routes: list[web.RouteDef] = dataclasses.field(default_factory=list)
    vendor: dict[str, str] | None = None
    # A TCP listener the kind asks for (the manager's, for forwarding and remote modules).
    tcp: tuple[str, int] | None = None
    ssl_context: Any = None
    token: str | None = None


Opener = Callable[[DaemonContext], contextlib.AbstractAsyncContextManager[Served]]


def opener_for(kind: str) -> Opener:
    module_name, _, func = KINDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), func)


def pid_path(plugins_dir: Path, name: str) -> Path:
    return plugins_dir / f"{name}.pid"


def sd_notify(message: str) -> bool:
    """Send ``message`` to systemd's notify socket if there is one (READY=1, WATCHDOG=1)."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    if target.startswith("@"):
        target = "\0" + target[1:]
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as s:
        try:
            s.connect(target)
            s.sendall(message.encode())
        except OSError as e:
            log.warning("cannot notify systemd: %s", e)
            return False
    return True


async def _watchdog() -> None:
    """Ping systemd's watchdog at half its interval while the event loop is responsive."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    except ValueError:
        return
    watched = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (watched and watched != str(os.getpid())):
        return  # no watchdog, or it watches another process (sd_watchdog_enabled's rule)
    interval = usec / 2e6
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running(spec: DaemonSpec, *, plugins_dir: Path | None = None, home: Path | None = None,
                  tcp: tuple[str, int] | None = None, token: str | None = None,
                  ssl_context: Any = None) -> AsyncIterator[Dispatcher]:
    """Serve ``spec`` until the context exits (tests use this in-process)."""
    from infrakit_runtime.rpc.dispatch import Dispatcher
    from infrakit_runtime.rpc.server import make_app, serve

    plugins_dir = plugins_dir or discovery.plugins_dir()
    home = home or discovery.infrakit_home()
    plugins_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    ctx = DaemonContext(name=spec.name, options=spec.options, plugins_dir=plugins_dir, home=home)
    async with opener_for(spec.kind)(ctx) as served:
        dispatcher = Dispatcher(spec.name, served.services, vendor=served.vendor)
        app = make_app(dispatcher, token=token or served.token, routes=served.routes, daemon_metrics=ctx.metrics)
        async with serve(app, socket_path=plugins_dir / spec.name, tcp=tcp or served.tcp,
                         ssl_context=ssl_context or served.ssl_context):
            pid_file = pid_path(plugins_dir, spec.name)
            pid_file.write_text(f"{os.getpid()}\n")
            try:
                yield dispatcher
            finally:
                with contextlib.suppress(FileNotFoundError):
                    if pid_file.read_text().strip() == str(os.getpid()):
                        pid_file.unlink()


async def run_forever(specs: DaemonSpec | list[DaemonSpec], **kwargs: Any) -> None:
    """Serve until SIGTERM or SIGINT (the body of ``infrakit plugin run``).

    Several daemons may share one process (``plugin run manager file vanilla``): each keeps
    its own socket and speaks RPC to the others exactly as if apart, but one Python
    runtime is paid for instead of three (about 37 MiB each). A ``tcp`` listener, if
    given, belongs to the first daemon.
    """
    specs = [specs] if isinstance(specs, DaemonSpec) else list(specs)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for i, spec in enumerate(specs):
            extra = kwargs if i == 0 else {k: v for k, v in kwargs.items() if k not in ("tcp", "token", "ssl_context")}
            try:
                dispatcher = await stack.enter_async_context(running(spec, **extra))
            except Exception as e:
                if len(specs) > 1:
                    log.error("plugin %s (%s) cannot start, and the %s sharing its process stop with it: %s",
                              spec.name, spec.kind, ", ".join(s.name for s in specs if s is not spec), e)
                raise
            log.info("plugin %s (%s) serving %s", spec.name, spec.kind,
                     ", ".join(sorted(dispatcher.hello()["Objects"])))
        sd_notify("READY=1")
        async with asyncio.TaskGroup() as tg:
            watchdog = tg.create_task(_watchdog(), name="watchdog")
            await stop.wait()
            watchdog.cancel()
        sd_notify("STOPPING=1")
    log.info("plugin(s) %s stopped", ", ".join(s.name for s in specs))
