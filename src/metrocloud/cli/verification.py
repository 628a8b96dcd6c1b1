"""``metrocloud verification run``: remote verification of instruments on the node in
``--data-dir`` (docs/verification.md).

The authority is who holds its key: ``--key`` is the authority's private key file (PKCS#8
PEM), ``--party`` its party id; the key must be the one registered for that party at the
node. The command evaluates the lot in parts, signs every result with the key here (the key
never goes to the node) and records the signed results, one transaction per part. It prints
a summary and exits 1 when an instrument failed verification (2 on errors), so a script can
act on the failures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from metrocloud.cli._common import (
    CliError,
    DataDir,
    Db,
    _errors,
    _progress,
    _settings,
    _tracker,
    app,
    err,
    out,
)
from metrocloud.domain.errors import MetrocloudError

if TYPE_CHECKING:
    from metrocloud.services.common import Actor
    from metrocloud.services.node import Node
    from metrocloud.services.verification import VerificationResult
    from metrocloud.trust.keys import PrivateKey

__all__ = ["KEY_PASSPHRASE_ENV", "verification_app"]

#: passphrase of an encrypted key file (else a ``passphrase`` file beside it, as the key
#: store keeps it)
KEY_PASSPHRASE_ENV = "METROCLOUD_AUTHORITY_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
#: failed instruments listed in the summary table (all are in the ledger)
_SHOWN = 50

verification_app = typer.Typer(
    no_args_is_help=True,
    help="Remote verification: evaluate, sign with the authority's key, record "
    "(docs/verification.md).",
)
app.add_typer(verification_app, name="verification")


def _lot(instruments: Sequence[str] | None, lot: Path | None) -> list[str]:
    if bool(instruments) == (lot is not None):
        raise CliError(
            "name the instruments with --instrument (repeatable) or --lot FILE, not both"
        )
    if lot is None:
        return list(instruments or ())
    try:
        text = lot.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read lot file {lot}: {exc.strerror}") from None
    ids = []
    for line in text.splitlines():
        iid = line.split("#", 1)[0].strip()
        if iid:
            ids.append(iid)
    if not ids:
        raise CliError(f"lot file {lot} names no instrument (one instrument id a line)")
    return ids


def _key(path: Path) -> PrivateKey:
    from metrocloud.trust.keys import KeyStore, PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror}") from None
    passphrase = None
    if b"ENCRYPTED" in data:
        if (
            os.environ.get(KEY_PASSPHRASE_ENV) is None
            and not (path.parent / "passphrase").is_file()
        ):
            raise CliError(
                f"key file {path} is encrypted: set ${KEY_PASSPHRASE_ENV} or keep its "
                "passphrase in a 'passphrase' file beside it (mode 0600)"
            )
        passphrase = KeyStore.passphrase_from(path.parent, KEY_PASSPHRASE_ENV)
    return PrivateKey.from_pem(data, passphrase)


def _authority(node: Node, party_id: str, key: PrivateKey) -> Actor:
    from sqlalchemy import select

    from metrocloud.domain.parties import PartyRole
    from metrocloud.services.common import Actor
    from metrocloud.store.schema import parties

    with node.db.read() as conn:
        row = conn.execute(select(parties).where(parties.c.id == party_id)).first()
    if row is None:
        raise CliError(f"party {party_id} is not admitted at node {node.node_id}")
    if row.role != PartyRole.AUTHORITY.value:
        raise CliError(f"party {party_id} is {row.role}; only an authority verifies instruments")
    if row.key_id != key.key_id:
        raise CliError(
            f"the key in the key file (key id {key.key_id}) is not the key registered for "
            f"{party_id} ({row.key_id or 'none registered'}); results must be signed by the "
            "authority's registered key"
        )
    return Actor(
        party_id=row.id,
        role=PartyRole.AUTHORITY,
        country=row.country,
        key_id=row.key_id,
        public_key=row.public_key,
    )


def _summary(results: Sequence[VerificationResult]) -> Table:
    failed = [r for r in results if not r.passed]
    table = Table(
        title=f"{len(results)} verified: {len(results) - len(failed)} passed, {len(failed)} failed"
    )
    table.add_column("instrument", no_wrap=True)
    table.add_column("serial", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("verified until / reasons", overflow="fold")
    shown = failed[:_SHOWN] or results[:1]
    for r in shown:
        detail = (
            str(r.verified_until)
            if r.passed
            else "; ".join(f"({f.code}) {f.message}" for f in r.reasons)
        )
        table.add_row(r.instrument_id, r.serial, r.outcome.value, escape(detail))
    if len(failed) > _SHOWN:
        table.caption = f"... and {len(failed) - _SHOWN} more failed (see the ledger)"
    return table


@verification_app.command("run")
def run(
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            help="The authority's private key (PKCS#8 PEM); an encrypted one takes its "
            f"passphrase from ${KEY_PASSPHRASE_ENV} or a 'passphrase' file beside it.",
        ),
    ],
    party: Annotated[str, typer.Option("--party", help="The authority's party id (pty-...).")],
    instrument: Annotated[
        list[str] | None,
        typer.Option("--instrument", "-i", help="An instrument to verify (repeatable)."),
    ] = None,
    lot: Annotated[
        Path | None,
        typer.Option("--lot", help="A file of instrument ids, one a line ('#' comments)."),
    ] = None,
    part: Annotated[
        int,
        typer.Option("--part", min=1, help="Instruments per transaction (at most max_batch)."),
    ] = 1000,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Verify instruments remotely: evaluate the checklist, sign each result with the
    authority's key here, record the signed results in the ledger (verified or
    verification_failed). Exits 1 if an instrument failed verification."""
    from metrocloud.services import verification as ver
    from metrocloud.services.node import Node

    results: list[VerificationResult] = []
    with _errors():
        ids = _lot(instrument, lot)
        private = _key(key)
        node = Node.open(_settings(data_dir, db), create=False)
        try:
            actor = _authority(node, party, private)
            size = min(part, node.settings.max_batch)
            with _progress() as bar:
                track = _tracker(bar)
                track("evaluated", 0, len(ids))
                track("recorded", 0, len(ids))
                for start in range(0, len(ids), size):
                    chunk = ids[start : start + size]
                    try:
                        evaluated = ver.evaluate(node, actor, chunk)
                        track("evaluated", start + len(chunk), len(ids))
                        signed = [ver.sign_result(r, private) for r in evaluated]
                        ver.record(node, actor, signed)
                    except MetrocloudError as exc:
                        if not results:
                            raise
                        raise CliError(
                            f"{exc} (instruments {start + 1} to {start + len(chunk)}; the "
                            f"{len(results)} before them are recorded)"
                        ) from None
                    results += evaluated
                    track("recorded", start + len(chunk), len(ids))
        finally:
            node.close()
    out.print(_summary(results))
    failed = sum(1 for r in results if not r.passed)
    if failed:
        err.print(f"{failed} of {len(results)} instrument(s) failed verification")
        raise typer.Exit(1)
