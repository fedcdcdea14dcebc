"""``edge-fleet serve DIR``: serve a repository directory to devices over HTTP(S).

Read-only static files with byte ranges (``Range: bytes=N-`` / ``N-M``, so devices
resume interrupted downloads), no directory listings, nothing outside ``DIR`` (paths
are resolved and checked). Everything served is signed or hashed in TUF metadata, so
the server needs no trust: TLS (``--cert``/``--key``) only hides what is fetched.
Any static server or S3-compatible bucket holding the same tree works the same way.

Raises :class:`~edge_agent.errors.BadInputError` (exit 2, one line) when ``DIR`` is not a
directory, the port is taken or not allowed, or ``--cert``/``--key`` cannot be loaded.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edge_agent.errors import BadInputError

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
BLOCK = 256 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: RepoServer
    protocol_version = "HTTP/1.1"
    server_version = "edge-fleet-serve/1"

    def log_message(self, format: str, *args: object) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _resolve(self) -> Path | None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        p = (self.server.root / rel).resolve()
        if self.server.root not in p.parents or not p.is_file():
            return None
        return p

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _error(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, body: bool) -> None:
        p = self._resolve()
        if p is None:
            self._error(404)
            return
        size = p.stat().st_size
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        status = 200
        if rng:
            m = _RANGE.match(rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        with open(p, "rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                block = f.read(min(BLOCK, left))
                if not block:
                    break
                try:
                    self.wfile.write(block)
                except OSError:
                    return
                left -= len(block)


class RepoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8080, *,
                 ssl_context: ssl.SSLContext | None = None, verbose: bool = False) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise BadInputError(f"{root}: not a directory")
        self.verbose = verbose
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:  # EADDRINUSE, EACCES (port < 1024), unknown host
            raise BadInputError(f"cannot listen on {host}:{port}: {e.strerror or e}"
                                f"{'; pass another --port' if port else ''}") from e
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host!s}:{port}/"

    def start(self) -> RepoServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="edge-fleet-serve")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _cmd_serve(args: argparse.Namespace) -> int:
    ctx = None
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(args.cert, args.key or None)
        except (OSError, ssl.SSLError) as e:
            raise BadInputError(f"--cert {args.cert}"
                                f"{' --key ' + args.key if args.key else ''}: cannot load "
                                f"the certificate and key ({e.strerror or e})") from e
    srv = RepoServer(Path(args.dir), args.host, args.port, ssl_context=ctx, verbose=True)
    print(f"serving {srv.root} on {srv.url} (pass --http-url {srv.url} to publish)",
          flush=True)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a repository directory over HTTP(S) with ranges",
                       description=__doc__)
    p.add_argument("dir", help="repository directory (edge-fleet repo init)")
    p.add_argument("--host", default=os.environ.get("EDGE_FLEET_SERVE_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--cert", help="TLS certificate (PEM) for https")
    p.add_argument("--key", help="TLS private key (PEM) if not in --cert")
    p.set_defaults(func=_cmd_serve)
