"""Verifying one OCMF record: algorithms, keys, signature encodings, and their failures."""

from __future__ import annotations

import base64
import json

import pytest

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.formats._ocmf_crypto import parse_algorithm
from metrocloud.formats.ocmf import (
    DEFAULT_ALGORITHM,
    SUPPORTED_ALGORITHMS,
    parse_ocmf,
    verify_ocmf,
)

from ._support import CURVE_NAMES, Signer, payload, record


@pytest.fixture(scope="module")
def p256() -> Signer:
    return Signer.generate("secp256r1")


@pytest.mark.parametrize("name", CURVE_NAMES)
def test_every_supported_curve_verifies(name: str) -> None:
    signer = Signer.generate(name)
    verdict = verify_ocmf(parse_ocmf(record(signer)), signer.public_der())
    assert (verdict.status, verdict.reason, verdict.signature_valid) == ("valid", None, True)
    assert verdict.algorithm == f"ECDSA-{name}-SHA256"
    verdict.require_valid()


def test_supported_algorithms_are_those_of_table_22() -> None:
    assert DEFAULT_ALGORITHM == "ECDSA-secp256r1-SHA256"
    assert set(SUPPORTED_ALGORITHMS) == {f"ECDSA-{n}-SHA256" for n in CURVE_NAMES}


@pytest.mark.parametrize(
    ("sa", "identifier"),
    [
        (None, "ECDSA-secp256r1-SHA256"),
        ("ECDSA-brainpool256r1-SHA256", "ECDSA-brainpoolP256r1-SHA256"),
        ("ECDSA-brainpoolP256r1-SHA256", "ECDSA-brainpoolP256r1-SHA256"),
        ("ECDSA-prime256v1-SHA256", "ECDSA-secp256r1-SHA256"),
        ("ECDSA-secp384r1-SHA384", "ECDSA-secp384r1-SHA384"),
        (" ECDSA-secp256k1-SHA-256 ", "ECDSA-secp256k1-SHA256"),
    ],
)
def test_algorithm_names(sa: str | None, identifier: str) -> None:
    assert parse_algorithm(sa).identifier == identifier


def test_absent_sa_means_secp256r1_sha256(p256: Signer) -> None:
    verdict = verify_ocmf(parse_ocmf(record(p256, sa=None)), p256.public_der())
    assert (verdict.status, verdict.algorithm) == ("valid", "ECDSA-secp256r1-SHA256")


def test_sha384_when_sa_names_it() -> None:
    signer = Signer.generate("secp384r1")
    text = record(signer, hash_name="SHA384")
    assert verify_ocmf(parse_ocmf(text), signer.public_der()).status == "valid"
    wrong = text.replace("SHA384", "SHA256")
    assert verify_ocmf(parse_ocmf(wrong), signer.public_der()).status == "invalid"


@pytest.mark.parametrize("sa", ["RSA-PSS-SHA256", "ECDSA-secp521r1-SHA256", "ECDSA-secp256r1-MD5"])
def test_unsupported_algorithm_is_an_error(p256: Signer, sa: str) -> None:
    verdict = verify_ocmf(parse_ocmf(record(p256, sa=sa)), p256.public_der())
    assert verdict.status == "error"
    assert f"unsupported signature algorithm SA {sa!r}" in (verdict.reason or "")
    assert "Table 22" in (verdict.reason or "")
    with pytest.raises(InvalidInput, match="unsupported signature algorithm"):
        verdict.require_valid()


def test_key_forms_hex_spaced_base64_bytes_raw_point(p256: Signer) -> None:
    doc = parse_ocmf(record(p256))
    der = p256.public_der()
    spaced = " ".join(der.hex()[i : i + 4] for i in range(0, len(der.hex()), 4)).upper()
    for key in (
        der,
        der.hex(),
        spaced,
        "\n" + spaced.replace(" ", "\n\t") + "\n",
        base64.b64encode(der).decode(),
        p256.public_point(),
        p256.public_point()[1:].hex(),
    ):
        assert verify_ocmf(doc, key).status == "valid", key


def test_base64_signature_encoding(p256: Signer) -> None:
    verdict = verify_ocmf(parse_ocmf(record(p256, se="base64")), p256.public_der())
    assert verdict.status == "valid"


