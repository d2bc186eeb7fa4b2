"""A loopback Tech Against Terrorism hash-list server (TCAP v2 as python-threatexchange's
client calls it): token login, pages of ``{count, next, previous, checkpoint, results}``
ordered by ``(updated_on, id)``, records after the ``after=ts,id`` checkpoint, ``deleted``
records; and the failures a real one has (an expired token, a broken page)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit


@dataclass
class TCAPList:
    records: list[dict] = field(default_factory=list)
    page_size: int = 3
    expired: bool = False  # every token is refused (401), as after an expiry
    broken_digest: str | None = None  # a page holding this hash is not JSON
    requests: list[str] = field(default_factory=list)
    added: int = 0

    def add(
        self,
        digest: str,
        algorithm: str,
        ideology: str = "islamist",
        file_type: str = "mp4",
        deleted: bool = False,
    ) -> dict:
        self.added += 1
        number = self.added
        record = {
            "hash_digest": digest,
            "algorithm": algorithm,
            "ideology": ideology,
            "file_type": file_type,
            "deleted": deleted,
            "updated_on": 1_700_000_000.5 + number,
            "created_on": "2024-01-01T00:00:00Z",
            "id": 1000 + number,
        }
        self.records.append(record)
        return record

    def delete(self, record: dict) -> None:
        """The list marks a record deleted: it moves to the end with a new time."""
        self.records.remove(record)
        self.add(
            record["hash_digest"],
            record["algorithm"],
            record["ideology"],
            record["file_type"],
            deleted=True,
        )

    def page(self, base: str, query: dict[str, str]) -> bytes:
        after = query.get("after", "")
        start = (0.0, 0)
        if after:
            ts, _, rid = after.partition(",")
            start = (float(ts), int(rid))
        pending = [r for r in self.records if (r["updated_on"], r["id"]) > start]
        offset = int(query.get("offset", "0"))
        chunk = pending[offset : offset + self.page_size]
        if any(r["hash_digest"] == self.broken_digest for r in chunk):
            return b'{"count": 3, "results": [{"hash_digest": '
        more = offset + self.page_size < len(pending)
        last = chunk[-1] if chunk else None
        following = f"limit={self.page_size}&offset={offset + self.page_size}&order=asc"
        return json.dumps(
            {
                "count": len(pending),
                # As TCAP writes it: a full URL (the client appends it after '?', so only its
                # offset survives as a parameter of its own).
                "next": f"{base}api/hash-list/v2/all?{following}" if more else None,
                "previous": None,
                "checkpoint": f"{last['updated_on']},{last['id']}" if last else after,
                "results": chunk,
            }
        ).encode()


class TCAPServer:
    def __init__(
        self, hash_list: TCAPList, username: str = "analyst", password: str = "pw"
    ) -> None:
        self.list = hash_list
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                server.list.requests.append("token")
                if urlsplit(self.path).path != "/token-auth/tcap/":
                    return self._send(404, b"{}")
                if (form.get("username"), form.get("password")) != (username, password):
                    return self._send(400, b'{"non_field_errors": ["Unable to log in"]}')
                self._send(200, json.dumps({"token": "tok-1", "user": {}}).encode())

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                server.list.requests.append(parts.query)
                if parts.path != "/api/hash-list/v2/all":
                    return self._send(404, b"{}")
                if server.list.expired or self.headers.get("Authorization") != "Bearer tok-1":
                    return self._send(401, b'{"detail": "Token expired"}')
                query = dict(parse_qsl(parts.query, keep_blank_values=True))
                self._send(200, server.list.page(server.url, query))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TCAPServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
