"""Build the runtime's wheel from a collection tree, on the Ansible controller, with the standard library alone.

Guarantee: the same files give the same bytes (sorted entries, fixed timestamps and modes), so the
wheel copied to a host changes only when the runtime changed, and every host of a play installs
the same build. The wheel is pure Python (py3-none-any) and carries the metadata of the tree's
pyproject.toml: name, version, Requires-Python, Requires-Dist (and the optional extras), the console
scripts and the license.
Limit: it packs the package directory as it is (no build hooks, no compiled code), which is all
infrakit_runtime needs; it does not resolve or check the dependencies (pip does, on the host, with
the pinned constraints).

Usage: build_wheel.py COLLECTION_DIR OUTPUT_DIR - prints a JSON line {"path", "changed", "version", "sha256"}.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import sys
import zipfile
from pathlib import Path

PACKAGE = "infrakit_runtime"
# Zip timestamps cannot be older than 1980.
EPOCH = (1980, 1, 1, 0, 0, 0)


def _toml_subset(text: str) -> dict:
    """Tables, string values and arrays of strings: enough of TOML for a pyproject's [project].

    Used only where tomllib is missing (Python 3.10 Ansible controllers)."""
    data: dict = {}
    table = data
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith(("'", '"')) else raw.strip()
        if not line:
            continue
        header = re.fullmatch(r"\[([A-Za-z0-9_.-]+)\]", line)
        if header:
            table = data
            for part in header.group(1).split("."):
                table = table.setdefault(part, {})
            continue
        key, value = (part.strip() for part in line.split("=", 1)) if "=" in line else (line, "")
        key = key.strip('"')
        if value.startswith("[") and not value.endswith("]"):
            for more in lines:
                value += " " + more.split("#", 1)[0].strip()
                if value.endswith("]"):
                    break
        if value.startswith("["):
            table[key] = re.findall(r'"((?:[^"\\]|\\.)*)"', value)
        elif value.startswith('"'):
            table[key] = json.loads(value)
    return data


def read_pyproject(path: Path) -> dict:
    text = path.read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return _toml_subset(text)
    return tomllib.loads(text)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def metadata(project: dict) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if project.get("description"):
        lines.append(f"Summary: {project['description']}")
    license_ = project.get("license")
    if isinstance(license_, str):
        lines.append(f"License: {license_}")
    if project.get("requires-python"):
        lines.append(f"Requires-Python: {project['requires-python']}")
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    # Optional extras (pip install 'infrakit-runtime[ansible]'): the role installs them by name.
    for extra, deps in sorted(project.get("optional-dependencies", {}).items()):
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {dep}; extra == "{extra}"' for dep in deps]
    return "\n".join(lines) + "\n"


def files_of(root: Path) -> list[tuple[str, bytes]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root / PACKAGE):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if not name.endswith((".pyc", ".pyo")):
                path = Path(dirpath) / name
                out.append((path.relative_to(root).as_posix(), path.read_bytes()))
    return sorted(out)


def build(root: Path) -> tuple[str, bytes, str]:
    """Return (file name, wheel bytes, version) for the runtime in the collection tree ``root``."""
    project = read_pyproject(root / "pyproject.toml")["project"]
    name, version = project["name"], project["version"]
    dist = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{dist}-{version}.dist-info"
    entries = files_of(root)
    entries.append((f"{info}/METADATA", metadata(project).encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: infrakit.core build_wheel.py\n"
                                     b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    scripts = project.get("scripts", {})
    if scripts:
        body = "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(scripts.items()))
        entries.append((f"{info}/entry_points.txt", body.encode()))
    for license_file in project.get("license-files", []):
        path = root / license_file
        if path.is_file():
            entries.append((f"{info}/licenses/{license_file}", path.read_bytes()))
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for path, data in entries:
            member = zipfile.ZipInfo(path, date_time=EPOCH)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(member, data)
    return f"{dist}-{version}-py3-none-any.whl", raw.getvalue(), version


def main() -> None:
    root, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    if not (root / "pyproject.toml").is_file() or not (root / PACKAGE).is_dir():
        raise SystemExit(f"{root} holds no runtime (pyproject.toml and {PACKAGE}/ expected): "
                         "set controller_collection_path to the infrakit.core collection")
    name, data, version = build(root)
    target = out / name
    changed = not target.is_file() or target.read_bytes() != data
    if changed:
        out.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    print(json.dumps({"path": str(target), "changed": changed, "version": version,
                      "sha256": hashlib.sha256(data).hexdigest()}))


if __name__ == "__main__":
    main()
