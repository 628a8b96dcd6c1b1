"""The AAS Part 2 read API (IDTA-01002-3-0): authorize, page, load, log, render via the twin.

Shells are the instrument types (one per EU-type examination certificate, record ids
``cer-...``) followed by the instruments (``ins-...``); ``cer-`` sorts before ``ins-``, so one
keyset cursor carrying the last record id walks both tables in turn. Submodels are paged by
(record id, submodel index) the same way. Every page is one keyset query per table touched,
never OFFSET, never a list sliced in memory; shell pages render from the rows alone.

Who reads what (ARCHITECTURE.md decision 4), the same rules as /api/v1:

1. every caller is an authenticated party (the API's guard);
2. type shells and all their submodels are certificate data: readable by every party;
3. an instrument shell, and its submodels outside :data:`PUBLIC_SUBMODELS`, follow
   :mod:`metrocloud.services.visibility` (manufacturer, operator, authorities, the notified
   body of its certificate, grantees); lists leave out what the caller may not read;
4. the public submodels of an instrument (nameplate, conformity) are readable by every party
   except the node admin, which reads no instrument data at all;
5. every read under (3) by a party other than the owner and the operator is written to the
   access log, as /api/v1 does.
"""

from __future__ import annotations

import itertools
import re
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from aas_core3 import types as aas
from sqlalchemy import ColumnElement, Connection, Select, func, select

