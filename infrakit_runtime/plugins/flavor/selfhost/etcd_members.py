"""etcd membership over its v3 JSON gateway: list, add as a learner, promote, remove, status, health, snapshot.

Guarantee: every request has a timeout; a call without a named endpoint tries the endpoints in
turn (starting with the last one that answered) until one answers, and raises
``Unavailable`` naming each endpoint's failure only when none does. An answer that is etcd's
refusal (``can only promote a learner member which is in sync with leader``) is raised as
``Refused`` with etcd's own words and is not retried elsewhere: another member would refuse
it too. etcd's answers are checked for the fields used; one without them is ``Unavailable``.
Limit: plain ``http``/``https`` with the system's CAs; client certificates and etcd's
authentication are not supported here (the backend, ``backends.etcd``, has them). etcd3gw wraps
none of the cluster calls, hence this module.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp

from infrakit_runtime import fsutil

log = logging.getLogger(__name__)

__all__ = ["EtcdError", "Member", "Members", "Refused", "Status", "Unavailable", "quorum"]


class EtcdError(Exception):
    """A membership call failed; the message says which and why."""


class Unavailable(EtcdError):
    """No endpoint gave an answer (down, unreachable, too slow, or no quorum to answer with)."""


class Refused(EtcdError):
    """etcd answered and refused; the message carries etcd's reason."""


def quorum(voters: int) -> int:
    """How many voting members must agree: a majority."""
    return voters // 2 + 1


@dataclasses.dataclass(frozen=True)
class Member:
    """One member as ``member list`` shows it; ``started`` once it has joined (etcd then knows its name)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    learner: bool

    @property
    def started(self) -> bool:
        return bool(self.name)

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Member:
        return cls(id=int(obj["ID"]), name=str(obj.get("name") or ""),
                   peer_urls=tuple(obj.get("peerURLs") or ()), client_urls=tuple(obj.get("clientURLs") or ()),
                   learner=bool(obj.get("isLearner")))


@dataclasses.dataclass(frozen=True)
class Status:
    """One member's own view (``maintenance/status``): who it is, who leads, how far its log goes."""

    member_id: int
    leader: int
    raft_index: int
    raft_term: int
    learner: bool
    version: str

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Status:
        return cls(member_id=int(obj["header"]["member_id"]), leader=int(obj.get("leader") or 0),
                   raft_index=int(obj.get("raftIndex") or 0), raft_term=int(obj.get("raftTerm") or 0),
                   learner=bool(obj.get("isLearner")), version=str(obj.get("version") or ""))


