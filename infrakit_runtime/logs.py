"""Structured logging to stderr: readable text by default, JSON lines on request.

A JSON line always has ``time``, ``level``, ``logger`` and ``msg``; a record that names a
group, an instance or an event kind (controller events pass them as extras) carries them as
the fields ``group``, ``instance`` and ``event`` too, so a log shipper can filter on them
instead of parsing the message. At ``debug`` the RPC traffic logger
(``infrakit_runtime.rpc.traffic``) dumps every request and answer, as InfraKit's ``--log 5`` did.
"""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Extras a record may carry (``log.info(..., extra={"group": ...})``), copied to JSON fields when set.
FIELDS = ("group", "instance", "event")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value:
                out[field] = str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class EventWireFormatter(logging.Formatter):
    """A controller event as its bare wire object (``Manager.Events``'s shape), one per line.

    For the manager's ``events_json`` option; a record without an event falls back to its message.
    """

    def format(self, record: logging.LogRecord) -> str:
        wire = getattr(record, "wire", None)
        return json.dumps(wire, ensure_ascii=False) if isinstance(wire, dict) else record.getMessage()


def setup(level: str = "info", fmt: str = "text") -> None:
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp and botocore are chatty at debug; keep ours readable.
    for noisy in ("aiohttp.access", "botocore", "boto3", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(LEVELS[level], logging.INFO))
