"""``process_scan.reconcile``: the pure decision of which processes are which instance, property-tested.

Its promises: nothing that belongs to an instance is left untracked (every marked or
cgroup-held process is in a live instance, a rebuilt one, a dead one's leftovers, or the
untrusted list); a rebuild never rests on a forgeable marker; a live instance's leader
runs and a dead one's does not; instances being provisioned are never touched.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.plugins.instance.process_scan import Proc, World, members, pick_leader, reconcile

DAEMON = 50
IDS = [f"process-{i:016x}" for i in range(1, 4)]


def world(*procs: Proc, cgroups: tuple[str, ...] = ()) -> World:
    return World(procs={p.pid: p for p in procs}, cgroups=frozenset(cgroups))


def test_lost_records_are_rebuilt_from_the_session_leader_of_a_marked_tree():
    leader = Proc(pid=100, ppid=1, sid=100, start_time=10, marker=IDS[0], own_user=True)
    child = Proc(pid=101, ppid=100, sid=100, start_time=11, marker=IDS[0], own_user=True)
    setsid_child = Proc(pid=102, ppid=100, sid=102, start_time=12, marker=IDS[0], own_user=True)
    found = reconcile(world=world(leader, child, setsid_child), records={}, memory={})
    assert found.rebuild == {IDS[0]: leader} and not found.dead and not found.untrusted


def test_a_dead_leader_takes_its_marked_children_and_their_unmarked_descendants():
    orphan = Proc(pid=101, ppid=1, sid=100, start_time=11, marker=IDS[0], own_user=True)
    bare = Proc(pid=103, ppid=101, sid=103, start_time=13)  # cleared its environment, left the session
    bystander = Proc(pid=104, ppid=1, sid=104, start_time=14)
    found = reconcile(world=world(orphan, bare, bystander), records={IDS[0]: (100, 10)}, memory={})
    assert set(found.dead[IDS[0]]) == {orphan, bare}
    assert not found.rebuild and not found.live


def test_another_users_marker_is_not_proof_but_a_cgroup_is():
    forged = Proc(pid=200, ppid=1, sid=200, start_time=20, marker=IDS[1], own_user=False)
    held = Proc(pid=300, ppid=1, sid=300, start_time=30, cgroup=IDS[2], own_user=False)
    found = reconcile(world=world(forged, held, cgroups=(IDS[2],)), records={}, memory={})
    assert found.untrusted == (forged,)
    assert found.rebuild == {IDS[2]: held}


def test_a_live_leaders_session_and_descendants_belong_to_it_but_another_plugins_instances_do_not():
    leader = Proc(pid=100, ppid=DAEMON, sid=100, start_time=10, marker=IDS[0], own_user=True)
    bare_in_session = Proc(pid=105, ppid=1, sid=100, start_time=15)
    nested_daemon_instance = Proc(pid=106, ppid=100, sid=106, start_time=16, foreign=True)
    its_child = Proc(pid=107, ppid=106, sid=106, start_time=17)
    w = world(leader, bare_in_session, nested_daemon_instance, its_child)
    assert sorted(p.pid for p in members(w, {IDS[0]: (100, 10)})[IDS[0]]) == [100, 105]


def test_strays_are_the_daemons_unattributed_children_and_only_with_a_subreaper():
    leader = Proc(pid=100, ppid=DAEMON, sid=100, start_time=10, marker=IDS[0], own_user=True)
    stray = Proc(pid=108, ppid=DAEMON, sid=108, start_time=18)
    w = world(leader, stray)
    assert reconcile(world=w, records={IDS[0]: (100, 10)}, memory={}, daemon_pid=DAEMON, subreaper=True).strays == (stray,)
    assert reconcile(world=w, records={IDS[0]: (100, 10)}, memory={}, daemon_pid=DAEMON).strays == ()


def test_pick_leader_prefers_the_oldest_session_leader_with_no_parent_inside():
    a = Proc(pid=120, ppid=1, sid=120, start_time=5)
    b = Proc(pid=110, ppid=1, sid=99, start_time=1)  # older, but not a session leader
    c = Proc(pid=121, ppid=120, sid=121, start_time=6)
    assert pick_leader([c, b, a]) == a
    assert pick_leader([]) is None


# --- properties -----------------------------------------------------------------------------------------


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 10))
    procs = []
    for i in range(n):
        pid = 100 + i
        parents = [1, DAEMON, *(p.pid for p in procs)]
        ppid = draw(st.sampled_from(parents))
        parent = next((p for p in procs if p.pid == ppid), None)
        sid = pid if parent is None or draw(st.booleans()) else parent.sid
        inherited = parent.marker if parent is not None else None
        marker = draw(st.sampled_from([inherited, None, *IDS])) if draw(st.booleans()) else inherited
        procs.append(Proc(pid=pid, ppid=ppid, sid=sid, start_time=1000 + i, running=draw(st.booleans()) or i % 3 != 0,
                          marker=marker, cgroup=draw(st.sampled_from([None, None, *IDS])),
                          own_user=draw(st.booleans()), foreign=marker is None and draw(st.integers(0, 9)) == 0))
    cgroups = tuple(sorted({p.cgroup for p in procs if p.cgroup} | set(draw(st.lists(st.sampled_from(IDS))))))
    pids = [p.pid for p in procs] + [999]
    leader = st.one_of(st.none(), st.tuples(st.sampled_from(pids), st.sampled_from([1000, 1001, 1002, 1003, 7])))
    records = draw(st.dictionaries(st.sampled_from(IDS), leader, max_size=3))
    memory = {i: r for i, r in draw(st.dictionaries(st.sampled_from(IDS), leader, max_size=2)).items() if r}
    provisioning = draw(st.sets(st.sampled_from(IDS), max_size=1))
    return world(*procs, cgroups=cgroups), records, memory, provisioning


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_no_marked_or_cgroup_held_process_is_left_untracked(scenario):
    w, records, memory, provisioning = scenario
    found = reconcile(world=w, records=records, memory=memory, provisioning=provisioning)
    leaders = {**{i: r for i, r in records.items() if r}, **memory}
    belong = members(w, leaders)
    tracked = set(found.live) | set(found.rebuild) | set(provisioning)
    stopped = {p.pid for procs in found.dead.values() for p in procs} | {p.pid for p in found.untrusted}
    for iid, procs in belong.items():
        for p in procs:
            assert iid in tracked or p.pid in stopped, (iid, p)
    for iid in set(found.live) | set(found.rebuild) | set(found.dead):
        assert iid not in provisioning
    for iid, proc in found.rebuild.items():
        assert proc.running and (proc.cgroup == iid or (proc.marker == iid and proc.own_user)), "rebuilt on proof"
        assert iid not in leaders
    for pid, start in found.live.values():
        assert w.procs[pid].running and w.procs[pid].start_time == start
    assert not set(found.live) & set(found.dead)
    assert all(p.running for procs in found.dead.values() for p in procs)
