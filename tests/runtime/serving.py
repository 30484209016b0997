"""What the world sees during a rollout: how many of a group's instances answer ``GET /``, sampled on and on.

Shared by the rollout tests (the process plugin running the webapp, with and without the ansible
flavor). It asks the instance plugin's own description, not the controller's view, so a test's
"never fewer than N answered" is what a user of the service would have seen.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from typing import Any


def count_answering(described: list[dict[str, Any]], path: str = "/", timeout: float = 5.0) -> int:
    """How many of ``described`` answer ``GET path`` with 200 at their ``Properties.Address`` right now."""
    answered = 0
    for d in described:
        address = (d.get("Properties") or {}).get("Address")
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as resp:
                answered += resp.status == 200
        except Exception:
            pass
    return answered


class Answering(threading.Thread):
    """Counts, over and over, the described instances that answer ``GET /`` at their ``Properties.Address``."""

    def __init__(self, instances: Callable[[], list[dict[str, Any]]]) -> None:
        super().__init__(daemon=True, name="answering")
        self.instances = instances
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                described = self.instances()
            except Exception:
                continue  # the plugin is busy; the next sample counts
            self.samples.append(count_answering(described))
            self._halt.wait(0.05)

    def stop(self) -> list[int]:
        self._halt.set()
        self.join(15)
        return self.samples
