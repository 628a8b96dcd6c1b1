"""Confidential documents (trust/confidential.py): sealing, the opening checklist, receipts,
key bindings. Every change to a sealed document is caught; only recipients open it."""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.trust._chunks import TAG, Layout
from metrocloud.trust.confidential import (
    Envelope,
    open_envelope,
    seal_document,
    seal_stream,
)
from metrocloud.trust.encryption import (
    EncryptionKey,
    EncryptionPublicKey,
    KeyBinding,
    bind_encryption_key,
    encryption_key_path,
    load_or_create_encryption_key,
)
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey
from metrocloud.trust.receipts import Receipt, sign_receipt

SENDER = "pty-DE-01M85V4ZZ70009HDV0WED1ZQ2K"
ALICE = "pty-FR-01M85V4ZZ70009HDV0WED1ZQ2M"
BOB = "pty-NL-01M85V4ZZ70009HDV0WED1ZQ2N"
MID = "xch-DE-01M85V4ZZ70009HDV0WED1ZQ2P"
SENDER_KEY = PrivateKey.generate()
ALICE_KEY, BOB_KEY = EncryptionKey.generate(), EncryptionKey.generate()
DOC = b"inspection report 2026-117: meter EM-340 SN000123, " + os.urandom(700)
CHUNK = 64  # the smallest chunk: many chunks in a small document


def _seal(doc: bytes = DOC, chunk: int = CHUNK, **kw: object) -> tuple[Envelope, bytearray]:
    args: dict[str, object] = {
        "message_id": MID,
        "sender_id": SENDER,
        "sender_key": SENDER_KEY,
        "recipients": [(ALICE, ALICE_KEY.public_key), (BOB, BOB_KEY.public_key)],
        "content_type": "application/pdf",
        "chunk_size": chunk,
        **kw,
    }
    return seal_document(doc, **args)  # type: ignore[arg-type]


ENV, CT = _seal()


def _open(env: Envelope, ct: bytes | bytearray, who: str = ALICE) -> bytes:
    key = ALICE_KEY if who == ALICE else BOB_KEY
    opener = open_envelope(env, recipient_id=who, key=key, sender_key=SENDER_KEY.public_key)
    return bytes(opener.decrypt(ct))


