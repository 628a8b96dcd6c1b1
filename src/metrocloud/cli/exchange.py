"""``metrocloud exchange``: send and receive end-to-end encrypted documents (docs/exchange.md).

Everything secret happens here, on the party's side: the party's signing key and X25519 key
stay in its key directory (``--keys``), documents are sealed before they leave and opened
after they arrive. The node only ever sees envelopes and ciphertext.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from metrocloud.cli import _exchange_client as client_mod
from metrocloud.cli._common import CliError, _errors, _progress, app, out

__all__ = ["exchange_app"]

exchange_app = typer.Typer(
    no_args_is_help=True,
    help="Confidential exchange: end-to-end encrypted documents between parties "
    "(HPKE, RFC 9180; docs/exchange.md).",
)
app.add_typer(exchange_app, name="exchange")

Keys = Annotated[
    Path,
    typer.Option(
        "--keys",
        envvar="METROCLOUD_PARTY_KEYS",
        help="The party's key directory: its signing key <party>.key.pem and encryption key "
        "<party>.x25519.key.pem, encrypted with $METROCLOUD_KEY_PASSPHRASE (else DIR/passphrase).",
    ),
]
NodeUrl = Annotated[
    str | None,
    typer.Option(
        "--node", envvar="METROCLOUD_NODE_URL", help="The node, e.g. http://127.0.0.1:8000."
    ),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="METROCLOUD_TOKEN", help="Your bearer token.")
]
MessageId = Annotated[str, typer.Argument(help="The message (xch-...).")]


def _passphrase(keys: Path) -> bytes:
    from metrocloud.trust.keys import KeyStore

    return KeyStore.passphrase_from(keys)


def _store(keys: Path) -> Any:
    from metrocloud.trust.keys import KeyStore

    return KeyStore(keys, _passphrase(keys))


def _me(client: client_mod.Client) -> str:
    return str(client.get("/me")["party_id"])


def _signing_key(keys: Path, party_id: str) -> Any:
    store = _store(keys)
    if not store.exists(party_id):
        raise CliError(
            f"no signing key of {party_id} in {keys} (expected {store.path(party_id)}); "
            "create one with 'metrocloud exchange keygen --new-signing-key'"
        )
    return store.load(party_id)


def _encryption_key(keys: Path, party_id: str) -> Any:
    from metrocloud.trust.encryption import load_or_create_encryption_key

    return load_or_create_encryption_key(keys, _passphrase(keys), party_id, create=False)


@exchange_app.command("keygen")
def keygen(
    party: Annotated[str, typer.Option("--party", help="Your party id (pty-...).")],
    keys: Keys = Path("metrocloud-keys"),
    new_signing_key: Annotated[
        bool,
        typer.Option(
            "--new-signing-key",
            help="Also create the signing key (Ed25519) if there is none: give its public key "
            "(printed) to the node admin, who admits the party with it.",
        ),
    ] = False,
    node: NodeUrl = None,
    token: Token = None,
) -> None:
    """Create your X25519 encryption key beside your signing key and register its public
    half at the node, signed with your signing key (with --node and --token)."""
    from metrocloud.trust.encryption import bind_encryption_key, load_or_create_encryption_key

    with _errors():
        store = _store(keys)
        if not store.exists(party) and new_signing_key:
            signing = store.load_or_create(party)
            out.print(f"signing key {signing.key_id} created in {escape(str(store.path(party)))}")
            out.print(f"its public key (for the admission):\n{signing.public_key.to_spki_b64()}")
        signing = _signing_key(keys, party)
        key = load_or_create_encryption_key(keys, _passphrase(keys), party)
        out.print(f"encryption key {key.key_id} (X25519) of {party} in {escape(str(keys))}")
        if node is None and token is None:
            out.print("not registered: give --node and --token to publish it at your node")
            return
        client = client_mod.make_client(node, token)
        if _me(client) != party:
            raise CliError(f"the token is not {party}'s; register with the party's own token")
        binding = bind_encryption_key(party, key.public_key, signing)
        registered = client.post("/exchange/keys", binding.to_json())
    out.print(
        f"registered at {escape(client.where)}: key {registered['key_id']}, "
        f"log leaf {registered['leaf_index']}"
    )


def _checked_key(client: client_mod.Client, party_id: str) -> Any:
    """A recipient's current key, its binding checked against the party's signing key."""
    from metrocloud.trust.encryption import KeyBinding
    from metrocloud.trust.keys import PublicKey

    answer = client.get(f"/exchange/keys/{party_id}")
    binding = KeyBinding.from_json(answer["binding"])
    if binding.party_id != party_id or answer["signing_key"] is None:
        raise CliError(f"the node answered a key binding of {binding.party_id} for {party_id}")
    binding.verify(PublicKey.from_spki_b64(answer["signing_key"]))
    return binding.public_key


@exchange_app.command("send")
def send(
    file: Annotated[
        Path, typer.Argument(help="The document to send.", exists=True, dir_okay=False)
    ],
    to: Annotated[list[str], typer.Option("--to", help="A recipient (pty-...); repeat for more.")],
    keys: Keys = Path("metrocloud-keys"),
    content_type: Annotated[
        str | None, typer.Option("--content-type", help="Media type; default from the file name.")
    ] = None,
    node: NodeUrl = None,
    token: Token = None,
) -> None:
    """Seal FILE to the recipients' registered keys and send it: the document key is sealed
    with HPKE to each recipient, the content encrypted in chunks, the header signed."""
    from metrocloud.services.exchange import UPLOAD_MEDIA_TYPE, upload_prefix
    from metrocloud.store.ids import new_id
    from metrocloud.trust.confidential import seal_stream

    with _errors():
        client = client_mod.make_client(node, token)
        me = _me(client)
        signing = _signing_key(keys, me)
        recipients = [(party, _checked_key(client, party)) for party in dict.fromkeys(to)]
        media = content_type or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        country = client.get("/node")["country"]
        size = file.stat().st_size
        with tempfile.TemporaryDirectory(prefix="metrocloud-send-") as tmp:
            sealed = Path(tmp) / "document.ct"
            with _progress() as bar:
                task = bar.add_task("sealing", total=size)
                with file.open("rb") as src, sealed.open("wb") as sink:
                    env = seal_stream(
                        src,
                        sink,
                        size=size,
                        message_id=new_id("xch", country),
                        sender_id=me,
                        sender_key=signing,
                        recipients=recipients,
                        content_type=media,
                        progress=lambda done, _total: bar.update(task, completed=done),
                    )
                up = bar.add_task("uploading", total=env.layout.ciphertext_size)
                message = client.upload(
                    "/exchange/messages",
                    UPLOAD_MEDIA_TYPE,
                    client_mod.file_blocks(
                        sealed, upload_prefix(env), lambda done: bar.update(up, completed=done)
                    ),
                )
    out.print(
        f"sent {message['id']}: {size} bytes ({media}) to {', '.join(p for p, _ in recipients)}; "
        f"header SHA-256 {message['header_sha256']}"
    )


@exchange_app.command("list")
def list_messages(
    box: Annotated[str, typer.Option("--box", help="in (received) or out (sent).")] = "in",
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON.")] = False,
    node: NodeUrl = None,
    token: Token = None,
) -> None:
    """Your inbox or outbox at the node (metadata only), oldest first."""
    with _errors():
        if box not in ("in", "out"):
            raise CliError(f"--box must be 'in' or 'out', got {box!r}")
        page = client_mod.make_client(node, token).get("/exchange/messages", box=box, limit=limit)
    if as_json:
        out.print_json(json.dumps(page))
        return
    table = Table(title=f"{'inbox' if box == 'in' else 'outbox'} ({len(page['items'])})")
    for column in ("id", "from", "to", "bytes", "type", "received", "fetched", "acknowledged"):
        table.add_column(column, overflow="fold")
    for m in page["items"]:
        rs = m["recipients"]
        table.add_row(
            m["id"],
            m["sender_id"],
            "\n".join(r["party_id"] for r in rs),
            str(m["size"]),
            m["content_type"],
            m["received_at"],
            f"{sum(1 for r in rs if r['fetched_at'])}/{len(rs)}",
            f"{sum(1 for r in rs if r['acknowledged_at'])}/{len(rs)}",
        )
    out.print(table)
    if page["next_cursor"]:
        out.print("more: use the API with cursor " + page["next_cursor"])


def _envelope(client: client_mod.Client, message_id: str) -> Any:
    """The message's envelope, its sender's signature checked with the registered key."""
    from metrocloud.trust.confidential import Envelope
    from metrocloud.trust.keys import PublicKey

    meta = client.get(f"/exchange/messages/{message_id}")
    env = Envelope.from_json(meta["envelope"])
    if env.id != message_id:
        raise CliError(f"the node answered envelope {env.id} for {message_id}")
    sender = client.get(f"/parties/{env.sender}")
    if not sender.get("public_key"):
        raise CliError(f"sender {env.sender} has no registered signing key to check with")
    key = PublicKey.from_spki_b64(sender["public_key"])
    env.verify(key)
    return env, key


@exchange_app.command("fetch")
def fetch(
    message: MessageId,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the document.")],
    keys: Keys = Path("metrocloud-keys"),
    ack: Annotated[bool, typer.Option("--ack", help="Acknowledge it once it decrypted.")] = False,
    node: NodeUrl = None,
    token: Token = None,
) -> None:
    """Download a message, check the sender's signature and every chunk, decrypt it with
    your key into OUTPUT (written only if everything holds)."""
    from metrocloud.trust.confidential import open_envelope

    with _errors():
        client = client_mod.make_client(node, token)
        me = _me(client)
        env, sender_key = _envelope(client, message)
        opener = open_envelope(
            env, recipient_id=me, key=_encryption_key(keys, me), sender_key=sender_key
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
        os.close(fd)  # mkstemp: mode 0600, the plaintext is nobody else's
        try:
            with tempfile.TemporaryFile() as ct, _progress() as bar:
                down = bar.add_task("downloading", total=env.layout.ciphertext_size)
                client.download(
                    f"/exchange/messages/{message}/content",
                    ct,
                    lambda done: bar.update(down, completed=done),
                )
                ct.seek(0)
                task = bar.add_task("decrypting", total=env.layout.size)
                with open(partial, "wb") as sink:
                    opener.decrypt_stream(
                        ct,
                        sink,
                        lambda done, _t: bar.update(task, completed=done),
                    )
                    sink.flush()
                    os.fsync(sink.fileno())
            os.replace(partial, output)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        out.print(
            f"wrote {escape(str(output))}: {env.layout.size} bytes ({env.header['content_type']}) "
            f"from {env.sender}, signature and all {env.layout.chunks} chunks verified"
        )
        if ack:
            _acknowledge(client, keys, me, env)


def _acknowledge(client: client_mod.Client, keys: Path, me: str, env: Any) -> None:
    from metrocloud.trust.receipts import sign_receipt

    receipt = sign_receipt(env, me, _signing_key(keys, me))
    stored = client.post(f"/exchange/messages/{env.id}/receipt", receipt.to_json())
    out.print(f"acknowledged {env.id} (receipt in the log at leaf {stored['leaf_index']})")


@exchange_app.command("ack")
def ack(
    message: MessageId,
    keys: Keys = Path("metrocloud-keys"),
    node: NodeUrl = None,
    token: Token = None,
) -> None:
    """Acknowledge a message: a receipt over its header, signed with your signing key."""
    with _errors():
        client = client_mod.make_client(node, token)
        env, _ = _envelope(client, message)
        _acknowledge(client, keys, _me(client), env)


@exchange_app.command("receipts")
def receipts(
    message: MessageId,
    as_json: Annotated[bool, typer.Option("--json", help="Print the receipts as JSON.")] = False,
    node: NodeUrl = None,
    token: Token = None,
) -> None:
    """The signed receipts of a message, each checked against its recipient's registered
    key and the message's header."""
    from metrocloud.trust.keys import PublicKey
    from metrocloud.trust.receipts import Receipt

    with _errors():
        client = client_mod.make_client(node, token)
        env, _ = _envelope(client, message)
        items = client.get(f"/exchange/messages/{message}/receipts")["items"]
        rows = []
        for item in items:
            receipt = Receipt.from_json(item["receipt"])
            party = client.get(f"/parties/{receipt.recipient}")
            receipt.verify(PublicKey.from_spki_b64(party["public_key"]))
            if receipt.header_sha256 != env.header_sha256 or receipt.message_id != env.id:
                raise CliError(f"the receipt of {receipt.recipient} is for another header")
            rows.append((receipt, item))
    if as_json:
        out.print_json(json.dumps([item for _, item in rows]))
        return
    pending = [p for p in env.recipients if p not in {r.recipient for r, _ in rows}]
    table = Table(title=f"receipts of {message}")
    for column in ("recipient", "received at", "acknowledged at", "leaf", "signature"):
        table.add_column(column, overflow="fold")
    for receipt, item in rows:
        table.add_row(
            receipt.recipient,
            receipt.received_at,
            item["acknowledged_at"],
            # a receipt from another node is in the log of the recipient's node
            "-" if item["leaf_index"] is None else str(item["leaf_index"]),
            "verified",
        )
    out.print(table)
    if pending:
        out.print(f"no receipt yet from {', '.join(pending)}")
