"""The node's own commands: init, serve, demo, ledger, audit, aas, ocmf, device, sampling, sim."""

from __future__ import annotations

import json
import os
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from metrocloud import __version__
from metrocloud.cli._common import (
    CliError,
    Country,
    DataDir,
    Db,
    Host,
    Port,
    _errors,
    _progress,
    _settings,
    _tracker,
    aas_app,
    app,
    device_app,
    err,
    ledger_app,
    ocmf_app,
    out,
    sampling_app,
)
from metrocloud.domain.errors import MetrocloudError
from metrocloud.domain.parties import PartyRole


def _credentials_file(data_dir: Path, creds: dict[str, Any]) -> Path:
    path = data_dir / "credentials.json"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    os.replace(tmp, path)
    return path


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus the node's own loggers (``metrocloud.*``: the lake writer, the
    MQTT intake, the grid, the exchange's metadata) at INFO on stderr. Nothing logged there
    carries a secret, a token or a document's content."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["metrocloud"] = {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"
    }
    config["handlers"]["metrocloud"] = {
        "formatter": "metrocloud",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["metrocloud"] = {
        "handlers": ["metrocloud"],
        "level": "INFO",
        "propagate": False,
    }
    return config


def _serve(node: Any, host: str, port: int, workers: int = 1) -> None:
    from metrocloud.api.app import create_app

    if workers == 1:
        try:
            app = create_app(node, background=True)
            _uvicorn(app, host, port)
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
    if s.mqtt:
        os.environ["METROCLOUD_MQTT"] = s.mqtt
    node.close()
    writer = _start_lake_writer()
    try:
        _uvicorn(
            "metrocloud.api.asgi:app_from_environment", host, port, factory=True, workers=workers
        )
    finally:
        _stop_lake_writer(writer)


def _uvicorn(app: Any, host: str, port: int, **options: Any) -> None:
    """Serve ``app`` with uvicorn, logging as the node does (no per-request access lines:
    the node keeps its own access log)."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        log_config=_log_config(),
        access_log=False,
        **options,
    )


#: how long ``serve`` waits for its lake writer to take the lake's writer lock / to stop
_WRITER_START_S = 30.0
_WRITER_STOP_S = 90.0


def _start_lake_writer() -> Any:
    """The lake writer's own process (:func:`metrocloud.api.asgi.lake_writer_process`),
    started before the workers so that it takes the lake's writer lock first."""
    import multiprocessing

    from metrocloud.api.asgi import lake_writer_process

    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(
        target=lake_writer_process,
        args=(ready, os.getpid(), _log_config()),
        name="metrocloud-lake-writer",
    )
    writer.start()
    ready.wait(_WRITER_START_S)
    return writer


def _stop_lake_writer(writer: Any) -> None:
    """Ask the lake writer to stop (it finishes its segment); kill it if it does not."""
    if writer.is_alive():
        writer.terminate()
    writer.join(_WRITER_STOP_S)
    if writer.is_alive():
        writer.kill()
        writer.join()


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
        int,
        typer.Option(
            help="Worker processes (one per core); 1 serves in this process. With more than "
            "one, the node's lake writer runs in a process of its own (docs/ingest.md).",
            min=1,
        ),
    ] = 1,
    mqtt: Annotated[
        str | None,
        typer.Option(
            "--mqtt",
            envvar="METROCLOUD_MQTT",
            help="MQTT broker to take devices' signed batches from too, "
            "mqtt://HOST:PORT[/TOPIC-PREFIX] (docs/ingest.md).",
        ),
    ] = None,
) -> None:
    """Run the node's API (REST under /api/v1, AAS under /aas/api/v3.0, docs at /api/v1/docs)."""
    from metrocloud.ingest.mqtt import parse_broker_url
    from metrocloud.services.node import Node

    with _errors():
        broker = parse_broker_url(mqtt) if mqtt else None
        node = Node.open(
            _settings(data_dir, db, country=country, host=host, port=port, mqtt=mqtt),
            create=False,
        )
    err.print(f"serving node {node.node_id} on http://{host}:{port}/api/v1 ({workers} worker(s))")
    if broker is not None:
        topics = broker.topics(node.country)
        err.print(escape(f"MQTT intake: {topics.subscription} at {broker}"), highlight=False)
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
    grid: Annotated[
        int,
        typer.Option(
            "--grid",
            help="Run N member-state nodes (DE, FR, NL, ...) as a grid on ports PORT, PORT+1, "
            "...; writes DATA_DIR/grid.json (docs/grid.md#demo).",
        ),
    ] = 0,
) -> None:
    """A node on embedded defaults, seeded with a realistic population, then served.

    Writes one token per role to DATA_DIR/credentials.json, with the party's key directory
    (DATA_DIR/parties/<role>, for 'metrocloud exchange --keys'). Re-running on the same
    DATA_DIR serves the existing population. With --grid N: N nodes, one per member state.
    """
    from metrocloud.services.demo import seed_demo
    from metrocloud.services.node import Node

    if grid:
        from metrocloud.cli.grid import run_grid_demo

        if db:
            with _errors():
                raise CliError("--grid runs every node on SQLite in DATA_DIR; drop --db")
        per_type = max(10, min(instruments // (2 * grid + 1), 500))
        run_grid_demo(
            nodes=grid,
            data_dir=data_dir,
            host=host,
            port=port,
            per_type=per_type,
            no_serve=no_serve,
        )
        return
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
                pop = seed_demo(
                    node,
                    instruments=instruments,
                    seed=seed,
                    progress=_tracker(bar),
                    keys_dir=data_dir / "parties",  # each role's own key directory
                )
            creds = pop.credentials
            _credentials_file(data_dir, creds)
            err.print(
                f"seeded {pop.parties} parties, {pop.certificates} certificates, "
                f"{pop.instruments} instruments, {pop.events} life-cycle events"
            )
            if pop.exchange is not None:
                err.print(
                    f"confidential exchange: {pop.exchange.message_id} from the manufacturer "
                    "to the notified body, acknowledged (docs/exchange.md#demo)"
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


@ocmf_app.command("import")
def ocmf_import(
    files: Annotated[
        list[Path],
        typer.Argument(help="Transparenzsoftware XML containers or files holding one OCMF record."),
    ],
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON outcome per record, one per line.")
    ] = False,
) -> None:
    """Import OCMF records into the local node as measurements of the registered EV
    charging instruments their meter serials name (the same checks as POST
    /api/v1/ingest/ocmf; rejected records go to the quarantine with their reason).

    Exit 0 when every record was accepted (or was already there), 1 when any was rejected,
    2 when a file cannot be read or is not OCMF.
    """
    from metrocloud.services import measurements as svc
    from metrocloud.services.node import Node

    rejected = 0
    with _errors():
        node = Node.open(_settings(data_dir, db), create=False)
        try:
            table = Table("file", "record", "outcome", "instrument", "readings", "reason")
            for path in files:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
                result = svc.import_ocmf(node, None, data, str(path), "file")
                rejected += result.rejected
                for i, o in enumerate(result.outcomes):
                    if as_json:
                        typer.echo(json.dumps({"file": str(path), "index": i, **o.as_dict()}))
                    else:
                        why = o.reason and f"{o.reason}: {o.detail}"
                        table.add_row(
                            str(path),
                            str(i),
                            o.status,
                            o.instrument or "",
                            str(o.readings),
                            why or ", ".join(o.flags),
                        )
            flushed = svc.flush_lake(node)
        finally:
            node.close()
    if not as_json:
        out.print(table)
        out.print(
            "lake: a running node moves the readings in"
            if flushed is None
            else f"lake: {flushed:,} readings written"
        )
    if rejected:
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


# -- the reference device ------------------------------------------------------------------------

DEVICE_PASSPHRASE_ENV = "METROCLOUD_DEVICE_PASSPHRASE"  # noqa: S105 (a variable name)
DeviceDir = Annotated[
    Path,
    typer.Option(
        "--dir", help="The device's state directory: its key, event log, counter and outbox."
    ),
]
NodeUrl = Annotated[
    str | None,
    typer.Option(
        "--node", envvar="METROCLOUD_NODE_URL", help="The node, e.g. http://127.0.0.1:8000."
    ),
]
NodeToken = Annotated[
    str | None,
    typer.Option("--token", envvar="METROCLOUD_TOKEN", help="Bearer token at the node."),
]
_ALGORITHMS = {"ed25519": "ed25519", "p256": "ecdsa-p256-sha256"}


def _device_passphrase(directory: Path) -> bytes:
    """The device key's passphrase: $METROCLOUD_DEVICE_PASSPHRASE, else a random one kept in
    DIR/passphrase (mode 0600; a real device keeps it in its secure element)."""
    from metrocloud.trust.keys import KeyStore

    directory.mkdir(parents=True, exist_ok=True)
    return KeyStore.passphrase_from(directory, DEVICE_PASSPHRASE_ENV)


def _node_base(url: str) -> str:
    base = url.strip().rstrip("/")
    if base.endswith("/api/v1"):
        base = base[: -len("/api/v1")]
    if not base.startswith(("http://", "https://")):
        raise CliError(f"--node must be an http:// or https:// URL, got {url!r}")
    return base


def _utc(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{option} must be an ISO 8601 time such as 2026-01-05T00:00Z, got {text!r}"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Node:
    """The few node API calls the device commands make."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.base = _node_base(url)
        self.http = httpx.Client(
            base_url=f"{self.base}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )

    def get(self, path: str) -> Any:
        import httpx

        try:
            r = self.http.get(path)
        except httpx.TransportError as exc:
            raise CliError(f"node {self.base} unreachable: {exc}") from None
        if r.status_code != 200:
            raise CliError(f"GET {path} at {self.base}: {r.status_code} {_problem(r)}")
        return r.json()

    def post_batches(self, lines: list[bytes]) -> list[dict[str, Any]]:
        """POST the lines; retried while the node is unreachable or failing (5xx)."""
        import httpx

        delay, warned = 0.5, False
        while True:
            try:
                r = self.http.post(
                    "/ingest/batches",
                    content=b"\n".join(lines) + b"\n",
                    headers={"Content-Type": "application/x-ndjson"},
                )
                if r.status_code == 200:
                    return list(r.json()["outcomes"])
                if r.status_code < 500 and r.status_code != 429:
                    raise CliError(
                        f"node {self.base} refused the batches: {r.status_code} {_problem(r)}"
                    )
                reason = f"{r.status_code} {_problem(r)}"
            except httpx.TransportError as exc:
                reason = str(exc) or type(exc).__name__
            if not warned:
                err.print(
                    f"[yellow]warning:[/yellow] node {escape(self.base)}: {escape(reason)}; "
                    "retrying",
                    highlight=False,
                    soft_wrap=True,
                )
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def _problem(r: Any) -> str:
    try:
        body = r.json()
        return str(body.get("detail") or body.get("title") or r.text[:200])
    except ValueError:
        return str(r.text[:200])


@device_app.command("init")
def device_init(
    directory: DeviceDir,
    instrument: Annotated[
        str | None,
        typer.Option(
            "--instrument",
            help="The instrument (ins-...) the node registered with this device's key; "
            "without it, only the device key is made and printed.",
        ),
    ] = None,
    algorithm: Annotated[
        str | None, typer.Option(help="Device key algorithm, ed25519 or p256 (new key only).")
    ] = None,
    node: NodeUrl = None,
    token: NodeToken = None,
    manufacturer_key: Annotated[
        str | None,
        typer.Option(
            "--manufacturer-key",
            help="The manufacturer's public key for software packages (PEM file or base64 "
            "SPKI); default: its key in the node's party directory.",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the simulated load profile; default: from the key.")
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(help="Time of the first reading (ISO 8601, UTC); default: now."),
    ] = None,
) -> None:
    """Make a reference device in two steps: its key, then its provisioning.

    1. ``device init --dir D`` generates the device key (kept encrypted in D) and prints its
       public key (SPKI, base64).
    2. The manufacturer registers the instrument with that key (POST /api/v1/instruments,
       device_keys) and gets its id.
    3. ``device init --dir D --instrument ID --node URL --token T`` reads the instrument, its
       certificate (status, validity, approved software) and the manufacturer's key from the
       node, and provisions the device with the reference software.
    """
    from metrocloud.device.device import KEY_NAME
    from metrocloud.trust.keys import KeyAlgorithm, KeyStore

    with _errors():
        if (directory / "device.json").exists():
            raise CliError(f"{directory} holds a provisioned device already; nothing was changed")
        wanted = None
        if algorithm is not None:
            if algorithm not in _ALGORITHMS:
                raise CliError(f"--algorithm must be ed25519 or p256, got {algorithm!r}")
            wanted = KeyAlgorithm(_ALGORITHMS[algorithm])
        if instrument is not None and not (node and token):
            raise CliError(
                "--instrument needs --node and --token (a reader of the instrument, e.g. its "
                "manufacturer): the device takes its approval from the node"
            )
        store = KeyStore(directory / "keys", _device_passphrase(directory))
        existed = store.exists(KEY_NAME)
        key = (
            store.load(KEY_NAME)
            if existed
            else store.load_or_create(KEY_NAME, wanted or KeyAlgorithm.ED25519)
        )
        if wanted is not None and key.algorithm is not wanted:
            raise CliError(
                f"the device key in {directory} is {key.algorithm.value}, not {wanted.value}"
            )
        public = key.public_key
        if instrument is None:
            out.print(
                f"device key {public.key_id} ({public.algorithm.value}) "
                f"{'exists' if existed else 'created'} in {directory / 'keys'}",
                highlight=False,
                soft_wrap=True,
            )
            out.print("public key (SPKI, base64), to register with the instrument:")
            typer.echo(public.to_spki_b64())
            out.print(
                "next: the manufacturer registers the instrument with it (POST "
                "/api/v1/instruments, device_keys), then: metrocloud device init --dir "
                f"{directory} --instrument ID --node URL --token TOKEN",
                highlight=False,
                soft_wrap=True,
            )
            return
        assert node and token
        device = _provision(
            directory, instrument, key, _Node(node, token), manufacturer_key, seed, start
        )
    sw, approval = device.software, device.approval
    out.print(
        f"device for {instrument} provisioned in {directory}: key {device.key_id} "
        f"({public.algorithm.value}), software {sw.name} {sw.version} ({sw.checksum}), "
        f"certificate {approval.certificate} ({approval.status}, valid until "
        f"{approval.valid_until}), first reading {_iso_ms(device.register.next_t)}",
        highlight=False,
        soft_wrap=True,
    )
    out.print("public key (SPKI, base64):")
    typer.echo(public.to_spki_b64())


def _provision(
    directory: Path,
    instrument: str,
    key: Any,
    api: _Node,
    manufacturer_key: str | None,
    seed: int | None,
    start: str | None,
) -> Any:
    """Provision the device for a registered instrument, from what the node says of it."""
    from metrocloud.device import Approval, Device, reference_software
    from metrocloud.domain.errors import RuleViolation
    from metrocloud.trust.keys import PublicKey

    public = key.public_key
    ins = api.get(f"/instruments/{instrument}")
    listed = {k["key_id"]: k for k in ins["device_keys"]}
    if public.key_id not in listed:
        raise CliError(
            f"instrument {instrument} does not list this device's key {public.key_id}: "
            "register the instrument with the public key 'metrocloud device init --dir "
            f"{directory}' printed (device_keys)"
        )
    if listed[public.key_id]["revoked"]:
        raise CliError(f"device key {public.key_id} of {instrument} is revoked")
    cert = api.get(f"/certificates/{ins['certificate_id']}")
    approval = Approval.from_dict(
        {
            "certificate": cert["number"],
            "status": cert["status"],
            "valid_until": cert["valid_until"],
            "software": cert["software"],
        }
    )
    if manufacturer_key:
        path = Path(manufacturer_key)
        man_key = PublicKey.from_any(path.read_text() if path.is_file() else manufacturer_key)
    else:
        party = api.get(f"/parties/{ins['manufacturer_id']}")
        if not party.get("public_key"):
            raise CliError(
                f"manufacturer {ins['manufacturer_id']} has no public key at the node; "
                "give --manufacturer-key"
            )
        man_key = PublicKey.from_any(party["public_key"])
    software = reference_software()
    first = _utc(start, "--start") if start else None
    try:
        return Device.provision(
            directory,
            instrument=instrument,
            manufacturer_key=man_key,
            software=software,
            approval=approval,
            passphrase=_device_passphrase(directory),
            algorithm=key.algorithm,
            seed=int(public.key_id[:12], 16) if seed is None else seed,
            start_ms=int(first.timestamp() * 1000) if first else None,
        )
    except RuleViolation as exc:
        sw = software.identification
        raise CliError(
            f"{exc}; the certificate must approve the reference device's software "
            f"{sw.name} {sw.version} (sha256 {sw.checksum})"
        ) from None


def _iso_ms(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="minutes").replace("+00:00", "Z")
    )


class _DeviceClock:
    """The device's clock: real time, or a simulated one from ``start`` running ``speed``
    times as fast."""

    def __init__(self, start: datetime | None, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._t0 = time.monotonic()

    def __call__(self) -> datetime:
        if self.start is None:
            return datetime.now(UTC)
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.speed)

    def ms(self) -> int:
        return int(self().timestamp() * 1000)

    def real_seconds_until(self, ms: int) -> float:
        return max(0.0, (ms - self.ms()) / 1000 / (self.speed if self.start else 1.0))


class _Outbox:
    """Batches signed but not yet answered, one file each (DIR/outbox/<counter>.mcb): what a
    run could not deliver is sent again by the next one (WELMEC 7.2 T7, T8)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory / "outbox"
        self.dir.mkdir(exist_ok=True)

    def add(self, counter: int, wire: bytes) -> None:
        path = self.dir / f"{counter:016d}.mcb"
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            f.write(wire)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def remove(self, counter: int) -> None:
        (self.dir / f"{counter:016d}.mcb").unlink(missing_ok=True)

    def pending(self) -> list[tuple[int, bytes]]:
        return sorted((int(p.stem), p.read_bytes()) for p in self.dir.glob("*.mcb"))


class _MqttLink:
    """Publishes the device's batches (QoS 1) and collects the node's outcomes."""

    def __init__(self, url: str, country: str, instrument: str, client_id: str) -> None:
        import queue
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.subscribeoptions import SubscribeOptions

        from metrocloud.ingest.mqtt import parse_broker_url

        self.broker = parse_broker_url(url)
        topics = self.broker.topics(country)
        self.topic = topics.batches(instrument)
        self.outcomes: queue.Queue[dict[str, Any]] = queue.Queue()
        ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.broker.configure(self.client)
        self.client.reconnect_delay_set(1, 30)

        def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
            if not reason.is_failure:
                c.subscribe(topics.outcomes(instrument), options=SubscribeOptions(qos=1))

        def on_message(_c: Any, _u: Any, message: Any) -> None:
            with suppress(ValueError):  # not an outcome: ignored
                self.outcomes.put(json.loads(message.payload))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_message = on_message
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError as exc:
            raise CliError(f"MQTT broker {self.broker} unreachable: {exc}") from None
        self.client.loop_start()
        if not ready.wait(15):
            self.close()
            raise CliError(f"MQTT broker {self.broker} did not accept the subscription in 15 s")

    def publish(self, wire: bytes) -> None:
        """Until the broker has it (PUBACK); across a lost connection it is published again
        (the node answers a copy it already stored ``duplicate``)."""
        warned = False
        while True:
            while not self.client.is_connected():
                if not warned:
                    err.print(
                        f"[yellow]warning:[/yellow] MQTT broker {escape(str(self.broker))} "
                        "unreachable; "
                        "retrying",
                        highlight=False,
                    )
                    warned = True
                time.sleep(0.2)
            info = self.client.publish(self.topic, wire, qos=1)
            with suppress(RuntimeError, ValueError):  # not connected (any more): again
                info.wait_for_publish(30)
                if info.is_published():
                    return

    def close(self) -> None:
        from metrocloud.ingest.mqtt import stop_loop

        self.client.disconnect()
        stop_loop(self.client)


@device_app.command("run")
def device_run(
    directory: DeviceDir,
    node: NodeUrl = None,
    token: NodeToken = None,
    mqtt: Annotated[
        str | None,
        typer.Option(
            "--mqtt",
            help="Publish to this MQTT broker (mqtt://HOST:PORT[/TOPIC-PREFIX]) instead of "
            "POSTing to the node.",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(help="Readings per signed batch.", min=1, max=10_000)] = 96,
    interval: Annotated[
        float, typer.Option(help="Wait at least this many seconds between two batches.", min=0)
    ] = 0.0,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many batches; default: run on.", min=1)
    ] = None,
    simulated_start: Annotated[
        str | None,
        typer.Option(
            "--simulated-start",
            help="Run the device's clock from this time (ISO 8601) instead of the real one.",
        ),
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second (needs --simulated-start).")
    ] = 1.0,
    country: Annotated[
        str | None,
        typer.Option(help="The node's member state in MQTT topics; default: from the id."),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait at the end for MQTT outcomes.", min=0)
    ] = 30.0,
) -> None:
    """Run the simulated meter: read the register and send signed batches to the node.

    A batch is sent once its last reading lies in the past of the device's clock. The node
    answers each batch (accepted, duplicate, rejected with the reason); a rejected batch is
    reported on stderr and the exit status is 1. Batches not yet answered stay in the
    device's outbox and are sent again by the next run.
    """
    import re

    from metrocloud.device import Device

    with _errors():
        if speed <= 0:
            raise CliError(f"--speed must be positive, got {speed}")
        if speed != 1.0 and simulated_start is None:
            raise CliError("--speed needs --simulated-start (the real clock runs at speed 1)")
        if mqtt is None and not (node and token):
            raise CliError("give --node and --token (HTTP) or --mqtt (MQTT broker)")
        start = _utc(simulated_start, "--simulated-start") if simulated_start else None
        clock = _DeviceClock(start, speed)
        device = Device.open(directory, passphrase=_device_passphrase(directory), clock=clock)
        api = _Node(node, token) if mqtt is None and node and token else None
        link = None
        if mqtt is not None:
            cc = country or (
                m.group(1) if (m := re.match(r"ins-([A-Z]{2})-", device.instrument)) else None
            )
            if cc is None:
                raise CliError(f"give --country: {device.instrument} names no member state")
            link = _MqttLink(mqtt, cc, device.instrument, f"metrocloud-device-{device.key_id[:20]}")
        outbox = _Outbox(directory)
        run = _DeviceRun(device, outbox, api, link, clock)
        interrupted = False
        try:
            run.go(batch=batch, interval=interval, count=count, wait=wait)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if link is not None:
                link.close()
    tally = run.tally
    out.print(
        f"{device.instrument}: sent {tally['sent']} batch(es) ({tally['readings']} readings): "
        f"{tally['accepted']} accepted, {tally['duplicate']} duplicate, "
        f"{tally['rejected']} rejected",
        highlight=False,
    )
    if run.unanswered:
        err.print(
            f"{len(run.unanswered)} batch(es) without an answer yet, kept in "
            f"{outbox.dir} (sent again by the next run)",
            highlight=False,
            soft_wrap=True,
        )
    if interrupted:
        raise typer.Exit(130)
    if tally["rejected"]:
        raise typer.Exit(1)


class _DeviceRun:
    def __init__(
        self, device: Any, outbox: _Outbox, api: _Node | None, link: _MqttLink | None, clock: Any
    ) -> None:
        self.device = device
        self.outbox = outbox
        self.api = api
        self.link = link
        self.clock = clock
        self.tally = {"sent": 0, "readings": 0, "accepted": 0, "duplicate": 0, "rejected": 0}
        #: counter -> readings of batches sent and not answered yet
        self.unanswered: dict[int, int] = {}
        self.bar: Progress | None = None
        self.task: Any = None

    def go(self, *, batch: int, interval: float, count: int | None, wait: float) -> None:
        from rich.progress import SpinnerColumn

        from metrocloud.formats.batches import parse_payload, split_wire

        columns: list[Any] = [TextColumn("{task.description}")]
        columns += [BarColumn(), MofNCompleteColumn()] if count else [SpinnerColumn()]
        columns += [TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        with Progress(*columns, console=err, transient=False) as bar:
            self.bar = bar
            self.task = bar.add_task(self.device.instrument, total=count, info="")
            for counter, wire in self.outbox.pending():  # left by an earlier run
                try:
                    readings = len(parse_payload(split_wire(wire)[0]))
                except MetrocloudError:  # damaged at rest: the node quarantines it
                    readings = 0
                self._send(counter, wire, readings)
            last_send = -interval
            new = 0
            while count is None or new < count:
                register = self.device.register
                ready_ms = register.next_t + (batch - 1) * register.interval_ms
                self._collect()
                pause = max(
                    self.clock.real_seconds_until(ready_ms),
                    interval - (time.monotonic() - last_send),
                )
                if pause > 0:
                    self._refresh()
                    time.sleep(min(pause, 0.5))
                    continue
                signed = self.device.read_batch(batch)
                counter = self.device.counter
                self.outbox.add(counter, signed.wire())
                last_send = time.monotonic()
                self._send(counter, signed.wire(), batch)
                new += 1
                bar.update(self.task, completed=new)
            deadline = time.monotonic() + wait
            while self.unanswered and self.link is not None and time.monotonic() < deadline:
                self._collect(timeout=0.5)
            self._refresh()

    def _send(self, counter: int, wire: bytes, readings: int) -> None:
        self.tally["sent"] += 1
        self.tally["readings"] += readings
        self.unanswered[counter] = readings
        if self.api is not None:
            for outcome in self.api.post_batches([wire]):
                self._record(outcome, counter)
        else:
            assert self.link is not None
            self.link.publish(wire)
        self._refresh()

    def _collect(self, timeout: float = 0.0) -> None:
        import queue

        if self.link is None:
            return
        while True:
            try:
                outcome = self.link.outcomes.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = 0.0
            self._record(outcome, outcome.get("counter"))

    def _record(self, outcome: dict[str, Any], counter: int | None) -> None:
        if counter is None or counter not in self.unanswered:
            return  # not ours, or answered already (an outcome may come twice)
        del self.unanswered[counter]
        status = str(outcome.get("status"))
        if status in self.tally:
            self.tally[status] += 1
        if status == "rejected":
            err.print(
                f"[red]rejected:[/red] batch {counter} of {self.device.instrument}: "
                + escape(f"{outcome.get('reason')}: {outcome.get('detail')}"),
                highlight=False,
                soft_wrap=True,
            )
        self.outbox.remove(counter)
        self._refresh()

    def _refresh(self) -> None:
        if self.bar is None:
            return
        t = self.tally
        info = (
            f"clock {self.clock().isoformat(timespec='minutes').replace('+00:00', 'Z')} "
            f"| {t['accepted']} accepted, {t['duplicate']} duplicate, {t['rejected']} rejected, "
            f"{len(self.unanswered)} waiting | {t['readings']} readings"
        )
        self.bar.update(self.task, info=info)


def _sampling_lot_size(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise CliError(f"--lot-size must be a whole number, got {text!r}") from None


@sampling_app.command("plan")
def sampling_plan(
    lot_size: Annotated[
        str | None,
        typer.Option(
            "--lot-size",
            metavar="N",
            help="Instruments in the lot; mid-f without it plans for a large lot (binomial).",
        ),
    ] = None,
    scheme: Annotated[
        str, typer.Option("--scheme", help="mid-f (MID modules F/F1) or iso2859 (ISO 2859-1).")
    ] = "mid-f",
    aql: Annotated[
        str | None,
        typer.Option("--aql", help="iso2859: AQL in percent (0.65, 1.0, 1.5, 2.5, 4.0, 6.5)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = (
        False
    ),
) -> None:
    """The single sampling plan (n, c) for a lot: inspect n, accept with at most c failing.

    mid-f: the smallest plan accepting a lot with 1 % non-conforming with >= 95 % and one
    with 7 % with <= 5 % (MID Annex II, modules F and F1). iso2859: ISO 2859-1, normal
    inspection, general inspection level II.
    """
    from metrocloud.domain import sampling as smp

    with _errors():
        size = _sampling_lot_size(lot_size)
        if scheme == smp.Scheme.MID_F:
            if aql is not None:
                raise CliError("--aql applies to --scheme iso2859 only")
            plan = smp.mid_f_plan(size)
        elif scheme == smp.Scheme.ISO2859:
            if size is None or aql is None:
                raise CliError("--scheme iso2859 needs --lot-size and --aql")
            plan = smp.iso2859_plan(size, aql)
        else:
            raise CliError(f"--scheme must be mid-f or iso2859, got {scheme!r}")
    if as_json:
        typer.echo(json.dumps(plan.as_dict()))
        return
    table = Table(title=f"sampling plan ({plan.scheme})", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("value", overflow="fold")
    lot = "large lot (binomial)" if plan.lot_size is None else str(plan.lot_size)
    full = " (100 % inspection)" if plan.full_inspection else ""
    table.add_row("lot size", lot)
    if plan.scheme is smp.Scheme.ISO2859:
        table.add_row("AQL", f"{plan.aql} %")
        table.add_row("code letter", f"{plan.code_letter} (plan of letter {plan.plan_letter})")
    table.add_row("sample size n", f"{plan.n}{full}")
    table.add_row("accept with at most c", str(plan.c))
    table.add_row("reject with Re or more", str(plan.re))
    table.add_row("P(accept) at 1 %", f"{float(plan.p_accept_at_1pct):.6f}")
    table.add_row("P(accept) at 7 %", f"{float(plan.p_accept_at_7pct):.6f}")
    table.add_row("rule", plan.rule)
    out.print(table)


@app.command()
def sim(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    instruments: Annotated[int, typer.Option(help="Instruments to simulate.", min=1)] = 1000,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 30,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same readings and labels.")] = 1,
    start: Annotated[
        str | None,
        typer.Option(help="First simulated day, YYYY-MM-DD (UTC); default DAYS+1 days ago."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Labels file (.parquet or .jsonl); default DATA_DIR/sim/labels.parquet."),
    ] = None,
    reference_share: Annotated[
        float,
        typer.Option(help="Share of instruments with a reference meter in series.", min=0, max=1),
    ] = 0.25,
    balance_share: Annotated[
        float,
        typer.Option(
            help="Share of instruments grouped into balance areas (a feeder, a building, a "
            "station, a site), each with an area meter of its own on top of --instruments.",
            min=0,
            max=1,
        ),
    ] = 0.75,
    workers: Annotated[
        int, typer.Option(help="Processes simulating and submitting; 0: all in this one.", min=0)
    ] = 2,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact/--no-compact",
            help="Compact the closed days' lake partitions at the end, as a running node would.",
        ),
    ] = True,
) -> None:
    """Simulate a fleet with ground truth: signed batches through the intake into the lake,
    and labels of drift, faults and tampering beside them (docs/sim.md)."""
    from datetime import date

    from metrocloud.services.node import Node
    from metrocloud.sim import SimConfig, run_simulation

    with _errors():
        first: date | None = None
        if start is not None:
            try:
                first = date.fromisoformat(start)
            except ValueError:
                raise CliError(f"--start must be a date YYYY-MM-DD, got {start!r}") from None
        node = Node.open(_settings(data_dir, db))
        config = SimConfig(
            instruments=instruments,
            days=days,
            seed=seed,
            start=first,
            labels=labels,
            reference_share=reference_share,
            balance_share=balance_share,
            workers=workers,
            compact=compact,
        )
        bar = _progress()  # shown from the first step on: a refused run prints one line
        track = _tracker(bar)

        def step(what: str, done: int, total: int) -> None:
            if not bar.live.is_started:
                bar.start()
            track(what, done, total)

        try:
            result = run_simulation(node, config, progress=step)
        finally:
            if bar.live.is_started:
                bar.stop()
    table = Table(title=f"metrocloud sim on node {result.node_id}", show_header=False)
    table.add_column("what", no_wrap=True)
    table.add_column("result", overflow="fold")
    end = result.start + timedelta(days=result.days)
    table.add_row("instruments", f"{result.instruments:,} ({_counts(result.categories)})")
    table.add_row("days", f"{result.days} ({result.start} to {end}, UTC)")
    table.add_row("faults injected", _counts(result.faults))
    table.add_row("MPE crossings", str(result.extra.get("crossing", 0)))
    table.add_row(
        "balance areas",
        f"{result.extra.get('balance_areas', 0):,} (an area meter each), "
        f"{result.extra.get('in_balance_areas', 0):,} instruments in them",
    )
    table.add_row("readings sent", f"{result.readings_sent:,} in {result.batches_sent:,} batches")
    table.add_row(
        "accepted", f"{result.readings_accepted:,} readings in {result.batches_accepted:,} batches"
    )
    table.add_row("quarantined", _counts(result.quarantined) or "none")
    table.add_row("flags", _counts(result.flags) or "none")
    table.add_row("lake", f"{result.lake_rows:,} rows, {result.lake_bytes / 2**20:,.1f} MiB")
    table.add_row(
        "time",
        f"{result.elapsed_s:,.1f} s ({result.readings_per_s:,.0f} readings/s simulated and "
        f"ingested), peak RSS {result.peak_rss_mib:,.0f} MiB "
        f"(workers {result.workers_peak_rss_mib:,.0f} MiB); CPU {result.cpu_s:,.0f} s "
        f"(workers {result.workers_cpu_s:,.0f} s)",
    )
    table.add_row("labels", f"{result.labels} (summary {result.summary.name})")
    out.print(table)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())
