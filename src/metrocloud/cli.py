"""The ``metrocloud`` command line (typer + rich)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from metrocloud import __version__
from metrocloud.domain.errors import MetrocloudError
from metrocloud.domain.parties import PartyRole

__all__ = ["app", "main"]

app = typer.Typer(
    name="metrocloud",
    no_args_is_help=True,
    add_completion=False,
    help="metrocloud: the core platform of the European Metrology Cloud.",
)
ledger_app = typer.Typer(no_args_is_help=True, help="The node's transparency log.")
app.add_typer(ledger_app, name="ledger")
aas_app = typer.Typer(
    no_args_is_help=True, help="Administrative shells (AAS v3.0) of instruments and types."
)
app.add_typer(aas_app, name="aas")
ocmf_app = typer.Typer(
    no_args_is_help=True,
    help="Signed meter readings of EV charging points (OCMF, S.A.F.E. e.V.).",
)
app.add_typer(ocmf_app, name="ocmf")

out = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        "-d",
        envvar="METROCLOUD_DATA_DIR",
        help="Directory for keys, the SQLite file and the lake.",
    ),
]
Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="METROCLOUD_DB",
        help="Database URL, e.g. postgresql+psycopg://"
        "user@127.0.0.1:5432/db; default SQLite in --data-dir.",
    ),
]
Host = Annotated[str, typer.Option("--host", help="Address to listen on.")]
Port = Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")]
Country = Annotated[
    str,
    typer.Option(
        "--country",
        envvar="METROCLOUD_COUNTRY",
        help="Member state of the node (ISO 3166-1 alpha-2).",
    ),
]


class CliError(Exception):
    pass


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (MetrocloudError, CliError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _settings(data_dir: Path, db: str | None, **kw: Any) -> Any:
    from metrocloud.services.settings import Settings

    values: dict[str, Any] = {"data_dir": data_dir, **{k: v for k, v in kw.items() if v}}
    if db:
        values["db"] = db
    return Settings(**values)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _tracker(bar: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, Any] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what, total=total)
        bar.update(tasks[what], completed=done, total=max(total, done))

    return update


def _credentials_file(data_dir: Path, creds: dict[str, Any]) -> Path:
    path = data_dir / "credentials.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    os.replace(tmp, path)
    return path


def _serve(node: Any, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from metrocloud.api.app import create_app

    if workers == 1:
        try:
            uvicorn.run(create_app(node), host=host, port=port, log_level="info", access_log=False)
        finally:
            node.close()
        return
    # worker processes open the node themselves, from the environment
    s = node.settings
    os.environ.update(
        {
            "METROCLOUD_DATA_DIR": str(s.data_dir),
            "METROCLOUD_COUNTRY": s.country,
            "METROCLOUD_HOST": host,
            "METROCLOUD_PORT": str(port),
        }
    )
    if s.db:
        os.environ["METROCLOUD_DB"] = s.db
    node.close()
    uvicorn.run(
        "metrocloud.api.asgi:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
    )


@app.command()
def version() -> None:
    """Print the metrocloud version."""
    out.print(__version__)


@app.command()
def init(
    data_dir: DataDir = Path("metrocloud-data"), db: Db = None, country: Country = "DE"
) -> None:
    """Create a node: its key (encrypted at rest), database, log and a node admin.

    Prints the node admin's token once and writes it to DATA_DIR/credentials.json.
    """
    from metrocloud.services import parties as pty
    from metrocloud.services.node import Node

    with _errors():
        node = Node.open(_settings(data_dir, db, country=country))
        with node.db.read() as conn:
            size = node.log.tree_size(conn)
        if size:
            raise CliError(
                f"{data_dir} already holds a node with {size} log entries; nothing was changed"
            )
        admin, _ = pty.admit_party(node, None, name="Node admin", role=PartyRole.NODE_ADMIN)
        cred = pty.issue_credential(node, None, admin["id"], label="init")
        path = _credentials_file(
            data_dir, {"node_admin": {"party_id": admin["id"], "token": cred.token}}
        )
    out.print(f"node {node.node_id} created in {data_dir} ({node.db.describe()})")
    out.print(f"node admin token (shown once, also in {path}):\n{cred.token}")


@app.command()
def serve(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    country: Country = "DE",
    workers: Annotated[
        int, typer.Option(help="Worker processes (one per core); 1 serves in this process.", min=1)
    ] = 1,
) -> None:
    """Run the node's API (REST under /api/v1, AAS under /aas/api/v3.0, docs at /api/v1/docs)."""
    from metrocloud.services.node import Node

    with _errors():
        node = Node.open(
            _settings(data_dir, db, country=country, host=host, port=port), create=False
        )
    err.print(f"serving node {node.node_id} on http://{host}:{port}/api/v1 ({workers} worker(s))")
    _serve(node, host, port, workers)


