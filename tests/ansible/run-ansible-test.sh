#!/usr/bin/env bash
# Run ansible-test (sanity, units and, on request, integration) against this collection.
#
# ansible-test needs the collection at .../ansible_collections/infrakit/core, so the tracked and
# untracked-but-not-ignored files are copied into a temporary tree first; nothing is written into
# the working copy except the ansible-test pip bootstrap stand-in in ~/.ansible/test/cache.
#
# Usage: tests/ansible/run-ansible-test.sh [--core VENV] [--content-only] [sanity] [units] [integration] [-- extra ansible-test args]
#   With no test names: sanity and units, plus integration when INFRAKIT_ANSIBLE_INTEGRATION=1.
#   --content-only: sanity skips its second pass (the bundled runtime's trees, which are no Ansible
#   content: `make test-ansible` gives them that pass on the project's own ansible-core line only).
#   --core VENV: the virtual environment of the ansible-core line to test with (its bin/ansible-test);
#   default <repo>/.venv, the project's own (ansible-core of requirements/test.txt). `make test-ansible`
#   runs every line requires_ansible claims, each from requirements/ansible-core-<line>.txt.
# Environment:
#   ANSIBLE_TEST                 ansible-test to use (default: <core venv>/bin/ansible-test)
#   ANSIBLE_TEST_PYTHON          Python version to test with (default 3.11)
#   INFRAKIT_ANSIBLE_INTEGRATION 1 to add integration to the default set
#   INFRAKIT_ANSIBLE_KEEP        1 to keep the temporary tree (its path is printed)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv_bin="$repo/.venv/bin"
core_bin=$venv_bin
content_only=0
python_version=${ANSIBLE_TEST_PYTHON:-3.11}

tests=()
extra=()
while (($#)); do
  case $1 in
    sanity|units|integration) tests+=("$1") ;;
    --core) shift; core_bin="$(cd "$1" && pwd)/bin" ;;
    --content-only) content_only=1 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--core VENV] [--content-only] [sanity] [units] [integration] [-- ansible-test args]" >&2; exit 2 ;;
  esac
  shift
done
ansible_test=${ANSIBLE_TEST:-$core_bin/ansible-test}
core_version=$("$core_bin/python" -c 'import ansible.release; print(ansible.release.__version__)')
if ((${#tests[@]} == 0)); then
  tests=(sanity units)
  if [[ ${INFRAKIT_ANSIBLE_INTEGRATION:-0} == 1 ]]; then tests+=(integration); fi
fi

# ansible-test bootstraps pip in the virtual environments it creates with get-pip.py, which it
# downloads from ci-files.testing.ansible.com. This machine reaches only PyPI, so put a stand-in
# where ansible-test caches that script. ansible-test runs it through its quiet_pip.py wrapper
# (runpy, sys.argv = [wrapper, *pip options]) with options like
# `--disable-pip-version-check pip==24.2 --no-setuptools --no-wheel`. The stand-in bootstraps
# pip with ensurepip, then installs the requested packages with pip itself from PyPI.
write_get_pip() {
  local pip_version cache
  # The pip version ansible-test bootstraps (24.2 for ansible-core 2.19), asked from ansible-test itself.
  pip_version=$("$core_bin/python" -c '
from ansible_test._internal.python_requirements import get_venv_packages
class Python:
    version = "'"$python_version"'"
print(get_venv_packages(Python)["pip"])')
  cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
  if [[ -f $cache ]]; then return; fi
  mkdir -p "$(dirname "$cache")"
  cat >"$cache.tmp" <<'PY'
"""Stand-in for get-pip.py (written by infrakit.core's tests/ansible/run-ansible-test.sh).

The real script is fetched from ci-files.testing.ansible.com, which this machine cannot reach.
Bootstrap pip with ensurepip, then let pip install what ansible-test asked for from PyPI.
"""
import subprocess
import sys

# get-pip.py's own options; pip install does not know them.
GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}
args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
if any(not a.startswith("-") for a in args):
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
PY
  mv "$cache.tmp" "$cache"
  echo "wrote the get-pip stand-in: $cache"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/infrakit-ansible-test.XXXXXX")
cleanup() {
  if [[ ${INFRAKIT_ANSIBLE_KEEP:-0} == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
dest="$work/ansible_collections/infrakit/core"
mkdir -p "$dest"

# Tracked files plus untracked files that are not ignored (new work not yet committed), minus
# files deleted in the working copy.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
  | tar --null --files-from=- -cf - | tar -xf - -C "$dest")

write_get_pip

# ansible-test sanity looks at what git reports when the collection is a git work tree; the copy
# is its own repository so that sanity sees exactly the copied files.
(cd "$dest" && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm snapshot)

# Trees that belong to the bundled runtime rather than to the Ansible content (see sanity below):
# the runtime package, its benchmarks and scripts, and every tests/ tree that is not ansible-test's
# (tests/runtime, and pytest suites the runtime adds beside it).
runtime_paths=()
for p in infrakit_runtime/ bench/ scripts/ "$dest"/tests/*/; do
  p=${p#"$dest/"}
  case $p in tests/unit/|tests/integration/|tests/sanity/|tests/ansible/|tests/output/) continue ;; esac
  if [[ -d $dest/$p ]] && [[ -n $(ls -A "$dest/$p") ]]; then runtime_paths+=("$p"); fi
done

# The integration targets start the runtime's controller with this `infrakit` command.
mkdir -p "$dest/tests/integration"
printf 'infrakit_bin: %s\n' "$venv_bin/infrakit" >"$dest/tests/integration/integration_config.yml"

export PATH="$core_bin:$venv_bin:$PATH"
status=0
for t in "${tests[@]}"; do
  echo "=== ansible-test $t (ansible-core $core_version, python $python_version)"
  case $t in
    sanity)
      # Sanity's own tools (pylint, yamllint, voluptuous, antsibull-changelog...) are not in the
      # project venv, so ansible-test builds its per-test virtual environments from PyPI.
      args=(sanity --python "$python_version" --color no --venv --requirements)
      # Pass 1: every sanity test over the Ansible content (everything but the runtime trees).
      excludes=()
      for p in "${runtime_paths[@]}"; do excludes+=(--exclude "$p"); done
      (cd "$dest" && "$ansible_test" "${args[@]}" "${excludes[@]}" "${extra[@]}") || status=1
      # Pass 2: the bundled runtime (a separate pip package, Python 3.11+, linted by ruff from
      # pyproject.toml via `make lint`) gets every sanity test except pep8 and pylint, whose
      # Ansible-plugin conventions (no `_` names, 160 columns...) are not its style rules.
      if ((content_only)); then continue; fi
      targets=()
      for p in "${runtime_paths[@]}"; do targets+=("$p"); done
      (cd "$dest" && "$ansible_test" "${args[@]}" --skip-test pep8 --skip-test pylint "${targets[@]}" "${extra[@]}") || status=1
      ;;
    units)
      # --local needs pytest-xdist (ansible-test always passes -n auto) and pytest-mock in the project
      # venv; without them, ansible-test builds a venv with its units requirements from PyPI.
      if "$core_bin/python" -c 'import xdist, pytest_mock' 2>/dev/null; then where=(--local); else where=(--venv --requirements); fi
      (cd "$dest" && "$ansible_test" units --python "$python_version" "${where[@]}" --color no "${extra[@]}") || status=1
      ;;
    integration)
      (cd "$dest" && "$ansible_test" integration --python "$python_version" --local --color no "${extra[@]}") || status=1
      ;;
  esac
done
exit $status
