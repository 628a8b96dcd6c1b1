"""The demos' parties as a newcomer can act as them: each with its own key directory, its
X25519 key registered with its node, and one confidential exchange already made.

``metrocloud demo`` and ``metrocloud demo --grid N`` hand out a token per role; with this,
also the key directory that ``metrocloud exchange --keys DIR`` reads (docs/exchange.md
"Keys"): ``<party>.key.pem`` (the signing key the party was admitted with) and, for the
parties that take part in the exchange, ``<party>.x25519.key.pem``, both encrypted PKCS#8,
directory 0700, files 0600, the passphrase where the exchange CLI looks for it
(``$METROCLOUD_KEY_PASSPHRASE``, else a random one in ``DIR/passphrase``). One directory per
party, holding that party's keys only: a party's private keys are in its own hands and
nowhere else, never at a node.

Everything goes through the code the parties' own tools use: :class:`KeyStore` and
:func:`load_or_create_encryption_key` write the keys, :func:`xch.register_key` takes the
binding that ``metrocloud exchange keygen`` posts, and :func:`send_document` /
:func:`receive_document` do what ``exchange send`` and ``exchange fetch --ack`` do at the
sender's and the recipient's node (the nodes only ever see envelopes and ciphertext).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metrocloud._fs import fsync_directory
from metrocloud.domain.errors import Conflict, VerificationError
from metrocloud.domain.parties import PartyRole
from metrocloud.services import exchange as xch
from metrocloud.services import parties as pty
from metrocloud.services._exchange_common import EXCHANGE_ROLES
from metrocloud.services.common import Actor
from metrocloud.services.node import Node
from metrocloud.store.ids import new_id
from metrocloud.trust.confidential import Envelope, open_envelope, seal_document
from metrocloud.trust.encryption import (
    EncryptionKey,
    KeyBinding,
    bind_encryption_key,
    load_or_create_encryption_key,
)
from metrocloud.trust.keys import KeyStore, PrivateKey, PublicKey
from metrocloud.trust.receipts import Receipt, sign_receipt

__all__ = [
    "PartyKeys",
    "SeededMessage",
    "admit_with_keys",
    "private_directory",
    "receive_document",
    "register_encryption_key",
    "send_document",
    "technical_file",
]

#: the signing key's name in the store between its creation and the party's admission (the
#: party id, which names the key file, is given by the admission)
_PENDING = "pending-admission"


@dataclass(frozen=True, kw_only=True)
class PartyKeys:
    """A party's key directory and the keys in it (held by the seeding, the party's side)."""

    party_id: str
    directory: Path
    signing: PrivateKey = field(repr=False)
    encryption: EncryptionKey | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class SeededMessage:
    """A document sent, opened by its recipients and acknowledged."""

    message_id: str
    sender_id: str
    recipient_ids: tuple[str, ...]
    content_type: str
    document: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.document).hexdigest()


def private_directory(path: Path) -> Path:
    """``path`` and its missing parents created with mode 0700 (mkdir's ``parents`` would
    give the parents the umask's mode: the parties' directories are nobody else's)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700)
        os.chmod(p, 0o700)  # exactly, whatever the umask
    return path


def admit_with_keys(
    node: Node,
    directory: Path,
    *,
    name: str,
    role: PartyRole,
    nb_number: str | None = None,
    country: str | None = None,
) -> tuple[dict[str, Any], PartyKeys]:
    """Admit a party whose signing key is created in its own (new, empty) key directory.

    The key is made by the key store under a provisional name, the party admitted with its
    public half, and the file then renamed to ``<party id>.key.pem``: the private key is
    written once, encrypted, and never leaves the directory."""
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} is not empty; a party's key directory holds its keys only")
    private_directory(directory)
    store = KeyStore(directory, KeyStore.passphrase_from(directory))
    key = store.load_or_create(_PENDING)
    party, _ = pty.admit_party(
        node,
        None,
        name=name,
        role=role,
        nb_number=nb_number,
        country=country,
        public_key=key.public_key.to_spki_b64(),
    )
    os.rename(store.path(_PENDING), store.path(party["id"]))
    fsync_directory(directory)
    return party, PartyKeys(party_id=party["id"], directory=directory, signing=key)


