"""Node admissions under a grid anchor (docs/grid.md#admission)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.grid.identity import admit_node
from metrocloud.trust.admission import ADMISSION_DOMAIN, SignedAdmission, node_id_for
from metrocloud.trust.keys import PrivateKey

ANCHOR = PrivateKey.generate()
NODE = PrivateKey.generate()
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _admission(**kw: object) -> SignedAdmission:
    args: dict[str, object] = {
        "public_key": NODE.public_key,
        "country": "FR",
        "base_url": "https://metrocloud.lne.fr",
        "now": T0,
    }
    args.update(kw)
    return admit_node(ANCHOR, **args)  # type: ignore[arg-type]


def test_an_admission_verifies_under_its_anchor_and_round_trips() -> None:
    signed = _admission()
    a = signed.verify(ANCHOR.public_key, at=T0 + timedelta(days=1))
    assert a.node_id == node_id_for("FR", NODE.key_id) == f"node-FR-{NODE.key_id[:16]}"
    again = SignedAdmission.from_json(json.loads(json.dumps(signed.to_json())))
    assert again == signed
    assert a.signed_bytes().startswith(ADMISSION_DOMAIN)


@given(
    field=st.sampled_from(["country", "base_url", "expires_at", "issued_at"]),
)
def test_a_changed_field_breaks_the_signature(field: str) -> None:
    doc = _admission().to_json()
    changed = {
        "country": "DE",
        "base_url": "https://evil.example",
        "expires_at": "2099-01-01T00:00:00.000Z",
        "issued_at": "2026-11-01T00:00:00.000Z",
    }[field]
    doc["admission"][field] = changed
    if field == "country":  # the node id names the country: fix it up as a forger would
        doc["admission"]["node_id"] = node_id_for("DE", NODE.key_id)
    with pytest.raises(VerificationError, match="does not verify"):
        SignedAdmission.from_json(doc).verify(ANCHOR.public_key)


def test_another_anchor_and_the_validity_period_are_enforced() -> None:
    signed = _admission(valid_days=10)
    with pytest.raises(VerificationError, match="this grid's anchor"):
        signed.verify(PrivateKey.generate().public_key)
    with pytest.raises(VerificationError, match="valid from"):
        signed.verify(ANCHOR.public_key, at=T0 + timedelta(days=11))
    with pytest.raises(VerificationError, match="valid from"):
        signed.verify(ANCHOR.public_key, at=T0 - timedelta(seconds=1))


def test_a_node_id_that_does_not_follow_from_country_and_key_is_refused() -> None:
    doc = _admission().to_json()
    doc["admission"]["node_id"] = "node-FR-0000000000000000"
    with pytest.raises(InvalidInput, match="node_id must be"):
        SignedAdmission.from_json(doc)
    doc = _admission().to_json()
    doc["admission"]["key_id"] = "0" * 64
    with pytest.raises(InvalidInput, match="not the id of its public key"):
        SignedAdmission.from_json(doc)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("signature"),
        lambda d: d["admission"].update(extra=1),
        lambda d: d["admission"].update(version=2),
        lambda d: d["signature"].update(alg="rsa"),
        lambda d: d["admission"].update(base_url="ftp://x"),
    ],
)
def test_malformed_admissions_are_refused(mutate: object) -> None:
    doc = _admission().to_json()
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(InvalidInput):
        SignedAdmission.from_json(doc)