from metrocloud.domain.errors import InvalidInput, NotFound
from metrocloud.domain.parties import PartyRole
from metrocloud.services._aas_read_ahead import ReadAhead
from metrocloud.services.common import (
    Actor,
    Page,
    access_rows,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from metrocloud.services.instruments import instrument_row
from metrocloud.services.node import Node
from metrocloud.services.visibility import (
    check_can_read,
    granted_ids,
    refuse_node_admin,
    visible_filter,
)
from metrocloud.store.point import get_row
from metrocloud.store.schema import certificates, instruments
from metrocloud.twin import (
    INSTRUMENT_SUBMODELS,
    PUBLIC_SUBMODELS,
    SUBMODEL_PARTS,
    TYPE_SUBMODELS,
    ViewLoader,
    environment,
    instrument_shell,
    instrument_shell_json,
    instrument_submodel,
    memo_misses,
    shell_id,
    type_shell,
    type_shell_json,
    type_submodel,
)
from metrocloud.twin._render_process import RenderProcess
from metrocloud.twin.ids import ASSET_PREFIX, parse_submodel_id
from metrocloud.twin.shells import instrument_fields, prime, type_fields

__all__ = [
    "MAX_EXPORT",
    "AssetLink",
    "Prepared",
    "export",
    "get_shell",
    "get_shell_json",
    "get_submodel",
    "list_shells",
    "list_shells_json",
    "list_submodels",
    "lookup_shell_ids",
    "prepare_shell_json",
    "prepare_shell_list",
    "prepare_submodel",
    "public_submodel",
    "submodel_semantic_id",
]

T = TypeVar("T")
#: most shells plus submodels in one /serialization
MAX_EXPORT = 100
_TYPE, _INSTRUMENT = "cer", "ins"
_SEPARATORS = "_./-"  # what instrument_shell turns into "_" in an idShort (serial characters)
_MAX_CANDIDATES = 256
_BATCH = 500
_ID_SHORT_REST = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class AssetLink:
    """A look-up term ``{name, value}``: ``globalAssetId`` or a specificAssetId name."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Prepared(Generic[T]):
    """A read that is decided and rendered, but not returned until its access-log rows are
    committed (ARCHITECTURE.md decision 4): :meth:`run` from a thread, :meth:`run_async`
    from the event loop; both share transactions with concurrent reads (group commit)."""

    value: T
    log_rows: list[tuple[Any, ...]]

    def run(self, node: Node) -> T:
        node.access_log.append(self.log_rows)
        return self.value

    async def run_async(self, node: Node) -> T:
        await node.access_log.append_async(self.log_rows)
        return self.value


def public_submodel(record_id: str, name: str) -> bool:
    """Whether every party (the node admin: for types only) may read this submodel."""
    return record_id.startswith(_TYPE) or name in PUBLIC_SUBMODELS


def _owners(row: Any) -> tuple[str, tuple[str | None, ...]]:
    return row.id, (row.manufacturer_id, row.operator_id)


def _access_rows(
    node: Node, actor: Actor, action: str, rows: Sequence[Any], via_grant: set[str]
) -> list[tuple[Any, ...]]:
    """The access-log rows for reading the instrument ``rows`` (none for owner reads)."""
    if not any(actor.party_id not in (r.manufacturer_id, r.operator_id) for r in rows):
        return []
    return access_rows(
        actor,
        node.timestamp(),
        action,
        "instrument",
        [_owners(r) for r in rows],
        via_grant=via_grant,
    )


def _log(node: Node, actor: Actor, action: str, rows: Sequence[Any], via_grant: set[str]) -> None:
    """Access-log the instrument ``rows`` read; returns once the rows are committed (in a
    transaction shared with concurrent reads: :class:`~metrocloud.store.groupcommit`)."""
    node.access_log.append(_access_rows(node, actor, action, rows, via_grant))


# -- filters -------------------------------------------------------------------------------


@dataclass
class _Where:
    """Conditions on the two tables; ``None`` for a table means: no row of it can match."""

    types: list[ColumnElement[bool]] | None
    instruments: list[ColumnElement[bool]] | None
    #: exact check of certificate rows the SQL narrows only (idShorts of free-form numbers)
    type_check: Callable[[Any], bool] | None = None


def _glob(conn: Connection, column: Any, pattern: str) -> ColumnElement[bool]:
    """``column`` matches ``pattern``, whose ``_`` stands for any one character (case-exact)."""
    if conn.dialect.name == "sqlite":
        return column.op("GLOB")(pattern.replace("_", "?"))  # type: ignore[no-any-return]
    return column.like(pattern)  # type: ignore[no-any-return]


def _id_short_filter(conn: Connection, where: _Where, id_short: str) -> None:
    """Shells by idShort: ``Instrument_<serial>`` / ``Type_<certificate number>`` with every
    character an idShort does not allow turned into ``_`` (see :mod:`metrocloud.twin.shells`).

    Serials know four such characters, so a short idShort becomes an indexed ``IN`` of every
    serial it can stand for; certificate numbers are free text, so the SQL narrows by pattern
    and the rendered idShort decides.
    """
    ins, typ = "Instrument_", "Type_"
    rest_i = id_short[len(ins) :] if id_short.startswith(ins) else None
    rest_t = id_short[len(typ) :] if id_short.startswith(typ) else None
    if rest_i is None or not _ID_SHORT_REST.fullmatch(rest_i):
        where.instruments = None
    elif where.instruments is not None:
        serial = instruments.c.serial
        k = rest_i.count("_")
        if len(_SEPARATORS) ** k <= _MAX_CANDIDATES:
            parts = rest_i.split("_")
            cands = [
                "".join(itertools.chain.from_iterable(zip(parts, (*seps, ""), strict=True)))
                for seps in itertools.product(_SEPARATORS, repeat=k)
            ]
            where.instruments.append(serial.in_(cands))
        else:
            norm: Any = serial
            for sep in _SEPARATORS[1:]:
                norm = func.replace(norm, sep, "_")
            where.instruments += [_glob(conn, serial, rest_i), norm == rest_i]
    if rest_t is None or not _ID_SHORT_REST.fullmatch(rest_t):
        where.types = None
    elif where.types is not None:
        where.types.append(_glob(conn, certificates.c.number, rest_t))
        where.type_check = lambda r: type_shell(r).id_short == id_short


def _asset_filter(where: _Where, link: AssetLink) -> None:
    i, c = instruments.c, certificates.c
    on_types: ColumnElement[bool] | None = None
    on_instruments: ColumnElement[bool] | None = None
    if link.name == "globalAssetId":
        record = link.value.removeprefix(ASSET_PREFIX)
        if link.value.startswith(ASSET_PREFIX) and record.startswith(_TYPE):
            on_types = c.id == record
        elif link.value.startswith(ASSET_PREFIX) and record.startswith(_INSTRUMENT):
            on_instruments = i.id == record
    elif link.name == "serialNumber":
        on_instruments = i.serial == link.value
    elif link.name == "manufacturerId":
        on_types, on_instruments = c.holder_id == link.value, i.manufacturer_id == link.value
    elif link.name == "certificateNumber":
        on_types = c.number == link.value
    where.types = None if where.types is None or on_types is None else [*where.types, on_types]
    where.instruments = (
        None
        if where.instruments is None or on_instruments is None
        else [*where.instruments, on_instruments]
    )


def _where(
    conn: Connection,
    actor: Actor,
    id_short: str | None,
    links: Sequence[AssetLink],
    asset_kind: str | None = None,
    asset_type: str | None = None,
) -> _Where:
    where = _Where(types=[], instruments=[visible_filter(conn, actor)])
    if actor.role is PartyRole.NODE_ADMIN:
        where.instruments = None
    if asset_kind is not None and asset_kind != "Type":
        where.types = None
    if asset_kind is not None and asset_kind != "Instance":
        where.instruments = None
    if asset_type is not None:
        # an instrument's assetType is the asset id of its type; a type has none
        where.types = None
        record = asset_type.removeprefix(ASSET_PREFIX)
        if not asset_type.startswith(ASSET_PREFIX + _TYPE):
            where.instruments = None
        elif where.instruments is not None:
            where.instruments.append(instruments.c.certificate_id == record)
    if id_short is not None:
        _id_short_filter(conn, where, id_short)
    for link in links:
        _asset_filter(where, link)
    return where


# -- shells --------------------------------------------------------------------------------


_ROW_TYPES: dict[tuple[str, ...], Callable[[Iterable[Any]], Any]] = {}


def _row_type(query: Select[Any]) -> Callable[[Iterable[Any]], Any]:
    """Rows of ``query`` as named tuples: a page reads each row's fields several times
    (render, access check, access log), and a named tuple's field is some 20 times cheaper
    to read than a SQLAlchemy ``Row``'s."""
    names = tuple(str(c.key) for c in query.selected_columns)
    make = _ROW_TYPES.get(names)
    if make is None:
        row_type: Any = namedtuple("ShellRow", names)  # type: ignore[misc]
        make = _ROW_TYPES[names] = row_type._make
    return make


def _scan(
    conn: Connection,
    query: Select[Any],
    column: Any,
    after: str | None,
    want: int,
    check: Callable[[Any], bool] | None,
) -> list[Any]:
    """Up to ``want`` rows of ``query`` past ``after`` in ``column`` order: one keyset query,
    or (with an exact ``check`` on top of the SQL) batches until ``want`` rows passed it."""
    out: list[Any] = []
    make = _row_type(query)
    while len(out) < want:
        q = query.order_by(column).limit(want - len(out) if check is None else _BATCH)
        if after is not None:
            q = q.where(column > after)
        rows = [make(r) for r in conn.execute(q)]
        out += [r for r in rows if check is None or check(r)]
        if check is None or len(rows) < _BATCH:
            break
        after = getattr(rows[-1], column.key)
    return out[:want]


#: what a shell (and the access check and log of a listed one) is made of: a page reads
#: these columns only (``twin.shells`` renders from exactly these fields)
_INSTRUMENT_SHELL_COLUMNS = (
    instruments.c.id,
    instruments.c.serial,
    instruments.c.category,
    instruments.c.manufacturer_id,
    instruments.c.certificate_id,
    instruments.c.operator_id,
)
_TYPE_SHELL_COLUMNS = (
    certificates.c.id,
    certificates.c.number,
    certificates.c.model,
    certificates.c.category,
    certificates.c.notified_body_id,
    certificates.c.holder_id,
)


def _shell_rows(
    conn: Connection,
    actor: Actor,
    *,
    id_short: str | None,
    links: Sequence[AssetLink],
    limit: int,
    cursor: str | None,
    asset_kind: str | None = None,
    asset_type: str | None = None,
) -> tuple[list[Any], list[Any], str | None]:
    """(type rows, instrument rows, next cursor) of one page of shells."""
    check_limit(limit)
    key = decode_cursor(cursor, str)
    after = key[0] if key else None
    where = _where(conn, actor, id_short, links, asset_kind, asset_type)
    types: list[Any] = []
    found: list[Any] = []
    if where.types is not None and (after is None or after < _INSTRUMENT):
        q = select(*_TYPE_SHELL_COLUMNS).where(*where.types)
        types = _scan(conn, q, certificates.c.id, after, limit + 1, where.type_check)
    if len(types) <= limit and where.instruments is not None:
        q = select(*_INSTRUMENT_SHELL_COLUMNS).where(*where.instruments)
        found = _scan(conn, q, instruments.c.id, after, limit + 1 - len(types), None)
    rows = [*types, *found]
    nxt = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    found = found[: max(0, limit - len(types))]
    return types[:limit], found, nxt


def list_shells(
    node: Node,
    actor: Actor,
    *,
    id_short: str | None = None,
    asset_links: Sequence[AssetLink] = (),
    asset_kind: str | None = None,
    asset_type: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    action: str = "aas.shells.list",
) -> Page[aas.AssetAdministrationShell]:
    """One page of the shells ``actor`` may read: types first, then instruments.

    ``asset_kind`` (``Type`` / ``Instance``) and ``asset_type`` (an instrument type's asset id)
    are the registry's descriptor filters.
    """
    types, found, nxt = _readable_shell_rows(
        node,
        actor,
        id_short=id_short,
        asset_links=asset_links,
        asset_kind=asset_kind,
        asset_type=asset_type,
        limit=limit,
        cursor=cursor,
        action=action,
    )
    return Page([type_shell(r) for r in types] + [instrument_shell(r) for r in found], nxt)


def list_shells_json(
    node: Node,
    actor: Actor,
    *,
    id_short: str | None = None,
    asset_links: Sequence[AssetLink] = (),
    limit: int = 100,
    cursor: str | None = None,
) -> Page[bytes]:
    """:func:`list_shells` rendered as JSON (memoized per shell: the hot path of listings)."""
    return prepare_shell_list(
        node, actor, id_short=id_short, asset_links=asset_links, limit=limit, cursor=cursor
    ).run(node)


def prepare_shell_list(
    node: Node,
    actor: Actor,
    *,
    id_short: str | None = None,
    asset_links: Sequence[AssetLink] = (),
    limit: int = 100,
    cursor: str | None = None,
) -> Prepared[Page[bytes]]:
    """The page of :func:`list_shells_json`, read and checked, with its access-log rows.

    A plain walk (no filter) that rendered shells afresh has its next page rendered ahead
    (:mod:`metrocloud.services._aas_read_ahead`); a page being rendered ahead is waited for.
    """
    walk = (id(node), actor, limit) if not id_short and not asset_links else None
    ahead = walk is not None and _READ_AHEAD.wait(walk, cursor)
    types, found, nxt, by_grant = _shell_rows_checked(
        node,
        actor,
        id_short=id_short,
        asset_links=asset_links,
        asset_kind=None,
        asset_type=None,
        limit=limit,
        cursor=cursor,
    )
    fresh = memo_misses()
    page = Page(
        [type_shell_json(r) for r in types] + [instrument_shell_json(r) for r in found], nxt
    )
    if walk is not None and nxt is not None and (ahead or memo_misses() > fresh):
        _READ_AHEAD.offer(walk, nxt, lambda after: _render_ahead(node, actor, limit, after))
    return Prepared(page, _access_rows(node, actor, "aas.shells.list", found, by_grant))


_READ_AHEAD = ReadAhead()
_RENDERER = RenderProcess()


def _render_ahead(
    node: Node, actor: Actor, limit: int, cursor: str
) -> tuple[str | None, Callable[[], None] | None]:
    """Render the shells of the page at ``cursor`` into the memo: the next page's cursor, and
    what finishes the rendering when the render process does it (a second core: this thread
    goes on reading the next page's rows meanwhile), or None when it was done here."""
    with node.db.read() as conn:
        types, found, nxt = _shell_rows(
            conn, actor, id_short=None, links=(), limit=limit, cursor=cursor
        )
    tf = [type_fields(r) for r in types]
    inf = [instrument_fields(r) for r in found]
    ticket = _RENDERER.submit(inf, tf)

    def here() -> None:
        for row in types:
            type_shell_json(row)
        for row in found:
            instrument_shell_json(row)

    if ticket is None:
        here()
        return nxt, None

    def finish() -> None:
        answer = _RENDERER.result(ticket)
        if answer is None:  # the render process failed: render here after all
            here()
        else:
            prime(zip(inf, answer[0], strict=True), zip(tf, answer[1], strict=True))

    return nxt, finish


def _readable_shell_rows(
    node: Node,
    actor: Actor,
    *,
    id_short: str | None,
    asset_links: Sequence[AssetLink],
    asset_kind: str | None,
    asset_type: str | None,
    limit: int,
    cursor: str | None,
    action: str,
) -> tuple[list[Any], list[Any], str | None]:
    types, found, nxt, by_grant = _shell_rows_checked(
        node,
        actor,
        id_short=id_short,
        asset_links=asset_links,
        asset_kind=asset_kind,
        asset_type=asset_type,
        limit=limit,
        cursor=cursor,
    )
    _log(node, actor, action, found, by_grant)
    return types, found, nxt


def _shell_rows_checked(
    node: Node,
    actor: Actor,
    *,
    id_short: str | None,
    asset_links: Sequence[AssetLink],
    asset_kind: str | None,
    asset_type: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], list[Any], str | None, set[str]]:
    """One page of type rows, readable instrument rows, the next cursor, the ids by grant."""
    with node.db.read() as conn:
        types, found, nxt = _shell_rows(
            conn,
            actor,
            id_short=id_short,
            links=asset_links,
            limit=limit,
            cursor=cursor,
            asset_kind=asset_kind,
            asset_type=asset_type,
        )
        return types, found, nxt, granted_ids(conn, actor, found)


