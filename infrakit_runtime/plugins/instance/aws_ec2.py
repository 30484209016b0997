"""Calling EC2 from asyncio: boto3 in a thread pool, throttling backoff, errors without secrets.

Guarantee: the event loop never waits on boto3 (every call runs in this module's own
thread pool, sized with botocore's connection pool); an EC2 error becomes a
``PluginError`` reading ``"<Operation> failed: <AWS code>: <AWS message>"``; and no
message, log line or result this module produces contains the access key, secret
key or session token of the credentials boto3's standard chain resolved — they are
scrubbed from every error text before it leaves.

Limit: throttling is retried twice over — by botocore's ``standard``/``adaptive``
retry mode inside each call, then by a capped, fully jittered exponential backoff
here when a call still ends in ``RequestLimitExceeded``/``Throttling`` — so a
throttled call can take up to ``throttle_cap * throttle_retries`` seconds before the
error reaches the caller. Other errors are not retried here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from infrakit_runtime.spi.common import PluginError

log = logging.getLogger(__name__)

THROTTLING_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "SlowDown",
})
RETRY_MODES = ("standard", "adaptive")


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter (delay = uniform(0, min(cap, base * 2**n)))."""

    retries: int = 5
    base: float = 0.5
    cap: float = 20.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.cap, self.base * (2 ** attempt))


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to reach EC2. Credentials are deliberately absent: boto3's standard chain finds them."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 5
    max_workers: int = 16


class AwsError(PluginError):
    """An EC2 call failed; ``code`` is AWS's error code ('' when the call never got an answer)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Ec2:
    """One EC2 client shared by every call, run in a private thread pool.

    ``service`` is boto3's name for the API (``ec2``; the targetgroup flavor uses ``elbv2``).
    ``sleep`` and ``rng`` are injected so the backoff can be tested without waiting.
    """

    def __init__(self, settings: Settings, *, backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random, service: str = "ec2") -> None:
        if settings.retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode must be one of {', '.join(RETRY_MODES)}, got {settings.retry_mode!r}")
        self.settings = settings
        self.service = service
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = rng
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=settings.max_workers,
                                                           thread_name_prefix="ec2")
        self._secrets: tuple[str, ...] = ()
        self._client: Any = None
        self._lock = threading.Lock()
        # Per-operation counts of API requests sent (each botocore retry counts): benchmarks read them.
        self.requests: dict[str, int] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def _connect(self) -> Any:
        session = boto3.session.Session(profile_name=self.settings.profile, region_name=self.settings.region)
        config = botocore.config.Config(
            retries={"mode": self.settings.retry_mode, "max_attempts": self.settings.max_attempts},
            max_pool_connections=self.settings.max_workers,
            user_agent_extra="infrakit-aws",
        )
        client = session.client(self.service, endpoint_url=self.settings.endpoint_url, config=config)
        creds = session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            self._secrets = tuple(s for s in (frozen.secret_key, frozen.token, frozen.access_key) if s)
        client.meta.events.register(f"before-send.{self.service}.*", self._count)
        return client

    def _count(self, request: Any = None, **kwargs: Any) -> None:
        name = kwargs.get("event_name", "before-send.?.?").rsplit(".", 1)[-1]
        with self._lock:
            self.requests[name] = self.requests.get(name, 0) + 1

    async def connect(self) -> None:
        """Build the client (reads config files and resolves credentials) off the event loop."""
        try:
            self._client = await self._in_pool(self._connect)
        except botocore.exceptions.BotoCoreError as e:
            raise AwsError(self.scrub(f"cannot set up the {self.service} client: {e}")) from None

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> Any:
        """The boto3 client (tests register event hooks on ``client.meta.events``)."""
        if self._client is None:
            raise RuntimeError("Ec2.connect() was not awaited")
        return self._client

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- calls ---------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` with every credential string replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _in_pool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def error(self, operation: str, e: Exception) -> AwsError:
        """The ``PluginError`` for a failed call, secrets scrubbed."""
        if isinstance(e, botocore.exceptions.ClientError):
            err = e.response.get("Error", {})
            code, message = str(err.get("Code", "")), str(err.get("Message", ""))
            return AwsError(self.scrub(f"{operation} failed: {code}: {message}"), code)
        return AwsError(self.scrub(f"{operation} failed: {type(e).__name__}: {e}"))

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """Call ``operation`` (e.g. ``RunInstances``) with ``params``; retry throttling with backoff."""
        method = getattr(self.client, botocore.xform_name(operation))
        attempt = 0
        while True:
            try:
                return await self._in_pool(method, **params)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                error = self.error(operation, e)
            if error.code not in THROTTLING_CODES or attempt >= self.backoff.retries:
                raise error
            delay = self.backoff.delay(attempt, self._rng)
            attempt += 1
            log.warning("%s throttled (%s); retry %d/%d in %.2fs", operation, error.code, attempt,
                        self.backoff.retries, delay)
            await self._sleep(delay)

    async def pages(self, operation: str, **params: Any) -> list[dict[str, Any]]:
        """Every page of a paginated ``operation``, each page fetched with throttling backoff."""
        token_key, pages = "NextToken", []
        while True:
            page = await self.call(operation, **params)
            pages.append(page)
            token = page.get(token_key)
            if not token:
                return pages
            params = {**params, token_key: token}
