"""A node that shows each peer its own history: the attack witnessing must catch.

:class:`ForkedNode` is an admitted grid node whose tree heads are really signed by its
admitted key, over a log kept per viewer (``views``), so every head verifies on its own and
only comparing them across peers reveals the fork. :class:`ForkingTransport` sends requests
for it to it and everything else on to the honest nodes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metrocloud.grid.client import Reply
from metrocloud.grid.signing import NODE_HEADER, NONCE_HEADER, SIGNATURE_HEADER, sign_response
from metrocloud.ledger import TransparencyLog
from metrocloud.store.database import Database, sqlite_url
from metrocloud.trust.admission import node_id_for
from metrocloud.trust.keys import PrivateKey


class ForkedNode:
    def __init__(self, tmp: Path, anchor: PrivateKey, base_url: str, country: str = "NL") -> None:
        self.tmp = tmp
        self.anchor = anchor
        self.country = country
        self.key = PrivateKey.generate()
        self.node_id = node_id_for(country, self.key.key_id)
        self.base_url = base_url.rstrip("/")
        self.fetches: dict[str, list[float]] = {}  # viewer -> when it fetched a head
        self._shown = 0
        self.views: dict[str, tuple[Database, TransparencyLog]] = {}

    def admission(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        from metrocloud.grid.identity import admit_node

        return admit_node(
            self.anchor,
            public_key=self.key.public_key,
            country=self.country,
            base_url=self.base_url,
            now=datetime.now(UTC),
        ).to_json()

    def show(self, viewer: str, entries: list[bytes]) -> None:
        """What ``viewer`` (a node id) is shown from now on: a log of exactly ``entries``."""
        self._shown += 1
        path = self.tmp / f"fork-{self._shown}-{viewer[-6:]}"
        path.mkdir(parents=True)
        db = Database(sqlite_url(path))
        db.migrate()
        log = TransparencyLog(log_id=self.node_id, signer=self.key)
        with db.write() as conn:
            log.append(conn, entries)
            log.sign_head(conn)
        old = self.views.get(viewer)
        if old is not None:
            old[0].dispose()
        self.views[viewer] = (db, log)

    def close(self) -> None:
        for db, _ in self.views.values():
            db.dispose()

    def handle(self, url: str, headers: Mapping[str, str], content: bytes) -> Reply:
        sender = headers[NODE_HEADER]
        path = url[len(self.base_url) :]
        args = json.loads(content or b"{}")
        if path.endswith("/grid/queries/tree-head"):
            self.fetches.setdefault(sender, []).append(time.time())
            db, log = self.views[sender]
            with db.write() as conn:
                head = log.latest_head(conn) or log.sign_head(conn)
                size = head.tree_size
                pairs = [(f, size) for f in args.get("from", []) if 0 < f <= size]
                pairs += [(a, b) for a, b in args.get("pairs", []) if 0 < a <= b <= size]
                proofs = [
                    {
                        "first": a,
                        "second": b,
                        "proof": [h.hex() for h in log.consistency_proof(conn, a, b)],
                    }
                    for a, b in pairs
                ]
            answer: Any = {"head": head.to_json(), "proofs": proofs}
        elif path.endswith("/grid/queries/statistics"):  # it homes no instrument
            answer = {
                "statistic": args["statistic"],
                "by": args["by"],
                "node_id": self.node_id,
                "country": self.country,
                "min_group_size": 3,
                "groups": [],
                "suppressed_groups": 0,
            }
        elif path.endswith("/grid/queries/gossip"):
            answer = {"received": len(args.get("heads", [])), "split_views": 0}
        elif path.endswith("/grid/messages"):
            answer = {
                "results": [
                    {"message_id": m["message_id"], "status": "applied", "result": {}}
                    for m in args["messages"]
                ]
            }
        else:
            answer = {"detail": "not here"}
        body = json.dumps(answer).encode()
        sig = sign_response(
            self.key,
            sender=self.node_id,
            receiver=sender,
            nonce=headers[NONCE_HEADER],
            status=200,
            body=body,
        )
        return Reply(status=200, headers={SIGNATURE_HEADER: sig}, body=body)


class ForkingTransport:
    def __init__(self, honest: Any, forked: ForkedNode) -> None:
        self.honest = honest
        self.forked = forked

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str], content: bytes, timeout: float
    ) -> Reply:
        if url.startswith(self.forked.base_url + "/"):
            return self.forked.handle(url, headers, content)
        return self.honest.request(  # type: ignore[no-any-return]
            method, url, headers=headers, content=content, timeout=timeout
        )