def lookup_shell_ids(
    node: Node,
    actor: Actor,
    asset_links: Sequence[AssetLink],
    *,
    id_short: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    action: str = "aas.lookup",
) -> Page[str]:
    """The ids of the shells ``actor`` may read that carry all ``asset_links`` (nothing
    rendered: discovery and ``$reference`` lists)."""
    with node.db.read() as conn:
        types, found, nxt = _shell_rows(
            conn, actor, id_short=id_short, links=asset_links, limit=limit, cursor=cursor
        )
        by_grant = granted_ids(conn, actor, found)
    _log(node, actor, action, found, by_grant)
    return Page([shell_id(r.id) for r in [*types, *found]], nxt)


def _type_row(conn: Connection, record_id: str) -> Any:
    row = get_row(conn, certificates, record_id)
    if row is None:
        raise NotFound(f"no shell of instrument type {record_id}: no such certificate")
    return row


def get_shell(
    node: Node, actor: Actor, record_id: str, *, action: str = "aas.shell.read"
) -> aas.AssetAdministrationShell:
    """The shell of record ``record_id``: one indexed query, the access check, the render."""
    row = _readable_shell_row(node, actor, record_id, action)
    return type_shell(row) if record_id.startswith(_TYPE) else instrument_shell(row)


def get_shell_json(node: Node, actor: Actor, record_id: str) -> bytes:
    """:func:`get_shell` rendered as JSON (memoized per shell)."""
    return prepare_shell_json(node, actor, record_id).run(node)


