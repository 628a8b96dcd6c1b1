"""The AAS fast lane answers exactly what the full application answers, and logs the same.

:mod:`metrocloud.api.aas._fast` short-cuts ``GET /shells/{id}`` and ``GET /shells`` pages;
every request here goes to the node once through an app with the lane and once through one
without, and the two answers (status, content type, body bytes) and the access-log rows the
reads leave must be equal. A counting wrapper around the framework proves that the lane,
not the framework, answered the ordinary reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from metrocloud.api.aas._fast import AasFastLane
from metrocloud.api.app import create_app
from metrocloud.store.schema import access_log
from tests.aas_api.conftest import AAS, SHELL, Pop, b64

_TIMESTAMP = re.compile(rb'"timestamp":"[^"]*"')
WHO = ["admin", "nb1", "nb2", "man1", "man2", "op1", "op2", "auth1", "auth2"]


@pytest.fixture
def clients(pop: Pop) -> Iterator[tuple[TestClient, TestClient]]:
    fast = TestClient(create_app(pop.node), raise_server_exceptions=False)
    full = TestClient(create_app(pop.node, fast_lane=False), raise_server_exceptions=False)
    with fast, full:
        yield fast, full


def _log_rows(pop: Pop) -> list[tuple[Any, ...]]:
    with pop.node.db.read() as conn:
        rows = conn.execute(
            select(
                access_log.c.owner_id,
                access_log.c.reader_id,
                access_log.c.reader_role,
                access_log.c.action,
                access_log.c.resource_type,
                access_log.c.resource_id,
                access_log.c.via_grant,
            ).order_by(access_log.c.id)
        ).all()
    return [tuple(r) for r in rows]


def _exchange(
    pop: Pop, client: TestClient, path: str, headers: dict[str, str]
) -> tuple[int, str, bytes, list[tuple[Any, ...]]]:
    before = len(_log_rows(pop))
    r = client.get(AAS + path, headers=headers)
    body = _TIMESTAMP.sub(b'"timestamp":"T"', r.content)  # error Results carry the time
    return r.status_code, r.headers.get("content-type", ""), body, _log_rows(pop)[before:]


def _paths(pop: Pop) -> list[str]:
    shells = [SHELL + pop.cert_a["id"], *(SHELL + i for i in pop.a + pop.b)]
    first = pop.ok("/shells", params={"limit": 2})
    cursor = first["paging_metadata"]["cursor"]
    return [
        *(f"/shells/{b64(s)}" for s in shells),
        f"/shells/{b64(SHELL + pop.a[0], pad=True)}",  # padded base64url
        f"/shells/{b64(SHELL + 'ins-DE-00000000000000000000000000')}",  # no such shell
        f"/shells/{b64('https://elsewhere.example/aas/1')}",  # not one of ours
        "/shells/not*base64",
        f"/shells/{b64(SHELL + pop.a[0])}?level=core",  # a query: the full path's business
        "/shells",
        "/shells?limit=2",
        f"/shells?limit=2&cursor={cursor}",
        f"/shells?cursor={cursor}&limit=3",
        "/shells?limit=1000",
        "/shells?limit=0",
        "/shells?limit=1001",
        "/shells?limit=two",
        "/shells?limit=2&limit=3",
        "/shells?cursor=",
        "/shells?cursor=bm90LWEtY3Vyc29y",
        "/shells?idShort=SN000002",
        f"/shells?limit=2&idShort=x&cursor={cursor}",
    ]


def test_every_answer_and_access_log_row_equals_the_full_path(
    pop: Pop, clients: tuple[TestClient, TestClient]
) -> None:
    fast, full = clients
    compared = 0
    for who in [*WHO, "anon", "bad-token"]:
        if who == "anon":
            headers: dict[str, str] = {}
        elif who == "bad-token":
            headers = {"Authorization": "Bearer mct_0000000000000000_nope"}
        else:
            headers = pop.world.members[who].headers
        for path in _paths(pop):
            ours = _exchange(pop, fast, path, headers)
            theirs = _exchange(pop, full, path, headers)
            assert ours == theirs, (who, path)
            compared += 1
    assert compared == 11 * len(_paths(pop))


def test_the_lane_answers_ordinary_reads_without_the_framework(pop: Pop) -> None:
    app = create_app(pop.node)
    calls: list[str] = []
    with TestClient(app, raise_server_exceptions=False) as client:
        lane = app.fast_lane  # in front of the whole middleware stack
        assert isinstance(lane, AasFastLane)
        inner = lane.app

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            calls.append(scope["path"])
            await inner(scope, receive, send)

        lane.app = counting
        auth = pop.world.auth1.headers
        shell = f"{AAS}/shells/{b64(SHELL + pop.a[1])}"
        assert client.get(shell, headers=auth).status_code == 200  # the token is now known
        calls.clear()
        for path in (shell, f"{AAS}/shells?limit=3", f"{AAS}/shells"):
            assert client.get(path, headers=auth).status_code == 200
        assert calls == []  # all three answered by the lane
        missing = f"{AAS}/shells/{b64(SHELL + 'cer-DE-00000000000000000000000000')}"
        assert client.get(missing, headers=auth).status_code == 404
        assert calls == [missing]  # not found: the framework answers, with its error body


def test_lane_reads_are_in_the_owners_access_log_before_the_answer(
    pop: Pop, clients: tuple[TestClient, TestClient]
) -> None:
    fast, _ = clients
    auth = pop.world.auth1.headers
    path = f"{AAS}/shells/{b64(SHELL + pop.a[0])}"
    fast.get(path, headers=auth)  # caches the token
    before = len(_log_rows(pop))
    assert fast.get(path, headers=auth).status_code == 200
    new = _log_rows(pop)[before:]
    owners = {row[0] for row in new}
    assert owners == {pop.world.man1.party["id"], pop.world.op1.party["id"]}
    assert {row[1:6] for row in new} == {
        (pop.world.auth1.party["id"], "authority", "aas.shell.read", "instrument", pop.a[0])
    }


def test_group_commit_shares_transactions_between_concurrent_readers(
    pop: Pop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one transaction runs, every read that arrives queues; the next transaction
    carries all of them, and each reader returns only once its rows are committed."""
    import threading
    import time

    from metrocloud.store import groupcommit

    committer = pop.node.access_log
    gate, entered = threading.Event(), threading.Event()
    real = groupcommit.insert_rows

    def held_first(conn: Any, table: Any, columns: Any, rows: Any) -> None:
        if not entered.is_set():
            entered.set()
            assert gate.wait(10)
        real(conn, table, columns, rows)

    monkeypatch.setattr(groupcommit, "insert_rows", held_first)
    before_tx = committer.transactions
    done: list[int] = []

    def reader(i: int) -> None:
        row = ("2026-01-01T00:00:00Z", "owner", f"r{i}", "authority", "x", "instrument", "i", False)
        committer.append([row])
        done.append(i)

    threads = [threading.Thread(target=reader, args=(0,))]
    threads[0].start()
    assert entered.wait(10)  # the first transaction is open and held
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(1, 8)]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while len(committer._pending) < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == []  # nobody returns before its rows are committed
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(done) == list(range(8))
    assert committer.transactions - before_tx == 2  # the held one, then all seven together
    with pop.node.db.read() as conn:
        n = conn.execute(
            select(func.count()).select_from(access_log).where(access_log.c.action == "x")
        ).scalar_one()
    assert n == 8


def test_a_failed_group_transaction_fails_every_reader_in_it(
    pop: Pop, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metrocloud.store import groupcommit

    def broken(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(groupcommit, "insert_rows", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        pop.node.access_log.append([("t", "o", "r", "authority", "x", "instrument", "i", False)])
