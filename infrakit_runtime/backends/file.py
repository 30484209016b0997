"""File backend: one leader per host via ``flock``, specs as atomically written JSON files.

Guarantee: at most one holder of ``<dir>/leader.lock`` at a time among every
process on this host that uses the same directory; the kernel releases the lock
the instant its holder dies, so a replica polling for it takes over within one
poll (0.2 s). Each store write is all-or-nothing (temp file, fsync, rename,
fsync of the directory) and is fenced: it is refused unless the writer still
holds the lock and the persisted term is still the writer's term.

A leader's lock is watched from a thread of its own (``manager.keeper``), never behind request
work: every ``renew_interval`` it checks the lock file and the directory, and whether the event
loop still runs. A loop silent for a TTL is wedged; the keeper then releases the lock, so
another replica leads instead of a leader that can do nothing.

Limit: this says nothing about other hosts. ``flock`` on NFS or other network
filesystems is not a reliable lock; use the ``etcd`` backend for several
machines. A leader cannot lose the lock while its process lives, so
``wait_lost`` only returns on resignation, when the directory stops being
usable (unwritable, lock file removed), or when its event loop is wedged.

Layout (compatible in spirit with InfraKit's file leader, which also wrote
``leader.loc``)::

    <dir>/leader.lock          flock'ed by the leader
    <dir>/term                 decimal counter, bumped by each new leader under the lock
    <dir>/leader.loc           the leader's advertised location
    <dir>/groups/<id>.json     one spec per group, the id percent-encoded
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from infrakit_runtime import fsutil
from infrakit_runtime.manager import keeper
from infrakit_runtime.manager.backend import (
    Backend,
    BackendError,
    LeaderTimings,
    Lease,
    LostLeadership,
    Stored,
    check_entry,
)

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
"""How often a candidate retries the lock: the takeover delay after the leader dies."""



def _close_fd(fd: int, _: object) -> None:
    """A done-callback closing ``fd`` (a lock descriptor handed over to a finishing thread)."""
    os.close(fd)

class _Held:
    """What a file lease carries: the locked descriptor, and whether it was given up.

    ``lock`` serialises a fenced write against resignation in this process, so a
    write that passed its fence check finishes before the lock is released. Shared by
    the event loop and the keeper thread: ``reason`` is set once, ``lost`` on the loop.
    """

    def __init__(self, backend: FileBackend, fd: int, term: int) -> None:
        self.backend = backend
        self.fd = fd
        self.term = term
        self.lock = threading.Lock()
        self.resigned = False
        self.reason: str | None = None
        self.lost = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.keeper: keeper.Keeper | None = None
        self._reason_lock = threading.Lock()

    def give_up(self, reason: str) -> None:
        with self._reason_lock:
            if self.reason is None:
                self.reason = reason
        keeper.set_event(self.lost, self.loop)


def encode_id(group_id: str) -> str:
    """A file name for a group ID: percent-encoded, never hidden (temp files start with a dot)."""
    name = urllib.parse.quote(group_id, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name + ".json"


def decode_id(filename: str) -> str:
    return urllib.parse.unquote(filename.removesuffix(".json"))


class FileBackend(Backend):
    """Leadership and spec store in one local directory (the embedded default)."""

    def __init__(self, directory: Path | str, timings: LeaderTimings | None = None, *,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.directory = Path(directory)
        self.timings = timings or LeaderTimings()
        self.poll_interval = poll_interval
        self.lock_path = self.directory / "leader.lock"
        self.term_path = self.directory / "term"
        self.loc_path = self.directory / "leader.loc"
        self.groups = self.directory / "groups"
        self._problem: str | None = None  # the last campaign or write failure, until a success

    def __repr__(self) -> str:
        return f"FileBackend({str(self.directory)!r})"

    # ---------------------------------------------------------------- leadership

    @contextlib.asynccontextmanager
    async def leadership(self, *, candidate: str, location: str | None) -> AsyncIterator[Lease]:
        held = await self._campaign(candidate, location)
        lease = Lease(term=held.term, holder=candidate, handle=held)
        log.info("%s is the leader (term %d) via %s", candidate, held.term, self.lock_path)
        held.keeper = keeper.Keeper(name=f"file-lease/{candidate}/keep", interval=self.timings.renew_interval,
                                    loop=held.loop, tick=lambda silence: self._keep(held, silence))
        held.keeper.start()
        try:
            yield lease
        finally:
            held.keeper.cancel()
            # Synchronous on purpose: it must happen even while the task is being
            # cancelled, and it waits at most for one in-flight fenced write.
            self._resign(held)
            log.info("%s resigned leadership (term %d)", candidate, held.term)

    async def _campaign(self, candidate: str, location: str | None) -> _Held:
        """Poll the lock without blocking the loop; on success bump the term and advertise."""
        waiting_logged = False
        while True:
            fd: int | None = None
            try:
                fd = self._try_lock()
                if fd is not None:
                    office = asyncio.get_running_loop().run_in_executor(None, self._take_office, location)
                    try:
                        term = await asyncio.shield(office)
                    except asyncio.CancelledError:
                        # Keep the lock until the term write finishes: releasing it
                        # earlier would let our late write clobber the next leader's term.
                        locked, fd = fd, None
                        office.add_done_callback(functools.partial(_close_fd, locked))
                        raise
                    held = _Held(self, fd, term)
                    fd = None  # owned by ``held`` from here on
                    self._problem = None
                    return held
            except BackendError as e:
                if self._problem != str(e):
                    log.error("cannot campaign for leadership: %s", e)
                self._problem = str(e)
                await asyncio.sleep(self.timings.retry_interval)
                continue
            finally:
                if fd is not None:  # failed or cancelled after locking: let someone else have it
                    os.close(fd)
            if not waiting_logged:
                log.info("%s is waiting for the leader lock %s", candidate, self.lock_path)
                waiting_logged = True
            await asyncio.sleep(self.poll_interval)

    def _try_lock(self) -> int | None:
        """One non-blocking attempt; the descriptor if we now hold the lock on the live file."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
            # Read-only is enough for flock, and holds no write reference to the filesystem.
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise _store_error(self.directory, e, "open the leader lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:
            os.close(fd)
            raise _store_error(self.directory, e, "lock the leader lock") from None
        if not self._is_live_lock(fd):  # unlinked between open and flock: try again on the new file
            os.close(fd)
            return None
        return fd

    def _is_live_lock(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
        except OSError:
            return False

    def _take_office(self, location: str | None) -> int:
        """Under the lock: next term, advertise the location, drop temp files a crash left."""
        term = self._read_term() + 1
        _atomic_write(self.directory, self.term_path, f"{term}\n".encode())
        if location is None:
            with contextlib.suppress(FileNotFoundError):
                self.loc_path.unlink()
        else:
            _atomic_write(self.directory, self.loc_path, location.encode())
        if self.groups.is_dir():
            for stale in self.groups.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        return term

    def _read_term(self) -> int:
        try:
            text = self.term_path.read_text().strip()
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise _store_error(self.directory, e, "read the term") from None
        try:
            return int(text)
        except ValueError:
            raise BackendError(f"the term file {self.term_path} is corrupt ({text[:20]!r}); "
                               "remove it to restart counting") from None

    def _resign(self, held: _Held) -> None:
        with held.lock:
            if held.resigned:
                return
            held.resigned = True
            held.give_up("resigned")
            with contextlib.suppress(OSError):
                self.loc_path.unlink()
            with contextlib.suppress(OSError):
                fcntl.flock(held.fd, fcntl.LOCK_UN)
            os.close(held.fd)

    async def wait_lost(self, lease: Lease) -> str:
        held = self._held(lease)
        await held.lost.wait()
        return held.reason or "lost"

    def _keep(self, held: _Held, silence: float) -> bool:
        """One keeper tick (on its thread): the periodic 'renewal' of a file lease; False to stop.

        A loop silent for a TTL is wedged: the lock is released so another replica leads.
        """
        problem: str | None
        if silence > self.timings.ttl:
            problem = (f"the event loop has not run for {silence:.1f}s (more than the {self.timings.ttl:g}s ttl); "
                       "released the leader lock so another replica can lead")
        else:
            problem = self._office_problem(held)
        if problem is None:
            return True
        if problem != "resigned":
            log.error("giving up leadership (term %d): %s", held.term, problem)
            held.give_up(problem)
            if silence > self.timings.ttl:
                self._resign(held)
        return False

    def _office_problem(self, held: _Held) -> str | None:
        """Why the lease can no longer be trusted, or None: the periodic 'renewal' of a file lease."""
        with held.lock:
            if held.resigned:
                return "resigned"
            if not self._is_live_lock(held.fd):
                return f"the leader lock {self.lock_path} was removed or replaced"
            if not os.access(self.directory, os.W_OK):
                return f"the spec store at {self.directory} is no longer writable"
            return None

    async def leader_location(self) -> str | None:
        return await asyncio.to_thread(self._leader_location)

    def _leader_location(self) -> str | None:
        """The advertised location, but only while someone really holds the lock.

        A crashed leader leaves ``leader.loc`` behind; probing the lock (which
        conflicts with every other descriptor, ours included) tells a live
        leader from a stale file.
        """
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _store_error(self.directory, e, "open the leader lock") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: there is a leader
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
        finally:
            os.close(fd)
        try:
            return self.loc_path.read_text() or None
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _store_error(self.directory, e, "read the leader location") from None

    def holds(self, lease: Lease) -> bool:
        """Not resigned or given up: a live process cannot lose its flock, so no clock is involved."""
        held = lease.handle
        return isinstance(held, _Held) and held.backend is self and not held.resigned and held.reason is None

    def _held(self, lease: Lease) -> _Held:
        held = lease.handle
        if not isinstance(held, _Held) or held.backend is not self:
            raise LostLeadership(f"the lease for term {lease.term} was not issued by {self!r}")
        return held

    # -------------------------------------------------------------------- store

    async def load_all(self) -> Stored:
        return await asyncio.to_thread(self._load_all)

    def _load_all(self) -> Stored:
        """Every ``<id>.json`` checked on its own: a bad file is refused by name, the others still load."""
        try:
            names = sorted(os.listdir(self.groups))
        except FileNotFoundError:
            return Stored()
        except OSError as e:
            raise _store_error(self.directory, e, "list the stored specs") from None
        claims: dict[str, list[str]] = {}
        for name in names:
            if not name.startswith(".") and name.endswith(".json"):
                claims.setdefault(decode_id(name), []).append(name)
        specs: dict[str, dict[str, Any]] = {}
        refused: dict[str, str] = {}
        for group_id, files in claims.items():
            if len(files) > 1:  # a%2Fb.json beside a%2fb.json: which one is meant is the operator's call
                refused[group_id] = (f"several files in {self.groups} claim group {group_id!r} ({', '.join(files)}); "
                                     f"keep only {encode_id(group_id)}")
                continue
            path = self.groups / files[0]
            try:
                data = path.read_bytes()
            except OSError as e:
                refused[group_id] = f"the stored spec {path} cannot be read: {e.strerror or e}"
                continue
            checked = check_entry(group_id, data, where=str(path))
            if isinstance(checked, str):
                refused[group_id] = checked
            else:
                specs[group_id] = checked
        return Stored(specs=specs, refused=refused)

    async def put(self, group_id: str, spec: dict[str, Any], lease: Lease) -> None:
        held = self._held(lease)
        data = json.dumps(spec, sort_keys=True, indent=1).encode() + b"\n"
        await asyncio.to_thread(self._fenced, held, lease, lambda: self._write_spec(group_id, data))

    async def delete(self, group_id: str, lease: Lease) -> None:
        held = self._held(lease)
        await asyncio.to_thread(self._fenced, held, lease, lambda: self._remove_spec(group_id))

    def _fenced(self, held: _Held, lease: Lease, write: Any) -> None:
        """Run ``write`` only while ``lease`` is provably current (in a worker thread)."""
        with held.lock:
            if held.resigned:
                raise LostLeadership(f"the lease for term {lease.term} was resigned")
            if not self._is_live_lock(held.fd):
                held.give_up(f"the leader lock {self.lock_path} was removed or replaced")
                raise LostLeadership(f"the lease for term {lease.term} is void: {held.reason}")
            current = self._read_term()
            if current != lease.term:
                raise LostLeadership(f"the lease for term {lease.term} is stale: the term is now {current}")
            try:
                write()
            except BackendError as e:
                self._problem = str(e)
                raise
            self._problem = None

    def _write_spec(self, group_id: str, data: bytes) -> None:
        if not group_id:
            raise BackendError("a group ID must not be empty")
        try:
            self.groups.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as e:
            raise _store_error(self.directory, e, "create the groups directory") from None
        _atomic_write(self.directory, self.groups / encode_id(group_id), data)

    def _remove_spec(self, group_id: str) -> None:
        path = self.groups / encode_id(group_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise _store_error(self.directory, e, f"remove {path}") from None
        _fsync_dir(self.directory, self.groups)

    # ------------------------------------------------------------------- health

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._status)

    def _status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "file", "dir": str(self.directory)}
        reason = self._problem
        if reason is None:
            if not self.directory.is_dir():
                reason = f"the spec store directory {self.directory} does not exist"
            elif not os.access(self.directory, os.W_OK):
                reason = f"the spec store at {self.directory} is not writable"
            else:
                st = os.statvfs(self.directory)
                if st.f_bavail == 0:
                    reason = f"the spec store at {self.directory} is full"
        try:
            out["leader"] = self._leader_location()
        except BackendError as e:
            reason = reason or str(e)
        out.update(healthy=reason is None, reason=reason or "ok")
        return out


def _store_error(directory: Path, e: OSError, doing: str) -> BackendError:
    """An OSError as a sentence an operator can act on (never a bare errno)."""
    detail = f"cannot {doing}: {e.strerror or e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return BackendError(f"the spec store at {directory} is full: {detail}")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BackendError(f"the spec store at {directory} is not writable: {detail}")
    return BackendError(f"the spec store at {directory} failed: {detail}")


def _atomic_write(directory: Path, path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all-or-nothing: a crash or a full disk leaves the old file."""
    try:
        fsutil.atomic_write(path, data)
    except OSError as e:
        raise _store_error(directory, e, f"write {path}") from None


def _fsync_dir(directory: Path, path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    try:
        fsutil.fsync_dir(path)
    except OSError as e:
        raise _store_error(directory, e, f"sync the directory {path}") from None
