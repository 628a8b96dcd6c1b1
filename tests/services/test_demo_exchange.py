"""The demos' parties with their own key directories (services/_demo_exchange.py), in
process on one node (SQLite and PostgreSQL): what ``metrocloud demo`` seeds, without the
slow processes of ``tests/e2e/test_grid_demo_exchange.py``."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from pypdf import PdfReader

from metrocloud.domain.errors import Conflict, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.services import exchange as xch
from metrocloud.services import parties as pty
from metrocloud.services._demo_exchange import (
    admit_with_keys,
    receive_document,
    register_encryption_key,
    send_document,
    technical_file,
)
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from metrocloud.trust.keys import KeyStore, PublicKey


@pytest.fixture(autouse=True)
def _own_passphrase_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METROCLOUD_KEY_PASSPHRASE", raising=False)


def test_the_technical_file_is_a_pdf_with_its_reference() -> None:
    pdf = technical_file(
        manufacturer="Elektro-Messtechnik Hansa GmbH",
        notified_body="LNE Laboratoire national de métrologie et d'essais (NB 0071)",
        model="EM-580 (class B)",
        reference="TD-DE-0123456789ABCDEF",
        issued="2026-01-02",
    )
    text = PdfReader(io.BytesIO(pdf), strict=True).pages[0].extract_text()
    assert "Document reference: TD-DE-0123456789ABCDEF" in text
    assert "métrologie" in text and "(class B)" in text


def test_a_party_admitted_with_keys_sends_and_receives_with_them(
    node: Node, tmp_path: Path
) -> None:
    root = tmp_path / "parties"
    man, man_keys = admit_with_keys(
        node, root / "manufacturer", name="M", role=PartyRole.MANUFACTURER
    )
    nb, nb_keys = admit_with_keys(
        node, root / "notified_body", name="NB", role=PartyRole.NOTIFIED_BODY, nb_number="0102"
    )
    admin, admin_keys = admit_with_keys(node, root / "admin", name="A", role=PartyRole.NODE_ADMIN)
    man_keys = register_encryption_key(node, man, man_keys)
    nb_keys = register_encryption_key(node, nb, nb_keys)
    assert register_encryption_key(node, admin, admin_keys).encryption is None
    # each directory: the party's own keys under its id, private modes; the registered
    # signing key is the one in the directory
    for party, keys in ((man, man_keys), (nb, nb_keys), (admin, admin_keys)):
        assert stat.S_IMODE(keys.directory.stat().st_mode) == 0o700
        names = {p.name for p in keys.directory.iterdir()}
        expected = {"passphrase", f"{party['id']}.key.pem"}
        if keys.encryption is not None:
            expected.add(f"{party['id']}.x25519.key.pem")
        assert names == expected
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.directory.iterdir())
        store = KeyStore(keys.directory, KeyStore.passphrase_from(keys.directory))
        assert store.load(party["id"]).public_key == PublicKey.from_spki_b64(
            pty.get_party(node, party["id"])["public_key"]
        )
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert nb_keys.encryption is not None
    assert xch.local_key(node, nb["id"])["key_id"] == nb_keys.encryption.key_id

    doc = b"%PDF-1.4 the technical file"
    mid = send_document(node, man, man_keys, [nb["id"]], doc, content_type="application/pdf")
    opened, receipt = receive_document(node, nb, nb_keys, mid)
    assert opened == doc
    receipt.verify(nb_keys.signing.public_key)
    [stored] = xch.list_receipts(node, Actor.of_party(man), mid)
    assert stored["recipient_id"] == nb["id"]
    with pytest.raises(VerificationError):
        receipt.verify(man_keys.signing.public_key)


def test_a_key_directory_that_holds_something_is_refused(node: Node, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "someone.key.pem").write_text("not ours")
    with node.db.read() as conn:
        before = node.log.tree_size(conn)
    with pytest.raises(Conflict, match="not empty"):
        admit_with_keys(node, taken, name="X", role=PartyRole.MANUFACTURER)
    with node.db.read() as conn:
        assert node.log.tree_size(conn) == before  # nobody admitted
    assert [p.name for p in taken.iterdir()] == ["someone.key.pem"]
