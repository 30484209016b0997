from __future__ import annotations

import pytest

from tests.runtime.controller.harness import Stack


@pytest.fixture
def stack(daemons):
    s = Stack(daemons)
    try:
        yield s
    finally:
        daemons.stop_all()
        s.kill_instances()
