"""``metrocloud compliance report``: an e-compliance report of the local node to a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from metrocloud.cli._common import (
    CliError,
    DataDir,
    Db,
    _errors,
    _progress,
    _settings,
    _tracker,
    app,
    out,
)

__all__ = ["compliance_app", "report"]

compliance_app = typer.Typer(
    no_args_is_help=True,
    help="E-compliance reports per instrument, manufacturer and type (docs/compliance.md).",
)
app.add_typer(compliance_app, name="compliance")

_FORMATS = ("json", "html", "pdf")


def _write(path: Path, data: bytes) -> None:
    """All of the file or none: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@compliance_app.command("report")
def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    instrument: Annotated[
        str | None, typer.Option("--instrument", help="Report on this instrument (ins-...).")
    ] = None,
    manufacturer: Annotated[
        str | None,
        typer.Option("--manufacturer", help="Report on every instrument of this party (pty-...)."),
    ] = None,
    type_: Annotated[
        str | None,
        typer.Option("--type", help="Report on every instrument of this type (cer-...)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="json, html or pdf; default: the suffix of -o."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=1, max=1000, help="Failing instruments listed in a fleet report."
        ),
    ] = 1000,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Judge the compliance criteria on the local node, as its authority, and write the
    report as JSON, HTML (one self-contained page with charts) or PDF.

    The node's reads are access-logged under the node id, like any authority's.
    """
    from metrocloud.services import compliance as svc
    from metrocloud.services.node import Node

    with _errors():
        chosen = [x for x in (instrument, manufacturer, type_) if x]
        if len(chosen) != 1:
            raise CliError("name exactly one of --instrument, --manufacturer and --type")
        if fmt is None:
            fmt = output.suffix.lstrip(".").lower()
            if fmt not in _FORMATS:
                raise CliError(
                    f"give --format (json, html, pdf): the suffix of {output} names none"
                )
        elif fmt not in _FORMATS:
            raise CliError(f"--format must be one of json, html, pdf, got {fmt!r}")
        node = Node.open(_settings(data_dir, db), create=False)
        try:
            actor = svc.local_authority(node)
            with _progress() as bar:
                track = _tracker(bar)
                result: svc.Report
                if instrument:
                    result = svc.instrument_report(node, actor, instrument)
                elif manufacturer:
                    result = svc.manufacturer_report(
                        node, actor, manufacturer, limit=limit, progress=track
                    )
                else:
                    assert type_ is not None
                    result = svc.type_report(node, actor, type_, limit=limit, progress=track)
                track("render", 0, 1)
                data = svc.render(result, fmt)
                track("render", 1, 1)
            _write(output, data)
        finally:
            node.close()
    if isinstance(result, svc.InstrumentReport):
        what = f"instrument {result.instrument.serial} ({result.instrument.id})"
        figures = ""
    else:
        what = f"{result.kind} {result.subject.name} ({result.subject.id})"
        figures = f", {result.instruments} instruments, {result.failing.total} failing"
    out.print(
        f"{what}: verdict {result.verdict.value}{figures}; wrote {fmt} to {output}",
        highlight=False,
        soft_wrap=True,
    )