def register_encryption_key(node: Node, party: dict[str, Any], keys: PartyKeys) -> PartyKeys:
    """What ``metrocloud exchange keygen --node --token`` does: an X25519 key beside the
    signing key, its binding signed with that key and registered with the party's node.
    Parties that take no part in the exchange (the node admin) are returned unchanged."""
    if PartyRole(party["role"]) not in EXCHANGE_ROLES:
        return keys
    passphrase = KeyStore.passphrase_from(keys.directory)
    key = load_or_create_encryption_key(keys.directory, passphrase, keys.party_id)
    binding = bind_encryption_key(keys.party_id, key.public_key, keys.signing)
    xch.register_key(node, Actor.of_party(party), binding.to_json())
    return PartyKeys(
        party_id=keys.party_id, directory=keys.directory, signing=keys.signing, encryption=key
    )


def _checked_binding(answer: dict[str, Any], party_id: str) -> KeyBinding:
    """The recipient's binding, checked by the sender itself (as the CLI does) against the
    party's signing key: a node cannot slip in a key of its own."""
    binding = KeyBinding.from_json(answer["binding"])
    if binding.party_id != party_id or answer["signing_key"] is None:
        raise VerificationError(f"the node answered a key binding of {binding.party_id}")
    binding.verify(PublicKey.from_spki_b64(answer["signing_key"]))
    return binding


def send_document(
    node: Node,
    sender: dict[str, Any],
    keys: PartyKeys,
    recipient_ids: Sequence[str],
    document: bytes,
    *,
    content_type: str,
) -> str:
    """``metrocloud exchange send`` at the sender's node: each recipient's key fetched there
    (from its home node for a party homed elsewhere) and checked, the document sealed on the
    sender's side, the envelope and ciphertext uploaded. Returns the message id."""
    actor = Actor.of_party(sender)
    recipients = [
        (p, _checked_binding(xch.get_key(node, actor, p), p).public_key) for p in recipient_ids
    ]
    env, ciphertext = seal_document(
        document,
        message_id=new_id("xch", node.country),
        sender_id=keys.party_id,
        sender_key=keys.signing,
        recipients=recipients,
        content_type=content_type,
    )
    upload = xch.begin_upload(node, actor, env.to_bytes())
    upload.write(ciphertext)
    return str(upload.finish()["id"])


def receive_document(
    node: Node, recipient: dict[str, Any], keys: PartyKeys, message_id: str
) -> tuple[bytes, Receipt]:
    """``metrocloud exchange fetch --ack`` at the recipient's node: the envelope checked
    with the sender's key as this node knows it, the ciphertext fetched and decrypted with
    the recipient's own key, then a signed receipt submitted (it travels back to the
    sender's node through the grid when the sender is homed elsewhere)."""
    if keys.encryption is None:
        raise Conflict(f"{keys.party_id} holds no encryption key; it takes no part in exchange")
    actor = Actor.of_party(recipient)
    env = Envelope.from_json(xch.get_message(node, actor, message_id)["envelope"])
    sender_key = PublicKey.from_spki_b64(pty.get_party(node, env.sender)["public_key"])
    opener = open_envelope(
        env, recipient_id=keys.party_id, key=keys.encryption, sender_key=sender_key
    )
    plaintext = bytes(opener.decrypt(xch.open_content(node, actor, message_id).path.read_bytes()))
    receipt = sign_receipt(env, keys.party_id, keys.signing)
    xch.submit_receipt(node, actor, message_id, receipt.to_json())
    return plaintext, receipt


# -- the document ------------------------------------------------------------------------------


def _pdf_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def technical_file(
    *, manufacturer: str, notified_body: str, model: str, reference: str, issued: str
) -> bytes:
    """A small one-page PDF: the technical documentation a manufacturer sends with its
    application for EU-type examination (MID 2014/32/EU Annex II, module B, point 3).
    ``reference`` makes each document unique (so a search for it in a node's files means
    something)."""
    lines = [
        "Technical documentation - application for EU-type examination",
        "Directive 2014/32/EU (MID), Annex II, module B, point 3",
        f"Manufacturer: {manufacturer}",
        f"Notified body: {notified_body}",
        f"Instrument type: {model}",
        f"Document reference: {reference}",
        f"Date: {issued}",
        "Contents: general description; design and manufacturing drawings; legally relevant",
        "software identification and protection; test reports (climatic, EMC, durability);",
        "sealing plan; instructions for installation and use. CONFIDENTIAL.",
    ]
    text = "BT /F1 10 Tf 50 790 Td 14 TL " + " ".join(f"({_pdf_text(s)}) '" for s in lines)
    stream = (text + " ET").encode("cp1252", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
