"""Chaos-suite plumbing: seeds, the world fixture, and the real etcd cluster.

Guarantee: under ``make test`` every scenario runs with the same fixed seeds (1 and 2), so a
failure reproduces; ``INFRAKIT_CHAOS_RANDOM=1`` draws fresh seeds and ``INFRAKIT_CHAOS_TRIALS=N``
runs N of them per scenario (``make chaos``); ``INFRAKIT_CHAOS_SEED=7`` (or ``7,9``) replays
exactly those. The seed is in each test's ID, printed, and in every assertion message. Each
trial appends its outcome to ``tests/output/chaos-trials.jsonl`` (the figures in
docs/reliability.md come from there).
Limit: daemons run as real processes; a trial costs seconds, so trial counts stay small here.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.world import Processes, World
from tests.runtime.etcd_cluster import etcd, etcd_cluster

__all__ = ["etcd", "etcd_cluster"]

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "tests" / "output" / "chaos-trials.jsonl"
FIXED_SEEDS = (1, 2)


def seeds() -> list[int]:
    """The seeds every scenario runs with (see the module docstring)."""
    chosen = os.environ.get("INFRAKIT_CHAOS_SEED", "").strip()
    if chosen:
        return [int(s) for s in chosen.split(",") if s.strip()]
    trials = int(os.environ.get("INFRAKIT_CHAOS_TRIALS", "0") or 0) or len(FIXED_SEEDS)
    if os.environ.get("INFRAKIT_CHAOS_RANDOM") == "1":
        return [random.SystemRandom().randrange(1, 2**31) for _ in range(trials)]
    return [*FIXED_SEEDS, *range(len(FIXED_SEEDS) + 1, trials + 1)][:trials]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        chosen = seeds()
        metafunc.parametrize("seed", chosen, ids=[f"seed{s}" for s in chosen])


def record(outcome: dict[str, Any]) -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with OUTPUT.open("a") as f:
        f.write(json.dumps(outcome) + "\n")


@pytest.fixture
def make_world(tmp_path: Path, seed: int) -> Iterator[Callable[..., World]]:
    """``make_world(scenario, **kwargs)``: the trial's daemons; all stopped and their instances killed after."""
    made: list[World] = []
    mounts: list[Path] = []
    processes = Processes(tmp_path / "home")

    def make(scenario: str, **kwargs: Any) -> World:
        print(f"chaos scenario {scenario} seed {seed} (replay: INFRAKIT_CHAOS_SEED={seed})")
        world = World(processes, seed=seed, scenario=scenario, **kwargs)
        made.append(world)
        return world

    make.mounts = mounts  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        processes.stop_all()
        for world in made:
            world.kill_instances()
        for mount in mounts:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["umount", str(mount)], check=False, capture_output=True, timeout=10)
