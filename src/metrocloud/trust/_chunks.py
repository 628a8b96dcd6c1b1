"""Chunked AES-256-GCM for documents: layout, nonces, key schedule, the ciphertext check.

The plaintext is cut into chunks of ``chunk_size`` bytes (the last one shorter, possibly
empty); chunk ``i`` is sealed with AES-256-GCM under the content key with

- nonce ``00 00 00 || i (8 bytes, big-endian) || final`` where ``final`` is ``01`` for the
  last chunk and ``00`` otherwise (the STREAM construction of Hoang, Reyhanitabar, Rogaway
  and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
  CRYPTO 2015): a reordered chunk fails at its index, a truncated document fails because no
  chunk but the last carries the final flag, an extended one because the last already did;
- associated data: the SHA-256 of the envelope parameters (sender, recipients, id, ...),
  so a chunk cannot be moved into another document.

The stored ciphertext is the concatenation ``ct_0 || tag_0 || ct_1 || tag_1 ...``: exactly
``size + 16 * chunks`` bytes. ``tags_sha256`` (SHA-256 over the tags in order) commits to all
of it for a holder of the key; the sender signs it, and a node checks it on upload by reading
only the 16-byte tags, so nothing in the hot path hashes the whole document twice.

Key schedule (RFC 5869 HKDF-SHA256), from the random 32-byte document key ``dek``::

    prk            = HKDF-Extract(salt = params_sha256, IKM = dek)
    content_key    = HKDF-Expand(prk, "metrocloud-exchange-v1 content key", 32)
    key_commitment = HKDF-Expand(prk, "metrocloud-exchange-v1 key commitment", 32)

The commitment in the signed header makes the encryption key-committing: every recipient
that unseals a key matching it decrypts the same ciphertext to the same plaintext (AES-GCM
alone is not committing; "invisible salamanders", Dodis et al., CRYPTO 2018).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from metrocloud.domain.errors import InvalidInput, VerificationError

__all__ = [
    "MAX_CHUNK",
    "MIN_CHUNK",
    "TAG",
    "CiphertextCheck",
    "Layout",
    "derive_keys",
    "nonce",
]

TAG = 16
MIN_CHUNK = 64
MAX_CHUNK = 16 * 1024 * 1024
_MAX_CHUNKS = 2**32
_RULE = "metrocloud exchange v1 chunked AEAD (docs/exchange.md#format)"


def nonce(index: int, final: bool) -> bytes:
    """The 12-byte AES-GCM nonce of chunk ``index``."""
    return b"\x00\x00\x00" + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")


def derive_keys(dek: bytes, params_sha256: bytes) -> tuple[bytes, bytes]:
    """``(content_key, key_commitment)`` from the document key and the parameters' digest."""
    prk = hmac.new(params_sha256, dek, hashlib.sha256).digest()

    def expand(label: bytes) -> bytes:
        return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=label).derive(prk)

    return (
        expand(b"metrocloud-exchange-v1 content key"),
        expand(b"metrocloud-exchange-v1 key commitment"),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """Where each chunk and tag sits in the ciphertext of a ``size``-byte document."""

    size: int
    chunk_size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidInput(f"document size must be an integer >= 0, got {self.size!r}")
        c = self.chunk_size
        if isinstance(c, bool) or not isinstance(c, int) or not MIN_CHUNK <= c <= MAX_CHUNK:
            raise InvalidInput(
                f"chunk_size must be an integer from {MIN_CHUNK} to {MAX_CHUNK}, got {c!r}",
                rule=_RULE,
            )
        if self.chunks > _MAX_CHUNKS:
            raise InvalidInput(f"document needs {self.chunks} chunks; at most {_MAX_CHUNKS}")

    @property
    def chunks(self) -> int:
        """At least one: an empty document is one empty final chunk (its tag only)."""
        return max(1, -(-self.size // self.chunk_size))

    @property
    def ciphertext_size(self) -> int:
        return self.size + TAG * self.chunks

    def plain_length(self, index: int) -> int:
        """Plaintext bytes in chunk ``index``."""
        if index < self.chunks - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.chunks - 1)


class CiphertextCheck:
    """Checks a ciphertext stream against its layout and signed tag digest, without the key.

    Feed the bytes in any pieces with :meth:`update`; :meth:`finish` raises
    :class:`VerificationError` unless exactly ``ciphertext_size`` bytes came and the tags
    hash to ``tags_sha256``. Only the tags are hashed: a node checks a 10 MB upload by
    hashing 160 bytes.
    """

    __slots__ = ("_chunk", "_expected", "_layout", "_pos", "_tag_buf", "_tags")

    def __init__(self, layout: Layout, tags_sha256: str) -> None:
        self._layout = layout
        self._expected = tags_sha256
        self._tags = hashlib.sha256()
        self._pos = 0  # bytes seen
        self._chunk = 0  # the chunk whose bytes come next
        self._tag_buf = bytearray()

    @property
    def received(self) -> int:
        return self._pos

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        layout = self._layout
        total = layout.ciphertext_size
        if self._pos + len(view) > total:
            raise VerificationError(
                f"ciphertext is longer than the {total} bytes its header declares",
                rule=_RULE,
            )
        step = layout.chunk_size + TAG
        while view:
            start = self._chunk * step
            tag_at = start + layout.plain_length(self._chunk)
            if self._pos < tag_at:  # chunk body: skip
                take = min(len(view), tag_at - self._pos)
            else:  # the chunk's tag
                take = min(len(view), tag_at + TAG - self._pos)
                self._tag_buf += view[:take]
                if len(self._tag_buf) == TAG:
                    self._tags.update(self._tag_buf)
                    self._tag_buf.clear()
                    self._chunk += 1
            self._pos += take
            view = view[take:]

    def finish(self) -> None:
        total = self._layout.ciphertext_size
        if self._pos != total:
            raise VerificationError(
                f"ciphertext is truncated: expected {total} bytes, got {self._pos}", rule=_RULE
            )
        found = self._tags.hexdigest()
        if not hmac.compare_digest(found, self._expected):
            raise VerificationError(
                f"ciphertext does not match its signed header: tags_sha256 expected "
                f"{self._expected}, computed {found}",
                rule=_RULE,
            )
