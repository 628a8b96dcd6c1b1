"""The Legal Metrology Grid from the command line (docs/grid.md).

``metrocloud grid init-anchor`` and ``grid admit`` are the anchor's side (whoever governs
the grid); ``grid identity``, ``grid join``, ``grid peers ...``, ``grid status`` and ``grid
sync`` act on the node in ``--data-dir`` (access to its key store is the operator's right,
as for ``metrocloud init``). ``metrocloud demo --grid N`` runs N member-state nodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from metrocloud.services.node import Node

__all__ = ["grid_app", "run_grid_demo"]

grid_app = typer.Typer(
    no_args_is_help=True,
    help="The Legal Metrology Grid: anchor, admissions, peers, status (docs/grid.md).",
)
peers_app = typer.Typer(no_args_is_help=True, help="This node's peer list.")
grid_app.add_typer(peers_app, name="peers")
app.add_typer(grid_app, name="grid")

AnchorDir = Annotated[Path, typer.Option("--anchor", help="The anchor's directory.")]


def _open(data_dir: Path, db: str | None) -> Node:
    """The node in ``data_dir``, whatever its member state (read from its database)."""
    from sqlalchemy import select

    from metrocloud.services.node import Node
    from metrocloud.store.database import Database
    from metrocloud.store.schema import node_meta

    settings = _settings(data_dir, db)
    country = None
    if db or (data_dir / "registry.sqlite3").exists():
        probe = Database(settings.database_url(), schema=settings.db_schema)
        try:
            with probe.read() as conn:
                country = conn.execute(
                    select(node_meta.c.value).where(node_meta.c.key == "country")
                ).scalar_one_or_none()
        except Exception:  # no node here yet: Node.open says so
            country = None
        finally:
            probe.dispose()
    return Node.open(_settings(data_dir, db, country=country), create=False)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no file {path}") from None
    except ValueError as exc:
        raise CliError(f"{path} is not JSON: {exc}") from None


@grid_app.command("init-anchor")
def init_anchor(
    directory: Annotated[Path, typer.Option("--dir", help="Directory for the anchor's keys.")],
) -> None:
    """Create the grid's trust anchor: a key pair, the private key encrypted at rest."""
    from metrocloud.grid.identity import ANCHOR_PUBLIC_FILE, init_anchor

    with _errors():
        key = init_anchor(directory)
    out.print(f"grid anchor {key.key_id} created in {directory}")
    out.print(f"publish {directory / ANCHOR_PUBLIC_FILE}: every node pins it ('grid join')")


@grid_app.command("admit")
def admit(
    anchor: AnchorDir,
    country: Annotated[str, typer.Option("--country", help="The node's member state.")],
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Where peers reach the node; default --node-url."),
    ] = None,
    node_key_file: Annotated[
        Path | None,
        typer.Option("--node-key-file", help="The node's public key (PEM, 'grid identity')."),
    ] = None,
    node_url: Annotated[
        str | None,
        typer.Option("--node-url", help="Fetch the node's key from URL/api/v1/node instead."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the admission.")
    ] = Path("admission.json"),
    valid_days: Annotated[int, typer.Option(help="Validity of the admission.", min=1)] = 730,
) -> None:
    """Certify a node's key, node id, country and base URL: a signed admission."""
    import httpx

    from metrocloud.grid.identity import admit_node, load_anchor
    from metrocloud.trust.keys import PublicKey

    with _errors():
        if (node_key_file is None) == (node_url is None):
            raise CliError("give exactly one of --node-key-file and --node-url")
        if node_url is not None:
            url = node_url.rstrip("/")
            try:
                info = httpx.get(f"{url}/api/v1/node", timeout=10, trust_env=False).json()
            except (httpx.HTTPError, ValueError) as exc:
                raise CliError(
                    f"cannot read the node's identity at {url}/api/v1/node: {exc}"
                ) from None
            if info.get("country") != country:
                raise CliError(
                    f"the node at {url} is of {info.get('country')}, not of --country {country}"
                )
            key = PublicKey.from_any(info["public_key"])
            base_url = base_url or url
        else:
            assert node_key_file is not None
            key = PublicKey.from_any(node_key_file.read_text())
        if base_url is None:
            raise CliError("--base-url is needed with --node-key-file")
        signed = admit_node(
            load_anchor(anchor),
            public_key=key,
            country=country,
            base_url=base_url,
            now=datetime.now(UTC),
            valid_days=valid_days,
        )
        output.write_text(json.dumps(signed.to_json(), indent=2) + "\n")
    a = signed.admission
    out.print(f"admitted {a.node_id} ({a.country}, {a.base_url}) until {a.expires_at}: {output}")