def test_every_recipient_opens_the_same_document() -> None:
    assert _open(ENV, CT, ALICE) == DOC == _open(ENV, CT, BOB)
    assert ENV.layout.chunks == -(-len(DOC) // CHUNK)
    assert len(CT) == len(DOC) + TAG * ENV.layout.chunks == ENV.header["ciphertext_size"]
    assert DOC[:30] not in CT and DOC[:30] not in ENV.to_bytes()
    again = Envelope.from_bytes(ENV.to_bytes())
    assert again == ENV and again.header_sha256 == ENV.header_sha256


@given(size=st.integers(0, 700), chunk=st.sampled_from([64, 100, 128, 1000]))
def test_round_trip_at_every_size(size: int, chunk: int) -> None:
    doc = os.urandom(size)
    env, ct = _seal(doc, chunk)
    assert _open(env, ct) == doc
    sink = io.BytesIO()
    opener = open_envelope(env, recipient_id=BOB, key=BOB_KEY, sender_key=SENDER_KEY.public_key)
    assert opener.decrypt_stream(io.BytesIO(bytes(ct)), sink) == size
    assert sink.getvalue() == doc


def test_a_non_recipient_cannot_open_it() -> None:
    eve = EncryptionKey.generate()
    with pytest.raises(VerificationError, match="not a recipient"):
        open_envelope(ENV, recipient_id=SENDER, key=eve, sender_key=SENDER_KEY.public_key)
    with pytest.raises(VerificationError, match="sealed to key"):
        open_envelope(ENV, recipient_id=ALICE, key=eve, sender_key=SENDER_KEY.public_key)
    # Bob's key under Alice's name: the key id gives it away; and the sealed key is Alice's
    with pytest.raises(VerificationError):
        open_envelope(ENV, recipient_id=ALICE, key=BOB_KEY, sender_key=SENDER_KEY.public_key)


def test_the_sender_signature_is_checked_first() -> None:
    with pytest.raises(VerificationError, match="registered key"):
        open_envelope(
            ENV, recipient_id=ALICE, key=ALICE_KEY, sender_key=PrivateKey.generate().public_key
        )


@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_ciphertext_bit_is_refused(position: int, bit: int) -> None:
    ct = bytearray(CT)
    ct[position % len(ct)] ^= 1 << bit
    with pytest.raises(VerificationError):
        _open(ENV, ct)
    with pytest.raises(VerificationError):
        opener = open_envelope(
            ENV, recipient_id=ALICE, key=ALICE_KEY, sender_key=SENDER_KEY.public_key
        )
        opener.decrypt_stream(io.BytesIO(bytes(ct)), io.BytesIO())


@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_header_bit_is_refused(position: int, bit: int) -> None:
    raw = bytearray(ENV.to_bytes())
    raw[position % len(raw)] ^= 1 << bit
    with pytest.raises(MetrocloudError):  # unparsable, malformed, or the signature fails
        _open(Envelope.from_bytes(bytes(raw)), CT)


@given(
    who=st.sampled_from([0, 1]),
    field=st.sampled_from(["enc", "sealed_key"]),
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_any_flipped_sealed_key_bit_is_refused(
    who: int, field: str, position: int, bit: int
) -> None:
    """Refused by the sender's signature; and, re-signed by the sender itself (so the
    signature holds), by HPKE or the key commitment."""
    header = json.loads(json.dumps(ENV.header))
    entry = header["recipients"][who]
    raw = bytearray(base64.b64decode(entry[field]))
    raw[position % len(raw)] ^= 1 << bit
    entry[field] = base64.b64encode(raw).decode()
    party = entry["party"]
    with pytest.raises(VerificationError):
        _open(Envelope(header=header, signature=ENV.signature), CT, party)
    from metrocloud.trust._signed import sign_object
    from metrocloud.trust.confidential import HEADER_DOMAIN

    resigned = Envelope(header=header, signature=sign_object(HEADER_DOMAIN, header, SENDER_KEY))
    with pytest.raises(VerificationError):
        _open(resigned, CT, party)


def _chunks(env: Envelope, ct: bytearray) -> list[bytes]:
    layout = env.layout
    step = layout.chunk_size + TAG
    return [bytes(ct[i * step : (i + 1) * step]) for i in range(layout.chunks)]


def test_truncation_reordering_and_extension_are_refused() -> None:
    parts = _chunks(ENV, CT)
    reordered = parts[:]
    reordered[0], reordered[1] = reordered[1], reordered[0]
    for bad in (
        b"".join(parts[:-1]),  # the final chunk dropped
        b"".join(parts[:2] + parts[3:]),  # a middle chunk dropped
        b"".join(reordered),
        b"".join(parts) + parts[-1],  # a chunk too many
        b"".join(parts)[:-1],
    ):
        with pytest.raises(VerificationError):
            _open(ENV, bad)
        opener = open_envelope(
            ENV, recipient_id=ALICE, key=ALICE_KEY, sender_key=SENDER_KEY.public_key
        )
        with pytest.raises(VerificationError):
            opener.decrypt_stream(io.BytesIO(bad), io.BytesIO())


def test_a_chunk_cannot_move_into_another_document() -> None:
    """Same key, same sizes: the chunks of another message fail under this header."""
    other_env, other_ct = _seal(DOC, message_id="xch-DE-01M85V4ZZ70009HDV0WED1ZQ2Q")
    with pytest.raises(VerificationError):
        _open(ENV, other_ct)
    assert _open(other_env, other_ct) == DOC


def test_the_header_must_hold_together() -> None:
    header = dict(ENV.header)
    for name, value, match in (
        ("chunks", 3, "chunks must be"),
        ("ciphertext_size", 1, "ciphertext_size must be"),
        ("suite", "DHKEM(P-256)", "suite must be"),
        ("sender", "someone", "sender"),
        ("tags_sha256", "AB" * 32, "tags_sha256"),
        ("recipients", [], "recipients must be"),
        ("recipients", [header["recipients"][0]] * 2, "listed twice"),
    ):
        with pytest.raises(InvalidInput, match=match):
            Envelope(header={**header, name: value}, signature=ENV.signature)
    with pytest.raises(InvalidInput, match="fields differ"):
        Envelope(header={**header, "filename": "report.pdf"}, signature=ENV.signature)
    with pytest.raises(InvalidInput, match="duplicate"):
        Envelope.from_bytes(b'{"header": {}, "header": {}, "signature": {}}')


def test_ten_megabytes_through_files(tmp_path: Path) -> None:
    doc = os.urandom(10 * 1024 * 1024 + 12345)
    src, sealed, back = tmp_path / "doc.bin", tmp_path / "doc.ct", tmp_path / "doc.out"
    src.write_bytes(doc)
    seen: list[int] = []
    with src.open("rb") as f, sealed.open("wb") as g:
        env = seal_stream(
            f,
            g,
            size=len(doc),
            message_id=MID,
            sender_id=SENDER,
            sender_key=SENDER_KEY,
            recipients=[(ALICE, ALICE_KEY.public_key)],
            progress=lambda done, total: seen.append(done),
        )
    assert seen == sorted(seen) and seen[-1] == len(doc) and len(seen) == env.layout.chunks
    assert sealed.stat().st_size == env.header["ciphertext_size"]
    check = env.ciphertext_check()
    with sealed.open("rb") as f:
        while block := f.read(99_999):
            check.update(block)
    check.finish()
    opener = open_envelope(env, recipient_id=ALICE, key=ALICE_KEY, sender_key=SENDER_KEY.public_key)
    with sealed.open("rb") as f, back.open("wb") as g:
        assert opener.decrypt_stream(f, g) == len(doc)
    assert back.read_bytes() == doc
    assert opener.decrypt(sealed.read_bytes()) == doc


def test_a_stream_shorter_or_longer_than_announced_is_refused() -> None:
    for size in (len(DOC) + 1, len(DOC) - 1):
        with pytest.raises(InvalidInput):
            seal_stream(
                io.BytesIO(DOC),
                io.BytesIO(),
                size=size,
                message_id=MID,
                sender_id=SENDER,
                sender_key=SENDER_KEY,
                recipients=[(ALICE, ALICE_KEY.public_key)],
            )


@given(cuts=st.lists(st.integers(0, len(CT)), max_size=12))
def test_the_node_side_check_does_not_depend_on_how_bytes_arrive(cuts: list[int]) -> None:
    check = ENV.ciphertext_check()
    points = [0, *sorted(cuts), len(CT)]
    for a, b in itertools.pairwise(points):
        check.update(CT[a:b])
    check.finish()


def test_the_node_side_check_refuses_changed_tags_and_sizes() -> None:
    bad = bytearray(CT)
    bad[CHUNK] ^= 1  # the first tag
    check = ENV.ciphertext_check()
    check.update(bad)
    with pytest.raises(VerificationError, match="tags_sha256"):
        check.finish()
    short = ENV.ciphertext_check()
    short.update(CT[:-1])
    with pytest.raises(VerificationError, match="truncated"):
        short.finish()
    with pytest.raises(VerificationError, match="longer"):
        ENV.ciphertext_check().update(CT + b"x")


def test_layout_limits() -> None:
    assert Layout(size=0, chunk_size=64).chunks == 1
    assert Layout(size=128, chunk_size=64).ciphertext_size == 128 + 32
    for size, chunk in ((-1, 64), (1, 63), (1, 32 * 1024 * 1024)):
        with pytest.raises(InvalidInput):
            Layout(size=size, chunk_size=chunk)


# -- receipts ----------------------------------------------------------------------------------

ALICE_SIGNING = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)


def test_receipts_verify_and_forgeries_do_not() -> None:
    receipt = sign_receipt(ENV, ALICE, ALICE_SIGNING)
    parsed = Receipt.from_json(json.loads(json.dumps(receipt.to_json())))
    parsed.verify(ALICE_SIGNING.public_key)
    assert parsed.header_sha256 == ENV.header_sha256
    with pytest.raises(VerificationError):
        parsed.verify(PrivateKey.generate().public_key)
    for name, value in (
        ("recipient", BOB),
        ("header_sha256", "0" * 64),
        ("received_at", "2020-01-01T00:00:00.000Z"),
    ):
        changed = receipt.to_json()
        changed["payload"][name] = value
        with pytest.raises(VerificationError):
            Receipt.from_json(changed).verify(ALICE_SIGNING.public_key)
    with pytest.raises(VerificationError, match="not a recipient"):
        sign_receipt(ENV, SENDER, ALICE_SIGNING)
    with pytest.raises(InvalidInput):
        Receipt.from_json({"payload": {}, "signature": {}})


def test_a_header_signature_is_no_receipt_signature() -> None:
    """Domain separation: the sender's header signature does not verify as anything else."""
    receipt = sign_receipt(ENV, ALICE, SENDER_KEY).to_json()
    receipt["signature"] = dict(ENV.signature)
    with pytest.raises(VerificationError):
        Receipt.from_json(receipt).verify(SENDER_KEY.public_key)


# -- key bindings and the key file ------------------------------------------------------------


def test_key_bindings() -> None:
    signing = PrivateKey.generate()
    binding = bind_encryption_key(ALICE, ALICE_KEY.public_key, signing)
    parsed = KeyBinding.from_json(json.loads(json.dumps(binding.to_json())))
    parsed.verify(signing.public_key)
    assert (
        parsed.public_key == ALICE_KEY.public_key and parsed.payload()["key_id"] == ALICE_KEY.key_id
    )
    with pytest.raises(VerificationError):
        parsed.verify(PrivateKey.generate().public_key)
    swapped = binding.to_json()
    swapped["payload"]["public_key"] = BOB_KEY.public_key.to_b64()
    swapped["payload"]["key_id"] = BOB_KEY.key_id
    with pytest.raises(VerificationError):
        KeyBinding.from_json(swapped).verify(signing.public_key)
    wrong_id = binding.to_json()
    wrong_id["payload"]["key_id"] = BOB_KEY.key_id
    with pytest.raises(InvalidInput, match="not the id"):
        KeyBinding.from_json(wrong_id)
    with pytest.raises(InvalidInput):
        EncryptionPublicKey(b"\x00" * 31)


def test_the_private_key_stays_encrypted_beside_the_signing_key(tmp_path: Path) -> None:
    key = load_or_create_encryption_key(tmp_path / "keys", b"a passphrase of 16+", ALICE)
    path = encryption_key_path(tmp_path / "keys", ALICE)
    assert path.name == f"{ALICE}.x25519.key.pem" and path.stat().st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    again = load_or_create_encryption_key(tmp_path / "keys", b"a passphrase of 16+", ALICE)
    assert again.key_id == key.key_id and repr(again) == f"EncryptionKey(key_id={key.key_id})"
    with pytest.raises(InvalidInput):
        load_or_create_encryption_key(tmp_path / "keys", b"another passphrase!", ALICE)
    with pytest.raises(MetrocloudError):
        load_or_create_encryption_key(tmp_path / "keys", b"a passphrase of 16+", BOB, create=False)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(key)
