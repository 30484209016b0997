#!/usr/bin/env bash
# `make demo-down`: destroy the demo's groups (their instance processes), stop the controller,
# remove its sockets and its installation under .demo/root. KEEP_INSTALL=1 keeps the venv and state.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO=$ROOT/.demo
BIN=$ROOT/.venv/bin
COLLECTION=$DEMO/collections/ansible_collections/infrakit/core

if [[ ! -d $COLLECTION ]]; then
  echo "no demo installed in $DEMO (nothing to tear down)"
  exit 0
fi
[[ -x $BIN/ansible-playbook ]] || make venv

export ANSIBLE_COLLECTIONS_PATH=$DEMO/collections
mkdir -p "$DEMO/tmp"
export TMPDIR=$DEMO/tmp
export ANSIBLE_LOCALHOST_WARNING=false
export ANSIBLE_INVENTORY_UNPARSED_WARNING=false
unset INFRAKIT_HOME INFRAKIT_PLUGINS_DIR INFRAKIT_CONFIG
remove=true
[[ ${KEEP_INSTALL:-0} == 1 ]] && remove=false
cd "$COLLECTION"
"$BIN/ansible-playbook" playbooks/teardown.yml \
  -e "controller_prefix=$DEMO/root" -e controller_user_create=false \
  -e teardown_groups=destroy -e "teardown_remove_install=$remove" \
  -e "ansible_python_interpreter=$BIN/python" "$@"
rm -rf "$DEMO/health-flags" "$DEMO/sampler.stop" "$DEMO/tmp"
# The role removed what it installed; drop the now empty prefix too.
if [[ $remove == true ]]; then rm -rf "$DEMO/root"; fi
