"""Confidential documents between parties: HPKE-sealed keys, chunked AES-256-GCM, a signed
header (ARCHITECTURE.md decision 5; docs/exchange.md).

Sealing (the sender's side, never the node's):

1. a random 32-byte document key ``dek``; the content key and a key commitment are derived
   from it and the header parameters (:mod:`metrocloud.trust._chunks`);
2. the document is encrypted in chunks with AES-256-GCM (index and final flag in the
   nonce, the parameters' digest as associated data);
3. ``dek`` is sealed to each recipient's X25519 key with HPKE base mode (RFC 9180,
   DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM), the associated data binding the
   message id, the sender, the recipient and the parameters;
4. the sender signs the header (recipients with their sealed keys, sizes, content type,
   time, the digest of the chunk tags, the key commitment) with its signing key over
   ``HEADER_DOMAIN + canonical_json(header)``.

Opening (:func:`open_envelope`) checks, in this order:

1. the header is well-formed (:meth:`Envelope.from_json`);
2. the sender's registered signing key signed it;
3. the caller is a recipient, with the X25519 key the header names;
4. HPKE opens the caller's sealed key;
5. the key matches the signed key commitment;
6. (while decrypting) every chunk authenticates at its index, the last one carries the
   final flag, nothing follows it, and the tags hash to the signed ``tags_sha256``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from metrocloud.domain.errors import InvalidInput, VerificationError
from metrocloud.trust import _hpke
from metrocloud.trust._b64 import b64decode_strict, b64encode
from metrocloud.trust._chunks import TAG, CiphertextCheck, Layout, derive_keys, nonce
from metrocloud.trust._exchange_header import (
    FORMAT,
    MESSAGE_ID,
    PARTY_ID,
    SUITE,
    check_header,
    params_of,
    params_sha256,
)
from metrocloud.trust._signed import parse_signature, sign_object, verify_object
from metrocloud.trust._time import utc_timestamp
from metrocloud.trust.canonical import canonical_json
from metrocloud.trust.encryption import EncryptionKey, EncryptionPublicKey
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = [
    "DEFAULT_CHUNK",
    "FORMAT",
    "HEADER_DOMAIN",
    "SUITE",
    "CiphertextCheck",
    "Envelope",
    "Opener",
    "Progress",
    "open_envelope",
    "seal_document",
    "seal_stream",
]

HEADER_DOMAIN = b"metrocloud-exchange-header-v1\x00"
DEFAULT_CHUNK = 1024 * 1024
_HPKE_INFO = b"metrocloud-exchange-v1 document key"
_RULE = "metrocloud exchange v1 (docs/exchange.md#format)"
#: ``progress(done, total)`` in plaintext bytes
Progress = Callable[[int, int], None]


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Envelope:
    """A signed header: everything about a document but its ciphertext."""

    header: Mapping[str, Any]
    signature: Mapping[str, str]
    layout: Layout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", check_header(self.header))
        parse_signature(self.signature, what="envelope signature")

    @classmethod
    def from_json(cls, value: object) -> Envelope:
        """Parse ``{"header": ..., "signature": ...}``; :class:`InvalidInput` if malformed."""
        if not isinstance(value, Mapping) or set(value) != {"header", "signature"}:
            raise InvalidInput(
                "an envelope is an object with exactly header and signature", rule=_RULE
            )
        return cls(header=value["header"], signature=value["signature"])

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        try:
            value = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_strict_object)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidInput(f"envelope is not valid JSON: {exc}", rule=_RULE) from None
        return cls.from_json(value)

    def to_json(self) -> dict[str, Any]:
        return {"header": dict(self.header), "signature": dict(self.signature)}

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @property
    def id(self) -> str:
        return str(self.header["id"])

    @property
    def sender(self) -> str:
        return str(self.header["sender"])

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(r["party"] for r in self.header["recipients"])

    @property
    def header_sha256(self) -> str:
        """Hex SHA-256 of the canonical header: what receipts acknowledge."""
        return hashlib.sha256(canonical_json(self.header)).hexdigest()

    def sealed_key(self, party_id: str) -> Mapping[str, str]:
        for r in self.header["recipients"]:
            if r["party"] == party_id:
                return r  # type: ignore[no-any-return]
        raise VerificationError(
            f"{party_id} is not a recipient of {self.id}; recipients are "
            f"{', '.join(self.recipients)}",
            rule=_RULE,
        )

    def verify(self, sender_key: PublicKey) -> None:
        """:class:`VerificationError` unless ``sender_key`` signed this header."""
        verify_object(
            HEADER_DOMAIN,
            self.header,
            self.signature,
            sender_key,
            what=f"header of {self.id} by {self.sender}",
            rule=_RULE,
        )

    def ciphertext_check(self) -> CiphertextCheck:
        """A checker of the ciphertext against this header (sizes, tags) for a node."""
        return CiphertextCheck(self.layout, str(self.header["tags_sha256"]))


def _aad(message_id: str, sender: str, recipient: str, params_digest: bytes) -> bytes:
    return canonical_json(
        {
            "id": message_id,
            "sender": sender,
            "recipient": recipient,
            "params_sha256": params_digest.hex(),
        }
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Sealing:
    params: dict[str, Any]
    digest: bytes
    content_key: bytes
    commitment: bytes
    recipients: list[dict[str, str]]
    layout: Layout

    @classmethod
    def prepare(
        cls,
        *,
        message_id: str,
        sender_id: str,
        recipients: Sequence[tuple[str, EncryptionPublicKey]],
        content_type: str,
        size: int,
        chunk_size: int,
        created_at: str | None,
    ) -> _Sealing:
        if not isinstance(message_id, str) or MESSAGE_ID.fullmatch(message_id) is None:
            raise InvalidInput(f"message id {message_id!r} is not xch-<country>-<ULID>")
        if not isinstance(sender_id, str) or PARTY_ID.fullmatch(sender_id) is None:
            raise InvalidInput(f"sender {sender_id!r} is not a party id")
        params = {
            "format": FORMAT,
            "id": message_id,
            "sender": sender_id,
            "created_at": created_at or utc_timestamp(),
            "content_type": content_type,
            "suite": SUITE,
            "chunk_size": chunk_size,
            "recipients": [{"party": p, "key_id": k.key_id} for p, k in recipients],
        }
        digest = params_sha256(params)
        dek = os.urandom(32)
        content_key, commitment = derive_keys(dek, digest)
        sealed = []
        for party, key in recipients:
            enc, ct = _hpke.seal_base(
                key.raw, dek, info=_HPKE_INFO, aad=_aad(message_id, sender_id, party, digest)
            )
            sealed.append(
                {
                    "party": party,
                    "key_id": key.key_id,
                    "enc": b64encode(enc),
                    "sealed_key": b64encode(ct),
                }
            )
        return cls(
            params=params,
            digest=digest,
            content_key=content_key,
            commitment=commitment,
            recipients=sealed,
            layout=Layout(size=size, chunk_size=chunk_size),
        )

    def envelope(self, tags_sha256: str, sender_key: PrivateKey) -> Envelope:
        header = {
            **self.params,
            "recipients": self.recipients,
            "size": self.layout.size,
            "ciphertext_size": self.layout.ciphertext_size,
            "chunks": self.layout.chunks,
            "tags_sha256": tags_sha256,
            "key_commitment": self.commitment.hex(),
        }
        # Envelope() checks the header: nothing leaves that a recipient would refuse
        return Envelope(header=header, signature=sign_object(HEADER_DOMAIN, header, sender_key))


def seal_document(
    plaintext: bytes | bytearray | memoryview,
    *,
    message_id: str,
    sender_id: str,
    sender_key: PrivateKey,
    recipients: Sequence[tuple[str, EncryptionPublicKey]],
    content_type: str = "application/octet-stream",
    created_at: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Envelope, bytearray]:
    """Seal a document held in memory: ``(envelope, ciphertext)``.

    The hot path: every chunk is encrypted straight into its place in one preallocated
    buffer (``AESGCM.encrypt_into``), and only the 16-byte tags are hashed.
    """
    view = memoryview(plaintext).cast("B")
    s = _Sealing.prepare(
        message_id=message_id,
        sender_id=sender_id,
        recipients=recipients,
        content_type=content_type,
        size=len(view),
        chunk_size=chunk_size,
        created_at=created_at,
    )
    layout, aead, tags = s.layout, AESGCM(s.content_key), hashlib.sha256()
    out = bytearray(layout.ciphertext_size)
    target = memoryview(out)
    last = layout.chunks - 1
    for i in range(layout.chunks):
        n = layout.plain_length(i)
        src = view[i * layout.chunk_size : i * layout.chunk_size + n]
        at = i * (layout.chunk_size + TAG)
        _encrypt_into(aead, nonce(i, i == last), src, s.digest, target[at : at + n + TAG])
        tags.update(target[at + n : at + n + TAG])
    return s.envelope(tags.hexdigest(), sender_key), out


def seal_stream(
    source: BinaryIO,
    sink: BinaryIO,
    *,
    size: int,
    message_id: str,
    sender_id: str,
    sender_key: PrivateKey,
    recipients: Sequence[tuple[str, EncryptionPublicKey]],
    content_type: str = "application/octet-stream",
    created_at: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> Envelope:
    """Seal ``size`` bytes read from ``source``, writing the ciphertext to ``sink``; two
    buffers of one chunk each, reused for every chunk."""
    s = _Sealing.prepare(
        message_id=message_id,
        sender_id=sender_id,
        recipients=recipients,
        content_type=content_type,
        size=size,
        chunk_size=chunk_size,
        created_at=created_at,
    )
    layout, aead, tags = s.layout, AESGCM(s.content_key), hashlib.sha256()
    inbuf, outbuf = bytearray(layout.chunk_size), bytearray(layout.chunk_size + TAG)
    done = 0
    for i in range(layout.chunks):
        n = layout.plain_length(i)
        src = _read_exactly(source, memoryview(inbuf)[:n], what="document")
        dst = memoryview(outbuf)[: n + TAG]
        _encrypt_into(aead, nonce(i, i == layout.chunks - 1), src, s.digest, dst)
        tags.update(dst[n:])
        sink.write(dst)
        done += n
        if progress is not None:
            progress(done, size)
    if source.read(1):
        raise InvalidInput(f"the document is longer than the {size} bytes announced")
    return s.envelope(tags.hexdigest(), sender_key)


def _read_exactly(source: BinaryIO, buf: memoryview, *, what: str) -> memoryview:
    got = 0
    while got < len(buf):
        n = source.readinto(buf[got:])  # type: ignore[attr-defined]
        if not n:
            raise InvalidInput(f"the {what} ended after {got} of {len(buf)} bytes of a chunk")
        got += n
    return buf


def _encrypt_into(aead: AESGCM, iv: bytes, data: memoryview, aad: bytes, dst: memoryview) -> None:
    if hasattr(aead, "encrypt_into"):
        aead.encrypt_into(iv, data, aad, dst)
    else:  # pragma: no cover - cryptography before encrypt_into
        dst[:] = aead.encrypt(iv, bytes(data), aad)


class Opener:
    """A recipient's opened envelope: decrypts its ciphertext (see the module checklist)."""

    __slots__ = ("_aead", "_digest", "envelope")

    def __init__(self, envelope: Envelope, content_key: bytes, digest: bytes) -> None:
        self.envelope = envelope
        self._aead = AESGCM(content_key)
        self._digest = digest

    def _chunk(self, i: int, src: memoryview, dst: memoryview, tags: Any) -> None:
        layout = self.envelope.layout
        iv = nonce(i, i == layout.chunks - 1)
        try:
            if hasattr(self._aead, "decrypt_into"):
                self._aead.decrypt_into(iv, src, self._digest, dst)
            else:  # pragma: no cover - cryptography before decrypt_into
                dst[:] = self._aead.decrypt(iv, bytes(src), self._digest)
        except InvalidTag:
            raise VerificationError(
                f"chunk {i} of {layout.chunks} of {self.envelope.id} does not authenticate: "
                "the ciphertext was altered, reordered or truncated",
                rule=_RULE,
            ) from None
        tags.update(src[len(src) - TAG :])

    def _check_tags(self, tags: Any) -> None:
        expected = str(self.envelope.header["tags_sha256"])
        if not hmac.compare_digest(tags.hexdigest(), expected):
            raise VerificationError(
                f"the ciphertext of {self.envelope.id} is not the one its sender signed "
                f"(tags_sha256 {tags.hexdigest()}, signed {expected})",
                rule=_RULE,
            )

    def decrypt(self, ciphertext: bytes | bytearray | memoryview) -> bytearray:
        """The whole plaintext of an in-memory ciphertext (one output buffer, no copies)."""
        layout = self.envelope.layout
        view = memoryview(ciphertext).cast("B")
        if len(view) != layout.ciphertext_size:
            raise VerificationError(
                f"ciphertext of {self.envelope.id} has {len(view)} bytes, the signed header "
                f"says {layout.ciphertext_size}",
                rule=_RULE,
            )
        out = bytearray(layout.size)
        target, tags = memoryview(out), hashlib.sha256()
        for i in range(layout.chunks):
            n = layout.plain_length(i)
            at = i * (layout.chunk_size + TAG)
            start = i * layout.chunk_size
            self._chunk(i, view[at : at + n + TAG], target[start : start + n], tags)
        self._check_tags(tags)
        return out

    def decrypt_stream(
        self, source: BinaryIO, sink: BinaryIO, progress: Progress | None = None
    ) -> int:
        """Decrypt from ``source`` to ``sink`` chunk by chunk; returns the plaintext size.

        Each chunk reaches ``sink`` only once it authenticated, but a failure may come after
        earlier chunks were written: write to a temporary file and keep it only on success.
        """
        layout = self.envelope.layout
        inbuf, outbuf = bytearray(layout.chunk_size + TAG), bytearray(layout.chunk_size)
        tags, done = hashlib.sha256(), 0
        for i in range(layout.chunks):
            n = layout.plain_length(i)
            try:
                src = _read_exactly(source, memoryview(inbuf)[: n + TAG], what="ciphertext")
            except InvalidInput as exc:
                raise VerificationError(
                    f"ciphertext of {self.envelope.id} is truncated: {exc}", rule=_RULE
                ) from None
            dst = memoryview(outbuf)[:n]
            self._chunk(i, src, dst, tags)
            sink.write(dst)
            done += n
            if progress is not None:
                progress(done, layout.size)
        if source.read(1):
            raise VerificationError(
                f"ciphertext of {self.envelope.id} goes on after its final chunk", rule=_RULE
            )
        self._check_tags(tags)
        return done


