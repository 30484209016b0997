#!/usr/bin/env bash
# `make demo`: build the collection, install it under .demo/, and run its demo playbook from
# that installed copy (what a user of the published collection would run).
# Writes only inside the checkout (.demo/, .venv/) and $HOME (Ansible's ~/.ansible, pip's cache).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO=$ROOT/.demo
BIN=$ROOT/.venv/bin

[[ -x $BIN/ansible-playbook ]] || make venv

started=$SECONDS
rm -rf "$DEMO/dist"
mkdir -p "$DEMO/dist" "$DEMO/collections" "$DEMO/tmp"
# Temporary files (ansible-galaxy, pip builds) stay inside the checkout too.
export TMPDIR=$DEMO/tmp
export ANSIBLE_COLLECTIONS_PATH=$DEMO/collections
"$BIN/ansible-galaxy" collection build --force --output-path "$DEMO/dist" "$ROOT" >/dev/null
tarball=$(ls "$DEMO"/dist/infrakit-core-*.tar.gz)
"$BIN/ansible-galaxy" collection install --force -p "$DEMO/collections" "$tarball" >/dev/null
echo "installed $(basename "$tarball") into $DEMO/collections"

export ANSIBLE_CALLBACK_RESULT_FORMAT=yaml
export ANSIBLE_LOCALHOST_WARNING=false
export ANSIBLE_INVENTORY_UNPARSED_WARNING=false
# The demo's controller state must not be redirected by an INFRAKIT_* environment of the caller.
unset INFRAKIT_HOME INFRAKIT_PLUGINS_DIR INFRAKIT_CONFIG
cd "$DEMO/collections/ansible_collections/infrakit/core"
"$BIN/ansible-playbook" playbooks/demo.yml -e "demo_prefix=$DEMO" "$@"
echo "demo finished in $((SECONDS - started))s; tear it down with: make demo-down"