def test_bare_r_s_signature_is_tolerated(p256: Signer) -> None:
    """Seen in OCMF-receipt-with_publickey_and_data.xml (Isabellenhuette): 64 bytes r || s."""
    verdict = verify_ocmf(parse_ocmf(record(p256, raw_signature=True)), p256.public_der())
    assert verdict.status == "valid"


def test_wrong_key_is_invalid(p256: Signer) -> None:
    other = Signer.generate("secp256r1")
    verdict = verify_ocmf(parse_ocmf(record(p256)), other.public_der())
    assert verdict.status == "invalid" and verdict.signature_valid is False
    assert "signature does not verify" in (verdict.reason or "")
    assert "Signing and Verification Process" in (verdict.reason or "")
    with pytest.raises(VerificationError, match="signature does not verify") as caught:
        verdict.require_valid()
    assert caught.value.rule and "OCMF 1.2" in caught.value.rule


def test_changed_payload_is_invalid(p256: Signer) -> None:
    text = record(p256).replace('"RV":7.5', '"RV":7.6')
    assert verify_ocmf(parse_ocmf(text), p256.public_der()).status == "invalid"


@pytest.mark.parametrize("other", ["secp256k1", "brainpoolP256r1", "secp384r1", "secp192k1"])
def test_key_curve_other_than_sa_names_is_invalid(p256: Signer, other: str) -> None:
    key = Signer.generate(other).public_der()
    verdict = verify_ocmf(parse_ocmf(record(p256)), key)
    assert verdict.status == "invalid"
    assert (
        f"public key is an EC key on {other}, but SA ECDSA-secp256r1-SHA256 needs a key on "
        "secp256r1" in (verdict.reason or "")
    )


def test_rsa_key_for_an_ecdsa_algorithm_is_invalid(p256: Signer) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    verdict = verify_ocmf(parse_ocmf(record(p256)), der)
    assert verdict.status == "invalid"
    assert "public key is an RSA key" in (verdict.reason or "")


@pytest.mark.parametrize(
    ("key", "evidence"),
    [
        (None, "no public key"),
        ("", "no public key"),
        ("zz-not-a-key!", "public key is not hex or base64"),
        ("3059301306", "public key (SubjectPublicKeyInfo): DER element claims 89 bytes"),
        ("0102", "neither a DER SubjectPublicKeyInfo nor a point on secp256r1"),
        ("04" + "11" * 64, "public key is not a valid point on secp256r1"),
    ],
)
def test_unusable_key_is_an_error(p256: Signer, key: str | None, evidence: str) -> None:
    verdict = verify_ocmf(parse_ocmf(record(p256)), key)
    assert verdict.status == "error"
    assert evidence in (verdict.reason or "")


def test_truncated_der_key_names_the_problem(p256: Signer) -> None:
    der = p256.public_der()
    verdict = verify_ocmf(parse_ocmf(record(p256)), der[:-5])
    assert verdict.status == "error"
    assert "SubjectPublicKeyInfo" in (verdict.reason or "")


@pytest.mark.parametrize(
    ("section", "evidence"),
    [
        ({"SD": "nothex"}, "signature SD (hex) is not hex"),
        ({"SD": "3006020101020101ff"}, "signature SD (DER ECDSA-Sig-Value): trailing bytes"),
        ({"SD": "00112233"}, "neither a DER ECDSA-Sig-Value nor r || s of 64 bytes"),
        ({"SD": "3006020181020101"}, "r and s must be positive INTEGERs"),
        ({"SD": "00", "SE": "base32"}, "SE is 'base32'; expected 'hex' or 'base64'"),
    ],
)
def test_malformed_signature_is_invalid(
    p256: Signer, section: dict[str, str], evidence: str
) -> None:
    text = f"OCMF|{payload()}|{json.dumps(section)}"
    verdict = verify_ocmf(parse_ocmf(text), p256.public_der())
    assert verdict.status == "invalid"
    assert evidence in (verdict.reason or "")
    assert "Table 8" in (verdict.reason or "")


def test_other_signature_mime_type_is_an_error(p256: Signer) -> None:
    section = json.loads(record(p256).rsplit("|", 1)[1]) | {"SM": "application/json"}
    text = f"OCMF|{payload()}|{json.dumps(section)}"
    verdict = verify_ocmf(parse_ocmf(text), p256.public_der())
    assert verdict.status == "error"
    assert "SM is 'application/json'; only 'application/x-der' is defined" in (verdict.reason or "")
