"""The etcd flavor's Properties and what it renders from them: pure, no I/O.

Guarantee: ``parse`` returns complete Properties (defaults filled) or raises ``ValidationError``
listing every problem with its field; ``member`` derives a member's name and URLs from its
logical ID alone, so every replica of the controller computes the same ones; ``render`` gives
the init script that starts etcd as that member.

Properties (all optional)::

    ClientPort: 2379       client port of a member whose logical ID is a bare host (an IP on a cloud);
    PeerPort: 2380         a logical ID HOST:PORT (one machine) names the client port, the peer port is the next
    DataDir: /var/lib/infrakit/etcd   each new member gets a fresh directory below it: <DataDir>/<name>.<random>
    Endpoints: [URL...]    client URLs to manage membership through (default: every logical ID's client URL)
    ClusterToken: infrakit etcd's --initial-cluster-token (used only by a bootstrap member)
    Launch: env            env: the init exports ETCD_* settings and the instance's own command is `etcd`
                           (the process plugin); debian: the init writes /etc/default/etcd and restarts
                           Debian's etcd service (a cloud image with etcd-server installed)
    MaxLag: 100            raft entries a member may trail the leader by and still count as caught up
    Timeout: 2s            each call to etcd
    Options: {flag: value} more etcd settings, by flag name (heartbeat-interval: "100" -> ETCD_HEARTBEAT_INTERVAL)
    Snapshot: {Dir, Interval: 30m, Keep: 5}   take a snapshot of the database every Interval into Dir

Limit: members speak plain http (TLS between members and clients is not rendered).
"""

from __future__ import annotations

import dataclasses
import re
import shlex

from infrakit_runtime.plugins import fields
from infrakit_runtime.plugins.flavor.selfhost import addresses
from infrakit_runtime.spi.common import JSON, ValidationError

__all__ = ["EtcdProperties", "MemberAddress", "Snapshot", "cluster_endpoints", "member", "parse", "render"]

KNOWN = ("ClientPort", "PeerPort", "DataDir", "Endpoints", "ClusterToken", "Launch", "MaxLag", "Timeout", "Options",
         "Snapshot")
SNAPSHOT_KEYS = ("Dir", "Interval", "Keep")
LAUNCHES = ("env", "debian")
# Settings the flavor renders itself: an Option may not override them.
RENDERED = ("name", "data-dir", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
            "initial-advertise-peer-urls", "initial-cluster", "initial-cluster-state", "initial-cluster-token")
