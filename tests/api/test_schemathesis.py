"""Acceptance: property-based requests from the OpenAPI document never make the node fail.

Schemathesis (v4) generates requests for every operation of ``/api/v1/openapi.json`` - valid
ones, invalid ones, and valid ones aimed at records that exist - and sends them in-process
(ASGI) with the bearer token of one party. Whatever it sends, the answer is never a 5xx
(schemathesis' ``not_a_server_error`` check). Bounded (``MAX_EXAMPLES`` per operation and
mode) and derandomized, so every run sends the same requests; SQLite only.

The operations are driven from a plain test function (``operation.as_strategy()`` under
Hypothesis' ``@given``) rather than ``schemathesis.pytest.from_fixture``, whose lazy loader
does not run under pytest 9 (``'Function' object has no attribute '_nodeid'``). Every 5xx
is collected with its request (as a curl command) and reported together at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup

from metrocloud.api.app import API_PREFIX, create_app
from metrocloud.domain.certificates import ConformityModule
from metrocloud.domain.parties import PartyRole
from metrocloud.services import access
from metrocloud.services import declarations as decl
from metrocloud.services import parties as pty
from metrocloud.services.node import Node
from metrocloud.services.settings import Settings
from tests.conftest import World

MAX_EXAMPLES = 15
#: whose token the generated requests carry
CALLERS = {"manufacturer": "man1", "notified_body": "nb1", "node_admin": "admin"}


@dataclass
class Env:
    app: Any
    world: World
    caller: str
    #: path parameter values that name existing records
    known: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return self.world.members[self.caller].headers


@pytest.fixture(params=sorted(CALLERS))
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A fresh SQLite node with parties and one record of each kind to aim at."""
    node = Node.open(Settings(data_dir=tmp_path / "node", country="DE"))
    world = World(node)
    for name, role in (
        ("admin", PartyRole.NODE_ADMIN),
        ("nb1", PartyRole.NOTIFIED_BODY),
        ("man1", PartyRole.MANUFACTURER),
        ("man2", PartyRole.MANUFACTURER),
        ("op1", PartyRole.OPERATOR),
        ("auth1", PartyRole.AUTHORITY),
    ):
        world.admit(name, role)
    cert = world.certificate(world.nb1, world.man1)
    ins = world.instruments(world.man1, cert, 3)
    doc = decl.declare_conformity(
        node,
        world.man1.actor,
        certificate_id=cert["id"],
        instrument_ids=[ins[0]["id"]],
        module=ConformityModule.D,
    )
    grant = access.create_grant(
        node, world.man1.actor, grantee_id=world.man2.id, instrument_id=ins[1]["id"]
    )
    spare = pty.issue_credential(node, None, world.members[CALLERS[request.param]].id, "spare")
    known = {
        "certificate_id": cert["id"],
        "instrument_id": ins[0]["id"],
        "party_id": world.man1.id,
        "manufacturer_id": world.man1.id,
        "grantee_id": world.man2.id,
        "declaration_id": doc["id"],
        "grant_id": grant["id"],
        "token_id": spare.token_id,
        "index": 0,
        "tree_size": 1,
    }
    yield Env(create_app(node), world, CALLERS[request.param], known)
    node.db.dispose()


#: body fields that name records: aimed cases point them at records that exist
_BODY_IDS = {
    "certificate_id": "certificate_id",
    "instrument_id": "instrument_id",
    "holder_id": "manufacturer_id",
    "grantee_id": "grantee_id",
    "party_id": "party_id",
}


def _aim(value: Any, known: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in _BODY_IDS and isinstance(v, str):
                out[k] = known[_BODY_IDS[k]]
            elif k == "instrument_ids" and isinstance(v, list):
                out[k] = [known["instrument_id"]]
            else:
                out[k] = _aim(v, known)
        return out
    if isinstance(value, list):
        return [_aim(v, known) for v in value]
    return value


def _strategy(operation: Any, env: Env) -> st.SearchStrategy[Any]:
    """Valid and invalid requests, plus valid ones aimed at existing records."""
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    names = [p.name for p in operation.path_parameters]
    if all(n in env.known for n in names):

        def aim(case: schemathesis.Case) -> schemathesis.Case:
            if isinstance(case.body, dict | list):
                case.body = _aim(case.body, env.known)
            return case

        strategies.append(
            operation.as_strategy(
                GenerationMode.POSITIVE, path_parameters={n: env.known[n] for n in names}
            ).map(aim)
        )
    return st.one_of(strategies)


def _exercise(
    operation: Any, env: Env, server_errors: dict[str, list[str]], sent: dict[str, int]
) -> None:
    """Send ``MAX_EXAMPLES`` x 2 generated requests for ``operation``; collect 5xx answers."""
    label = operation.label

    @settings(
        max_examples=MAX_EXAMPLES * 2,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=_strategy(operation, env))
    def run(case: schemathesis.Case) -> None:
        sent[label] = sent.get(label, 0) + 1
        response = case.call(headers=env.headers)
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=env.headers)
        except FailureGroup:
            errors = server_errors.setdefault(label, [])
            if len(errors) < 3:
                errors.append(
                    f"{case.as_curl_command(headers=env.headers)}\n    -> "
                    f"{response.status_code} {response.text[:200]}"
                )

    run()


def like_a_server(app: Any) -> Any:
    """The app as uvicorn runs it: an unhandled error is logged, the client gets the 500.

    Starlette re-raises an unhandled exception after its 500 answer has been sent, and an
    in-process client would raise it instead of returning the answer; here the answer counts.
    """

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, tracking_send)
        except Exception:
            if scope["type"] != "http":
                raise
            if not started:
                await send({"type": "http.response.start", "status": 500, "headers": []})
                await send({"type": "http.response.body", "body": b""})

    return serve


def test_no_operation_answers_5xx(env: Env) -> None:
    schema = schemathesis.openapi.from_asgi(f"{API_PREFIX}/openapi.json", like_a_server(env.app))
    # the token is ours; authentication itself is the authorization matrix's business
    schema.config.generation.update(with_security_parameters=False)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 32, [op.label for op in operations]
    server_errors: dict[str, list[str]] = {}
    sent: dict[str, int] = {}
    for operation in operations:
        _exercise(operation, env, server_errors, sent)
    assert set(sent) == {op.label for op in operations}, "some operations were not exercised"
    assert not server_errors, "5xx answers:\n" + "\n".join(
        f"{label}:\n  " + "\n  ".join(errs) for label, errs in sorted(server_errors.items())
    )