class Members:
    """The membership API of one etcd cluster, reached through ``endpoints`` (client URLs)."""

    def __init__(self, endpoints: list[str] | tuple[str, ...], *, timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd client URL is needed")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self._current = 0
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport ---------------------------------------------------------------------------

    async def _post_one(self, endpoint: str, path: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request to one endpoint; ``Unavailable`` if it gives no usable answer, ``Refused`` for etcd's no."""
        try:
            async with asyncio.timeout(timeout):
                async with self._http().post(f"{endpoint}/v3/{path}", json=body) as resp:
                    text = await resp.text()
        except TimeoutError:
            raise Unavailable(f"{endpoint} did not answer within {timeout:g}s") from None
        except aiohttp.ClientError as e:
            raise Unavailable(f"{endpoint}: {e}") from None
        try:
            answer = json.loads(text)
        except ValueError:
            raise Unavailable(f"{endpoint} answered HTTP {resp.status} with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise Unavailable(f"{endpoint} answered HTTP {resp.status} with JSON that is not an object")
        if resp.status != 200 or "error" in answer:
            message = str(answer.get("message") or answer.get("error") or f"HTTP {resp.status}")
            if _no_quorum(message):
                raise Unavailable(f"{endpoint}: {message}")
            raise Refused(message)
        return answer

    async def _post(self, path: str, body: dict[str, Any], *, doing: str, endpoint: str | None = None,
                    timeout: float | None = None) -> dict[str, Any]:
        limit = timeout if timeout is not None else self.timeout
        if endpoint is not None:
            try:
                return await self._post_one(endpoint, path, body, limit)
            except Unavailable as e:
                raise Unavailable(f"cannot {doing}: {e}") from None
        failures = []
        n = len(self.endpoints)
        for attempt in range(n):
            index = (self._current + attempt) % n
            try:
                answer = await self._post_one(self.endpoints[index], path, body, limit)
            except Unavailable as e:
                failures.append(str(e))
                continue
            self._current = index
            return answer
        raise Unavailable(f"cannot {doing}: no etcd member answered ({'; '.join(failures)})")

    # -- membership --------------------------------------------------------------------------

    async def list(self, *, endpoint: str | None = None) -> list[Member]:
        answer = await self._post("cluster/member/list", {}, doing="list the etcd members", endpoint=endpoint)
        return _members(answer, "member list")

    async def add(self, peer_urls: builtins.list[str], *, learner: bool = True) -> tuple[Member, builtins.list[Member]]:
        """Add a member (a learner unless told otherwise); the new member and the membership after."""
        answer = await self._post("cluster/member/add", {"peerURLs": peer_urls, "isLearner": learner},
                                  doing=f"add {', '.join(peer_urls)} as a {'learner' if learner else 'member'}")
        try:
            return Member.from_wire(answer["member"]), _members(answer, "member add")
        except (KeyError, TypeError, ValueError) as e:
            raise Unavailable(f"etcd's answer to member add lacks {e}") from None

    async def remove(self, member_id: int) -> None:
        await self._post("cluster/member/remove", {"ID": str(member_id)}, doing=f"remove member {member_id:x}")

    async def promote(self, member_id: int) -> None:
        await self._post("cluster/member/promote", {"ID": str(member_id)}, doing=f"promote learner {member_id:x}")

    async def move_leader(self, *, leader_endpoint: str, target: int) -> None:
        """Hand raft leadership to ``target`` (a started voter); sent to the current leader."""
        await self._post("maintenance/transfer-leadership", {"targetID": str(target)},
                         doing=f"move etcd leadership to {target:x}", endpoint=leader_endpoint)

    # -- one member's view -------------------------------------------------------------------

    async def status(self, endpoint: str) -> Status:
        answer = await self._post("maintenance/status", {}, doing=f"read the status of {endpoint}", endpoint=endpoint)
        try:
            return Status.from_wire(answer)
        except (KeyError, TypeError, ValueError) as e:
            raise Unavailable(f"etcd's status answer from {endpoint} lacks {e}") from None

    async def healthy(self, endpoint: str) -> tuple[bool, str]:
        """``/health`` of one member: true only when it sees a raft leader (so its cluster has quorum)."""
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().get(f"{endpoint}/health") as resp:
                    text = await resp.text()
        except TimeoutError:
            return False, f"{endpoint}/health did not answer within {self.timeout:g}s"
        except aiohttp.ClientError as e:
            return False, f"{endpoint}/health: {e}"
        try:
            answer = json.loads(text)
        except ValueError:
            return False, f"{endpoint}/health answered HTTP {resp.status} with something that is not JSON"
        if isinstance(answer, dict) and answer.get("health") == "true":
            return True, ""
        reason = answer.get("reason") if isinstance(answer, dict) else None
        return False, f"{endpoint}/health says it is not healthy{f' ({reason})' if reason else ''}"

    async def snapshot(self, endpoint: str, dest: Path, *, timeout: float = 60.0) -> int:
        """Write a snapshot of ``endpoint``'s database to ``dest`` atomically (the format
        ``etcdctl snapshot restore`` reads, its integrity hash included); the number of bytes."""
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(timeout):
                async with self._http().post(f"{endpoint}/v3/maintenance/snapshot", json={}) as resp:
                    if resp.status != 200:
                        raise Refused(f"{endpoint} refused a snapshot: HTTP {resp.status}: {(await resp.text())[:200]}")
                    text = await resp.text()
        except TimeoutError:
            raise Unavailable(f"cannot snapshot {endpoint}: no complete answer within {timeout:g}s") from None
        except aiohttp.ClientError as e:
            raise Unavailable(f"cannot snapshot {endpoint}: {e}") from None
        decoder, pos = json.JSONDecoder(), 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
                if "error" in obj:
                    raise Refused(f"{endpoint} failed the snapshot: {obj['error'].get('message') or obj['error']}")
                chunks.append(base64.b64decode(obj.get("result", {}).get("blob", "")))
            except (ValueError, AttributeError, TypeError) as e:
                raise Unavailable(f"cannot snapshot {endpoint}: its stream is not what etcd sends ({e})") from None
        data = b"".join(chunks)
        if not data:
            raise Unavailable(f"cannot snapshot {endpoint}: it sent no data")
        dest.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(fsutil.atomic_write, dest, data)
        return len(data)


def _members(answer: dict[str, Any], what: str) -> list[Member]:
    try:
        return [Member.from_wire(m) for m in answer.get("members") or []]
    except (KeyError, TypeError, ValueError) as e:
        raise Unavailable(f"etcd's answer to {what} lacks {e}") from None


def _no_quorum(message: str) -> bool:
    """etcd's words for "not here, not now": no leader to agree with, or a learner that cannot answer."""
    text = message.lower()
    return any(s in text for s in ("no leader", "request timed out", "leader changed", "too many requests",
                                   # a learner serves almost nothing: ask another member
                                   "not supported for learner"))