def prepare_shell_json(
    node: Node, actor: Actor, record_id: str, *, on_loop: bool = False
) -> Prepared[bytes]:
    """:func:`get_shell_json`, read and checked, with its access-log rows still to write.
    ``on_loop``: called on the event loop's thread, which reads on its own pinned
    connection (:meth:`~metrocloud.store.database.Database.pinned_read`)."""
    row, log_rows = _shell_row_checked(node, actor, record_id, "aas.shell.read", on_loop)
    body = type_shell_json(row) if record_id.startswith(_TYPE) else instrument_shell_json(row)
    return Prepared(body, log_rows)


def _readable_shell_row(node: Node, actor: Actor, record_id: str, action: str) -> Any:
    row, log_rows = _shell_row_checked(node, actor, record_id, action)
    node.access_log.append(log_rows)
    return row


def _shell_row_checked(
    node: Node, actor: Actor, record_id: str, action: str, on_loop: bool = False
) -> tuple[Any, list[tuple[Any, ...]]]:
    """The shell's row if ``actor`` may read it (else NotFound / Forbidden), and the
    access-log rows the read needs."""
    read = node.db.pinned_read if on_loop else node.db.read
    if record_id.startswith(_TYPE):
        with read() as conn:
            return _type_row(conn, record_id), []
    with read() as conn:
        row = instrument_row(conn, record_id)
        refuse_node_admin(actor)
        by_grant = check_can_read(conn, actor, row)
    return row, _access_rows(node, actor, action, [row], {row.id} if by_grant else set())


