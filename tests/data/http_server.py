"""A loopback HTTP server (127.0.0.1, port 0, in a thread) that serves archives from memory.

It honours ``Range: bytes=N-`` (206 with ``Content-Range``, 416 past the end) unless told to ignore it,
can cut the connection after K bytes of the first response for a path, and records every request's
path and ``Range`` header so that tests can assert what the client asked for.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ArchiveServer:
    """Serve ``files`` (``{"ADVANCE_vision.zip": bytes}``) at ``http://127.0.0.1:<port>/<name>``.

    Args:
        files: name -> content.
        honour_range: answer a ``Range`` request with 206 (False: ignore it and send everything with 200).
        cut_after: name -> K: the first response for that name sends K bytes of its body, then closes.
    """

    def __init__(
        self, files: dict[str, bytes], *, honour_range: bool = True, cut_after: dict[str, int] | None = None
    ) -> None:
        self.files = dict(files)
        self.honour_range = honour_range
        self.cut_after = dict(cut_after or {})
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server._answer(self)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base signature
                pass  # keep the test output clean

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01})
        self._thread.start()

    @property
    def base(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        name = handler.path.split("?", 1)[0].lstrip("/")
        wanted = handler.headers.get("Range")
        self.requests.append((name, wanted))
        if name not in self.files:
            handler.send_error(404)
            return
        data = self.files[name]
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "")
        if match and self.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{len(data)}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            start = 0
            handler.send_response(200)
        body = data[start:]
        handler.send_header("Content-Type", "application/zip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        cut = self.cut_after.pop(name, None)  # only the first response for this name is cut
        handler.wfile.write(body if cut is None else body[:cut])
        handler.wfile.flush()
        # HTTP/1.0 (the handler's default protocol): the connection closes when the handler returns.