_FLAG = re.compile(r"^[a-z][a-z0-9-]*$")
DEBIAN_DEFAULTS = "/etc/default/etcd"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Periodic snapshots: every ``interval`` seconds into ``dir``, keeping the newest ``keep``."""

    dir: str
    interval: float = 1800.0
    keep: int = 5


@dataclasses.dataclass(frozen=True)
class EtcdProperties:
    client_port: int = 2379
    peer_port: int = 2380
    data_dir: str = "/var/lib/infrakit/etcd"
    endpoints: tuple[str, ...] | None = None
    cluster_token: str = "infrakit"
    launch: str = "env"
    max_lag: int = 100
    timeout: float = 2.0
    options: tuple[tuple[str, str], ...] = ()
    snapshot: Snapshot | None = None


def parse(obj: JSON, *, strict: bool = False) -> EtcdProperties:
    """Checked Properties; ``strict`` (Validate) also refuses unknown keys."""
    f = fields.Fields(obj)
    if strict:
        f.unknown(KNOWN)
    d = EtcdProperties()
    endpoints = f.strings("Endpoints", nonempty=True)
    for i, url in enumerate(endpoints or []):
        if not url.startswith(("http://", "https://")):
            f.problems.append(fields.wrong_value(f"Endpoints[{i}]", "an http:// or https:// client URL", url))
    options = f.string_map("Options")
    for key, value in options.items():
        if not _FLAG.match(key):
            f.problems.append(f"Options.{key}: name an etcd flag in lower case without dashes in front, "
                              f"e.g. heartbeat-interval")
        elif key in RENDERED:
            f.problems.append(f"Options.{key} is rendered by the flavor from the logical ID and the cluster; "
                              f"it cannot be set")
        if any(c in value for c in "\"'\n\\$`"):
            f.problems.append(f"Options.{key} must not contain quotes, backslashes, '$', '`' or newlines")
    snapshot = None
    s = f.nested("Snapshot")
    if s is not None:
        if strict:
            s.unknown(SNAPSHOT_KEYS)
        directory = s.abs_path("Dir")
        s.required("Dir", "where snapshots are written")
        interval = s.duration("Interval", Snapshot.interval)
        keep = s.integer("Keep", Snapshot.keep, minimum=1)
        if directory is not None:
            snapshot = Snapshot(dir=directory, interval=interval, keep=keep)
    props = EtcdProperties(
        client_port=f.port("ClientPort", d.client_port), peer_port=f.port("PeerPort", d.peer_port),
        data_dir=f.abs_path("DataDir", d.data_dir) or d.data_dir,
        endpoints=tuple(u.rstrip("/") for u in endpoints) if endpoints else None,
        cluster_token=f.string("ClusterToken", d.cluster_token, nonempty=True) or d.cluster_token,
        launch=f.string("Launch", d.launch, nonempty=True, choices=LAUNCHES) or d.launch,
        max_lag=f.integer("MaxLag", d.max_lag), timeout=f.duration("Timeout", d.timeout),
        options=tuple(sorted(options.items())), snapshot=snapshot,
    )
    if f.problems:
        raise ValidationError(f.problems)
    return props


@dataclasses.dataclass(frozen=True)
class MemberAddress:
    """Where one member listens, derived from its logical ID."""

    logical_id: str
    name: str
    client_url: str
    peer_url: str


def member(props: EtcdProperties, logical_id: str) -> MemberAddress:
    """The member a logical ID names; ``ValueError`` for an ID that is not HOST or HOST:PORT."""
    at = addresses.parse(logical_id)
    client = at.port_or(props.client_port)
    peer = at.port_or(props.peer_port, offset=1)
    return MemberAddress(logical_id=logical_id, name=addresses.member_name(logical_id),
                         client_url=at.url("http", client), peer_url=at.url("http", peer))


def logical_id_problems(props: EtcdProperties, logical_ids: tuple[str, ...] | None) -> list[str]:
    """Why an allocation cannot be an etcd group (empty when it can)."""
    if not logical_ids:
        return ["the etcd flavor keeps pets: give the group Allocation.LogicalIDs, one per member "
                "(an IP, or HOST:PORT on one machine)"]
    problems = []
    ports: dict[str, str] = {}
    for i, lid in enumerate(logical_ids):
        try:
            m = member(props, lid)
        except ValueError as e:
            problems.append(f"Allocation.LogicalIDs[{i}]: {e}")
            continue
        for url in (m.client_url, m.peer_url):
            if url in ports:
                problems.append(f"Allocation.LogicalIDs[{i}] {lid!r} would listen on {url}, as {ports[url]!r} does")
            ports[url] = lid
    return problems


def cluster_endpoints(props: EtcdProperties, logical_ids: tuple[str, ...] | None, *, besides: str | None = None) -> list[str]:
    """The client URLs to manage membership through: ``Endpoints``, else every logical ID's but ``besides``."""
    if props.endpoints:
        return list(props.endpoints)
    out = []
    for lid in logical_ids or ():
        if lid == besides:
            continue
        try:
            out.append(member(props, lid).client_url)
        except ValueError:
            continue
    return out


def render(props: EtcdProperties, me: MemberAddress, *, initial_cluster: list[tuple[str, str]], state: str,
           data_dir: str) -> str:
    """The init script that starts etcd as ``me`` joining ``initial_cluster`` (``state`` new or existing)."""
    settings = [
        ("NAME", me.name), ("DATA_DIR", data_dir),
        ("LISTEN_CLIENT_URLS", me.client_url), ("ADVERTISE_CLIENT_URLS", me.client_url),
        ("LISTEN_PEER_URLS", me.peer_url), ("INITIAL_ADVERTISE_PEER_URLS", me.peer_url),
        ("INITIAL_CLUSTER", ",".join(f"{name}={url}" for name, url in initial_cluster)),
        ("INITIAL_CLUSTER_STATE", state), ("INITIAL_CLUSTER_TOKEN", props.cluster_token),
        *((flag.upper().replace("-", "_"), value) for flag, value in props.options),
    ]
    parent = data_dir.rsplit("/", 1)[0] or "/"
    if props.launch == "debian":
        lines = [f"cat > {DEBIAN_DEFAULTS} <<'INFRAKIT_ETCD'"]
        lines += [f'ETCD_{key}="{value}"' for key, value in settings]
        lines += ["INFRAKIT_ETCD", f"install -d -o etcd -g etcd -m 0700 {shlex.quote(parent)}",
                  "systemctl restart etcd"]
        return "\n".join(lines)
    lines = [f"mkdir -p {shlex.quote(parent)}"]
    lines += [f"export ETCD_{key}={shlex.quote(value)}" for key, value in settings]
    return "\n".join(lines)
