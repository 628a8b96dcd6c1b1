"""``metrocloud evidence``: an instrument's forensic timeline, evidence bundles out of the
local node, and the offline check of a bundle (no node, no database: docs/forensics.md)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

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

__all__ = ["evidence_app"]

evidence_app = typer.Typer(
    no_args_is_help=True,
    help="Forensic support: an instrument's timeline and evidence bundles (docs/forensics.md).",
)
app.add_typer(evidence_app, name="evidence")

Instrument = Annotated[str, typer.Option("--instrument", help="The instrument (ins-...).")]
From = Annotated[
    str | None,
    typer.Option(
        "--from", help="Window start, inclusive: ISO 8601 date or time (UTC without a zone)."
    ),
]
To = Annotated[
    str | None,
    typer.Option("--to", help="Window end, exclusive: ISO 8601 date or time (UTC without a zone)."),
]


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{option} must be an ISO 8601 date (YYYY-MM-DD) or time, got {text!r}"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@evidence_app.command("export")
def evidence_export(
    instrument: Instrument,
    output: Annotated[Path, typer.Option("--output", "-o", help="The bundle file to write.")],
    start: From = None,
    end: To = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Write an instrument's evidence bundle, signed by the node key.

    Every statement about the instrument with an inclusion proof to one signed tree head,
    its readings in the window (Parquet) and its timeline. Runs on the local node, as the
    authority that operates it (the export lands in the owners' access log)."""
    from metrocloud.services.forensics import build_bundle, node_actor
    from metrocloud.services.node import Node

    with _errors():
        lo, hi = _when(start, "--from"), _when(end, "--to")
        node = Node.open(_settings(data_dir, db), create=False)
        bar = _progress()  # shown from the first step on: a refused export prints one line
        track = _tracker(bar)

        def step(what: str, done: int, total: int) -> None:
            if not bar.live.is_started:
                bar.start()
            track(what, done, total)

        try:
            bundle = build_bundle(
                node, node_actor(node), instrument, output, start=lo, end=hi, progress=step
            )
        finally:
            if bar.live.is_started:
                bar.stop()
            node.close()
    out.print(
        f"wrote {escape(str(output))}: evidence bundle of {bundle.instrument_id}, "
        f"{bundle.statements} statements with inclusion proofs to the tree head of size "
        f"{bundle.tree_size}, {bundle.readings} readings; SHA-256 {bundle.sha256}",
        highlight=False,
        soft_wrap=True,
    )


@evidence_app.command("verify")
def evidence_verify(
    bundle: Annotated[Path, typer.Argument(help="The evidence bundle file.")],
    trusted_key: Annotated[
        Path | None,
        typer.Option(
            "--trusted-key",
            help="The node's public key (PEM or base64 SPKI file) to pin; default: trust the "
            "key the bundle carries and print its id.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check an evidence bundle offline, with no node and no database.

    Prints every check in order, then the verdict. Exit 0 only when every check holds, 1
    when one fails, 2 when the input cannot be used."""
    from metrocloud.formats.evidence import verify_bundle
    from metrocloud.trust.keys import PublicKey

    with _errors():
        key = None
        if trusted_key is not None:
            try:
                text = trusted_key.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(f"cannot read --trusted-key {trusted_key}: {exc}") from None
            key = PublicKey.from_any(text)
        report = verify_bundle(bundle, trusted_key=key)
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for c in report.checks:
            mark = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "skip": "SKIP"}
            out.print(
                f"({c.number:>2}) {mark[c.status]} {escape(c.title)}: {escape(c.detail)}",
                highlight=False,
                soft_wrap=True,
            )
    failed = report.failure
    if failed is not None:
        err.print(
            f"[red]evidence bundle {escape(str(bundle))} is NOT valid[/red]: check "
            f"({failed.number}) {escape(failed.title)} failed: {escape(failed.detail)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if not as_json:
        trust = (
            "pinned with --trusted-key"
            if report.key_pinned
            else "carried in the bundle: compare it with the node's published key id, or pin "
            "the key with --trusted-key"
        )
        out.print(
            f"[green]VALID[/green]: evidence bundle of {report.instrument_id} from node "
            f"{report.node_id}: {report.statements} statements in its log at size "
            f"{report.tree_size}, {report.readings} readings. Node key {report.key_id} "
            f"{trust}.",
            highlight=False,
            soft_wrap=True,
        )


def _describe(e: dict[str, Any]) -> str:
    d = e["details"]
    kind = e["type"]
    if kind == "registered":
        return f"registered serial {d['serial']} under {d['certificate_id']}"
    if kind == "certificate":
        return f"certificate {e['ref']} {d['action']} -> {d['status']} (revision {d['revision']})"
    if kind == "declaration":
        return f"declaration {e['ref']} module {d['module']} of {d['declared_on']}"
    if kind in ("event", "verification"):
        result = f" ({d['result']})" if kind == "verification" else ""
        return f"{d['kind']}{result} by {d['recorded_by']} -> {d['state_after']}"
    if kind == "measurements":
        return (
            f"{d['quantity']} on {d['day']}: {d['count']} readings, {d['first_value']} to "
            f"{d['last_value']} {d['unit'] or ''}".rstrip()
        )
    if kind == "flag":
        return f"intake flag {d['kind']}: {d['detail']}"
    if kind == "quarantine":
        return f"batch quarantined ({d['reason']}): {d['detail']}"
    return f"{d['action']} by {d['reader_id']} ({d['reader_role']})" + (
        " by grant" if d["via_grant"] else ""
    )


@evidence_app.command("timeline")
def evidence_timeline(
    instrument: Instrument,
    start: From = None,
    end: To = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline as JSON.")] = False,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Print an instrument's forensic timeline.

    Life cycle with leaf indexes, verification results, daily measurement summary, intake
    findings and reads by other parties, in time order."""
    from metrocloud.services.forensics import node_actor, timeline
    from metrocloud.services.node import Node

    with _errors():
        lo, hi = _when(start, "--from"), _when(end, "--to")
        node = Node.open(_settings(data_dir, db), create=False)
        try:
            story = timeline(node, node_actor(node), instrument, start=lo, end=hi).to_json()
        finally:
            node.close()
    if as_json:
        typer.echo(json.dumps(story, ensure_ascii=False))
        return
    table = Table(title=f"timeline of {instrument}")
    table.add_column("at (UTC)", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("leaf", justify="right")
    table.add_column("what", overflow="fold")
    for e in story["entries"]:
        leaf = "" if e["leaf_index"] is None else str(e["leaf_index"])
        table.add_row(e["at"], e["type"], leaf, escape(_describe(e)))
    out.print(table)