@app.command()
def demo(
    data_dir: DataDir = Path("metrocloud-demo"),
    db: Db = None,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    instruments: Annotated[int, typer.Option(help="Instruments to seed.", min=20)] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the population.")] = 1,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Seed and exit; do not serve.")
    ] = False,
) -> None:
    """A node on embedded defaults, seeded with a realistic population, then served.

    Writes one token per role to DATA_DIR/credentials.json. Re-running on the same
    DATA_DIR serves the existing population.
    """
    from metrocloud.services.demo import seed_demo
    from metrocloud.services.node import Node

    with _errors():
        node = Node.open(_settings(data_dir, db, host=host, port=port))
        creds_path = data_dir / "credentials.json"
        with node.db.read() as conn:
            size = node.log.tree_size(conn)
        if size and creds_path.exists():
            creds = json.loads(creds_path.read_text())
            err.print(f"{data_dir} holds a seeded node ({size} log entries); serving it")
        elif size:
            raise CliError(
                f"{data_dir} holds a node that was not seeded by 'demo'; use another --data-dir"
            )
        else:
            with _progress() as bar:
                pop = seed_demo(node, instruments=instruments, seed=seed, progress=_tracker(bar))
            creds = pop.credentials
            _credentials_file(data_dir, creds)
            err.print(
                f"seeded {pop.parties} parties, {pop.certificates} certificates, "
                f"{pop.instruments} instruments, {pop.events} life-cycle events"
            )
    url = f"http://{host}:{port}/api/v1"
    table = Table(title=f"metrocloud demo node {node.node_id}")
    table.add_column("role", no_wrap=True)
    table.add_column("party", overflow="fold")
    table.add_column("token", overflow="fold")
    for role, c in creds.items():
        table.add_row(role, c["party_id"], c["token"])
    out.print(table)
    out.print(f"API: {url}   docs: {url}/docs   credentials: {creds_path}")
    if not no_serve:
        _serve(node, host, port)


@ledger_app.command("verify")
def ledger_verify(data_dir: DataDir = Path("metrocloud-data"), db: Db = None) -> None:
    """Recompute the Merkle tree from storage and check every signed tree head."""
    from metrocloud.services.node import Node

    with _errors():
        node = Node.open(_settings(data_dir, db), create=False)
        with _progress() as bar, node.db.read() as conn:
            track = _tracker(bar)
            report = node.log.verify_storage(
                conn, progress=lambda done, total: track("entries", done, total)
            )
    if not report.ok:
        for p in report.problems:
            err.print(f"[red]FAIL[/red] {p}", highlight=False, soft_wrap=True)
        err.print(f"ledger verification failed: {len(report.problems)} problem(s)")
        raise typer.Exit(1)
    out.print(f"ledger ok: {report.tree_size} entries, {report.heads_checked} signed heads checked")


@app.command()
def audit(data_dir: DataDir = Path("metrocloud-data"), db: Db = None) -> None:
    """Rebuild the registry from the log and report every row that disagrees."""
    from metrocloud.services.audit import audit as run_audit
    from metrocloud.services.node import Node

    with _errors():
        node = Node.open(_settings(data_dir, db), create=False)
        with _progress() as bar:
            report = run_audit(node, progress=_tracker(bar))
    if not report.ok:
        for p in report.problems:
            err.print(f"[red]MISMATCH[/red] {p}", highlight=False, soft_wrap=True)
        err.print(f"audit failed: {len(report.problems)} row(s) disagree with the log")
        raise typer.Exit(1)
    out.print(
        f"audit ok: {report.statements} statements replayed, {report.rows_compared} "
        "rows agree with the log"
    )


