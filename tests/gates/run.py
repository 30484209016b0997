"""The Ansible ecosystem's own gates on this collection, as its users' tools see it.

Guarantee: each gate runs the real tool (from the gates venv, requirements/gates.txt) on the
collection as it would be published: the tracked and untracked-but-not-ignored files staged at
.../ansible_collections/infrakit/core, or the tarball `ansible-galaxy collection build` makes
from them. Each prints the tool's name and version and its result line, and exits non-zero when
the tool reports a problem. Limit: nothing runs in a container (there is no container engine
here), so the EE gate stops at `ansible-builder create` and replays the build's galaxy and
introspection steps on this machine.

Usage: run.py lint | galaxy-import | ee | tarball | all
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class GateFailed(Exception):
    pass


def run(argv: list[str | Path], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise GateFailed(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return proc


def tool_env(home: Path) -> dict[str, str]:
    """The gates venv first on PATH, Ansible's state in a temporary home, nothing from the caller's ANSIBLE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"),
                "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1"})
    return env


def version(tool: str, *args: str) -> str:
    out = run([BIN / tool, *args], check=False)
    return re.sub(r"\x1b\[[0-9;]*m", "", (out.stdout or out.stderr).strip().splitlines()[0])


def galaxy() -> dict:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())


def stage(root: Path) -> Path:
    """Copy the collection's files (git's view, as ansible-test and a release would see them)."""
    galaxy_info = galaxy()
    dest = root / "ansible_collections" / galaxy_info["namespace"] / galaxy_info["name"]
    dest.mkdir(parents=True)
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def build(root: Path, env: dict[str, str]) -> Path:
    src = stage(root / "src")
    out = root / "dist"
    run([BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", out, src], env=env)
    (tarball,) = out.glob("*.tar.gz")
    return tarball


def gate_lint(root: Path) -> str:
    """ansible-lint, production profile (from .ansible-lint), on the whole collection."""
    env = tool_env(root)
    dest = stage(root / "lint")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(root / "lint")
    proc = run([BIN / "ansible-lint", "--nocolor", "-f", "pep8"], cwd=dest, env=env, check=False)
    result = next((line for line in reversed(proc.stderr.splitlines()) if line.startswith(("Passed", "Failed"))), "")
    print(proc.stdout, end="")
    if proc.returncode != 0 or not result.startswith("Passed") or " 0 warning(s)" not in result:
        print(proc.stderr[-6000:], file=sys.stderr)
        raise GateFailed(f"ansible-lint: {result or 'no result line'}")
    return f"{version('ansible-lint', '--version')}: {result}"


# Galaxy warns about every sanity ignore file. Ours hold only validate-modules:missing-gplv3-license: the
# collection is Apache-2.0, and the GPLv3 header that check looks for would misstate the license.
ACCEPTED_IMPORT_WARNING = re.compile(r"^WARNING: Ignore files skip ansible-test sanity tests, found ignore-[0-9.]+\.txt")


def gate_galaxy_import(root: Path) -> str:
    """The Galaxy importer on the built tarball: no ERROR and no WARNING line."""
    env = tool_env(root)
    tarball = build(root, env)
    proc = run([BIN / "python", "-m", "galaxy_importer.main", tarball], cwd=root, env=env, check=False)
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines()
                if re.match(r"\s*(ERROR|WARNING|CRITICAL)\b", line) and not ACCEPTED_IMPORT_WARNING.search(line)]
    if proc.returncode != 0 or problems or "Importing with galaxy-importer" not in log:
        print(log[-8000:], file=sys.stderr)
        raise GateFailed(f"galaxy-importer: exit {proc.returncode}, {len(problems)} problem line(s): {problems[:5]}")
    importer = re.search(r"Importing with galaxy-importer (\S+)", log).group(1)
    contents = re.findall(r"^Loading (\w+) ", log, re.MULTILINE)
    summary = ", ".join(f"{contents.count(k)} {k}" for k in sorted(set(contents)))
    return f"galaxy-importer {importer}: {tarball.name} imported, no errors, no warnings but the sanity-ignore notice ({summary})"


def gate_ee(root: Path) -> str:
    """execution-environment.yml through `ansible-builder create`, then the build's galaxy and introspection steps."""
    env = tool_env(root)
    ee_dir = root / "ee"
    ee_dir.mkdir()
    definition = REPO / "execution-environment.yml"
    shutil.copy2(definition, ee_dir / definition.name)
    tarball = build(root, env)
    # The definition takes the tarball from dist/ beside it (`ansible-galaxy collection build --output-path dist`).
    (ee_dir / "dist").mkdir()
    shutil.copy2(tarball, ee_dir / "dist" / tarball.name)
    context = ee_dir / "context"
    created = run([BIN / "ansible-builder", "create", "-f", ee_dir / definition.name, "-c", context,
                   "--output-filename", "Containerfile", "-v", "3"],
                  cwd=ee_dir, env=env, check=False)
    if created.returncode != 0 or "warning" in (created.stdout + created.stderr).lower():
        raise GateFailed(f"ansible-builder create: exit {created.returncode}\n{created.stdout[-4000:]}{created.stderr[-4000:]}")
    containerfile = (context / "Containerfile").read_text()
    build_dir = context / "_build"
    if not list(build_dir.rglob(tarball.name)):
        raise GateFailed(f"ansible-builder create: {tarball.name} is not in the build context {build_dir}")
    # The galaxy stage, as the Containerfile runs it (WORKDIR /build, which is _build/).
    install = re.search(r"^RUN (ANSIBLE_GALAXY_DISABLE_GPG_VERIFY=1 )?ansible-galaxy collection install .*$", containerfile, re.MULTILINE)
    if not install:
        raise GateFailed("ansible-builder create: no `ansible-galaxy collection install` step in the Containerfile")
    collections = ee_dir / "usr-share-ansible-collections"
    run([BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "--collections-path", collections],
        cwd=build_dir, env={**env, "ANSIBLE_GALAXY_DISABLE_GPG_VERIFY": "1"})
    installed = collections / "ansible_collections" / galaxy()["namespace"] / galaxy()["name"]
    if not (installed / "MANIFEST.json").is_file():
        raise GateFailed(f"the EE's galaxy step did not install the collection into {collections}")
    # The builder stage's introspection (`/output/scripts/assemble` runs introspect --sanitize on it).
    pip_out, bindep_out = ee_dir / "requirements.txt", ee_dir / "bindep.txt"
    intro = run([BIN / "ansible-builder", "introspect", "--sanitize", "--write-pip", pip_out, "--write-bindep", bindep_out,
                 collections], env=env, check=False)
    if intro.returncode != 0 or "Traceback" in intro.stderr:
        raise GateFailed(f"ansible-builder introspect: exit {intro.returncode}\n{intro.stdout[-3000:]}{intro.stderr[-3000:]}")
    python_deps = [line for line in pip_out.read_text().splitlines() if line.strip()] if pip_out.exists() else []
    system_deps = [line for line in bindep_out.read_text().splitlines() if line.strip()] if bindep_out.exists() else []
    return (f"ansible-builder {version('ansible-builder', '--version')}: create wrote {context.name}/Containerfile with the collection "
            f"in the build context; introspect of the installed collection: {len(python_deps)} python and "
            f"{len(system_deps)} system requirement(s)")


# What the tarball must hold (the role installs the runtime from it; ansible-test runs its tests) and
# what it must not (maintainers' trees); see the README's "What the collection tarball holds".
REQUIRED = ("MANIFEST.json", "FILES.json", "README.md", "LICENSE", "meta/runtime.yml", "meta/execution-environment.yml",
            "roles/controller/README.md", "roles/controller/meta/argument_specs.yml", "pyproject.toml",
            "requirements/runtime.txt", "infrakit_runtime/__init__.py", "infrakit_runtime/launcher.py",
            "plugins/modules/group.py", "tests/sanity", "tests/unit", "tests/integration/targets", "changelogs")
FORBIDDEN = re.compile(r"^(bench|scripts|wheelhouse|tests/(runtime|chaos|fuzz|e2e|ansible|gates|output)|\.venv[^/]*|\.git|\.ci|\.demo|\.tour|"
                       r"docs/benchmarks\.md|Makefile|execution-environment\.yml|requirements/(test|gates|ansible-core-.*)\.txt|"
                       r"web\.yml)(/|$)|__pycache__|\.pyc$")


def gate_tarball(root: Path) -> str:
    """The built tarball holds what the collection needs and none of the maintainers' trees."""
    env = tool_env(root)
    tarball = build(root, env)
    with tarfile.open(tarball) as tar:
        names = [m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()]
    missing = [r for r in REQUIRED if not any(n == r or n.startswith(r + "/") for n in names)]
    extra = sorted(n for n in names if FORBIDDEN.search(n))
    if missing or extra:
        raise GateFailed(f"{tarball.name}: missing {missing}; should not hold {extra[:20]}")
    return f"ansible-galaxy collection build: {tarball.name}, {len(names)} entries, {tarball.stat().st_size // 1024} KiB"


def gate_claims(root: Path) -> str:
    """requires_ansible claims exactly the ansible-core lines `make test-ansible` runs, each with its sanity ignores."""
    claim = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["requires_ansible"]
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)(?:\.\d+)?", claim.strip())
    if not match:
        raise GateFailed(f"meta/runtime.yml requires_ansible {claim!r}: expected '>=X.Y.Z'")
    project = re.search(r"^ansible-core==(\d+)\.(\d+)\.", (REPO / "requirements" / "test.txt").read_text(), re.MULTILINE)
    low, high = (int(match.group(1)), int(match.group(2))), (int(project.group(1)), int(project.group(2)))
    claimed = [f"{low[0]}.{minor}" for minor in range(low[1], high[1] + 1)] if low[0] == high[0] else []
    tested = sorted({p.stem.removeprefix("ansible-core-") for p in (REPO / "requirements").glob("ansible-core-*.txt")}
                    | {f"{high[0]}.{high[1]}"}, key=lambda v: tuple(map(int, v.split("."))))
    makefile = re.search(r"^CORE_LINES := (.*)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1).split()
    problems = []
    if claimed != tested:
        problems.append(f"requires_ansible {claim} claims {claimed or 'another major line'}, requirements/ pin {tested}")
    if sorted([*makefile, f"{high[0]}.{high[1]}"]) != sorted(tested):
        problems.append(f"the Makefile's CORE_LINES {makefile} are not the pinned lines {tested}")
    ignores = sorted(p.stem.removeprefix("ignore-") for p in (REPO / "tests" / "sanity").glob("ignore-*.txt"))
    if ignores and ignores != sorted(tested):
        problems.append(f"sanity ignore files for {ignores}, tested lines {tested}")
    role_min = yaml.safe_load((REPO / "roles" / "controller" / "meta" / "main.yml").read_text())["galaxy_info"]["min_ansible_version"]
    if str(role_min) != f"{low[0]}.{low[1]}":
        problems.append(f"the role's min_ansible_version {role_min} is not requires_ansible's {low[0]}.{low[1]}")
    if problems:
        raise GateFailed("; ".join(problems))
    return f"requires_ansible {claim}: ansible-test runs on {', '.join(tested)}, each with its sanity ignore file"


GATES = {"claims": gate_claims, "lint": gate_lint, "galaxy-import": gate_galaxy_import, "ee": gate_ee, "tarball": gate_tarball}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gates", nargs="+", choices=[*GATES, "all"])
    names = parser.parse_args(argv).gates
    failed = 0
    for name in GATES if "all" in names else names:
        with tempfile.TemporaryDirectory(prefix=f"infrakit-gate-{name}-") as tmp:
            try:
                print(f"gate {name}: PASS {GATES[name](Path(tmp))}", flush=True)
            except GateFailed as e:
                failed += 1
                print(f"gate {name}: FAIL {e}", file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
