"""What the shells and submodels are rendered from: registry rows, read together.

A view holds the rows of one instrument (or one instrument type) as the registry has them at
read time; the mapping renders AAS objects from it and nothing keeps them. Every loader reads
a whole batch in a fixed, small number of queries (five for instruments, two for types),
whatever the batch size, so an export of 10^6 instruments costs 5,000 queries, not 10^7.
The view of a single record (one submodel read) reads its certificate and its few parties
by primary key instead (:func:`metrocloud.store.point.get_row`, a fraction of a Core query's
cost); the rows are the same.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, Table, bindparam, select

from metrocloud.domain.errors import NotFound
from metrocloud.store.point import get_row
from metrocloud.store.schema import (
    certificate_history,
    certificates,
    declaration_instruments,
    declarations,
    device_keys,
    events,
    instruments,
    parties,
)

__all__ = [
    "PARTS",
    "SUBMODEL_PARTS",
    "InstrumentView",
    "TypeView",
    "ViewLoader",
    "load_instrument",
    "load_type",
]

Row = Any  # a SQLAlchemy Row of the table named by the attribute

#: a view of one record with at most this many certificates or parties to read: point reads,
#: else one ``IN`` query (a batch: a fixed number of queries whatever its size)
_POINT_READS = 4


# The batch queries, built once (``ids``: the ids of the batch, an expanding bind parameter);
# building a statement anew on every read cost as much as running it.
def _by_ids(table: Table, column: str = "id") -> Select[Any]:
    return select(table).where(table.c[column].in_(bindparam("ids", expanding=True)))


_PARTIES = _by_ids(parties)
_CERTIFICATES = _by_ids(certificates)
_EVENTS = _by_ids(events, "instrument_id").order_by(events.c.instrument_id, events.c.seq)
_KEYS = _by_ids(device_keys, "instrument_id").order_by(
    device_keys.c.instrument_id, device_keys.c.key_id
)
_HISTORY = _by_ids(certificate_history, "certificate_id").order_by(
    certificate_history.c.certificate_id, certificate_history.c.seq
)
_COVERING = (
    select(declarations, declaration_instruments.c.instrument_id.label("covered_id"))
    .select_from(
        declaration_instruments.join(
            declarations, declarations.c.id == declaration_instruments.c.declaration_id
        )
    )
    .where(declaration_instruments.c.instrument_id.in_(bindparam("ids", expanding=True)))
    .order_by(declarations.c.declared_on, declarations.c.leaf_index)
)


#: the optional parts of an instrument view
PARTS = frozenset({"device_keys", "events", "declarations"})
#: what each instrument submodel reads beyond the instrument, its certificate and parties
SUBMODEL_PARTS: dict[str, frozenset[str]] = {
    "Nameplate": frozenset(),
    "Conformity": frozenset({"declarations"}),
    "SoftwareIdentification": frozenset(),
    "Verification": frozenset({"events"}),
    "LifeCycle": frozenset({"events"}),
    "TimeSeries": frozenset(),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class InstrumentView:
    """One instrument with everything its submodels show."""

    instrument: Row
    certificate: Row
    #: every party the submodels name: manufacturer, operator, notified body, event recorders
    parties: Mapping[str, Row]
    device_keys: tuple[Row, ...]
    #: all life-cycle events, oldest first (by ``seq``)
    events: tuple[Row, ...]
    #: declarations of conformity that list this instrument, oldest first
    declarations: tuple[Row, ...]
    #: which of the optional parts (:data:`PARTS`) were loaded; the others are empty
    parts: frozenset[str] = frozenset({"device_keys", "events", "declarations"})

    @property
    def manufacturer(self) -> Row:
        return self.parties[self.instrument.manufacturer_id]

    @property
    def operator(self) -> Row | None:
        op = self.instrument.operator_id
        return self.parties[op] if op is not None else None

    @property
    def notified_body(self) -> Row:
        return self.parties[self.certificate.notified_body_id]


@dataclass(frozen=True, kw_only=True, slots=True)
class TypeView:
    """One instrument type: its EU-type examination certificate and who issued and holds it."""

    certificate: Row
    parties: Mapping[str, Row]
    #: every action on the certificate, oldest first (by ``seq``)
    history: tuple[Row, ...]

    @property
    def holder(self) -> Row:
        return self.parties[self.certificate.holder_id]

    @property
    def notified_body(self) -> Row:
        return self.parties[self.certificate.notified_body_id]


def _grouped(rows: Iterable[Row], key: str) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        out[getattr(r, key)].append(r)
    return out


class ViewLoader:
    """Loads views batch by batch on one connection.

    Certificates and parties are few next to instruments and repeat from batch to batch, so
    the loader keeps the ones it has read (an export reads each once); instrument rows,
    events, keys and declarations are never kept.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._certificates: dict[str, Row] = {}
        self._parties: dict[str, Row] = {}

    def _load(
        self, table: Table, query: Select[Any], missing: set[str], into: dict[str, Row], one: bool
    ) -> None:
        if not missing:
            return
        if one and len(missing) <= _POINT_READS:
            for i in sorted(missing):
                r = get_row(self._conn, table, i)
                if r is not None:
                    into[i] = r
        else:
            for r in self._conn.execute(query, {"ids": sorted(missing)}):
                into[r.id] = r

    def _load_parties(self, ids: Iterable[str | None], *, one: bool) -> None:
        missing = {i for i in ids if i is not None and i not in self._parties}
        self._load(parties, _PARTIES, missing, self._parties, one)

    def _load_certificates(self, ids: Iterable[str], *, one: bool) -> None:
        missing = {i for i in ids if i not in self._certificates}
        self._load(certificates, _CERTIFICATES, missing, self._certificates, one)

    def _grouped(self, query: Select[Any], ids: Sequence[str], key: str) -> dict[str, list[Row]]:
        return _grouped(self._conn.execute(query, {"ids": list(ids)}), key)

    def instruments(
        self, rows: Sequence[Row], *, parts: frozenset[str] = PARTS
    ) -> list[InstrumentView]:
        """Views of ``rows`` (``instruments`` rows), in their order: five queries at most.

        ``parts`` names the optional parts to load (a submodel needs only some:
        :data:`SUBMODEL_PARTS`); the others stay empty and the view says so in ``parts``.
        """
        if not rows:
            return []
        unknown = parts - PARTS
        if unknown:
            raise ValueError(f"unknown view parts {sorted(unknown)}; known: {sorted(PARTS)}")
        ids = [r.id for r in rows]
        one = len(rows) == 1
        self._load_certificates((r.certificate_id for r in rows), one=one)
        evs: dict[str, list[Row]] = {}
        if "events" in parts:
            evs = self._grouped(_EVENTS, ids, "instrument_id")
        keys: dict[str, list[Row]] = {}
        if "device_keys" in parts:
            keys = self._grouped(_KEYS, ids, "instrument_id")
        covering: dict[str, list[Row]] = {}
        if "declarations" in parts:  # through the instrument index
            covering = self._grouped(_COVERING, ids, "covered_id")
        self._load_parties(
            [
                *(p for r in rows for p in (r.manufacturer_id, r.operator_id)),
                *(self._certificates[r.certificate_id].notified_body_id for r in rows),
                *(e.recorded_by for es in evs.values() for e in es),
            ],
            one=one,
        )
        out = []
        for r in rows:
            cert = self._certificates[r.certificate_id]
            these = evs.get(r.id, [])
            named = {r.manufacturer_id, r.operator_id, cert.notified_body_id}
            named.update(e.recorded_by for e in these)
            out.append(
                InstrumentView(
                    instrument=r,
                    certificate=cert,
                    parties={p: self._parties[p] for p in named if p is not None},
                    device_keys=tuple(keys.get(r.id, ())),
                    events=tuple(these),
                    declarations=tuple(covering.get(r.id, ())),
                    parts=parts,
                )
            )
        return out

    def types(self, rows: Sequence[Row]) -> list[TypeView]:
        """Views of ``rows`` (``certificates`` rows), in their order: two queries at most."""
        if not rows:
            return []
        for r in rows:
            self._certificates.setdefault(r.id, r)
        self._load_parties(
            (p for r in rows for p in (r.holder_id, r.notified_body_id)), one=len(rows) == 1
        )
        history = self._grouped(_HISTORY, [r.id for r in rows], "certificate_id")
        return [
            TypeView(
                certificate=r,
                parties={p: self._parties[p] for p in (r.holder_id, r.notified_body_id)},
                history=tuple(history.get(r.id, ())),
            )
            for r in rows
        ]


def load_instrument(conn: Connection, instrument_id: str) -> InstrumentView:
    """The view of one instrument; :class:`NotFound` if the registry has no such instrument."""
    row = conn.execute(select(instruments).where(instruments.c.id == instrument_id)).first()
    if row is None:
        raise NotFound(f"instrument {instrument_id} does not exist")
    return ViewLoader(conn).instruments([row])[0]


def load_type(conn: Connection, certificate_id: str) -> TypeView:
    """The view of one instrument type, named by its certificate id; :class:`NotFound` if none."""
    row = conn.execute(select(certificates).where(certificates.c.id == certificate_id)).first()
    if row is None:
        raise NotFound(f"instrument type (certificate) {certificate_id} does not exist")
    return ViewLoader(conn).types([row])[0]
