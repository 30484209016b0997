"""Pack the runtime from a collection tree into a reproducible source archive pip can install.

Guarantee: the same files give the same bytes (sorted entries, zero mtimes and owners, no gzip
timestamp), so copying the archive to a host changes it only when the runtime changed.
Limit: packs only what ``pip install`` needs (pyproject.toml, README.md, infrakit_runtime/ without
bytecode); it does not check that the tree builds.

Usage: pack_runtime.py COLLECTION_DIR OUTPUT_DIR — prints a JSON line {"path", "changed", "version"}.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import sys
import tarfile
from pathlib import Path

TOP_FILES = ("pyproject.toml", "README.md")
PACKAGE = "infrakit_runtime"


def version_of(pyproject: Path) -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"no version in {pyproject}")
    return match.group(1)


def members(root: Path) -> list[Path]:
    files = [root / name for name in TOP_FILES]
    for dirpath, dirnames, filenames in os.walk(root / PACKAGE):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        files += [Path(dirpath) / f for f in filenames if not f.endswith((".pyc", ".pyo"))]
    return sorted(files)


def pack(root: Path) -> tuple[bytes, str]:
    version = version_of(root / "pyproject.toml")
    top = f"infrakit_runtime-{version}"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in members(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{top}/{path.relative_to(root).as_posix()}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), version


def main() -> None:
    root, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    if not (root / "pyproject.toml").is_file() or not (root / PACKAGE).is_dir():
        raise SystemExit(f"{root} holds no runtime (pyproject.toml and {PACKAGE}/ expected)")
    data, version = pack(root)
    target = out / f"infrakit_runtime-{version}.tar.gz"
    changed = not target.is_file() or target.read_bytes() != data
    if changed:
        out.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    print(json.dumps({"path": str(target), "changed": changed, "version": version}))


if __name__ == "__main__":
    main()
