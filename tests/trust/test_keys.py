"""Keys: signing round trips, tamper detection, encodings, encrypted PEM, no secret leaks."""

from __future__ import annotations

import base64
import hashlib
import pickle

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from metrocloud.domain.errors import InvalidInput, MetrocloudError, VerificationError
from metrocloud.trust import KeyAlgorithm, PrivateKey, PublicKey

ALGORITHMS = list(KeyAlgorithm)


@pytest.fixture(params=ALGORITHMS, ids=[a.value for a in ALGORITHMS])
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return PrivateKey.generate(request.param)


def test_algorithm_values_are_the_wire_names() -> None:
    assert [a.value for a in KeyAlgorithm] == ["ed25519", "ecdsa-p256-sha256"]
    assert PrivateKey.generate().algorithm is KeyAlgorithm.ED25519


def test_sign_and_verify_round_trip(key: PrivateKey) -> None:
    signature = key.sign(b"measurement 42")
    key.public_key.verify(signature, b"measurement 42")  # does not raise


def test_signature_encodings() -> None:
    ed = PrivateKey.generate(KeyAlgorithm.ED25519).sign(b"x")
    assert len(ed) == 64
    p256 = PrivateKey.generate(KeyAlgorithm.ECDSA_P256).sign(b"x")
    assert p256[0] == 0x30 and 8 <= len(p256) <= 72  # DER SEQUENCE of (r, s)


def test_altered_data_fails(key: PrivateKey) -> None:
    signature = key.sign(b"measurement 42")
    with pytest.raises(VerificationError) as info:
        key.public_key.verify(signature, b"measurement 43")
    assert str(info.value) == (
        f"signature does not verify under key {key.key_id} ({key.algorithm.value})"
    )
    assert info.value.rule in {"RFC 8032 §5.1.7", "FIPS 186-5 §6.4.2"}


def test_altered_signature_fails(key: PrivateKey) -> None:
    signature = bytearray(key.sign(b"data"))
    signature[len(signature) // 2] ^= 0x01
    with pytest.raises(VerificationError, match=key.key_id):
        key.public_key.verify(bytes(signature), b"data")


@pytest.mark.parametrize("bad", [b"", b"\x00" * 64, b"\x30\x02\x02\x00", b"short"])
def test_garbage_signatures_fail_with_verification_error(key: PrivateKey, bad: bytes) -> None:
    with pytest.raises(VerificationError):
        key.public_key.verify(bad, b"data")


def test_wrong_key_fails(key: PrivateKey) -> None:
    other = PrivateKey.generate(key.algorithm)
    with pytest.raises(VerificationError, match=other.key_id):
        other.public_key.verify(key.sign(b"data"), b"data")


def test_signature_of_other_algorithm_fails() -> None:
    ed = PrivateKey.generate(KeyAlgorithm.ED25519)
    p256 = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
    with pytest.raises(VerificationError):
        p256.public_key.verify(ed.sign(b"data"), b"data")
    with pytest.raises(VerificationError):
        ed.public_key.verify(p256.sign(b"data"), b"data")


def test_key_id_is_sha256_of_der_spki(key: PrivateKey) -> None:
    der = base64.b64decode(key.public_key.to_spki_b64())
    assert key.key_id == hashlib.sha256(der).hexdigest()
    assert key.key_id == key.public_key.key_id
    assert len(key.key_id) == 64 and key.key_id == key.key_id.lower()


def test_public_key_encodings_round_trip(key: PrivateKey) -> None:
    public = key.public_key
    pem = public.to_pem()
    assert pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    for decoded in (
        PublicKey.from_pem(pem),
        PublicKey.from_pem(pem.encode()),
        PublicKey.from_spki_b64(public.to_spki_b64()),
        PublicKey.from_any(f"\n  {pem}\n\n"),
        PublicKey.from_any(f" \t{public.to_spki_b64()}\r\n"),
    ):
        assert decoded == public
        assert decoded.key_id == public.key_id
        assert decoded.algorithm is key.algorithm
        decoded.verify(key.sign(b"x"), b"x")


def test_compressed_p256_point_gets_the_same_key_id() -> None:
    key = PrivateKey.generate(KeyAlgorithm.ECDSA_P256)
    crypto = serialization.load_der_public_key(base64.b64decode(key.public_key.to_spki_b64()))
    assert isinstance(crypto, ec.EllipticCurvePublicKey)
    compressed = crypto.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), compressed)
    assert PublicKey(point).key_id == key.key_id


def test_equality_and_hash_by_key_id() -> None:
    a = PrivateKey.generate()
    same = PublicKey.from_spki_b64(a.public_key.to_spki_b64())
    other = PrivateKey.generate().public_key
    assert a.public_key == same and hash(a.public_key) == hash(same)
    assert a.public_key != other
    assert len({a.public_key, same, other}) == 2
    assert a.public_key != a.key_id  # not equal to its id string


def test_keys_are_immutable(key: PrivateKey) -> None:
    with pytest.raises(AttributeError):
        key.public_key._key_id = "0" * 64
    with pytest.raises(AttributeError):
        key._public = PrivateKey.generate().public_key


