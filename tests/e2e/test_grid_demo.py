"""``metrocloud demo --grid 3``: three member-state nodes seeded with cross-border stories,
their tokens in ``D/grid.json`` with the roles of the single-node ``credentials.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from metrocloud.services.audit import audit
from metrocloud.services.demo import ROLES
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from metrocloud.store.schema import alerts, certificates, grid_nodes, instruments

from ._cli import free_port, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_grid_seeds_three_nodes_that_know_each_other(tmp_path: Path) -> None:
    d = tmp_path / "grid"
    port = free_port()
    args = ("demo", "--grid", "3", "--port", str(port), "--instruments", "70", "--no-serve")
    done = run_cli(*args, data_dir=d)
    assert done.returncode == 0, done.stderr[-3000:]
    grid = json.loads((d / "grid.json").read_text())
    assert [n["country"] for n in grid["nodes"]] == ["DE", "FR", "NL"]
    assert [n["base_url"] for n in grid["nodes"]] == [
        f"http://127.0.0.1:{port + i}" for i in range(3)
    ]
    for n in grid["nodes"]:
        assert set(n["credentials"]) == set(ROLES)
        assert all(c["token"].startswith("mct_") for c in n["credentials"].values())
    nodes = {
        n["country"]: Node.open(
            Settings(data_dir=Path(n["data_dir"]), country=n["country"]), create=False
        )
        for n in grid["nodes"]
    }
    try:
        for c, node in nodes.items():
            assert audit(node).ok, c
            with node.db.read() as conn:
                peers = conn.execute(select(grid_nodes.c.country)).scalars().all()
                kinds = set(conn.execute(select(alerts.c.kind)).scalars())
                issuers = {
                    r[4:6] for r in conn.execute(select(certificates.c.notified_body_id)).scalars()
                }
            assert sorted(peers) == ["DE", "FR", "NL"]
            assert issuers == {"DE", "FR", "NL"}  # every notified body's certificates
            assert "non_compliance" in kinds  # the other nodes' notices
        # the cross-border story: a German certificate, instruments of it registered in France
        with nodes["FR"].db.read() as conn:
            homes = {
                row.notified_body_id[4:6]
                for row in conn.execute(
                    select(certificates.c.notified_body_id).join(
                        instruments, instruments.c.certificate_id == certificates.c.id
                    )
                )
            }
        assert "DE" in homes
        with nodes["DE"].db.read() as conn:
            assert "market_surveillance" in set(conn.execute(select(alerts.c.kind)).scalars())
    finally:
        for node in nodes.values():
            node.close()
    again = run_cli("demo", "--grid", "2", "--no-serve", data_dir=d)
    assert again.returncode == 2 and "another grid" in again.stderr
