"""Signing keys: Ed25519 and ECDSA P-256, their identifiers, and encrypted storage at rest.

A key is identified by ``key_id``: the lowercase hex SHA-256 of its DER-encoded
SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), computed from cryptography's re-encoding, so the
same key always has the same id however it was supplied (PEM, base64, compressed point).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from metrocloud.domain.errors import Conflict, InvalidInput, NotFound, VerificationError
from metrocloud.trust import _files, _keyparse

__all__ = ["KeyAlgorithm", "KeyStore", "PrivateKey", "PublicKey", "describe_public_key"]


class KeyAlgorithm(StrEnum):
    """The signature algorithms metrocloud accepts."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256-sha256"


_CryptoPublic = _keyparse.CryptoPublic
_CryptoPrivate = _keyparse.CryptoPrivate


def _algorithm_of(key: object) -> KeyAlgorithm:
    _keyparse.check_supported(key)
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return KeyAlgorithm.ED25519
    return KeyAlgorithm.ECDSA_P256


def _coerce(algorithm: object) -> KeyAlgorithm:
    if isinstance(algorithm, str) and algorithm in KeyAlgorithm.__members__.values():
        return KeyAlgorithm(algorithm)
    raise InvalidInput(
        f"unsupported key algorithm {algorithm!r}; expected one of "
        f"{', '.join(member.value for member in KeyAlgorithm)}"
    )


#: the signature algorithm object of every P-256 verification (immutable; made once, not
#: per signature: the intake verifies one per reading)
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())

_VERIFY_RULE = {
    KeyAlgorithm.ED25519: "RFC 8032 §5.1.7",
    KeyAlgorithm.ECDSA_P256: "FIPS 186-5 §6.4.2",
}


class _Immutable:
    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")


class PublicKey(_Immutable):
    """A verification key; equal and hashed by :attr:`key_id`."""

    __slots__ = ("_algorithm", "_key", "_key_id", "_spki")
    _algorithm: KeyAlgorithm
    _key: _CryptoPublic
    _key_id: str
    _spki: bytes

    def __init__(self, key: _CryptoPublic) -> None:
        """Wrap a ``cryptography`` Ed25519 or P-256 public key (prefer the classmethods)."""
        algorithm = _algorithm_of(key)
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        object.__setattr__(self, "_algorithm", algorithm)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_spki", spki)
        object.__setattr__(self, "_key_id", hashlib.sha256(spki).hexdigest())

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self._algorithm

    @property
    def key_id(self) -> str:
        """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
        return self._key_id

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise :class:`VerificationError` unless ``signature`` is valid over ``data``."""
        try:
            if self._algorithm is KeyAlgorithm.ED25519:  # narrows _key for us, not for mypy
                self._key.verify(signature, data)  # type: ignore[call-arg]
            else:
                self._key.verify(signature, data, _ECDSA_SHA256)  # type: ignore[call-arg]
        except (InvalidSignature, ValueError, TypeError):
            raise VerificationError(
                f"signature does not verify under key {self._key_id} ({self._algorithm.value})",
                rule=_VERIFY_RULE[self._algorithm],
            ) from None

    def to_pem(self) -> str:
        """SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``)."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def to_spki_b64(self) -> str:
        """Standard base64 of the DER SubjectPublicKeyInfo, on one line."""
        return base64.b64encode(self._spki).decode("ascii")

    @classmethod
    def from_pem(cls, data: str | bytes) -> PublicKey:
        """Parse a ``PUBLIC KEY`` PEM block (SubjectPublicKeyInfo)."""
        return cls(_keyparse.load_public_pem(data))

    @classmethod
    def from_spki_b64(cls, data: str) -> PublicKey:
        """Parse standard base64 of a DER SubjectPublicKeyInfo."""
        return cls(_keyparse.load_public_spki_b64(data))

    @classmethod
    def from_any(cls, data: str) -> PublicKey:
        """Accept PEM or base64 SPKI, ignoring surrounding whitespace."""
        if not isinstance(data, str):
            raise InvalidInput(
                f"public key must be text (PEM or base64 SPKI), found {type(data).__name__}"
            )
        text = data.strip()
        if text.startswith("-----BEGIN"):
            return cls.from_pem(text)
        return cls.from_spki_b64(text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self._key_id == other._key_id

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __repr__(self) -> str:
        return f"PublicKey(algorithm={self._algorithm.value}, key_id={self._key_id})"


class PrivateKey(_Immutable):
    """A signing key. Its repr shows algorithm and key id only, never key material."""

    __slots__ = ("_key", "_public")
    _key: _CryptoPrivate
    _public: PublicKey

    def __init__(self, key: _CryptoPrivate) -> None:
        """Wrap a ``cryptography`` Ed25519 or P-256 private key (prefer the classmethods)."""
        _algorithm_of(key)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_public", PublicKey(key.public_key()))

    @classmethod
    def generate(cls, algorithm: KeyAlgorithm = KeyAlgorithm.ED25519) -> PrivateKey:
        algorithm = _coerce(algorithm)
        if algorithm is KeyAlgorithm.ED25519:
            return cls(ed25519.Ed25519PrivateKey.generate())
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def algorithm(self) -> KeyAlgorithm:
        return self._public.algorithm

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def key_id(self) -> str:
        return self._public.key_id

    def sign(self, data: bytes) -> bytes:
        """Ed25519: the raw 64-byte signature. ECDSA P-256: SHA-256, DER-encoded (r, s)."""
        if isinstance(self._key, ed25519.Ed25519PrivateKey):
            return self._key.sign(data)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM; encrypted with ``BestAvailableEncryption`` when a passphrase is given."""
        encryption: serialization.KeySerializationEncryption
        if passphrase is None:
            encryption = serialization.NoEncryption()
        else:
            encryption = serialization.BestAvailableEncryption(
                _keyparse.check_passphrase(passphrase)
            )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @classmethod
    def from_pem(cls, data: bytes, passphrase: bytes | None = None) -> PrivateKey:
        """Parse PKCS#8 (or traditional) PEM; ``passphrase`` is required iff it is encrypted."""
        return cls(_keyparse.load_private_pem(data, passphrase))

    def __repr__(self) -> str:
        return f"PrivateKey(algorithm={self.algorithm.value}, key_id={self.key_id})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PrivateKey cannot be pickled; use to_pem(passphrase)")


