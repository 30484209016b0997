"""A file-backend candidate in its own process, driven by the tests (flock is per open file description).

Usage: ``python -m tests.runtime.backends.file_candidate DIR NAME MODE``; prints
``LEADER <name> <term>`` once elected, then acts according to MODE:
``hold`` (lead until the lease is lost, then print ``LOST <reason>`` and resign), ``crash-before-rename`` (put, dying just before the
rename makes the new spec visible), ``write-loop`` (rewrite one large spec forever).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from infrakit_runtime.backends.file import FileBackend


async def main(directory: str, name: str, mode: str) -> None:
    backend = FileBackend(Path(directory))
    async with backend.leadership(candidate=name, location=f"unix:///{name}.sock") as lease:
        print(f"LEADER {name} {lease.term}", flush=True)
        if mode == "crash-before-rename":
            os.replace = lambda *_: os._exit(9)  # die between the fsync of the temp file and the rename
            await backend.put("web", {"ID": "web", "Properties": {"version": 2}}, lease)
        elif mode == "write-loop":
            pad = "x" * (1 << 20)
            i = 0
            while True:
                i += 1
                await backend.put("big", {"ID": "big", "Properties": {"version": i, "pad": pad}}, lease)
                print(f"WROTE {i}", flush=True)
        print(f"LOST {await backend.wait_lost(lease)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