def open_envelope(
    envelope: Envelope,
    *,
    recipient_id: str,
    key: EncryptionKey,
    sender_key: PublicKey,
) -> Opener:
    """Check the envelope for ``recipient_id`` and unseal its content key (checks 2 to 5)."""
    # (2): the sender's registered signing key signed the header
    envelope.verify(sender_key)
    # (3): the caller is a recipient, with the key the header names
    entry = envelope.sealed_key(recipient_id)
    if entry["key_id"] != key.key_id:
        raise VerificationError(
            f"{envelope.id} is sealed to key {entry['key_id']} of {recipient_id}, not to the "
            f"key {key.key_id} at hand (was the encryption key replaced after sending?)",
            rule=_RULE,
        )
    params = params_of(envelope.header)
    digest = params_sha256(params)
    # (4): HPKE opens the sealed document key, bound to id, sender, recipient, parameters
    dek = _hpke.open_base(
        key.raw(),
        b64decode_strict(entry["enc"], what="enc"),
        b64decode_strict(entry["sealed_key"], what="sealed_key"),
        info=_HPKE_INFO,
        aad=_aad(envelope.id, envelope.sender, recipient_id, digest),
    )
    # (5): the key is the one the sender committed to
    content_key, commitment = derive_keys(dek, digest)
    if not hmac.compare_digest(commitment.hex(), str(envelope.header["key_commitment"])):
        raise VerificationError(
            f"the document key of {envelope.id} does not match the signed key commitment",
            rule=_RULE,
        )
    return Opener(envelope, content_key, digest)