# -- submodels -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    row: Any
    index: int
    name: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.row.id, self.index)


def _expand(
    rows: Iterable[Any],
    names: Sequence[str],
    wanted: Sequence[str],
    after: tuple[str, int] | None,
    readable: Callable[[Any], bool],
) -> list[_Item]:
    out = []
    for row in rows:
        full = readable(row)
        for index, name in enumerate(names):
            if after is not None and (row.id, index) <= after:
                continue
            if name in wanted and (full or name in PUBLIC_SUBMODELS):
                out.append(_Item(row, index, name))
    return out


#: (kind, submodel name) -> its semanticId, learned from the first rendering of each
_SEMANTICS: dict[tuple[str, str], str] = {}


def _semantics(conn: Connection) -> dict[tuple[str, str], str]:
    """The semanticId of every submodel name: fixed by the mapping, so rendered once from any
    type and any instrument of the registry and kept (a node with neither has no submodels)."""
    if len(_SEMANTICS) < len(TYPE_SUBMODELS) + len(INSTRUMENT_SUBMODELS):
        loader = ViewLoader(conn)
        cert = conn.execute(select(certificates).limit(1)).first()
        ins = conn.execute(select(instruments).limit(1)).first()
        rendered: list[tuple[str, aas.Submodel]] = []
        if cert is not None:
            rendered += [(_TYPE, type_submodel(loader.types([cert])[0], n)) for n in TYPE_SUBMODELS]
        if ins is not None:
            view = loader.instruments([ins])[0]
            rendered += [(_INSTRUMENT, instrument_submodel(view, n)) for n in INSTRUMENT_SUBMODELS]
        for kind, sm in rendered:
            if sm.semantic_id is not None and sm.id_short is not None:
                _SEMANTICS[(kind, sm.id_short)] = sm.semantic_id.keys[0].value
    return _SEMANTICS


