"""A local HTTP server on 127.0.0.1 for download tests: no network, real sockets, real HTTP.

``server.serve(path, body, mode)`` publishes ``body`` at ``server.url(path)``. Modes:

    "ok"           honours Range requests (206 with Content-Range), like a real file server
    "no-range"     ignores Range and always sends the whole file (200)
    "404"          not found
    "drop-first"   the first answer promises the whole file but stops half way and closes the connection;
                   later answers are "ok"
    "stall-first"  the first answer sends half, then goes silent for ``stall`` seconds; later ones "ok"
    "hold"         sends half, waits until ``server.release`` is set, then sends the rest

``server.requests`` records (path, Range header or None) of every request, in order.
"""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer:
    def __init__(self):
        self.routes = {}
        self.requests = []
        self.release = threading.Event()
        self.stall = 2.0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{path}"

    def serve(self, path, body, mode="ok"):
        self.routes[path] = {"body": body, "mode": mode, "hits": 0}
        return self.url(path)

    def hits(self, path):
        return [r for p, r in self.requests if p == path]

    def close(self):
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler_for(server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_GET(self):
            path = self.path.lstrip("/")
            server.requests.append((path, self.headers.get("Range")))
            route = server.routes.get(path)
            if route is None or route["mode"] == "404":
                self.send_error(404, "Not Found")
                return
            route["hits"] += 1
            body, mode = route["body"], route["mode"]
            first = route["hits"] == 1
            start = _range_start(self.headers.get("Range")) if mode != "no-range" else None
            if start is not None and start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            if start is not None:
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                start = 0
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            half = len(payload) // 2
            try:
                if mode == "drop-first" and first:
                    self.wfile.write(payload[:half])
                elif mode == "stall-first" and first:
                    self.wfile.write(payload[:half])
                    self.wfile.flush()
                    time.sleep(server.stall)
                elif mode == "hold":
                    self.wfile.write(payload[:half])
                    self.wfile.flush()
                    server.release.wait(60)
                    self.wfile.write(payload[half:])
                else:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
                pass
            self.close_connection = True

    return Handler


def _range_start(header):
    """K from "bytes=K-", else None."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    return int(header[len("bytes="):-1])
