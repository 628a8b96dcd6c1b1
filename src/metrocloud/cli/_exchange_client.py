"""The node API calls of ``metrocloud exchange``: one small HTTP client (httpx)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from metrocloud.cli._common import CliError

__all__ = ["Client", "file_blocks", "make_client"]

_BLOCK = 1024 * 1024


def _base(url: str) -> str:
    base = url.strip().rstrip("/")
    if base.endswith("/api/v1"):
        base = base[: -len("/api/v1")]
    if not base.startswith(("http://", "https://")):
        raise CliError(f"--node must be an http:// or https:// URL, got {url!r}")
    return base


def _problem(r: httpx.Response) -> str:
    try:
        body = r.json()
        return str(body.get("detail") or body.get("title") or r.text[:200])
    except ValueError:
        return r.text[:200]


class Client:
    """``/api/v1`` of one node, as the party whose token it holds."""

    def __init__(self, http: httpx.Client, where: str) -> None:
        self.http = http
        self.where = where

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, f"/api/v1{path}", **kw)
        except httpx.TransportError as exc:
            raise CliError(f"node {self.where} unreachable: {exc}") from None
        if r.status_code >= 400:
            raise CliError(f"{method} {path} at {self.where}: {r.status_code} {_problem(r)}")
        return r

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params=params or None).json()

    def post(self, path: str, body: Any) -> Any:
        return self._call("POST", path, json=body).json()

    def upload(self, path: str, media_type: str, body: Iterator[bytes]) -> Any:
        return self._call("POST", path, content=body, headers={"Content-Type": media_type}).json()

    def download(
        self, path: str, sink: BinaryIO, progress: Callable[[int], None] | None = None
    ) -> int:
        """Stream ``path`` into ``sink``; returns the number of bytes."""
        done = 0
        try:
            with self.http.stream("GET", f"/api/v1{path}") as r:
                if r.status_code >= 400:
                    r.read()
                    raise CliError(f"GET {path} at {self.where}: {r.status_code} {_problem(r)}")
                for block in r.iter_bytes(_BLOCK):
                    sink.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done)
        except httpx.TransportError as exc:
            raise CliError(f"node {self.where} unreachable: {exc}") from None
        return done


def make_client(node: str | None, token: str | None) -> Client:
    """A client for ``--node`` with ``--token`` (both required)."""
    if not node or not token:
        raise CliError(
            "give the node and your token: --node URL --token T "
            "(or METROCLOUD_NODE_URL and METROCLOUD_TOKEN)"
        )
    base = _base(node)
    http = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=300, trust_env=False
    )
    return Client(http, base)


def file_blocks(path: Path, prefix: bytes, progress: Callable[[int], None]) -> Iterator[bytes]:
    """``prefix``, then the file in blocks of 1 MiB (the upload body, streamed)."""
    yield prefix
    done = 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            done += len(block)
            progress(done)
            yield block
