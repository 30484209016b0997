"""Daemon kinds assembled from both sides of a contract: the one place that may know both.

The manager knows the ``Backend`` interface (``manager.backend``) and never its
implementations; the backends implement it and never import the manager. The manager
daemon gets its backends here, injected as a factory.
"""

from __future__ import annotations

import contextlib

from infrakit_runtime.backends import open_backend
from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.manager import daemon as manager_daemon


def open_manager(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """The ``manager`` kind: the Group and Manager SPIs on the ``group`` socket, with its backends."""
    return manager_daemon.open_daemon(ctx, open_backend=open_backend)
