"""Count a group's healthy instances, continuously, until told to stop; print a JSON summary.

Guarantee: each sample lists the group's instances from the instance plugin (the world, not the
controller's view), probes every one's health URL, and lists them again; a sample whose membership
changed while it was being taken is discarded as indeterminate rather than counted low or high.
Limit: a sample takes as long as its probes (about a millisecond each on loopback), so a dip
shorter than that can be missed.

Usage: sample_health.py --plugins-dir DIR --group ID --stop-file FILE [--plugin process]
       [--interval 0.05] [--max-seconds 600]
Prints {"samples", "discarded", "min_healthy", "max_healthy", "messages", "seconds"}.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from pathlib import Path

from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import SyncClient


def members(client: SyncClient, group: str) -> list[dict]:
    result = client.call("Instance.DescribeInstances", {"Tags": {"infrakit.group": group}, "Properties": True})
    return result.get("Descriptions") or []


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status, resp.read().decode()
    except Exception:
        return 0, ""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--plugins-dir", required=True, type=Path)
    p.add_argument("--plugin", default="process")
    p.add_argument("--group", required=True)
    p.add_argument("--stop-file", required=True, type=Path)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--max-seconds", type=float, default=600)
    args = p.parse_args()
    client = SyncClient(discovery.Address(unix_path=args.plugins_dir / args.plugin), name=args.plugin, timeout=5)
    counts: list[int] = []
    discarded = 0
    messages: dict[str, int] = {}
    started = time.monotonic()
    while not args.stop_file.exists() and time.monotonic() - started < args.max_seconds:
        before = members(client, args.group)
        healthy = 0
        for d in before:
            address = (d.get("Properties") or {}).get("Address")
            status = get(f"http://{address}/healthz")[0]
            if status == 200:
                healthy += 1
                body = get(f"http://{address}/")[1]
                message = body.split(" from ")[0].strip()
                messages[message] = messages.get(message, 0) + 1
        after = members(client, args.group)
        if sorted(d["ID"] for d in before) != sorted(d["ID"] for d in after):
            discarded += 1
        else:
            counts.append(healthy)
        time.sleep(args.interval)
    client.close()
    print(json.dumps({"samples": len(counts), "discarded": discarded,
                      "min_healthy": min(counts) if counts else None, "max_healthy": max(counts) if counts else None,
                      "messages": messages, "seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
