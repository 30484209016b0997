#!/usr/bin/env bash
# `make demo-ha`: a self-hosted control plane on local processes (issue 15), from nothing to
# 3 etcd members + 3 controller replicas, measured, then torn down.
#   1. playbooks/selfhosted.yml brings it up from one etcd member and one replica (timings printed);
#   2. the same playbook again: changed=0;
#   3. scripts/demo_ha_measure.py SIGKILLs an etcd member and the leading replica and prints how
#      long until the plane is whole again, and the leaderless time of a replica rollout;
#   4. playbooks/selfhosted.yml with selfhosted_state=absent removes everything.
# KEEP=1 leaves the plane running (tear it down with: make demo-ha-down).
# Everything lives in .demo-ha/ inside the checkout; the ports are free ones picked at start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PREFIX=$ROOT/.demo-ha
BIN=$ROOT/.venv/bin
[[ -x $BIN/ansible-playbook ]] || make venv
command -v etcd >/dev/null || { echo "etcd is not on PATH: run make system-deps (Debian's etcd-server)"; exit 1; }

export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
unset INFRAKIT_HOME INFRAKIT_PLUGINS_DIR INFRAKIT_CONFIG
started=$SECONDS
if [[ -f $PREFIX/ids.json ]]; then
  ids=$(cat "$PREFIX/ids.json")
else
  mkdir -p "$PREFIX"
  ids=$("$BIN/python" -c 'import json; from tests.runtime.selfhosted import local; print(json.dumps({"selfhosted_etcd_ids": local.member_ids(3), "selfhosted_manager_ids": local.free_ids(3)}))')
  echo "$ids" > "$PREFIX/ids.json"
fi
play() {
  "$BIN/ansible-playbook" -i localhost, -c local playbooks/selfhosted.yml -e "$ids" -e "ansible_python_interpreter=$BIN/python" \
    -e "selfhosted_prefix=$PREFIX selfhosted_infrakit=$BIN/infrakit selfhosted_python=$BIN/python" "$@"
}
echo "== up: one etcd member and one replica, then the plane grows itself"
t=$SECONDS; play | tee "$PREFIX/up.log" | grep -E '"msg"|changed=|failed=' ; echo "   ($((SECONDS - t))s)"
echo "== up again: nothing to change"
play | grep -E 'changed=' | sed 's/^/   /'
echo "== measured"
"$BIN/python" scripts/demo_ha_measure.py "$PREFIX"
if [[ ${KEEP:-0} == 1 ]]; then
  echo "left running in $PREFIX; tear it down with: make demo-ha-down"
  exit 0
fi
echo "== down"
play -e selfhosted_state=absent | grep -E 'changed=' | sed 's/^/   /'
echo "demo-ha finished in $((SECONDS - started))s"
