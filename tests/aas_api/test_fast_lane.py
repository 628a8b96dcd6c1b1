"""The AAS fast lane answers exactly what the full application answers, and logs the same.

:mod:`metrocloud.api.aas._fast` short-cuts ``GET /shells/{id}``, ``GET /shells`` pages and
``GET`` of a submodel or one of its elements (as is, ``$value``, ``$metadata``; also under
``/shells/{id}/submodels/...``); every request here goes to the node once through an app with
the lane and once through one without, and the two answers (status, content type, body
bytes) and the access-log rows the reads leave must be equal. A counting wrapper around the
framework proves that the lane, not the framework, answered the ordinary reads.
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
from metrocloud.services import access
from metrocloud.store.schema import access_log
from tests.aas_api.conftest import AAS, SHELL, SUBMODEL, Pop, b64

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


def _submodel_paths(pop: Pop) -> list[str]:
    """Submodels and elements, public and not, of both kinds of shell, in every form the lane
    answers, and the look-alikes it must hand on."""
    a0, a1, b0, cert = pop.a[0], pop.a[1], pop.b[0], pop.cert_a["id"]

    def sm(record: str, name: str, *, pad: bool = False) -> str:
        return f"/submodels/{b64(f'{SUBMODEL}{record}/{name}', pad=pad)}"

    def scoped(shell: str, record: str, name: str) -> str:
        return f"/shells/{b64(SHELL + shell)}/submodels/{b64(f'{SUBMODEL}{record}/{name}')}"

    el = "/submodel-elements/"
    out: list[str] = []
    for record, name in [
        (cert, "Nameplate"),
        (cert, "Certificate"),
        (a0, "Nameplate"),  # public
        (a0, "Conformity"),  # public, with a declaration
        (a0, "Verification"),  # not public, with history
        (a0, "LifeCycle"),
        (a0, "TimeSeries"),  # carries the node's base URL
        (a1, "Verification"),  # man2 reads it by grant
        (b0, "SoftwareIdentification"),
    ]:
        out += [sm(record, name) + m for m in ("", "/$value", "/$metadata")]
    for record, name, path in [
        (a0, "Nameplate", "SerialNumber"),
        (a0, "Conformity", "Declarations"),
        (a0, "Conformity", "Declarations[0]"),
        (a0, "Conformity", "Declarations[0].DeclarationId"),
        (a0, "Conformity", "NotifiedBody"),
        (a0, "LifeCycle", "Events[2]"),
        (a0, "TimeSeries", "Segments.LinkedSegment.Endpoint"),
        (a0, "Conformity", "Certificate"),  # a ReferenceElement
        (a0, "Verification", "LastVerification.Authority.PartyId"),
        (a1, "Verification", "State"),
        (cert, "Certificate", "History[0].Action"),
        (cert, "Certificate", "RatedConditions"),
    ]:
        out += [sm(record, name) + el + path + m for m in ("", "/$value", "/$metadata")]
    return [
        *out,
        sm(a0, "Nameplate", pad=True),  # padded base64url
        sm(a0, "Verification", pad=True) + el + "SerialNumber",
        sm(a0, "Conformity", pad=True) + el + "Declarations[0]/$value",
        sm(a0, "Nameplate") + el + "NoSuchElement",  # missing: 404 from the full path
        sm(a0, "Verification") + el + "NoSuchElement",  # missing, after a logged read
        sm(a0, "Conformity") + el + "Declarations[7]",  # index past the end
        sm(a0, "Nameplate") + el + "SerialNumber[0]",  # an index on a Property
        sm(a0, "Nameplate") + el + "SerialNumber.Deeper",
        sm(a0, "Nameplate") + el + "$metadata",  # the elements list's own route
        sm(a0, "Nameplate") + el + "$weird",
        sm(a0, "Nameplate") + el + "Serial Number",
        sm(a0, "Nameplate") + el + "SerialNumber/$reference",  # not the lane's
        sm(a0, "Nameplate") + el + "SerialNumber/$path",
        sm(a0, "Nameplate") + "/$reference",
        sm(a0, "Nameplate") + "/",
        sm(a0, "Nameplate") + "?level=core",  # a query: the full path's business
        sm(a0, "Nameplate") + el + "SerialNumber?extent=withBlobValue",
        sm(a0, "Nameplate") + "/$value?level=core",
        sm(a0, "NoSuchSubmodel"),
        sm("ins-DE-00000000000000000000000000", "Nameplate"),  # no such instrument
        sm(cert, "Verification"),  # not a type's submodel
        f"/submodels/{b64('https://elsewhere.example/sm/1')}",  # not one of ours
        "/submodels/not*base64",
        "/submodels/not*base64/$value",
        scoped(a0, a0, "Nameplate"),  # the shell-scoped form, in each of its shapes
        scoped(a0, a0, "Verification") + "/$value",
        scoped(a0, a0, "Conformity") + el + "Declarations[0].Module",
        scoped(cert, cert, "Certificate") + el + "History[0]/$metadata",
        scoped(pop.a[2], a0, "Nameplate"),  # another shell's submodel: 404
        scoped(b0, a0, "Verification") + el + "State",
        f"/shells/{b64(SHELL + a0, pad=True)}/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}",
        f"/shells/not*base64/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}",
        f"/shells/{b64(SHELL + a0)}/submodels/",
        f"/shells/{b64(SHELL + a0)}/submodel-refs",
    ]


def _compare_everyone(
    pop: Pop, clients: tuple[TestClient, TestClient], paths: list[str]
) -> dict[int, int]:
    """Every path for every party (and without a token, with a bad one) through both apps;
    the statuses the full path answered, counted."""
    fast, full = clients
    statuses: dict[int, int] = {}
    for who in [*WHO, "anon", "bad-token"]:
        if who == "anon":
            headers: dict[str, str] = {}
        elif who == "bad-token":
            headers = {"Authorization": "Bearer mct_0000000000000000_nope"}
        else:
            headers = pop.world.members[who].headers
        for path in paths:
            ours = _exchange(pop, fast, path, headers)
            theirs = _exchange(pop, full, path, headers)
            assert ours == theirs, (who, path)
            statuses[theirs[0]] = statuses.get(theirs[0], 0) + 1
    assert sum(statuses.values()) == 11 * len(paths)
    return statuses


def test_every_answer_and_access_log_row_equals_the_full_path(
    pop: Pop, clients: tuple[TestClient, TestClient]
) -> None:
    _compare_everyone(pop, clients, _paths(pop))


def test_every_submodel_answer_and_access_log_row_equals_the_full_path(
    pop: Pop, clients: tuple[TestClient, TestClient]
) -> None:
    # man2 reads a1 by grant: logged with via_grant
    access.create_grant(
        pop.node, pop.world.man1.actor, grantee_id=pop.world.man2.id, instrument_id=pop.a[1]
    )
    before = len(_log_rows(pop))
    statuses = _compare_everyone(pop, clients, _submodel_paths(pop))
    # the comparison covered reads, refusals, misses and bad input, and logged reads
    assert {200, 400, 401, 403, 404} <= set(statuses)
    logged = _log_rows(pop)[before:]
    reads = [row for row in logged if row[3] == "aas.submodel.read"]
    assert any(row[6] for row in reads)  # by grant
    assert any(not row[6] for row in reads)


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

        a0 = pop.a[0]
        nameplate = f"{AAS}/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}"
        conformity = f"{AAS}/submodels/{b64(f'{SUBMODEL}{a0}/Conformity')}"
        verification = f"{AAS}/submodels/{b64(f'{SUBMODEL}{a0}/Verification')}"
        scoped = f"{AAS}/shells/{b64(SHELL + a0)}/submodels/{b64(f'{SUBMODEL}{a0}/LifeCycle')}"
        element = "/submodel-elements/"
        calls.clear()
        for path in (
            nameplate,
            nameplate + "/$value",
            nameplate + "/$metadata",
            verification,  # not public: read, checked and logged by the lane
            conformity + element + "Declarations[0].DeclarationId",
            conformity + element + "Declarations[0]/$value",
            conformity + element + "NotifiedBody/$metadata",
            scoped,
            scoped + element + "Events[1].Region",
        ):
            r = client.get(path, headers=auth)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"] == "application/json"
        assert calls == []  # all answered by the lane
        r = client.get(conformity + element + "Declarations[0].DeclarationId", headers=auth)
        assert r.json()["idShort"] == "DeclarationId"
        handed_on = [
            nameplate + element + "NoSuchElement",  # missing: 404
            nameplate + "?level=core",  # a query
            nameplate + element + "SerialNumber/$reference",  # a modifier the lane leaves
            f"{AAS}/shells/{b64(SHELL + pop.a[1])}/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}",
        ]
        for path in handed_on:
            client.get(path, headers=auth)
        assert calls == [path.split("?")[0] for path in handed_on]
        calls.clear()
        foreign = pop.world.man2.headers  # man2 may not read a0's Verification
        client.get(f"{AAS}/shells/{b64(SHELL + pop.b[0])}", headers=foreign)  # caches the token
        calls.clear()
        r = client.get(verification, headers=foreign)
        assert r.status_code == 403
        assert r.json()["messages"][0]["code"] == "forbidden"
        assert calls == [verification]  # refused: the framework answers


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


def test_lane_submodel_reads_are_logged_like_the_full_paths(
    pop: Pop, clients: tuple[TestClient, TestClient]
) -> None:
    fast, _ = clients
    auth = pop.world.auth1.headers
    a0 = pop.a[0]
    fast.get(f"{AAS}/shells/{b64(SHELL + a0)}", headers=auth)  # caches the token
    sm = f"{AAS}/submodels/{b64(f'{SUBMODEL}{a0}/Verification')}"
    for path in (sm, sm + "/$value", sm + "/submodel-elements/State/$metadata"):
        before = len(_log_rows(pop))
        assert fast.get(path, headers=auth).status_code == 200
        new = _log_rows(pop)[before:]
        assert {row[0] for row in new} == {pop.world.man1.party["id"], pop.world.op1.party["id"]}
        assert {row[1:7] for row in new} == {
            (pop.world.auth1.party["id"], "authority", "aas.submodel.read", "instrument", a0, False)
        }
    before = len(_log_rows(pop))  # a public submodel: nobody's access log
    nameplate = f"{AAS}/submodels/{b64(f'{SUBMODEL}{a0}/Nameplate')}/submodel-elements/Region"
    assert fast.get(nameplate, headers=auth).json()["value"] == "DE30"
    assert _log_rows(pop)[before:] == []


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


def test_a_read_that_fails_in_the_lane_is_answered_by_the_full_path(
    pop: Pop, clients: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that fails under the lane's read: the lane has logged nothing and hands the
    request on, so the client gets the full path's answer (the AAS API's Result object with
    its messages), never a bare 500 from the server."""
    from sqlalchemy.exc import OperationalError

    from metrocloud.services import aas as svc

    def broken(*_: Any, **__: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("the database went away"))

    monkeypatch.setattr(svc, "prepare_shell_json", broken)
    monkeypatch.setattr(svc, "prepare_submodel", broken)
    fast, full = clients
    headers = pop.world.members["man1"].headers
    paths = [f"/shells/{b64(SHELL + pop.a[0])}", *_submodel_paths(pop)[:3]]
    for path in paths:
        lane = _exchange(pop, fast, path, headers)
        framework = _exchange(pop, full, path, headers)
        assert lane == framework, path
        assert lane[0] == 500 and b'"messages"' in lane[2], (path, lane[:3])
        assert lane[3] == []  # nothing was read, nothing logged
