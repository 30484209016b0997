"""A tiny HTTP service to run as a ``process`` instance: answers ``$MESSAGE`` and a health check.

``GET /`` answers the message and the instance ID; ``GET /healthz`` answers 200, or 500
while a file named after the instance exists in ``$HEALTH_FLAG_DIR`` (how a demo or a
test makes one instance unhealthy without killing it); any other path answers 404 (a
health check pointed at the wrong path fails, as it would on a real service).
Listens on 127.0.0.1:``$PORT``.
"""

from __future__ import annotations

import http.server
import os
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        instance_id = os.environ.get("INFRAKIT_INSTANCE_ID", "")
        if self.path.startswith("/healthz"):
            flags = os.environ.get("HEALTH_FLAG_DIR")
            sick = (Path(flags) / instance_id).exists() if flags else False
            self._answer(500 if sick else 200, "unhealthy\n" if sick else "ok\n")
            return
        if self.path.split("?")[0] != "/":
            self._answer(404, "not found\n")
            return
        self._answer(200, f"{os.environ.get('MESSAGE', 'hello')} from {instance_id}\n")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet: the plugin logs to a file anyway
        return


def main() -> None:
    port = int(os.environ.get("PORT", "8080"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