def submodel_semantic_id(node: Node, submodel_id: str) -> str | None:
    """The semanticId of the submodel ``submodel_id`` names (None if not one of ours)."""
    try:
        record, name = parse_submodel_id(submodel_id)
    except NotFound:
        return None
    kind = _TYPE if record.startswith(_TYPE) else _INSTRUMENT
    if (kind, name) not in _SEMANTICS:
        with node.db.read() as conn:
            _semantics(conn)
    return _SEMANTICS.get((kind, name))


def list_submodels(
    node: Node,
    actor: Actor,
    *,
    id_short: str | None = None,
    semantic_id: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    base_url: str = "",
) -> Page[aas.Submodel]:
    """One page of the submodels ``actor`` may read, by (record id, submodel index).

    A submodel's idShort is its name and its semanticId is fixed per name, so both filters
    pick names. Each row yields at least one submodel (a type: every wanted one; an
    instrument: the public wanted ones, or the query keeps only readable instruments), so
    ``limit + 2`` rows always fill a page.
    """
    check_limit(limit)
    key = decode_cursor(cursor, str, int)
    after = (key[0], key[1]) if key else None
    with node.db.read() as conn:
        known = _semantics(conn) if semantic_id is not None else {}

        def wanted(kind: str, names: Sequence[str]) -> list[str]:
            return [
                n
                for n in names
                if (id_short is None or n == id_short)
                and (semantic_id is None or known.get((kind, n)) == semantic_id)
            ]

        type_names = wanted(_TYPE, TYPE_SUBMODELS)
        ins_names = wanted(_INSTRUMENT, INSTRUMENT_SUBMODELS)
        items: list[_Item] = []
        if type_names and (after is None or after[0] < _INSTRUMENT):
            c = certificates.c
            q = select(certificates).order_by(c.id).limit(limit + 2)
            if after is not None:
                q = q.where(c.id >= after[0])
            rows = conn.execute(q).all()
            items += _expand(rows, TYPE_SUBMODELS, type_names, after, lambda _: True)
        if len(items) <= limit and ins_names and actor.role is not PartyRole.NODE_ADMIN:
            visible = visible_filter(conn, actor)
            i = instruments.c
            q = select(instruments, visible.label("readable")).order_by(i.id)
            if not set(ins_names) & PUBLIC_SUBMODELS:
                q = q.where(visible)
            if after is not None:
                q = q.where(i.id >= after[0])
            rows = conn.execute(q.limit(limit + 2 - len(items))).all()
            items += _expand(rows, INSTRUMENT_SUBMODELS, ins_names, after, lambda r: r.readable)
        nxt = encode_cursor(list(items[limit - 1].key)) if len(items) > limit else None
        items = items[:limit]
        loader = ViewLoader(conn)
        type_rows = {it.row.id: it.row for it in items if it.row.id.startswith(_TYPE)}
        ins_rows = {it.row.id: it.row for it in items if it.row.id.startswith(_INSTRUMENT)}
        views: dict[str, Any] = {v.certificate.id: v for v in loader.types([*type_rows.values()])}
        views.update({v.instrument.id: v for v in loader.instruments([*ins_rows.values()])})
        private = {it.row.id: it.row for it in items if not public_submodel(it.row.id, it.name)}
        by_grant = granted_ids(conn, actor, [*private.values()])
    out = [
        type_submodel(views[it.row.id], it.name)
        if it.row.id.startswith(_TYPE)
        else instrument_submodel(views[it.row.id], it.name, base_url=base_url)
        for it in items
    ]
    _log(node, actor, "aas.submodels.list", [*private.values()], by_grant)
    return Page(out, nxt)


