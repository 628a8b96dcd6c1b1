"""Signed OCMF records made on the spot, on every curve the verifier supports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ecdsa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from metrocloud.formats._ocmf_crypto import CURVES, SECP192K1_ECDSA, Curve

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ocmf"
CURVE_NAMES = [c.name for c in CURVES]
_HASHES = {"SHA256": (hashes.SHA256, hashlib.sha256), "SHA384": (hashes.SHA384, hashlib.sha384)}


def curve(name: str) -> Curve:
    return next(c for c in CURVES if c.name == name)


@dataclass
class Signer:
    """A key pair on one curve: signs bytes (DER ECDSA), exports the public key as DER SPKI."""

    curve: Curve
    _key: Any

    @classmethod
    def generate(cls, name: str) -> Signer:
        c = curve(name)
        if c.crypto is None:
            return cls(c, ecdsa.SigningKey.generate(curve=SECP192K1_ECDSA))
        return cls(c, ec.generate_private_key(c.crypto()))

    def sign(self, message: bytes, hash_name: str = "SHA256") -> bytes:
        crypto_hash, hashlib_hash = _HASHES[hash_name]
        if self.curve.crypto is None:
            return bytes(
                self._key.sign(message, hashfunc=hashlib_hash, sigencode=ecdsa.util.sigencode_der)
            )
        return bytes(self._key.sign(message, ec.ECDSA(crypto_hash())))

    def public_der(self) -> bytes:
        if self.curve.crypto is None:
            return bytes(self._key.get_verifying_key().to_der())
        return bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def public_point(self) -> bytes:
        """The uncompressed point 04 || X || Y."""
        if self.curve.crypto is None:
            return b"\x04" + bytes(self._key.get_verifying_key().to_string())
        return bytes(
            self._key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )


def payload(
    pg: str = "T1",
    readings: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> str:
    """A compact payload section; readings default to one complete transaction."""
    body: dict[str, Any] = {
        "FV": "1.0",
        "GI": "metrocloud test gateway",
        "GS": "GW-1",
        "PG": pg,
        "MS": "METER-1",
        "IS": True,
        "IT": "ISO14443",
        "ID": "1F2D3A4F",
        "RD": readings
        if readings is not None
        else [
            {
                "TM": "2024-05-01T10:00:00,000+0200 S",
                "TX": "B",
                "RV": 1.25,
                "RI": "1-b:1.8.0",
                "RU": "kWh",
                "EF": "",
                "ST": "G",
            },
            {"TM": "2024-05-01T11:00:00,000+0200 S", "TX": "E", "RV": 7.5},
        ],
    }
    body.update(fields)
    return json.dumps(body, separators=(",", ":"))


def reading(tx: str | None, rv: float, tm: str = "10:00:00", **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "TM": f"2024-05-01T{tm},000+0200 S",
        "RV": rv,
        "RI": "1-b:1.8.0",
        "RU": "kWh",
        "EF": "",
        "ST": "G",
    }
    if tx is not None:
        out["TX"] = tx
    out.update(extra)
    return out


def record(
    signer: Signer,
    body: str | None = None,
    *,
    sa: str | None = "default",
    se: str | None = None,
    hash_name: str = "SHA256",
    raw_signature: bool = False,
) -> str:
    """``OCMF|body|{"SA":..,"SD":..}`` signed by ``signer`` over ``body`` exactly."""
    text = payload() if body is None else body
    der = signer.sign(text.encode("utf-8"), hash_name)
    sd = _raw(der, signer.curve.size) if raw_signature else der
    section: dict[str, str] = {}
    if sa is not None:
        section["SA"] = f"ECDSA-{signer.curve.name}-{hash_name}" if sa == "default" else sa
    if se == "base64":
        import base64

        section["SE"] = "base64"
        section["SD"] = base64.b64encode(sd).decode()
    else:
        section["SD"] = sd.hex().upper()
    return f"OCMF|{text}|{json.dumps(section)}"


def _raw(der: bytes, size: int) -> bytes:
    r, s = ecdsa.util.sigdecode_der(der, 2 ** (8 * size))
    return bytes(r.to_bytes(size, "big") + s.to_bytes(size, "big"))


def container(*values: tuple[str, str | None], encoding: str | None = None) -> bytes:
    """A Transparenzsoftware XML container of (signed data, public key hex) pairs."""
    from xml.sax.saxutils import escape

    parts = ["<?xml version='1.0' encoding='UTF-8'?>", "<values>"]
    for data, key in values:
        attr = f' encoding="{encoding}"' if encoding else ""
        parts.append(f'<value><signedData format="OCMF"{attr}>{escape(data)}</signedData>')
        if key is not None:
            parts.append(f"<publicKey>{key}</publicKey>")
        parts.append("</value>")
    parts.append("</values>")
    return "\n".join(parts).encode("utf-8")