_AAS_FORMATS = ("aasx", "json", "xml")


@aas_app.command("export")
def aas_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    instrument: Annotated[
        str | None,
        typer.Option("--instrument", help="Export this instrument (ins-...) and its type."),
    ] = None,
    type_: Annotated[
        str | None,
        typer.Option("--type", help="Export this instrument type (its certificate, cer-...)."),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Export every instrument and type (streams).")
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="aasx, json or xml; default: from the suffix of --output.",
        ),
    ] = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Export administrative shells and their submodels as AASX, JSON or XML (AAS v3.0).

    Every object is rendered from the registry now and verified against the AAS metamodel;
    a failed export leaves no file.
    """
    from metrocloud.services.aas_export import export
    from metrocloud.services.node import Node

    with _errors():
        formats = ", ".join(_AAS_FORMATS)
        if fmt is None:
            fmt = output.suffix.lstrip(".").lower()
            if fmt not in _AAS_FORMATS:
                raise CliError(f"give --format ({formats}): the suffix of {output} names none")
        elif fmt not in _AAS_FORMATS:
            raise CliError(f"--format must be one of {formats}, got {fmt!r}")
        node = Node.open(_settings(data_dir, db), create=False)
        kw: dict[str, Any] = {
            "instrument_id": instrument,
            "type_id": type_,
            "all_": all_,
            "fmt": fmt,
            "out": output,
        }
        if all_:
            with _progress() as bar:
                report = export(node, **kw, progress=_tracker(bar))
        else:
            report = export(node, **kw)
    parts = f" in {report.parts} package parts" if report.parts > 1 else ""
    out.print(
        f"exported {report.shells} shells, {report.submodels} submodels and "
        f"{report.concept_descriptions} concept descriptions to {output} ({fmt}{parts})"
    )


@ocmf_app.command("verify")
def ocmf_verify(
    files: Annotated[
        list[Path],
        typer.Argument(help="Transparenzsoftware XML containers or files holding one OCMF record."),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per value, one per line.")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Public key (DER, hex or base64) for values that carry none."),
    ] = None,
) -> None:
    """Verify OCMF signed meter values: one verdict (valid, invalid, error) per value.

    Exit 0 when every value is valid, 1 when any is not, 2 when a file cannot be read
    (one line on stderr each; the other files are still reported).
    """
    from rich.markup import escape

    from metrocloud.formats.ocmf import verify_file

    records: list[Any] = []
    unreadable = 0
    for path in files:
        try:
            found = verify_file(path, key)
        except MetrocloudError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            unreadable += 1
            continue
        records += found
        for record in found if as_json else ():
            typer.echo(json.dumps(record.to_dict(), ensure_ascii=False))
    if records and not as_json:
        out.print(_ocmf_table(records))
    if unreadable:
        raise typer.Exit(2)
    if any(r.verdict != "valid" for r in records):
        raise typer.Exit(1)


def _ocmf_table(records: list[Any]) -> Table:
    from rich.text import Text

    colour = {"valid": "green", "invalid": "red", "error": "yellow"}
    counts = {v: sum(r.verdict == v for r in records) for v in colour}
    table = Table(title=", ".join(f"{n} {v}" for v, n in counts.items() if n))
    for name in ("file", "#", "verdict", "algorithm", "meter", "readings", "reason"):
        table.add_column(name, overflow="fold")
    for r in records:
        readings = ", ".join(
            " ".join(p for p in (x.transaction, (x.value or "").strip(), x.unit) if p)
            for x in r.readings
        )
        cells = (r.file, str(r.index), r.verdict, r.algorithm, r.meter_serial, readings, r.reason)
        row = [Text(c or "") for c in cells]
        row[2].stylize(colour[r.verdict])
        table.add_row(*row)
    return table


def main() -> None:
    app(prog_name="metrocloud")


if __name__ == "__main__":
    main()