class KeyStore:
    """Private keys encrypted at rest (PKCS#8 + passphrase) in one directory.

    Files are ``<directory>/<name>.key.pem`` with mode 0o600; a directory the store creates
    gets mode 0o700 (an existing directory keeps its mode).
    """

    __slots__ = ("_directory", "_passphrase")

    def __init__(self, directory: Path, passphrase: bytes) -> None:
        self._directory = Path(directory)
        self._passphrase = _keyparse.check_passphrase(passphrase)

    @property
    def directory(self) -> Path:
        return self._directory

    def path(self, name: str) -> Path:
        """Where the key ``name`` is (or would be) stored."""
        return self._directory / f"{_files.validate_name(name)}.key.pem"

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> PrivateKey:
        path = self.path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no key {name!r} in key store {self._directory}") from None
        return PrivateKey.from_pem(data, self._passphrase)

    def load_or_create(
        self, name: str, algorithm: KeyAlgorithm = KeyAlgorithm.ED25519
    ) -> PrivateKey:
        """Load ``name``; if absent, generate a key of ``algorithm`` and store it atomically.

        If another process creates the same key concurrently, its key wins and is returned.
        """
        algorithm = _coerce(algorithm)
        path = self.path(name)
        if not path.exists():
            _files.ensure_private_directory(self._directory)
            key = PrivateKey.generate(algorithm)
            if _files.write_new_file(path, key.to_pem(self._passphrase)):
                return key
        key = self.load(name)
        if key.algorithm is not algorithm:
            raise Conflict(
                f"key {name!r} in {self._directory} is {key.algorithm.value}, "
                f"requested {algorithm.value}"
            )
        return key

    @staticmethod
    def passphrase_from(directory: Path, env_var: str = "METROCLOUD_KEY_PASSPHRASE") -> bytes:
        """The key store passphrase: ``$env_var`` if set, else ``<directory>/passphrase``.

        Without the environment variable, a passphrase of 32 random bytes (written as 43
        base64url characters) is created once in ``<directory>/passphrase`` with mode 0o600
        and read back on later calls. That file sits next to the keys it protects, so it only
        guards against leaks of individual key files. Production deployments should set the
        environment variable from a secret manager, so key files and passphrase are never on
        the same disk.
        """
        value = os.environ.get(env_var)
        if value is not None:
            if not value:
                raise InvalidInput(
                    f"environment variable {env_var} is set but empty; unset it to use the "
                    "passphrase file or give it a passphrase"
                )
            return value.encode("utf-8")
        return _files.read_or_create_passphrase(Path(directory) / "passphrase")

    def __repr__(self) -> str:
        return f"KeyStore(directory={str(self._directory)!r})"


_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def describe_public_key(text: str) -> tuple[KeyAlgorithm, str, str]:
    """``(algorithm, key_id, base64 SPKI)`` of a PEM or base64 SPKI public key.

    The bulk-registration path: for the common Ed25519 SPKI (12-byte DER prefix and the
    32-byte key) the DER is checked by its exact form without building a key object; every
    other input goes through :meth:`PublicKey.from_any`, which validates it fully (for
    P-256, that the point is on the curve).
    """
    if isinstance(text, str) and len(text) == 60 and not text.startswith("-----"):
        try:
            der = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            der = b""
        if len(der) == 44 and der.startswith(_ED25519_SPKI_PREFIX):
            return KeyAlgorithm.ED25519, hashlib.sha256(der).hexdigest(), text
    key = PublicKey.from_any(text)
    return key.algorithm, key.key_id, key.to_spki_b64()