def get_submodel(
    node: Node,
    actor: Actor,
    record_id: str,
    name: str,
    *,
    action: str = "aas.submodel.read",
    base_url: str = "",
) -> aas.Submodel:
    """One submodel; the public ones need no relationship to the instrument."""
    prepared = prepare_submodel(node, actor, record_id, name, action=action, base_url=base_url)
    return prepared.run(node)


def prepare_submodel(
    node: Node,
    actor: Actor,
    record_id: str,
    name: str,
    *,
    action: str = "aas.submodel.read",
    base_url: str = "",
    on_loop: bool = False,
) -> Prepared[aas.Submodel]:
    """:func:`get_submodel`, read, checked and rendered, with its access-log rows still to
    write (none for a public submodel). ``on_loop``: as in :func:`prepare_shell_json`."""
    read = node.db.pinned_read if on_loop else node.db.read
    if record_id.startswith(_TYPE):
        with read() as conn:
            type_view = ViewLoader(conn).types([_type_row(conn, record_id)])[0]
        return Prepared(type_submodel(type_view, name), [])
    public = public_submodel(record_id, name)
    with read() as conn:
        row = instrument_row(conn, record_id)
        refuse_node_admin(actor)
        by_grant = False
        if not public:
            by_grant = check_can_read(conn, actor, row)
        if name not in SUBMODEL_PARTS:
            raise NotFound(f"an instrument shell has no submodel {name!r}")
        view = ViewLoader(conn).instruments([row], parts=SUBMODEL_PARTS[name])[0]
    submodel = instrument_submodel(view, name, base_url=base_url)
    if public:
        return Prepared(submodel, [])
    return Prepared(
        submodel, _access_rows(node, actor, action, [row], {row.id} if by_grant else set())
    )


# -- export --------------------------------------------------------------------------------


def export(
    node: Node,
    actor: Actor,
    *,
    shells: Sequence[str] = (),
    submodels: Sequence[tuple[str, str]] = (),
    with_concepts: bool = True,
    base_url: str = "",
) -> aas.Environment:
    """An environment of the named shells (record ids) and submodels ((record id, name)),
    each read under the same rules as one by one (403 for the first one refused)."""
    shells = list(dict.fromkeys(shells))
    submodels = list(dict.fromkeys(submodels))
    if len(shells) + len(submodels) > MAX_EXPORT:
        raise InvalidInput(
            f"one serialization holds at most {MAX_EXPORT} shells and submodels, got "
            f"{len(shells) + len(submodels)}; ask for fewer ids per request"
        )
    got_shells = [get_shell(node, actor, r, action="aas.serialization") for r in shells]
    got_submodels = [
        get_submodel(node, actor, r, n, action="aas.serialization", base_url=base_url)
        for r, n in submodels
    ]
    return environment(got_shells, got_submodels, with_concepts=with_concepts)
