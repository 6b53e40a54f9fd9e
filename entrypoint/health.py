"""Optional `/healthz` and `/readyz` for Kubernetes probes: alive while the wrapper runs, ready
once the scheduler answered and the command started."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Health:
    def __init__(self) -> None:
        self.ready = False
        self._server: ThreadingHTTPServer | None = None

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    code, body = 200, b"ok\n"
                elif self.path == "/readyz":
                    code, body = (200, b"ready\n") if health.ready else (503, b"waiting\n")
                else:
                    code, body = 404, b"not found\n"
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # probes every few seconds: no noise
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="health").start()
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
