"""Registry tables (SQLAlchemy Core).

The registry is a *view* of the transparency log (ARCHITECTURE.md decision 1): every row that
holds a legally relevant fact carries the leaf index of the statement that last changed it,
and :mod:`metrocloud.services.audit` rebuilds the rows from the log to find tampering.
Credentials, grants and the access log are operational records, not legal facts; they are not
in the log.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

__all__ = [
    "access_log",
    "alerts",
    "certificate_history",
    "certificates",
    "credentials",
    "declaration_instruments",
    "declarations",
    "device_counters",
    "device_event_logs",
    "device_keys",
    "events",
    "exchange_messages",
    "exchange_recipients",
    "grants",
    "grid_anchors",
    "grid_cosignatures",
    "grid_heads",
    "grid_inbox",
    "grid_nodes",
    "grid_nonces",
    "grid_outbox",
    "grid_peer_status",
    "grid_replicated",
    "grid_traffic",
    "instruments",
    "intake_batches",
    "intake_flags",
    "intake_rounds",
    "metadata",
    "node_meta",
    "parties",
    "party_encryption_keys",
    "quarantine",
    "stream_alerts",
    "stream_queue",
    "stream_segments",
    "stream_state",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = String(40)

node_meta = Table(
    "node_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

parties = Table(
    "parties",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("country", String(2), nullable=False),
    Column("nb_number", String(4), nullable=True, unique=True),
    Column("public_key", Text, nullable=True),
    Column("key_id", String(64), nullable=True, unique=True),
    Column("admitted_at", String(30), nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
)

credentials = Table(
    "credentials",
    metadata,
    Column("token_id", String(16), primary_key=True),
    Column("party_id", ID, ForeignKey("parties.id"), nullable=False, index=True),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("label", String(200), nullable=False, default=""),
    Column("issued_at", String(30), nullable=False),
    Column("expires_at", String(30), nullable=True),
    Column("revoked_at", String(30), nullable=True),
    # SHA-256 of the signature of a proof-of-possession token request (replay protection)
    Column("proof_sha256", String(64), nullable=True, unique=True),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", ID, primary_key=True),
    Column("number", String(80), nullable=False, unique=True),
    Column("notified_body_id", ID, ForeignKey("parties.id"), nullable=False, index=True),
    Column("holder_id", ID, ForeignKey("parties.id"), nullable=False, index=True),
    Column("module", String(4), nullable=False),
    Column("category", String(8), nullable=False, index=True),
    Column("model", String(200), nullable=False),
    Column("accuracy_class", String(16), nullable=False),
    Column("software", JSON, nullable=False),
    Column("rated_conditions", JSON, nullable=False),
    Column("issued_on", Date, nullable=False),
    Column("valid_until", Date, nullable=False),
    Column("status", String(12), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
)

certificate_history = Table(
    "certificate_history",
    metadata,
    Column("certificate_id", ID, ForeignKey("certificates.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("action", String(12), nullable=False),
    Column("status", String(12), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", String(30), nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
)

instruments = Table(
    "instruments",
    metadata,
    Column("id", ID, primary_key=True),
    Column("serial", String(64), nullable=False),
    Column("manufacturer_id", ID, ForeignKey("parties.id"), nullable=False),
    Column("certificate_id", ID, ForeignKey("certificates.id"), nullable=False),
    Column("category", String(8), nullable=False),
    Column("state", String(20), nullable=False),
    Column("operator_id", ID, ForeignKey("parties.id"), nullable=True),
    Column("region", String(5), nullable=True),
    Column("verified_until", Date, nullable=True),
    Column("software", Text, nullable=True),  # canonical JSON text (projection.software_text)
    Column("event_count", Integer, nullable=False, default=0),
    Column("registered_leaf", BigInteger, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    # serials are unique per manufacturer; the serial-first order also serves look-ups by serial
    UniqueConstraint("serial", "manufacturer_id", name="uq_instruments_serial_manufacturer"),
    Index("ix_instruments_manufacturer_id", "manufacturer_id", "id"),
    Index("ix_instruments_certificate_id", "certificate_id", "id"),
    Index("ix_instruments_operator_id", "operator_id", "id"),
    Index("ix_instruments_state_id", "state", "id"),
    Index("ix_instruments_category_id", "category", "id"),
    Index("ix_instruments_region_id", "region", "id"),
    sqlite_with_rowid=False,  # one B-tree keyed by the id, not rowid + index
)

device_keys = Table(
    "device_keys",
    metadata,
    # keyed by instrument first: registrations append in id order instead of scattering
    # 10,000 random key ids over the whole tree (which made every commit rewrite thousands
    # of pages). A key is looked up through its instrument; the same key on two instruments
    # is refused within a batch and is a finding for monitoring across batches.
    Column("instrument_id", ID, ForeignKey("instruments.id"), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("algorithm", String(24), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("revoked_leaf", BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

events = Table(
    "events",
    metadata,
    Column("id", ID, primary_key=True),
    Column("instrument_id", ID, ForeignKey("instruments.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("kind", String(24), nullable=False),
    Column("occurred_at", String(30), nullable=False),
    Column("recorded_by", ID, ForeignKey("parties.id"), nullable=False),
    Column("details", JSON, nullable=False),
    Column("state_after", String(20), nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    UniqueConstraint("instrument_id", "seq", name="uq_events_instrument_seq"),
    # fleet-wide questions ask by kind (every tamper event, every open non-compliance):
    # a range of this index, not a scan of all events (services/surveillance, migration 0005)
    Index("ix_events_kind_instrument_id", "kind", "instrument_id", "seq"),
    sqlite_with_rowid=False,  # one B-tree keyed by the id, not rowid + index
)

declarations = Table(
    "declarations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("certificate_id", ID, ForeignKey("certificates.id"), nullable=False, index=True),
    Column("manufacturer_id", ID, ForeignKey("parties.id"), nullable=False, index=True),
    Column("module", String(4), nullable=False),
    Column("instrument_ids", JSON, nullable=False),
    Column("declared_on", Date, nullable=False),
    Column("document_sha256", String(64), nullable=True),
    Column("leaf_index", BigInteger, nullable=False),
)

#: which declarations cover an instrument: the declarations' id lists, indexed by instrument
declaration_instruments = Table(
    "declaration_instruments",
    metadata,
    Column("instrument_id", ID, ForeignKey("instruments.id"), primary_key=True),
    Column("declaration_id", ID, ForeignKey("declarations.id"), primary_key=True),
    sqlite_with_rowid=False,
)

grants = Table(
    "grants",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner_id", ID, ForeignKey("parties.id"), nullable=False, index=True),
    Column("grantee_id", ID, ForeignKey("parties.id"), nullable=False, index=True),
    Column("instrument_id", ID, nullable=True),  # None: all of the owner's instruments
    Column("created_at", String(30), nullable=False),
    Column("revoked_at", String(30), nullable=True),
)

access_log = Table(
    "access_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", String(30), nullable=False),
    Column("owner_id", ID, nullable=False),
    Column("reader_id", ID, nullable=False),
    Column("reader_role", String(20), nullable=False),
    Column("action", String(40), nullable=False),
    Column("resource_type", String(20), nullable=False),
    Column("resource_id", ID, nullable=False),
    Column("via_grant", Boolean, nullable=False, default=False),
    Index("ix_access_log_owner_id", "owner_id", "id"),
)


# -- measurement intake (operational records: the readings' proof is the device signature) --

_AUTO_ID = BigInteger().with_variant(Integer, "sqlite")

intake_batches = Table(
    "intake_batches",
    metadata,
    # the intake's durable log: a batch is acknowledged once its row is committed; the lake
    # flusher moves the readings into Parquet and then drops the wire bytes (its round's
    # ``intake_rounds`` row)
    Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("key_id", String(64), nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("instrument_id", ID, nullable=False),
    Column("category", String(8), nullable=False),
    Column("readings", Integer, nullable=False),
    Column("first_t", BigInteger, nullable=False),
    Column("last_t", BigInteger, nullable=False),
    Column("received_at", String(30), nullable=False),
    Column("transport", String(8), nullable=False),
    # the lake segment the flusher put the batch in (set before the lake write, so that a
    # crash redoes exactly that segment); its round's wire lines go once it is committed
    Column("segment", String(64), nullable=True),
    # the ``intake_rounds`` row that held its wire line (its lines are in the order of ids)
    Column("round_id", BigInteger, nullable=True),
    Index("ix_intake_batches_segment", "segment", "id"),
    Index("ix_intake_batches_round_id", "round_id"),
    # a replayed batch is found by its first reading's time, key and counter (a replay is
    # the same payload): new batches land at the index's time-ordered end, so an insert
    # touches its last pages, not a random page of an index as large as the whole log
    # (migration 0011; a key's counters are kept unique by the intake's decision, which
    # runs in the write transaction against ``device_counters``)
    Index("ix_intake_batches_first_t", "first_t", "key_id", "counter"),
    # imported OCMF records (counters -1, -2, ... per key) are looked up by key
    Index(
        "uq_intake_batches_imported",
        "key_id",
        "counter",
        unique=True,
        sqlite_where=text("counter < 0"),
        postgresql_where=text("counter < 0"),
    ),
)

intake_rounds = Table(
    "intake_rounds",
    metadata,
    # what one intake write transaction accepted, until the flusher has its readings in the
    # lake; then the row is deleted (migration 0011, metrocloud.ingest.rounds). One row per
    # transaction, not per batch: a batch of one reading costs the log one row, its record.
    # ``format`` "arrow": the batches' readings decoded (Arrow IPC, one row per batch, in
    # the order of their ``intake_batches`` ids); "wires": their exact wire lines (imported
    # OCMF records), each after its length. ``digest``: SHA-256 of ``data``
    Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("batches", Integer, nullable=False),
    Column("readings", BigInteger, nullable=False),
    Column("format", String(8), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("digest", String(64), nullable=False),
    # the lake segment the flusher put the round in (with its batches, in one transaction)
    Column("segment", String(64), nullable=True),
    Index("ix_intake_rounds_segment", "segment", "id"),
    # batches name their round by id: an id is never used again, even once every round
    # was deleted (SQLite would otherwise hand out the highest remaining id plus one)
    sqlite_autoincrement=True,
)

device_counters = Table(
    "device_counters",
    metadata,
    # per device key: the newest accepted batch (the counter and chain continue from here)
    Column("key_id", String(64), primary_key=True),
    Column("instrument_id", ID, nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("last_t", BigInteger, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    # untrusted data that failed a check, kept with its reason (ARCHITECTURE.md decision 9)
    Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("received_at", String(30), nullable=False),
    Column("transport", String(8), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("instrument_id", ID, nullable=True),
    Column("key_id", String(64), nullable=True),
    Column("counter", BigInteger, nullable=True),
    Column("wire", LargeBinary, nullable=False),
    Index("ix_quarantine_instrument_id", "instrument_id", "id"),
    Index("ix_quarantine_reason", "reason", "id"),
)

intake_flags = Table(
    "intake_flags",
    metadata,
    # findings about an instrument raised by the intake (a counter gap, unapproved software)
    Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("instrument_id", ID, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", String(30), nullable=False),
    Index("ix_intake_flags_instrument_id", "instrument_id", "id"),
)


device_event_logs = Table(
    "device_event_logs",
    metadata,
    # an instrument's device event log (metrocloud.device.eventlog) as uploaded by its
    # manufacturer or operator: one row per record, the exact canonical line the device wrote.
    # Uploads only append (a rewritten history is refused), so the rows are the longest
    # chain-verified prefix the node has seen. The device signature is the proof.
    Column("instrument_id", ID, ForeignKey("instruments.id"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("at", String(30), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("hash", String(64), nullable=False),  # hex SHA-256 of the signed bytes
    Column("line", Text, nullable=False),
    Column("uploaded_at", String(30), nullable=False),
    Column("uploaded_by", ID, nullable=False),
    sqlite_with_rowid=False,
)


# -- Legal Metrology Grid (migration 0006; docs/grid.md) --
# registry views of the log: the pinned trust anchor, the admitted nodes (the node itself
# included), the statements replicated from other nodes and the EU-wide alert board

grid_anchors = Table(
    "grid_anchors",
    metadata,
    Column("anchor_id", String(64), primary_key=True),  # hex SHA-256 of the anchor SPKI
    Column("public_key", Text, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
)

grid_nodes = Table(
    "grid_nodes",
    metadata,
    Column("node_id", String(40), primary_key=True),
    Column("country", String(2), nullable=False),
    Column("base_url", String(300), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("key_id", String(64), nullable=False, unique=True),
    Column("anchor_id", String(64), ForeignKey("grid_anchors.anchor_id"), nullable=False),
    Column("admission", Text, nullable=False),  # the anchor-signed admission, canonical JSON
    Column("is_self", Boolean, nullable=False),
    Column("admitted_at", String(30), nullable=False),
    Column("removed_leaf", BigInteger, nullable=True),
    Column("leaf_index", BigInteger, nullable=False),
)

grid_replicated = Table(
    "grid_replicated",
    metadata,
    # one row per statement of another node applied here (hex SHA-256 of its signed bytes)
    Column("digest", String(64), primary_key=True),
    Column("origin_node_id", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    # market-surveillance alerts (raised here or replicated), other nodes' non-compliance
    # notices, and split views found by witnessing
    Column("id", ID, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("origin_node_id", String(40), nullable=False),
    Column("country", String(2), nullable=False),
    Column("raised_by", ID, nullable=False),
    Column("raised_at", String(30), nullable=False),
    Column("subject_type", String(20), nullable=False),
    Column("subject_id", String(80), nullable=False),
    Column("severity", String(12), nullable=False),
    Column("title", String(300), nullable=False),
    Column("details", JSON, nullable=False),
    Column("leaf_index", BigInteger, nullable=False),
    Index("ix_alerts_subject_id", "subject_id", "id"),
    Index("ix_alerts_kind_id", "kind", "id"),
)

# operational records of the node-to-node link (not legal facts, not in the log)

grid_nonces = Table(
    "grid_nonces",
    metadata,
    # nonces of signed node-to-node requests seen within the clock-skew window
    Column("node_id", String(40), primary_key=True),
    Column("nonce", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),  # unix seconds
    Index("ix_grid_nonces_expires_at", "expires_at"),
)

grid_outbox = Table(
    "grid_outbox",
    metadata,
    # messages to peers, committed with the fact that caused them; delivered in id order
    Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False),
    Column("peer_id", String(40), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", String(30), nullable=False),
    Column("status", String(12), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),  # unix milliseconds
    Column("delivered_at", String(30), nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("message_id", "peer_id", name="uq_grid_outbox_message_peer"),
    Index("ix_grid_outbox_peer_status", "peer_id", "status", "id"),
)

grid_inbox = Table(
    "grid_inbox",
    metadata,
    # messages applied here, by sender and message id: a redelivery gets the same answer
    Column("sender_id", String(40), primary_key=True),
    Column("message_id", String(64), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("received_at", String(30), nullable=False),
    Column("response", Text, nullable=False),
)

grid_traffic = Table(
    "grid_traffic",
    metadata,
    # every node-to-node request sent or received, with its bodies (settings.grid_traffic_bodies)
    Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("at", String(30), nullable=False),
    Column("direction", String(3), nullable=False),  # out | in
    Column("peer_id", String(40), nullable=False),
    Column("method", String(8), nullable=False),
    Column("path", String(500), nullable=False),
    Column("status", Integer, nullable=False),
    Column("request_bytes", Integer, nullable=False),
    Column("response_bytes", Integer, nullable=False),
    Column("request_sha256", String(64), nullable=False),
    Column("request_body", Text, nullable=True),
    Column("response_body", Text, nullable=True),
    Index("ix_grid_traffic_peer_id", "peer_id", "id"),
)

grid_peer_status = Table(
    "grid_peer_status",
    metadata,
    Column("node_id", String(40), primary_key=True),
    Column("last_contact_at", String(30), nullable=True),
    Column("last_delivery_at", String(30), nullable=True),
    Column("last_error_at", String(30), nullable=True),
    Column("last_error", Text, nullable=True),
)

grid_heads = Table(
    "grid_heads",
    metadata,
    # signed tree heads of other nodes, as fetched here or gossiped by a peer (observed_by)
    Column("origin_id", String(40), primary_key=True),
    Column("tree_size", BigInteger, primary_key=True),
    Column("root_hash", String(64), primary_key=True),
    Column("observed_by", String(40), primary_key=True),
    Column("head", Text, nullable=False),
    # checked: same root as every other head of its size, and consistent (RFC 9162 §2.1.4)
    # with its neighbours in size; a gossiped head waits unchecked for the next round
    Column("verified", Boolean, nullable=False),
    Column("observed_at", String(30), nullable=False),
)

grid_cosignatures = Table(
    "grid_cosignatures",
    metadata,
    # a witness's signature over a node's tree head: made here for peers' heads, and
    # received from the witnesses of this node's own heads
    Column("origin_id", String(40), primary_key=True),
    Column("tree_size", BigInteger, primary_key=True),
    Column("root_hash", String(64), primary_key=True),
    Column("witness_id", String(40), primary_key=True),
    Column("cosignature", Text, nullable=False),
    Column("signed_at", String(30), nullable=False),
)


# -- confidential exchange (migration 0007; docs/exchange.md) --

party_encryption_keys = Table(
    "party_encryption_keys",
    metadata,
    # registry view of ``party.encryption_key`` statements: a party's X25519 keys for HPKE,
    # each with the binding the party signed with its registered key; the newest one (the
    # highest leaf) is the one senders seal to
    Column("party_id", ID, ForeignKey("parties.id"), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("public_key", String(44), nullable=False),  # base64 of the 32 raw bytes
    Column("created_at", String(30), nullable=False),  # the party's time in the binding
    Column("binding", Text, nullable=False),  # canonical JSON of the signed binding
    Column("leaf_index", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

exchange_messages = Table(
    "exchange_messages",
    metadata,
    # operational records: the signed envelope of each document routed by this node (header
    # with the sealed keys, never a key or a plaintext byte). The ciphertext is a file under
    # DATA_DIR/exchange; ``stored_sha256`` is checked when it is written and when it is read.
    Column("id", ID, primary_key=True),
    Column("sender_id", ID, nullable=False),
    Column("envelope", Text, nullable=False),  # canonical JSON {"header", "signature"}
    Column("header_sha256", String(64), nullable=False),
    Column("content_type", String(127), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("ciphertext_size", BigInteger, nullable=False),
    Column("stored_sha256", String(64), nullable=False),
    Column("created_at", String(30), nullable=False),  # the sender's time in the header
    Column("received_at", String(30), nullable=False),  # this node's time
    Column("leaf_index", BigInteger, nullable=True),  # its exchange.sent statement
    Index("ix_exchange_messages_sender_id", "sender_id", "id"),
)

exchange_recipients = Table(
    "exchange_recipients",
    metadata,
    Column("message_id", ID, ForeignKey("exchange_messages.id"), primary_key=True),
    Column("recipient_id", ID, primary_key=True),
    Column("delivery", String(16), nullable=False),  # "local", or the other node's country
    Column("fetched_at", String(30), nullable=True),  # first download of the ciphertext
    Column("receipt", Text, nullable=True),  # canonical JSON of the signed receipt
    Column("acknowledged_at", String(30), nullable=True),
    Column("receipt_leaf", BigInteger, nullable=True),  # its exchange.receipt statement
    Index("ix_exchange_recipients_recipient_id", "recipient_id", "message_id"),
)


# -- streaming monitoring (migration 0009; docs/monitoring.md, "Streaming") --

stream_state = Table(
    "stream_state",
    metadata,
    # per register: the newest reading the streaming monitor saw, so that the next segment
    # continues from it (after a restart too); operational, rebuilt by replaying the lake
    Column("instrument", ID, primary_key=True),
    Column("quantity", String(64), primary_key=True),
    Column("last_t", BigInteger, nullable=False),  # ms since the epoch, UTC
    Column("last_value", Float(precision=53), nullable=False),
    sqlite_with_rowid=False,
)

stream_alerts = Table(
    "stream_alerts",
    metadata,
    # one alert per (instrument, kind), raised as readings arrive; a repeat adds to it
    Column("instrument", ID, primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("severity", String(12), nullable=False),
    Column("at", String(30), nullable=False),  # first evidence (RFC 3339, UTC)
    Column("last_at", String(30), nullable=False),  # newest evidence
    Column("count", BigInteger, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("raised_at", String(30), nullable=False),  # when the node raised it
    Column("updated_at", String(30), nullable=False),
    Column("segment", String(200), nullable=False),  # the lake segment that raised it
    sqlite_with_rowid=False,
)

stream_segments = Table(
    "stream_segments",
    metadata,
    # the lake segments the streaming monitor has taken in: a segment written again after a
    # crash is not counted twice
    Column("segment", String(200), primary_key=True),
    Column("readings", BigInteger, nullable=False),
    Column("late", BigInteger, nullable=False),  # readings not newer than their register's
    Column("alerts", Integer, nullable=False),  # alerts it raised or added to
    Column("observed_at", String(30), nullable=False),
)

stream_queue = Table(
    "stream_queue",
    metadata,
    # the lake segments committed and not yet taken in by the streaming monitor (migration
    # 0010), in commit order: the flusher's hook adds a row before it drops the segment's
    # intake rounds, the monitor deletes it in the transaction that takes the segment in; a
    # segment that failed ``attempts`` times waits until ``next_try_at``, a poisoned one
    # (``poisoned_at``) is no longer tried
    Column("position", _AUTO_ID, primary_key=True, autoincrement=True),
    Column("segment", String(200), nullable=False, unique=True),
    Column("committed_at", String(30), nullable=False),
    Column("readings", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_try_at", String(30), nullable=True),
    Column("error", Text, nullable=True),
    Column("poisoned_at", String(30), nullable=True),
)
