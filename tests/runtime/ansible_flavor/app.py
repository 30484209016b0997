"""An instance's program for the ansible flavor's tests: it serves what the playbook configured.

``GET /`` answers the content of ``$CONFIG_DIR/<instance ID>.conf`` (200), or 503 while the
file does not exist; ``GET /healthz`` answers 200 only once it does. Listens on
127.0.0.1:``$PORT``. Extra arguments (a test's marker) are ignored.
"""

from __future__ import annotations

import http.server
import os
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        conf = Path(os.environ["CONFIG_DIR"]) / f"{os.environ.get('INFRAKIT_INSTANCE_ID', '')}.conf"
        try:
            body = conf.read_text()
        except OSError:
            self._answer(503, "not configured\n")
            return
        self._answer(200, "ok\n" if self.path.startswith("/healthz") else body)

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
