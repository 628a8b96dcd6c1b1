"""The grid trust anchor and node admissions (``metrocloud grid init-anchor`` / ``admit``).

The anchor is one key pair, kept by whoever governs the grid (for example the WELMEC
secretariat or a body the member states appoint). Its private key lives in an encrypted key
store like a node key (``<dir>/keys/anchor.key.pem``, PKCS#8 with a passphrase from
``$METROCLOUD_ANCHOR_PASSPHRASE`` or ``<dir>/keys/passphrase``); its public key is published
as ``<dir>/anchor.pub.pem`` and pinned by every node (``metrocloud grid join``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from metrocloud.domain.errors import Conflict, InvalidInput, NotFound
from metrocloud.domain.parties import validate_country
from metrocloud.trust.admission import NodeAdmission, SignedAdmission, node_id_for, sign_admission
from metrocloud.trust.keys import KeyStore, PrivateKey, PublicKey
from metrocloud.trust.statements import utc_timestamp

__all__ = [
    "ANCHOR_KEY",
    "ANCHOR_PASSPHRASE_ENV",
    "ANCHOR_PUBLIC_FILE",
    "admit_node",
    "anchor_public_key",
    "init_anchor",
    "load_anchor",
]

ANCHOR_KEY = "anchor"
ANCHOR_PUBLIC_FILE = "anchor.pub.pem"
ANCHOR_PASSPHRASE_ENV = "METROCLOUD_ANCHOR_PASSPHRASE"  # noqa: S105 (a variable name)


def _store(directory: Path) -> KeyStore:
    keys = Path(directory) / "keys"
    return KeyStore(keys, KeyStore.passphrase_from(keys, ANCHOR_PASSPHRASE_ENV))


def init_anchor(directory: Path) -> PublicKey:
    """Create the anchor key pair in ``directory``; refuses to replace an existing one."""
    directory = Path(directory)
    store = _store(directory)
    if store.exists(ANCHOR_KEY):
        raise Conflict(
            f"{directory} already holds a grid anchor ({store.path(ANCHOR_KEY)}); a second "
            "anchor would split the grid, so nothing was changed"
        )
    key = store.load_or_create(ANCHOR_KEY)
    (directory / ANCHOR_PUBLIC_FILE).write_text(key.public_key.to_pem())
    return key.public_key


def load_anchor(directory: Path) -> PrivateKey:
    store = _store(Path(directory))
    if not store.exists(ANCHOR_KEY):
        raise NotFound(
            f"no grid anchor in {directory}; create one with 'metrocloud grid init-anchor "
            f"--dir {directory}'"
        )
    return store.load(ANCHOR_KEY)


def anchor_public_key(path: Path) -> PublicKey:
    """The anchor's public key from its PEM file, or from an anchor directory."""
    path = Path(path)
    if path.is_dir():
        path = path / ANCHOR_PUBLIC_FILE
    try:
        return PublicKey.from_any(path.read_text())
    except FileNotFoundError:
        raise NotFound(f"no anchor public key at {path}") from None


def admit_node(
    anchor: PrivateKey,
    *,
    public_key: PublicKey,
    country: str,
    base_url: str,
    now: datetime,
    valid_days: int = 730,
) -> SignedAdmission:
    """The anchor's admission of the node with ``public_key`` in ``country`` at ``base_url``."""
    validate_country(country)
    if not 1 <= valid_days <= 3650:
        raise InvalidInput(f"an admission is valid for 1 to 3650 days, got {valid_days}")
    admission = NodeAdmission(
        node_id=node_id_for(country, public_key.key_id),
        country=country,
        base_url=base_url,
        public_key=public_key.to_spki_b64(),
        key_id=public_key.key_id,
        anchor_id=anchor.key_id,
        issued_at=utc_timestamp(now),
        expires_at=utc_timestamp(now + timedelta(days=valid_days)),
    )
    return sign_admission(admission, anchor)
