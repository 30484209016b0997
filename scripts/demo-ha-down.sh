#!/usr/bin/env bash
# `make demo-ha-down`: remove what `KEEP=1 make demo-ha` left running (idempotent).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=$PWD/.demo-ha
BIN=$PWD/.venv/bin
export ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
unset INFRAKIT_HOME INFRAKIT_PLUGINS_DIR INFRAKIT_CONFIG
ids=$(cat "$PREFIX/ids.json" 2>/dev/null || echo '{}')
"$BIN/ansible-playbook" -i localhost, -c local playbooks/selfhosted.yml -e "$ids" -e "ansible_python_interpreter=$BIN/python" \
  -e "selfhosted_prefix=$PREFIX selfhosted_infrakit=$BIN/infrakit selfhosted_python=$BIN/python selfhosted_state=absent" \
  | grep -E 'changed=|failed='
