"""The CLI's HTTP client for `tuneforge server`: URL and token from the environment or the admin file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from tuneforge.errors import ConfigError, ConflictError, NotFoundError, TuneforgeError
from tuneforge.names import name_from_file
from tuneforge.settings import get_settings

DEFAULT_URL = "http://127.0.0.1:8000"


class ServerError(TuneforgeError):
    """The server answered with an error (or could not be reached)."""


def _token() -> str | None:
    if os.environ.get("TUNEFORGE_TOKEN"):
        return os.environ["TUNEFORGE_TOKEN"]
    path = get_settings().root / "admin.token"
    try:
        return path.read_text().strip()
    except OSError:
        return None


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        import httpx

        self.url = (url or os.environ.get("TUNEFORGE_URL") or DEFAULT_URL).rstrip("/")
        headers = {}
        token = token or _token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def _raise(self, response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text[:500]}
        detail = body.get("detail") or body.get("error", {}).get("message") or response.reason_phrase
        problems = body.get("problems") or []
        lines = [str(detail)]
        for p in problems[:50]:
            where = (
                ".".join(map(str, p["loc"]))
                if "loc" in p
                else " ".join(
                    f"{k} {p[k]}" for k in ("file", "line", "record", "field") if p.get(k) is not None
                )
            )
            lines.append(f"  {where}: {p.get('msg') or p.get('message')}")
        if problems and "loc" in problems[0]:
            # The detail is these same field problems joined by "; ": each is said once, one a line.
            message = "\n".join(line.strip() for line in lines[1:])
        elif problems:
            message = "\n".join(lines)
        else:
            message = str(detail)
        if response.status_code == 401:
            raise ServerError(
                f"the server at {self.url} refused the token: set TUNEFORGE_TOKEN or run where "
                "$TUNEFORGE_HOME/admin.token is readable."
            )
        if response.status_code == 404:
            raise NotFoundError(message)
        if response.status_code == 409:
            raise ConflictError(message)
        if response.status_code in (400, 413, 422):
            raise ConfigError(message)
        raise ServerError(f"server error {response.status_code}: {message}")

    def request(self, method: str, path: str, **kw):
        import httpx

        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError:
            raise ServerError(
                f"cannot reach the tuneforge server at {self.url}: start it with `tuneforge server` "
                "or set TUNEFORGE_URL."
            ) from None
        self._raise(response)
        return response

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw).json()

    def post(self, path: str, **kw):
        return self.request("POST", path, **kw).json()

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw).json()

    def download(self, path: str, dest: Path, params: dict | None = None) -> int:
        """Stream a file answer into ``dest``; its size in bytes."""
        import httpx

        size = 0
        try:
            with self.http.stream("GET", path, params=params, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    self._raise(r)
                with open(dest, "wb") as out:
                    for chunk in r.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
        except httpx.TransportError:
            raise ServerError(f"lost the connection to the tuneforge server at {self.url}") from None
        return size

    def events(self, path: str, params: dict | None = None) -> Iterator[tuple[str, dict]]:
        """Server-Sent Events of a followed resource: (event, data) until the server ends the stream."""
        import httpx

        try:
            with self.http.stream(
                "GET", path, params={**(params or {}), "follow": "true"}, timeout=None
            ) as r:
                self._raise(r)
                event = "message"
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        yield event, json.loads(line[6:])
        except httpx.TransportError:
            raise ServerError(f"lost the connection to the tuneforge server at {self.url}") from None

    def upload_dataset(self, path: Path, name: str | None = None) -> dict:
        path = Path(path)
        files = [p for p in sorted(path.rglob("*")) if p.is_file()] if path.is_dir() else [path]
        handles = [open(p, "rb") for p in files]
        try:
            parts = [("files", (p.name, fh)) for p, fh in zip(files, handles, strict=True)]
            data = {"name": name or name_from_file(path.stem)}
            return self.request("POST", "/api/v1/datasets", files=parts, data=data, timeout=None).json()
        finally:
            for fh in handles:
                fh.close()