def _foreign_spki(crypto_key: object) -> str:
    public = crypto_key.public_key()  # type: ignore[attr-defined]
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.mark.parametrize(
    ("make", "evidence"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "secp384r1"),
        (ed448.Ed448PrivateKey.generate, "Ed448"),
    ],
)
def test_unsupported_algorithms_rejected(make, evidence: str) -> None:  # type: ignore[no-untyped-def]
    spki = _foreign_spki(make())
    with pytest.raises(InvalidInput, match=evidence):
        PublicKey.from_spki_b64(spki)
    pem = f"-----BEGIN PUBLIC KEY-----\n{spki}\n-----END PUBLIC KEY-----\n"
    with pytest.raises(InvalidInput, match=evidence):
        PublicKey.from_any(pem)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64 !",
        "AAAA",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_unparseable_public_keys_rejected(text: str) -> None:
    with pytest.raises(InvalidInput):
        PublicKey.from_any(text)


def test_private_key_pem_is_not_a_public_key() -> None:
    pem = PrivateKey.generate().to_pem().decode()
    with pytest.raises(InvalidInput, match="PUBLIC KEY"):
        PublicKey.from_pem(pem)


def test_private_pem_round_trip_unencrypted(key: PrivateKey) -> None:
    pem = key.to_pem(None)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = PrivateKey.from_pem(pem, None)
    assert loaded.key_id == key.key_id
    key.public_key.verify(loaded.sign(b"x"), b"x")


def test_private_pem_round_trip_encrypted(key: PrivateKey) -> None:
    pem = key.to_pem(b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    loaded = PrivateKey.from_pem(pem, b"correct horse")
    assert loaded.key_id == key.key_id and loaded.algorithm is key.algorithm


def test_wrong_passphrase(key: PrivateKey) -> None:
    pem = key.to_pem(b"correct horse")
    with pytest.raises(VerificationError) as info:
        PrivateKey.from_pem(pem, b"battery staple")
    assert str(info.value) == "cannot decrypt private key: wrong passphrase or corrupted file"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_corrupted_encrypted_file(key: PrivateKey) -> None:
    pem = bytearray(key.to_pem(b"pw"))
    middle = len(pem) // 2
    pem[middle] = ord("A") if pem[middle] != ord("A") else ord("B")
    with pytest.raises(MetrocloudError, match="wrong passphrase or corrupted file"):
        PrivateKey.from_pem(bytes(pem), b"pw")


def test_encrypted_key_without_passphrase(key: PrivateKey) -> None:
    with pytest.raises(InvalidInput, match="encrypted but no passphrase"):
        PrivateKey.from_pem(key.to_pem(b"pw"), None)


def test_plain_key_where_passphrase_expected(key: PrivateKey) -> None:
    with pytest.raises(InvalidInput, match="not encrypted but a passphrase was given"):
        PrivateKey.from_pem(key.to_pem(None), b"pw")


@pytest.mark.parametrize("passphrase", [b"", "text"])
def test_passphrase_must_be_non_empty_bytes(passphrase: object) -> None:
    with pytest.raises(InvalidInput, match="non-empty bytes"):
        PrivateKey.generate().to_pem(passphrase)  # type: ignore[arg-type]


def test_garbage_private_pem() -> None:
    with pytest.raises(InvalidInput, match="not a PEM private key"):
        PrivateKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_rsa_private_key_rejected() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidInput, match="RSA"):
        PrivateKey.from_pem(pem)


def test_no_key_material_in_repr_or_errors(key: PrivateKey) -> None:
    pem = key.to_pem(None).decode()
    body = "".join(pem.splitlines()[1:-1])
    assert repr(key) == f"PrivateKey(algorithm={key.algorithm.value}, key_id={key.key_id})"
    assert str(key) == repr(key)
    assert body not in repr(key)
    with pytest.raises(VerificationError) as info:
        PrivateKey.from_pem(key.to_pem(b"secret-passphrase"), b"other-passphrase")
    assert "secret-passphrase" not in str(info.value) and body not in str(info.value)


def test_private_key_cannot_be_pickled(key: PrivateKey) -> None:
    with pytest.raises(TypeError, match="to_pem"):
        pickle.dumps(key)


def test_generate_rejects_unknown_algorithm() -> None:
    with pytest.raises(InvalidInput, match="unsupported key algorithm 'rsa'"):
        PrivateKey.generate("rsa")  # type: ignore[arg-type]
    assert PrivateKey.generate("ecdsa-p256-sha256").algorithm is KeyAlgorithm.ECDSA_P256  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_describe_public_key_agrees_with_full_parse(algorithm: KeyAlgorithm) -> None:
    from metrocloud.trust.keys import describe_public_key

    public = PrivateKey.generate(algorithm).public_key
    for text in (public.to_spki_b64(), public.to_pem(), f"  {public.to_spki_b64()}\n"):
        assert describe_public_key(text) == (
            public.algorithm,
            public.key_id,
            public.to_spki_b64(),
        )


def test_describe_public_key_rejects_what_the_full_parse_rejects() -> None:
    import base64

    from metrocloud.domain.errors import InvalidInput
    from metrocloud.trust.keys import describe_public_key

    good = PrivateKey.generate().public_key.to_spki_b64()
    wrong_prefix = base64.b64encode(b"\x30\x2a" + b"\x00" * 42).decode()
    for bad in (wrong_prefix, good[:-4] + "!!!!", "", "AAAA", good[:59]):
        with pytest.raises(InvalidInput):
            describe_public_key(bad)
