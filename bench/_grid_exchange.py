"""Confidential exchange throughput (bench/grid.py, issue #6).

In memory: ``seal_document`` and ``open_envelope(...).decrypt`` of a 10 MB document against
raw AES-256-GCM (``cryptography``'s ``AESGCM.encrypt`` / ``decrypt`` of the same bytes in one
call), measured in the same rounds, back to back, so the machine's load hits both alike.

Over HTTP, through one node: a manufacturer seals a document to a notified body, uploads it
(``POST /api/v1/exchange/messages``), the notified body reads the envelope, downloads the
ciphertext, opens and decrypts it (the plaintext must match).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from metrocloud.services.exchange import UPLOAD_MEDIA_TYPE, upload_prefix
from metrocloud.store.ids import new_id
from metrocloud.trust.confidential import Envelope, open_envelope, seal_document
from metrocloud.trust.encryption import EncryptionKey, KeyBinding, bind_encryption_key
from metrocloud.trust.keys import PrivateKey, PublicKey

__all__ = ["HttpExchange", "InMemory", "http_exchange", "in_memory"]

MB = 1_000_000


@dataclass(frozen=True, kw_only=True)
class InMemory:
    size: int
    rounds: int
    #: medians over the rounds, MB/s
    seal_mb_s: float
    open_mb_s: float
    raw_encrypt_mb_s: float
    raw_decrypt_mb_s: float
    #: medians of the per-round ratios (ours over raw, same round)
    seal_ratio: float
    open_ratio: float


def in_memory(size: int, rounds: int, say: Callable[[str], None]) -> InMemory:
    doc = os.urandom(size)
    sender, recipient = PrivateKey.generate(), EncryptionKey.generate()
    sender_id, recipient_id = new_id("pty", "DE"), new_id("pty", "DE")
    raw = AESGCM(AESGCM.generate_key(bit_length=256))
    seal_s, open_s, enc_s, dec_s, seal_r, open_r = [], [], [], [], [], []
    for i in range(rounds + 1):  # round 0 warms up (allocator, code paths)
        iv = os.urandom(12)
        t0 = time.perf_counter()
        ct_raw = raw.encrypt(iv, doc, None)
        t1 = time.perf_counter()
        env, ct = seal_document(
            doc,
            message_id=new_id("xch", "DE"),
            sender_id=sender_id,
            sender_key=sender,
            recipients=[(recipient_id, recipient.public_key)],
        )
        t2 = time.perf_counter()
        back_raw = raw.decrypt(iv, ct_raw, None)
        t3 = time.perf_counter()
        back = open_envelope(
            env, recipient_id=recipient_id, key=recipient, sender_key=sender.public_key
        ).decrypt(ct)
        t4 = time.perf_counter()
        t_enc, t_seal, t_dec, t_open = t1 - t0, t2 - t1, t3 - t2, t4 - t3
        if back != doc or back_raw != doc:
            raise RuntimeError("a round trip did not give the document back")
        if i == 0:
            continue
        enc_s.append(t_enc)
        seal_s.append(t_seal)
        dec_s.append(t_dec)
        open_s.append(t_open)
        seal_r.append(t_enc / t_seal)
        open_r.append(t_dec / t_open)
        say(
            f"  round {i}: seal {size / MB / t_seal:,.0f} MB/s (raw {size / MB / t_enc:,.0f}), "
            f"open {size / MB / t_open:,.0f} MB/s (raw {size / MB / t_dec:,.0f})"
        )

    def rate(times: list[float]) -> float:
        return size / MB / statistics.median(times)

    return InMemory(
        size=size,
        rounds=rounds,
        seal_mb_s=rate(seal_s),
        open_mb_s=rate(open_s),
        raw_encrypt_mb_s=rate(enc_s),
        raw_decrypt_mb_s=rate(dec_s),
        seal_ratio=statistics.median(seal_r),
        open_ratio=statistics.median(open_r),
    )


@dataclass(frozen=True, kw_only=True)
class HttpExchange:
    size: int
    rounds: int
    #: medians over the rounds, MB of plaintext per second
    upload_mb_s: float
    download_mb_s: float
    #: seal + upload + envelope + download + open and decrypt
    end_to_end_mb_s: float


def http_exchange(
    sender: Any,
    sender_id: str,
    sender_key: PrivateKey,
    recipient: Any,
    recipient_id: str,
    recipient_signing: PrivateKey,
    *,
    size: int,
    rounds: int,
    say: Callable[[str], None],
) -> HttpExchange:
    """``sender`` and ``recipient`` are httpx clients of one node's ``/api/v1``."""
    enc_key = EncryptionKey.generate()
    binding = bind_encryption_key(recipient_id, enc_key.public_key, recipient_signing)
    recipient.post("/exchange/keys", json=binding.to_json()).raise_for_status()
    country = sender.get("/node").json()["country"]
    doc = os.urandom(size)
    ups, downs, totals = [], [], []
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        # the sender's side: the recipient's key, its binding checked, then seal and upload
        answer = sender.get(f"/exchange/keys/{recipient_id}").json()
        bound = KeyBinding.from_json(answer["binding"])
        bound.verify(PublicKey.from_spki_b64(answer["signing_key"]))
        env, ct = seal_document(
            doc,
            message_id=new_id("xch", country),
            sender_id=sender_id,
            sender_key=sender_key,
            recipients=[(recipient_id, bound.public_key)],
        )
        body = upload_prefix(env) + ct
        t1 = time.perf_counter()
        r = sender.post(
            "/exchange/messages", content=body, headers={"Content-Type": UPLOAD_MEDIA_TYPE}
        )
        t2 = time.perf_counter()
        if r.status_code != 201:
            raise RuntimeError(f"upload answered {r.status_code}: {r.text[:500]}")
        message_id = r.json()["id"]
        # the recipient's side: envelope, ciphertext, open and decrypt
        meta = recipient.get(f"/exchange/messages/{message_id}").json()
        envelope = Envelope.from_json(meta["envelope"])
        t3 = time.perf_counter()
        got = recipient.get(f"/exchange/messages/{message_id}/content")
        t4 = time.perf_counter()
        got.raise_for_status()
        plain = open_envelope(
            envelope, recipient_id=recipient_id, key=enc_key, sender_key=sender_key.public_key
        ).decrypt(got.content)
        t5 = time.perf_counter()
        if plain != doc:
            raise RuntimeError(f"{message_id} did not decrypt to the document sent")
        if i == 0:
            continue  # warm-up
        ups.append(t2 - t1)
        downs.append(t4 - t3)
        totals.append(t5 - t0)
        say(
            f"  {message_id}: upload {size / MB / (t2 - t1):,.0f} MB/s, download "
            f"{size / MB / (t4 - t3):,.0f} MB/s, end to end {size / MB / (t5 - t0):,.0f} MB/s"
        )

    def rate(times: list[float]) -> float:
        return size / MB / statistics.median(times)

    return HttpExchange(
        size=size,
        rounds=rounds,
        upload_mb_s=rate(ups),
        download_mb_s=rate(downs),
        end_to_end_mb_s=rate(totals),
    )