@grid_app.command("identity")
def identity(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the public key PEM here.")
    ] = None,
) -> None:
    """This node's id, country and public key (what the anchor admits)."""
    with _errors():
        node = _open(data_dir, db)
        pem = node.key.public_key.to_pem()
        node.close()
    if output is not None:
        output.write_text(pem)
    out.print(f"node {node.node_id} ({node.country}), key {node.key.key_id}")
    if output is None:
        out.print(pem, highlight=False)


@grid_app.command("join")
def join(
    admission: Annotated[Path, typer.Argument(help="This node's admission (grid admit).")],
    anchor_key: Annotated[
        Path, typer.Option("--anchor-key", help="The anchor's public key, or its directory.")
    ],
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Pin the grid's anchor and record this node's own admission (a signed statement)."""
    from metrocloud.grid.identity import anchor_public_key
    from metrocloud.services import federation as fed

    with _errors():
        node = _open(data_dir, db)
        try:
            me = fed.join_grid(node, _read_json(admission), anchor_public_key(anchor_key))
        finally:
            node.close()
    out.print(f"{me['node_id']} joined the grid of anchor {anchor_public_key(anchor_key).key_id}")


@peers_app.command("add")
def peers_add(
    admission: Annotated[Path, typer.Argument(help="The peer's admission (grid admit).")],
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Add a node to the peer list; everything EU-wide this node holds is queued for it."""
    from metrocloud.services import federation as fed

    with _errors():
        node = _open(data_dir, db)
        try:
            p = fed.add_peer(node, _read_json(admission))
        finally:
            node.close()
    out.print(
        f"peer {p['node_id']} ({p['country']}, {p['base_url']}) added; "
        f"{p['backfill']} statements queued for it"
    )


@peers_app.command("list")
def peers_list(data_dir: DataDir = Path("metrocloud-data"), db: Db = None) -> None:
    """The nodes in this node's list (itself included)."""
    from metrocloud.services import federation as fed

    with _errors():
        node = _open(data_dir, db)
        try:
            rows = fed.list_peers(node)
        finally:
            node.close()
    table = Table(title="grid nodes")
    for col in ("node", "country", "base URL", "admitted until", "state"):
        table.add_column(col, overflow="fold")
    for p in rows:
        state = "this node" if p["is_self"] else "removed" if p["removed"] else "peer"
        table.add_row(p["node_id"], p["country"], p["base_url"], p["expires_at"], state)
    out.print(table)


@peers_app.command("remove")
def peers_remove(
    node_id: Annotated[str, typer.Argument(help="The peer's node id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the log).")],
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Take a node off the peer list; its waiting messages are set aside."""
    from metrocloud.services import federation as fed

    with _errors():
        node = _open(data_dir, db)
        try:
            r = fed.remove_peer(node, node_id, reason=reason)
        finally:
            node.close()
    out.print(f"peer {node_id} removed; {r['cancelled_messages']} waiting messages set aside")


def _ago(ts: str | None) -> str:
    if not ts:
        return "never"
    from metrocloud.trust.statements import parse_utc_timestamp

    seconds = (datetime.now(UTC) - parse_utc_timestamp(ts)).total_seconds()
    return f"{ts} ({seconds:.0f} s ago)"


@grid_app.command("status")
def status(
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Peers, lag (outbox backlog, last contact) and the last witnessed heads."""
    from metrocloud.services import federation as fed

    with _errors():
        node = _open(data_dir, db)
        try:
            st = fed.grid_status(node)
        finally:
            node.close()
    if as_json:
        out.print_json(json.dumps(st))
        return
    if not st["joined"]:
        out.print(f"node {st['node_id']} has not joined a grid ('metrocloud grid join')")
        return
    head = st["tree_head"] or {}
    out.print(
        f"node {st['node_id']} ({st['country']}): log size {head.get('tree_size', 0)}, "
        f"co-signed by {', '.join(st['cosigned_by']) or 'no witness yet'}"
    )
    table = Table(title="peers")
    for col in ("peer", "waiting", "failed", "oldest waiting", "last contact", "witnessed head"):
        table.add_column(col, overflow="fold")
    for p in st["peers"]:
        w = p["witnessed_head"]
        witnessed = f"size {w['tree_size']} {w['root_hash'][:16]}..." if w else "none yet"
        table.add_row(
            f"{p['node_id']} ({p['country']}){' [removed]' if p['removed'] else ''}",
            str(p["outbox"]["pending"]),
            str(p["outbox"]["failed"]),
            _ago(p["outbox"]["oldest_pending_at"]) if p["outbox"]["pending"] else "-",
            _ago(p["last_contact_at"]),
            witnessed,
        )
    out.print(table)
    for p in st["peers"]:
        error = p["outbox"]["last_error"] or p["last_error"]
        if error:
            err.print(escape(f"{p['node_id']}: {error}"), highlight=False)


@grid_app.command("sync")
def sync(data_dir: DataDir = Path("metrocloud-data"), db: Db = None) -> None:
    """Deliver the outbox and witness every peer once, now (a node that is not serving)."""
    from metrocloud.services import federation as fed

    with _errors():
        node = _open(data_dir, db)
        try:
            if not fed.take_grid_lock(node):
                raise CliError(
                    f"a running node serves {data_dir}; it delivers and witnesses by itself"
                )
            r = fed.sync(node)
        finally:
            fed.stop_grid(node)
            node.close()
    out.print(
        f"delivered {r['delivered']}, retrying {r['retried']}, failed {r['failed']}; "
        f"witnessed {len(r['witnessed'])} peer(s), unreachable {len(r['unreachable'])}, "
        f"split views {len(r['split_views'])}"
    )


# -- metrocloud demo --grid N ----------------------------------------------------------------


def _spawn(data_dir: Path, db: str | None, country: str, host: str, port: int, log: Path) -> Any:
    cmd = [
        sys.executable,
        "-m",
        "metrocloud.cli",
        "serve",
        "--data-dir",
        str(data_dir),
        "--country",
        country,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if db:
        cmd += ["--db", db]
    env = {k: v for k, v in os.environ.items() if not k.startswith("METROCLOUD_DB")}
    env.pop("METROCLOUD_DATA_DIR", None)
    handle = log.open("ab")
    # our own interpreter and command line, no shell
    return subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)  # noqa: S603


def _wait_healthy(proc: Any, url: str, deadline: float) -> bool:
    import httpx

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2, trust_env=False).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _seed(data_dir: Path, countries: list[str], host: str, port: int, per_type: int) -> Any:
    from metrocloud.api.grid_local import LocalTransport
    from metrocloud.grid.identity import admit_node, init_anchor, load_anchor
    from metrocloud.services import federation as fed
    from metrocloud.services._demo_exchange import private_directory
    from metrocloud.services._federation_demo import seed_grid_demo
    from metrocloud.services.node import Node

    anchor_dir = data_dir / "anchor"
    init_anchor(anchor_dir)
    anchor = load_anchor(anchor_dir)
    nodes: dict[str, Node] = {}
    urls: dict[str, str] = {}
    transport = LocalTransport()
    try:
        for i, c in enumerate(countries):
            urls[c] = f"http://{host}:{port + i}"
            nodes[c] = Node.open(_settings(data_dir / c.lower(), None, country=c))
            transport.add(urls[c], nodes[c])
            fed.set_transport(nodes[c], transport)
        now = datetime.now(UTC)
        admissions = {
            c: admit_node(
                anchor, public_key=n.key.public_key, country=c, base_url=urls[c], now=now
            ).to_json()
            for c, n in nodes.items()
        }
        for c, n in nodes.items():
            (data_dir / c.lower() / "admission.json").write_text(json.dumps(admissions[c]))
            fed.join_grid(n, admissions[c], anchor.public_key)
        for c, n in nodes.items():
            for other in countries:
                if other != c:
                    fed.add_peer(n, admissions[other])

        def sync_all() -> None:
            for _ in range(3):
                for n in nodes.values():
                    fed.sync(n)

        with _progress() as bar:
            seeded = seed_grid_demo(
                nodes,
                sync_all,
                keys_dir=private_directory(data_dir / "parties"),
                per_type=per_type,
                progress=_tracker(bar),
            )
        # the sender's copy of the document it sent (the nodes hold only its ciphertext)
        msg = seeded.exchange
        document = private_directory(data_dir / "documents") / "technical-file.pdf"
        fd = os.open(document, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msg.document)
        return {
            "nodes": [
                {
                    "country": c,
                    "node_id": nodes[c].node_id,
                    "base_url": urls[c],
                    "data_dir": str(data_dir / c.lower()),
                    "credentials": seeded.credentials[c],
                }
                for c in countries
            ],
            "exchange": {
                "message_id": msg.message_id,
                "sender_id": msg.sender_id,
                "recipient_ids": list(msg.recipient_ids),
                "content_type": msg.content_type,
                "document": str(document),
                "sha256": msg.sha256,
            },
        }
    finally:
        for n in nodes.values():
            fed.stop_grid(n)
            n.close()
        transport.close()


def _load_or_seed(data_dir: Path, countries: list[str], host: str, port: int, per_type: int) -> Any:
    path = data_dir / "grid.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        grid = json.loads(path.read_text())
        if [n["country"] for n in grid["nodes"]] != countries:
            raise CliError(f"{path} holds another grid; use another --data-dir")
        err.print(f"{data_dir} holds a seeded grid; serving it")
        return grid
    if any(data_dir.iterdir()):
        raise CliError(f"{data_dir} is not empty and holds no grid.json; use another one")
    grid = _seed(data_dir, countries, host, port, per_type)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(grid, f, indent=2)
    os.replace(tmp, path)
    return grid


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the grid like Ctrl-C: the nodes end cleanly


def _serve_grid(grid: Any, data_dir: Path, host: str, port: int) -> None:
    procs = []
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for i, n in enumerate(grid["nodes"]):
            log = data_dir / f"{n['country'].lower()}.log"
            procs.append(_spawn(Path(n["data_dir"]), None, n["country"], host, port + i, log))
        deadline = time.monotonic() + 60
        for p, n in zip(procs, grid["nodes"], strict=True):
            if not _wait_healthy(p, n["base_url"], deadline):
                raise CliError(
                    f"the {n['country']} node did not start on {n['base_url']}; see "
                    f"{data_dir / (n['country'].lower() + '.log')}"
                )
        err.print(f"{len(procs)} nodes serving; Ctrl-C stops them")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        raise CliError("a node process ended; stopping the grid")
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def run_grid_demo(
    *, nodes: int, data_dir: Path, host: str, port: int, per_type: int, no_serve: bool
) -> None:
    """``metrocloud demo --grid N``: N member-state nodes as processes on ``host`` from
    ``port`` on, admitted under one anchor, peered and seeded; writes DATA_DIR/grid.json."""
    from metrocloud.services._federation_demo import NATIONAL

    with _errors():
        if not 2 <= nodes <= len(NATIONAL):
            raise CliError(f"--grid takes 2 to {len(NATIONAL)} nodes, got {nodes}")
        grid = _load_or_seed(data_dir, list(NATIONAL)[:nodes], host, port, per_type)
    table = Table(title="metrocloud grid demo")
    for col in ("country", "node", "API", "authority token"):
        table.add_column(col, overflow="fold")
    for n in grid["nodes"]:
        table.add_row(
            n["country"],
            n["node_id"],
            f"{n['base_url']}/api/v1",
            n["credentials"]["authority"]["token"],
        )
    out.print(table)
    out.print(f"all tokens and key directories: {data_dir / 'grid.json'}")
    if "exchange" in grid:
        x = grid["exchange"]
        out.print(
            f"confidential exchange: {x['message_id']} from {x['sender_id']} to "
            f"{', '.join(x['recipient_ids'])}, acknowledged (docs/exchange.md#demo)"
        )
    if not no_serve:
        with _errors():
            _serve_grid(grid, data_dir, host, port)
