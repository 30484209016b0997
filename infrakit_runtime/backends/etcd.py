"""etcd backend: one leader across machines via a lease-bound key, specs as fenced etcd keys.

Guarantee: at most one candidate's lease owns ``<prefix>leader`` at a time (a
create-if-absent transaction); its term is the etcd revision of that create, so
terms only grow. The holder renews every ``renew_interval`` and declares the
lease lost once no renewal has succeeded for ``renew_deadline`` (< TTL), i.e.
before etcd can expire it and elect someone else. Every store write is a
transaction conditional on the leader key still being the one this lease
created and naming this holder, so a paused old leader's write is refused by
etcd itself, not by local bookkeeping.

Renewal runs on a thread of its own (``manager.keeper``), never behind request work on the
event loop or in asyncio's shared executor, and only while the loop shows life: a leader
whose loop has not run for a TTL stops renewing and its lease lapses.

One mode per prefix: the leader key is created only while no replica is registered under
``shard/members/`` (``sharding: groups``), and a replica registers only while there is no leader
key - both conditions inside the same transaction as the write, so a single-leader replica and
replicas sharing the groups can never act on one prefix together; the one that comes second
waits, retrying, and says why ("mixed modes") in its log and status.

Limit: it is only as available as etcd: without a quorum nothing is elected and
nothing is written (calls time out after ``timeout`` and raise ``BackendError``;
``status()`` says so). A holder stepping down on its deadline relies on its own
monotonic clock not running much slower than etcd's. Followers learn of a
vacancy by watching the leader key, so takeover after a crash takes the TTL and
after a graceful resign (lease revoked) about one round trip.

etcd3gw is wrapped, not trusted (see DESIGN.md §9): one client per endpoint,
rotated here on failure; every call has a timeout; leadership is our own
transaction (its lock helper leaks leases); watches are our own streaming
request with a read timeout. Its calls block, so they run in threads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import etcd3gw
import requests
from etcd3gw import exceptions as etcd_errors
from etcd3gw.client import Etcd3Client

from infrakit_runtime.manager import keeper
from infrakit_runtime.manager.backend import (
    BackendError,
    LeaderTimings,
    Lease,
    LostLeadership,
    Member,
    ShardView,
    SharedBackend,
    Stored,
    check_entry,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    """The key just past every key starting with ``prefix`` (etcd's prefix range)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


class MixedModes(BackendError):
    """A single-leader replica and replicas sharing the groups met on one prefix; the second waits."""


class _Held:
    """A won lease: its etcd ID, term, the exact leader value written, and its liveness.

    Shared by the event loop and the renewal thread: ``renewed_at`` only grows, ``reason`` is
    set once (``give_up``, from either side), ``lost`` is set on the loop.
    """

    def __init__(self, backend: EtcdBackend, lease_id: int, term: int, value: str, renewed_at: float) -> None:
        self.backend = backend
        self.lease_id = lease_id
        self.term = term
        self.value = value
        self.renewed_at = renewed_at  # monotonic send time of the last renewal etcd accepted
        self.reason: str | None = None
        self.lost = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stalled: float | None = None  # how long the loop was silent when the keeper last skipped renewing
        self.renewer: keeper.Keeper | None = None
        self.watchdog: asyncio.Task[None] | None = None
        # A membership lease (``sharding: groups``): the exact value of an owner key it holds.
        self.owner: str | None = None
        self._lock = threading.Lock()

    def give_up(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
        if self.loop is not None:
            keeper.set_event(self.lost, self.loop)
        else:
            self.lost.set()


def _stall_note(held: _Held) -> str:
    stalled = held.stalled
    return "" if stalled is None else f" (the event loop had not run for {stalled:.1f}s, so renewal had stopped)"


def parse_endpoint(endpoint: str, *, tls: bool) -> tuple[str, str, int]:
    """``(protocol, host, port)`` from ``http://host:2379``, ``https://host``, ``host:2379`` or ``[::1]:2379``."""
    text = endpoint if "://" in endpoint else f"{'https' if tls else 'http'}://{endpoint}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {endpoint!r}: the scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"endpoint {endpoint!r} has no host")
    try:
        port = parts.port or 2379
    except ValueError:
        raise ValueError(f"endpoint {endpoint!r} has an invalid port") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"endpoint {endpoint!r}: give only scheme://host:port")
    return parts.scheme, parts.hostname, port


class EtcdBackend(SharedBackend):
    """Leadership and spec store in an etcd v3 cluster, through its JSON gateway."""

    def __init__(self, endpoints: list[str], prefix: str = "/infrakit/", timings: LeaderTimings | None = None, *,
                 ca_cert: str | None = None, cert: str | None = None, key: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock``: the monotonic clock lease renewals are timed by (read from the keeper's threads too)."""
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if timeout <= 0:
            raise ValueError("the etcd call timeout must be positive")
        if (cert is None) != (key is None):
            raise ValueError("a client certificate needs both cert and key")
        if (username is None) != (password is None):
            raise ValueError("etcd authentication needs both username and password")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.timings = timings or LeaderTimings()
        self.clock = clock
        self.timeout = timeout
        self.endpoints = list(endpoints)
        self.leader_key = self.prefix + "leader"
        self.groups_prefix = self.prefix + "groups/"
        # Sharing the groups (``sharding: groups``): one record per live replica, one owner key per group.
        self.shard_prefix = self.prefix + "shard/"
        self.members_prefix = self.shard_prefix + "members/"
        self.owners_prefix = self.shard_prefix + "owners/"
        self._username = username
        self._password = password
        self._auth_lock = threading.Lock()
        tls = bool(ca_cert or cert)
        self._clients: list[Etcd3Client] = []
        for endpoint in endpoints:
            protocol, host, port = parse_endpoint(endpoint, tls=tls)
            client = etcd3gw.client(host=host, port=port, protocol=protocol, ca_cert=ca_cert,
                                    cert_key=key, cert_cert=cert, timeout=timeout)
            if username is not None:
                # Present from the start (None is never sent), so logging in only ever
                # replaces a value: no thread ever sees the header appear or vanish.
                client.session.headers["Authorization"] = None  # type: ignore[assignment]  # requests skips it
            self._clients.append(client)
        self._current = 0  # the endpoint that answered last; calls start there
        self._problem: str | None = None
        # Why this replica waits for replicas of the other mode (sharding) to leave the prefix, if it does.
        self._mixed: str | None = None

    def __repr__(self) -> str:  # never the password
        return f"EtcdBackend({self.endpoints!r}, prefix={self.prefix!r})"

    # ------------------------------------------------------------ etcd calls

    def _call(self, doing: str, fn: Callable[[Etcd3Client], T]) -> T:
        """Run ``fn`` against the endpoints in turn until one answers (blocking: call in a thread).

        Endpoints that cannot be reached or time out are skipped; an answer that
        is an error (bad request, unknown lease) is not retried elsewhere. With
        authentication, a call refused for its token logs in again once and is retried.
        """
        failures: list[str] = []
        no_quorum = False
        n = len(self._clients)
        start = self._current
        for attempt in range(n):
            index = (start + attempt) % n
            client = self._clients[index]
            for reauth in (False, True):
                token = None
                try:
                    if self._username is not None:
                        token = self._token(client)
                    result = fn(client)
                    self._current = index
                    return result
                except etcd_errors.ConnectionTimeoutError:
                    failures.append(f"{self.endpoints[index]} did not answer within {self.timeout:g}s")
                    no_quorum = True
                except etcd_errors.ConnectionFailedError as e:
                    detail = _detail(e)
                    no_quorum = no_quorum or "leader" in detail or "timed out" in detail
                    failures.append(f"{self.endpoints[index]}: {detail}")
                except etcd_errors.Etcd3Exception as e:
                    detail = _detail(e)
                    if not reauth and token is not None and _token_refused(detail):
                        self._renew_token(client, stale=token)  # expired, or etcd forgot it: log in, retry once
                        continue
                    if "timed out" in detail or "no leader" in detail:
                        failures.append(f"{self.endpoints[index]}: {detail}")
                        no_quorum = True
                        break
                    raise BackendError(f"etcd refused to {doing}: {detail}") from None
                except (ValueError, KeyError) as e:  # a reply that is not what the gateway should send
                    raise BackendError(f"etcd gave an unexpected answer when asked to {doing}: {e}") from None
                break
        what = "etcd has no quorum" if no_quorum else "etcd is unreachable"
        raise BackendError(f"{what}: cannot {doing}: {'; '.join(failures)}")

    # Authentication. The token lives in the Authorization header of the endpoint's session,
    # which every thread using that client sends: renewals, writes and reads run at once. So
    # the header is only ever *replaced*, never removed: a call in flight on another thread
    # carries a token (an old one at worst, which it then renews), never none ("etcdserver:
    # user name is empty", issue 12 #9). The login itself is sent without a token: a header
    # given as None leaves the session's header out of that one request only.

    def _token(self, client: Etcd3Client) -> str:
        """The endpoint's current token, logging in first if there is none yet."""
        token = client.session.headers.get("Authorization")
        return str(token) if token else self._renew_token(client, stale=None)

    def _renew_token(self, client: Etcd3Client, *, stale: str | None) -> str:
        """Log in again unless another thread already replaced ``stale``; the token to use now."""
        with self._auth_lock:
            current = client.session.headers.get("Authorization")
            if current and current != stale:
                return str(current)  # renewed meanwhile by another call: one login serves them all
            reply = client.post(client.get_url("/auth/authenticate"),
                                json={"name": self._username, "password": self._password},
                                headers={"Authorization": None})
            token = str(reply["token"])
            client.session.headers["Authorization"] = token
            return token

    def _txn(self, client: Etcd3Client, compare: list[dict[str, Any]], success: list[dict[str, Any]],
             failure: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return dict(client.transaction({"compare": compare, "success": success, "failure": failure or []}))

    def _get_leader(self, client: Etcd3Client) -> tuple[dict[str, Any] | None, int]:
        """The leader key's kv (value decoded) and the store revision it was read at."""
        reply = client.post(client.get_url("/kv/range"), json={"key": _b64(self.leader_key)})
        kvs = reply.get("kvs") or []
        revision = int(reply["header"]["revision"])
        if not kvs:
            return None, revision
        kv = dict(kvs[0])
        kv["value"] = _unb64(kv.get("value", ""))
        return kv, revision

    def _fence(self, held: _Held) -> list[dict[str, Any]]:
        key = _b64(self.leader_key)
        return [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": held.term},
                {"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(held.value)}]

    async def _run(self, doing: str, fn: Callable[[Etcd3Client], T]) -> T:
        return await asyncio.to_thread(self._call, doing, fn)

    # ------------------------------------------------------------ leadership

    @contextlib.asynccontextmanager
    async def leadership(self, *, candidate: str, location: str | None) -> AsyncIterator[Lease]:
        held = await self._campaign(candidate, location)
        lease = Lease(term=held.term, holder=candidate, handle=held)
        log.info("%s is the leader (term %d) in etcd at %s", candidate, held.term, self.leader_key)
        try:
            async with self._kept(held, f"etcd-lease/{candidate}", gone="resigned"):
                yield lease
        finally:
            try:  # revoking deletes the leader key: followers take over without waiting for the TTL
                await self._run("revoke the leader lease", lambda c: self._revoke(c, held.lease_id))
                log.info("%s resigned leadership (term %d)", candidate, held.term)
            except BackendError as e:
                log.warning("%s resigned leadership (term %d) but could not revoke its lease, "
                            "followers wait for its TTL: %s", candidate, held.term, e)

    @contextlib.asynccontextmanager
    async def _kept(self, held: _Held, name: str, *, gone: str) -> AsyncIterator[None]:
        """Keep ``held`` while the body runs: renewal on its own thread, the deadline watched on the loop.

        The one way a lease is held, for the leader's and for a sharing member's alike. On exit the
        lease is given up (``gone`` is the reason ``wait_lost`` reports) before the caller revokes it.
        """
        held.loop = asyncio.get_running_loop()
        held.renewer = keeper.Keeper(name=f"{name}/renew", interval=self.timings.renew_interval,
                                     loop=held.loop, tick=lambda silence: self._renew(held, silence))
        held.renewer.start()
        held.watchdog = asyncio.create_task(self._watchdog(held), name=f"{name}/deadline")
        try:
            yield
        finally:
            held.give_up(gone)
            held.renewer.cancel()
            held.watchdog.cancel()
            await asyncio.gather(held.watchdog, return_exceptions=True)

    @staticmethod
    def _revoke(client: Etcd3Client, lease_id: int) -> None:
        try:
            client.post(client.get_url("/kv/lease/revoke"), json={"ID": lease_id})
        except etcd_errors.Etcd3Exception as e:
            if "not found" not in _detail(e):  # already expired or revoked: nothing to do
                raise

    async def _campaign(self, candidate: str, location: str | None) -> _Held:
        """Try to create the leader key; while someone holds it, watch for its deletion."""
        reported: str | None = None
        while True:
            attempt = asyncio.get_running_loop().run_in_executor(None, self._try_once, candidate, location)
            try:
                outcome = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                attempt.add_done_callback(self._revoke_if_won)  # a win nobody will use must not block others
                raise
            except BackendError as e:
                if reported != str(e):
                    log.error("%s cannot campaign for leadership: %s", candidate, e)
                reported = self._problem = str(e)
                self._mixed = str(e) if isinstance(e, MixedModes) else None
                await asyncio.sleep(self.timings.retry_interval)
                continue
            self._problem = self._mixed = None
            if isinstance(outcome, _Held):
                return outcome
            if reported != "following":
                log.info("%s is following; waiting for the leader key %s to go", candidate, self.leader_key)
                reported = "following"
            if not await asyncio.to_thread(self._wait_for_vacancy, outcome):
                await asyncio.sleep(self.timings.retry_interval)

    def _revoke_if_won(self, attempt: asyncio.Future[Any]) -> None:
        if not attempt.cancelled() and attempt.exception() is None and isinstance(attempt.result(), _Held):
            held: _Held = attempt.result()
            threading.Thread(target=self._call, args=("revoke an unused lease", lambda c: self._revoke(c, held.lease_id)),
                             daemon=True).start()

    def _try_once(self, candidate: str, location: str | None) -> _Held | int:
        """One campaign step (blocking): the won lease, or the revision at which a leader was seen."""
        kv, revision = self._call("read the leader key", self._get_leader)
        if kv is not None:
            return revision
        granted_at = self.clock()
        ttl = max(1, math.ceil(self.timings.ttl))
        lease_id = self._call("grant a lease", lambda c: c.lease(ttl).id)
        try:
            key = _b64(self.leader_key)
            first = json.dumps({"holder": candidate, "location": location, "term": None})
            reply = self._call("create the leader key", lambda c: self._txn(
                c, [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}, self._no_members()],
                [{"request_put": {"key": key, "value": _b64(first), "lease": lease_id}}]))
            if not reply.get("succeeded"):
                self._call("revoke an unused lease", lambda c: self._revoke(c, lease_id))
                if sharing := self._call("list the members sharing the groups", self._member_names):
                    raise MixedModes(
                        f"mixed modes: replicas sharing the groups ({', '.join(sharing)}) are registered under "
                        f"{self.members_prefix}; a single leader cannot lead there until they leave (every replica "
                        f"on prefix {self.prefix} must use the same manager sharding setting)")
                return int(reply["header"]["revision"])
            term = int(reply["header"]["revision"])
            # Now that the term is known, name it in the value (still bound to the lease).
            value = json.dumps({"holder": candidate, "location": location, "term": term})
            held = _Held(self, lease_id, term, first, granted_at)
            reply = self._call("record the term in the leader key", lambda c: self._txn(
                c, self._fence(held), [{"request_put": {"key": key, "value": _b64(value), "lease": lease_id}}]))
            if not reply.get("succeeded"):
                self._call("revoke an unused lease", lambda c: self._revoke(c, lease_id))
                return int(reply["header"]["revision"])
            held.value = value
            return held
        except BaseException:
            with contextlib.suppress(BackendError):  # leaves at most a key that expires with the TTL
                self._call("revoke an unused lease", lambda c: self._revoke(c, lease_id))
            raise

    def _no_members(self) -> dict[str, Any]:
        """A transaction condition: no replica is registered as sharing the groups (an empty range
        compares as one key never created)."""
        return {"key": _b64(self.members_prefix), "range_end": _range_end(self.members_prefix),
                "result": "EQUAL", "target": "CREATE", "create_revision": 0}

    def _member_names(self, client: Etcd3Client) -> list[str]:
        reply = client.post(client.get_url("/kv/range"), json={
            "key": _b64(self.members_prefix), "range_end": _range_end(self.members_prefix), "keys_only": True})
        return sorted(_unb64(kv["key"]).removeprefix(self.members_prefix) for kv in reply.get("kvs") or [])

    def _wait_for_vacancy(self, revision: int) -> bool:
        """Block until the leader key is deleted after ``revision``, or a TTL passes; False on error.

        Our own watch request: etcd3gw's watches have no read timeout and hang.
        """
        client = self._clients[self._current]
        session = requests.Session()
        session.verify, session.cert = client.session.verify, client.session.cert
        session.headers.update(client.session.headers)
        body: dict[str, Any] = {"create_request": {"key": _b64(self.leader_key), "start_revision": revision + 1}}
        established = False
        try:
            with session.post(client.get_url("/watch"), json=body, stream=True,
                              timeout=(self.timeout, max(self.timings.ttl, self.timings.retry_interval))) as resp:
                if resp.status_code != 200:
                    return False
                established = True
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if result.get("canceled") or result.get("compact_revision"):
                        return True  # read again from scratch
                    if any(event.get("type") == "DELETE" for event in result.get("events", ())):
                        return True
            return True
        except (requests.RequestException, etcd_errors.Etcd3Exception, ValueError) as e:
            if established and "timed out" in str(e).lower():
                # An idle watch on a healthy leader: nothing happened, look again at once.
                # (Sleeping here would delay noticing a resignation by retry_interval.)
                return True
            self._current = (self._current + 1) % len(self._clients)
            return False
        finally:
            session.close()

    def _renew(self, held: _Held, silence: float) -> bool:
        """One keeper tick (on its thread): renew the lease if the loop shows life; False to stop.

        A renewal that etcd refuses (the lease is gone) ends leadership at once. While the
        loop has been silent for a TTL nothing is renewed, so a wedged leader's lease lapses;
        if the loop comes back while the lease still lives, renewing resumes.
        """
        if held.reason is not None:
            return False
        if silence > self.timings.ttl:
            if held.stalled is None:
                log.error("the event loop has not run for %.1fs: not renewing the leader lease (term %d) until it does",
                          silence, held.term)
            held.stalled = silence
            return True
        sent = self.clock()
        try:
            ttl = self._call("renew the leader lease", lambda c: etcd3gw.Lease(held.lease_id, client=c).refresh())
        except BackendError as e:
            log.warning("could not renew the leader lease (term %d): %s", held.term, e)
            self._problem = str(e)
            return True
        if ttl <= 0:
            held.give_up("the leader lease expired in etcd" + _stall_note(held))
            return False
        held.renewed_at = max(held.renewed_at, sent)
        held.stalled = None
        return True

    async def _watchdog(self, held: _Held) -> None:
        """Declare the lease lost once no renewal succeeded for ``renew_deadline``, renewer or not."""
        while not held.lost.is_set():
            left = held.renewed_at + self.timings.renew_deadline - self.clock()
            if left <= 0:
                reason = f"no lease renewal succeeded for {self.timings.renew_deadline:g}s" + _stall_note(held)
                log.error("giving up leadership (term %d): %s", held.term, reason)
                held.give_up(reason)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(held.lost.wait(), timeout=left)

    async def wait_lost(self, lease: Lease) -> str:
        held = self._held(lease)
        await held.lost.wait()
        return held.reason or "lost"

    def holds(self, lease: Lease) -> bool:
        """Not given up, and the last accepted renewal was sent less than ``renew_deadline`` ago."""
        held = lease.handle
        if not isinstance(held, _Held) or held.backend is not self or held.reason is not None:
            return False
        return self.clock() - held.renewed_at < self.timings.renew_deadline

    def _held(self, lease: Lease) -> _Held:
        held = lease.handle
        if not isinstance(held, _Held) or held.backend is not self:
            raise LostLeadership(f"the lease for term {lease.term} was not issued by {self!r}")
        return held

    async def leader_location(self) -> str | None:
        kv, _ = await self._run("read the leader key", self._get_leader)
        if kv is None:
            return None
        try:
            return json.loads(kv["value"]).get("location")
        except (ValueError, AttributeError):
            return None

    # ----------------------------------------------------------------- store

    async def load_all(self) -> Stored:
        """Every key under ``<prefix>groups/`` checked on its own: a bad key is refused by name."""
        def load(client: Etcd3Client) -> list[dict[str, Any]]:
            reply = client.post(client.get_url("/kv/range"),
                                json={"key": _b64(self.groups_prefix), "range_end": _range_end(self.groups_prefix)})
            return list(reply.get("kvs") or [])

        specs: dict[str, dict[str, Any]] = {}
        refused: dict[str, str] = {}
        for kv in await self._run("read the stored specs", load):
            key = base64.b64decode(kv["key"]).decode(errors="replace")
            group_id = key.removeprefix(self.groups_prefix)
            try:
                data = base64.b64decode(kv.get("value", ""), validate=True)
            except ValueError as e:  # the gateway always sends base64: this is a broken reply, not a bad entry
                raise BackendError(f"etcd gave an unexpected answer for key {key}: {e}") from None
            checked = check_entry(group_id, data, where=f"at etcd key {key}")
            if isinstance(checked, str):
                refused[group_id] = checked
            else:
                specs[group_id] = checked
        return Stored(specs=specs, refused=refused)

    async def put(self, group_id: str, spec: dict[str, Any], lease: Lease) -> None:
        if not group_id:
            raise BackendError("a group ID must not be empty")
        value = json.dumps(spec, sort_keys=True)
        await self._fenced(lease, f"store the spec of group {group_id}",
                           [{"request_put": {"key": _b64(self.groups_prefix + group_id), "value": _b64(value)}}],
                           group_id=group_id)

    async def delete(self, group_id: str, lease: Lease) -> None:
        requests_ = [{"request_delete_range": {"key": _b64(self.groups_prefix + group_id)}}]
        if self._held(lease).owner is not None:  # a group no longer stored has no owner either
            requests_.append({"request_delete_range": {"key": _b64(self.owners_prefix + group_id)}})
        await self._fenced(lease, f"remove the spec of group {group_id}", requests_, group_id=group_id)

    async def _fenced(self, lease: Lease, doing: str, requests_: list[dict[str, Any]], *, group_id: str) -> None:
        """Apply ``requests_`` only if this lease may write the group (checked by etcd, atomically).

        Under the leader lease: the leader key is still this lease's. Under a membership lease
        (``sharding: groups``): the group's owner key still names this lease; a refusal then
        costs that group only, never the membership.
        """
        held = self._held(lease)
        if held.reason is not None:
            raise LostLeadership(f"the lease for term {lease.term} is gone: {held.reason}")
        if held.owner is not None:
            key = _b64(self.owners_prefix + group_id)
            compare = [{"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(held.owner)}]
            reply = await self._run(doing, lambda c: self._txn(c, compare, requests_, [{"request_range": {"key": key}}]))
            if reply.get("succeeded"):
                return
            kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
            now = f"it is owned by {_owner_name(kvs[0].get('value', ''))}" if kvs else "it has no owner"
            raise LostLeadership(f"cannot {doing}: {lease.holder} does not own group {group_id} any more ({now})")
        failure = [{"request_range": {"key": _b64(self.leader_key)}}]
        reply = await self._run(doing, lambda c: self._txn(c, self._fence(held), requests_, failure))
        if reply.get("succeeded"):
            return
        kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
        now = f"the leader key was created at revision {kvs[0].get('create_revision')}" if kvs else "there is no leader"
        held.give_up(f"another replica leads now ({now})")
        raise LostLeadership(f"cannot {doing}: the lease for term {lease.term} is stale: {now}")

    # ------------------------------------------------------ sharing the groups

    @contextlib.asynccontextmanager
    async def membership(self, *, candidate: str, location: str | None) -> AsyncIterator[Lease]:
        """Register under a lease of this replica's own, kept exactly like the leader lease.

        Registration retries (every ``retry_interval``) until etcd answers; leaving revokes the
        lease, which removes the record and every owner key still bound to it at once.
        """
        reported: str | None = None
        while True:
            try:
                held = await self._run("register this replica", lambda c: self._register(c, candidate, location))
                break
            except BackendError as e:
                if reported != str(e):
                    log.error("%s cannot register as a replica: %s", candidate, e)
                reported = self._problem = str(e)
                self._mixed = str(e) if isinstance(e, MixedModes) else None
                await asyncio.sleep(self.timings.retry_interval)
        self._problem = self._mixed = None
        lease = Lease(term=held.term, holder=candidate, handle=held)
        log.info("%s is a member sharing the groups (lease %x) in etcd at %s", candidate, held.lease_id,
                 self.members_prefix)
        try:
            async with self._kept(held, f"etcd-member/{candidate}", gone="left"):
                yield lease
        finally:
            try:  # revoking removes the record and every owner key: survivors claim at once
                await self._run("revoke the membership lease", lambda c: self._revoke(c, held.lease_id))
                log.info("%s left the members", candidate)
            except BackendError as e:
                log.warning("%s left the members but could not revoke its lease; its groups move after its TTL: %s",
                            candidate, e)

    def _register(self, client: Etcd3Client, candidate: str, location: str | None) -> _Held:
        """Grant a lease and write this replica's record under it (blocking)."""
        granted_at = self.clock()
        lease_id = client.lease(max(1, math.ceil(self.timings.ttl))).id
        try:
            value = json.dumps({"candidate": candidate, "location": location, "lease": lease_id}, sort_keys=True)
            no_leader = {"key": _b64(self.leader_key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}
            reply = self._txn(client, [no_leader], [{"request_put": {"key": _b64(self.members_prefix + candidate),
                                                                     "value": _b64(value), "lease": lease_id}}])
            if not reply.get("succeeded"):
                kv, _ = self._get_leader(client)
                holder = _holder(kv)
                raise MixedModes(f"mixed modes: a single-leader replica ({holder}) holds {self.leader_key}; this "
                                   f"replica cannot share the groups there until it leaves (every replica on prefix "
                                   f"{self.prefix} must use the same manager sharding setting)")
            held = _Held(self, lease_id, int(reply["header"]["revision"]), value, granted_at)
            held.owner = _owner_value(candidate, lease_id)
            return held
        except BaseException:
            with contextlib.suppress(Exception):
                self._revoke(client, lease_id)
            raise

    async def view(self) -> ShardView:
        """Members and owners (one range over ``shard/``), then stored group IDs at the same revision."""
        def read(client: Etcd3Client) -> ShardView:
            reply = client.post(client.get_url("/kv/range"),
                                json={"key": _b64(self.shard_prefix), "range_end": _range_end(self.shard_prefix)})
            revision = int(reply["header"]["revision"])
            members: dict[str, Member] = {}
            owners: dict[str, str] = {}
            for kv in reply.get("kvs") or []:
                key = _unb64(kv["key"])
                try:
                    value = json.loads(_unb64(kv.get("value", "")))
                except ValueError:
                    continue
                if key.startswith(self.members_prefix) and isinstance(value, dict):
                    name = key.removeprefix(self.members_prefix)
                    members[name] = Member(candidate=name, location=value.get("location"),
                                           lease_id=int(value.get("lease", 0)))
                elif key.startswith(self.owners_prefix) and isinstance(value, dict):
                    owners[key.removeprefix(self.owners_prefix)] = str(value.get("holder"))
            stored = client.post(client.get_url("/kv/range"),
                                 json={"key": _b64(self.groups_prefix), "range_end": _range_end(self.groups_prefix),
                                       "keys_only": True, "revision": revision})
            groups = frozenset(_unb64(kv["key"]).removeprefix(self.groups_prefix) for kv in stored.get("kvs") or [])
            return ShardView(members=members, owners=owners, groups=groups, revision=revision)

        return await self._run("read the members and owners", read)

    async def claim(self, group_id: str, lease: Lease) -> bool:
        held = self._held(lease)
        if held.reason is not None or held.owner is None:
            raise LostLeadership(f"cannot claim group {group_id}: {lease.holder} is not a member ({held.reason})")
        key = _b64(self.owners_prefix + group_id)
        owner = held.owner
        reply = await self._run(f"claim group {group_id}", lambda c: self._txn(
            c, [{"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": 0}],
            [{"request_put": {"key": key, "value": _b64(owner), "lease": held.lease_id}}],
            [{"request_range": {"key": key}}]))
        if reply.get("succeeded"):
            return True
        kvs = (reply.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
        return bool(kvs) and _unb64(kvs[0].get("value", "")) == owner

    async def transfer(self, group_id: str, lease: Lease, to: Member) -> bool:
        held = self._held(lease)
        if held.owner is None:
            raise LostLeadership(f"cannot hand group {group_id} over: {lease.holder} is not a member")
        key = _b64(self.owners_prefix + group_id)
        mine, theirs = held.owner, _owner_value(to.candidate, to.lease_id)
        reply = await self._run(f"hand group {group_id} over to {to.candidate}", lambda c: self._txn(
            c, [{"key": key, "result": "EQUAL", "target": "VALUE", "value": _b64(mine)}],
            [{"request_put": {"key": key, "value": _b64(theirs), "lease": to.lease_id}}]))
        return bool(reply.get("succeeded"))

    async def wait_change(self, revision: int, timeout: float) -> None:
        await asyncio.to_thread(self._watch_shard, revision, timeout)

    def _watch_shard(self, revision: int, timeout: float) -> None:
        """Block until a key under ``shard/`` changes after ``revision``, ``timeout`` passes, or an error.

        Our own streaming watch with a read timeout, as in ``_wait_for_vacancy``.
        """
        client = self._clients[self._current]
        session = requests.Session()
        session.verify, session.cert = client.session.verify, client.session.cert
        session.headers.update(client.session.headers)
        body: dict[str, Any] = {"create_request": {
            "key": _b64(self.shard_prefix), "range_end": _range_end(self.shard_prefix), "start_revision": revision + 1}}
        try:
            with session.post(client.get_url("/watch"), json=body, stream=True,
                              timeout=(self.timeout, timeout)) as resp:
                if resp.status_code != 200:
                    time.sleep(min(timeout, self.timings.retry_interval))
                    return
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    result = json.loads(line).get("result", {})
                    if result.get("canceled") or result.get("compact_revision") or result.get("events"):
                        return
        except (requests.RequestException, etcd_errors.Etcd3Exception, ValueError) as e:
            if "timed out" not in str(e).lower():  # not an idle watch: try the next endpoint, without spinning
                self._current = (self._current + 1) % len(self._clients)
                time.sleep(min(timeout, self.timings.retry_interval))
        finally:
            session.close()

    # ---------------------------------------------------------------- health

    async def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "etcd", "endpoints": list(self.endpoints), "prefix": self.prefix}
        try:
            out["leader"] = await self.leader_location()
        except BackendError as e:
            out.update(healthy=False, reason=str(e))
            return out
        out["endpoint"] = self.endpoints[self._current]
        out.update(healthy=self._mixed is None, reason=self._mixed or "ok")
        return out

    async def close(self) -> None:
        for client in self._clients:
            client.session.close()


def _owner_value(candidate: str, lease_id: int) -> str:
    """The exact value of an owner key held by ``candidate`` under ``lease_id`` (what fencing compares)."""
    return json.dumps({"holder": candidate, "lease": lease_id}, sort_keys=True)


def _holder(kv: dict[str, Any] | None) -> str:
    """Who a leader key (value decoded, as ``_get_leader`` reads it) names."""
    if kv is None:
        return "none any more"
    try:
        return str(json.loads(kv["value"]).get("holder"))
    except (ValueError, AttributeError):
        return "unreadable"


def _owner_name(value_b64: str) -> str:
    try:
        return str(json.loads(_unb64(value_b64)).get("holder"))
    except (ValueError, AttributeError):
        return "another replica"


def _token_refused(detail: str) -> bool:
    """Whether etcd refused a call for its token (expired, forgotten after a restart, or missing)."""
    return "token" in detail or "user name is empty" in detail or "auth store is old" in detail


def _detail(e: etcd_errors.Etcd3Exception) -> str:
    """The readable part of an etcd3gw error: the gateway's message, not a urllib3 traceback."""
    text = e.detail_text or str(e) or type(e).__name__
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    if message:
        return str(message)
    if "refused" in text:
        return "connection refused"
    return text if len(text) < 200 else text[:200] + "..."
