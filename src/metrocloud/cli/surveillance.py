"""e-market surveillance on the node in ``--data-dir``: ``metrocloud surveillance risk``,
``plan``, ``decide``, ``notify`` and ``notices`` (docs/surveillance.md).

Each command acts as the party whose bearer token it is given (``--token`` or
``METROCLOUD_TOKEN``), checked against the node's credentials exactly as the API checks
it: risk and plans need an authority's token, lot decisions an authority's or a notified
body's. What they record is signed by the node for that party, as over the API.
"""

from __future__ import annotations

import json
from datetime import date
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
    app,
    out,
)

if TYPE_CHECKING:
    from metrocloud.services.common import Actor
    from metrocloud.services.monitoring import Alert
    from metrocloud.services.node import Node

__all__ = ["surveillance_app"]

surveillance_app = typer.Typer(
    no_args_is_help=True,
    help="e-market surveillance: risk scores, inspection plans, lot decisions, "
    "non-compliance notices (docs/surveillance.md).",
)
app.add_typer(surveillance_app, name="surveillance")

Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="METROCLOUD_TOKEN",
        help="Bearer token of the acting party (an authority; a notified body for decide).",
    ),
]
Lake = Annotated[
    bool,
    typer.Option("--lake/--no-lake", help="Use the lake's monitoring alerts (default) or not."),
]
Days = Annotated[int, typer.Option("--days", help="Window of the lake alerts, days back.", min=1)]
Engine = Annotated[
    str, typer.Option("--engine", help="Lake query engine: duckdb (embedded) or spark.")
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Region = Annotated[
    str | None, typer.Option("--region", help="Only instruments of this NUTS region (a prefix).")
]
Category = Annotated[
    str | None, typer.Option("--category", help="Only instruments of this category (MI-003...).")
]


def _open(data_dir: Path, db: str | None, token: str | None) -> tuple[Node, Actor, dict[str, Any]]:
    from metrocloud.services.node import Node
    from metrocloud.services.parties import authenticate

    if not token:
        raise CliError("give the acting party's token: --token or METROCLOUD_TOKEN")
    node = Node.open(_settings(data_dir, db), create=False)
    actor = authenticate(node, token)
    return node, actor, {"credential": actor.token_id}


def _alerts(node: Node, lake: bool, days: int, engine: str) -> tuple[list[Alert], list[str]]:
    from metrocloud.services import surveillance as svc

    if not lake:
        return [], ["registry"]
    with _progress() as bar:
        task = bar.add_task("lake alerts", total=1)
        alerts = svc.lake_alerts(node, days=days, engine=engine)
        bar.update(task, completed=1)
    return alerts, ["registry", "lake"]


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def _factor_table(title: str, factors: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("factor", "weight", "signal", "contribution", "reason"):
        table.add_column(col, overflow="fold")
    for f in factors:
        table.add_row(
            f["factor"],
            f"{f['weight']:.2f}",
            f"{f['signal']:.3f}",
            f"{f['contribution']:.3f}",
            escape(f["reason"]),
        )
    return table


@surveillance_app.command("risk")
def risk(
    instrument: Annotated[
        str | None, typer.Option("--instrument", help="The risk of this instrument (ins-...).")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="The risk of this type (its certificate, cer-...).")
    ] = None,
    top: Annotated[
        int, typer.Option("--top", help="Without --instrument/--type: the N riskiest.", min=1)
    ] = 20,
    region: Region = None,
    category: Category = None,
    lake: Lake = True,
    days: Days = 90,
    engine: Engine = "duckdb",
    as_json: Json = False,
    token: Token = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Risk score in [0, 1] of an instrument, a type, or the riskiest instruments on the
    market, with every factor's contribution (authority)."""
    from metrocloud.services import surveillance as svc

    with _errors():
        if instrument is not None and type_ is not None:
            raise CliError("give --instrument or --type, not both")
        node, actor, _ = _open(data_dir, db, token)
        alerts, _sources = _alerts(node, lake, days, engine)
        if instrument is not None:
            one = svc.instrument_risk(node, actor, instrument, alerts=alerts).as_dict()
            if as_json:
                _echo_json(one)
                return
            out.print(f"{one['instrument_id']} ({one['serial']}): risk {one['score']:.3f}")
            out.print(_factor_table("factors", one["factors"]))
            return
        if type_ is not None:
            t = svc.type_risk(node, actor, type_, alerts=alerts).as_dict()
            if as_json:
                _echo_json(t)
                return
            out.print(
                f"{t['certificate_id']}: risk {t['score']:.3f} over {t['instruments']} "
                f"instruments, {t['high_risk']} at 0.5 or more"
            )
            out.print(_factor_table("mean factors", t["factors"]))
            return
        risks = svc.risk_scores(
            node, actor, region=region, category=category, alerts=alerts, limit=top
        )
    if as_json:
        for r in risks:
            _echo_json(r.as_dict())
        return
    table = Table(title=f"the {len(risks)} riskiest instruments on the market")
    for col in ("score", "instrument", "operator", "region", "reasons"):
        table.add_column(col, overflow="fold")
    for r in risks:
        f = r.facts
        table.add_row(
            f"{r.score:.3f}",
            f.id,
            f.operator_id or "-",
            f.region or "-",
            escape("; ".join(r.reasons()[:2])),
        )
    out.print(table)


@surveillance_app.command("plan")
def plan(
    budget: Annotated[int, typer.Option("--budget", help="Inspections to plan (K).", min=1)],
    region: Region = None,
    category: Category = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the audit draws (default: a random one, printed)."),
    ] = None,
    audit_share: Annotated[
        float, typer.Option("--audit-share", help="Share of K drawn at random.", min=0, max=1)
    ] = 0.1,
    operator_cap: Annotated[
        float, typer.Option("--operator-cap", help="Most of K for one operator.", min=0, max=1)
    ] = 0.5,
    site_cap: Annotated[
        float,
        typer.Option("--site-cap", help="Most of K for one site (operator, region).", min=0, max=1),
    ] = 0.25,
    lake: Lake = True,
    days: Days = 90,
    engine: Engine = "duckdb",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the plan (JSON, with its seed) here."),
    ] = None,
    as_json: Json = False,
    token: Token = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Plan K inspections (authority): ranked by risk, spread over operators and sites, a
    random audit share; the plan's digest goes into the ledger."""
    from metrocloud.services import surveillance as svc

    with _errors():
        node, actor, extra = _open(data_dir, db, token)
        rule = svc.PlanRule(audit_share=audit_share, operator_cap=operator_cap, site_cap=site_cap)
        alerts, sources = _alerts(node, lake, days, engine)
        p = svc.inspection_plan(
            node,
            actor,
            budget=budget,
            region=region,
            category=category,
            seed=seed,
            rule=rule,
            alerts=alerts,
            sources=sources,
            extra=extra,
        )
        doc = p.as_dict()
        if output is not None:
            try:
                output.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
            except OSError as exc:
                raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    if as_json:
        _echo_json(doc)
        return
    table = Table(title=f"inspection plan: {len(p.items)} of {p.candidates} candidates")
    for col in ("rank", "how", "score", "instrument", "operator", "region", "reasons"):
        table.add_column(col, overflow="fold")
    for item in p.items:
        f = item.risk.facts
        reasons = item.as_dict()["reasons"]
        table.add_row(
            str(item.rank),
            item.selection,
            f"{item.risk.score:.3f}",
            f.id,
            f.operator_id or "-",
            f.region or "-",
            escape("; ".join(reasons[:2])),
        )
    out.print(table)
    out.print(
        f"seed {p.seed} (keep it with the plan); digest {p.digest} committed at leaf {p.leaf_index}"
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"{what} {path} is not JSON: {exc}") from None


@surveillance_app.command("decide")
def decide(
    lot: Annotated[
        Path,
        typer.Option(
            "--lot", help='JSON: {"reference", "lot_size", "scheme": "mid-f"|"iso2859", "aql"?}.'
        ),
    ],
    results: Annotated[
        Path,
        typer.Option(
            "--results",
            help='JSON: [{"instrument_id", "conforming": true|false, "finding"?}, ...].',
        ),
    ],
    as_json: Json = False,
    token: Token = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Accept or reject a lot from its inspected sample (MID Annex II module F, ISO 2859-1)
    and record the decision in the ledger (authority or notified body)."""
    from metrocloud.services import surveillance as svc

    with _errors():
        spec = _read_json(lot, "lot file")
        raw = _read_json(results, "results file")
        if isinstance(raw, dict):
            raw = raw.get("results")
        if not isinstance(spec, dict) or not isinstance(raw, list):
            raise CliError(
                "--lot must hold a JSON object and --results a JSON list of "
                '{"instrument_id", "conforming"}'
            )
        try:
            sample = [
                svc.InspectionResult(
                    instrument_id=str(r["instrument_id"]),
                    conforming=_flag(r["conforming"]),
                    finding=str(r.get("finding", "")),
                )
                for r in raw
            ]
            size, scheme = spec["lot_size"], str(spec.get("scheme", "mid-f"))
            reference = str(spec["reference"])
        except (KeyError, TypeError) as exc:
            raise CliError(
                f"lot or results file lacks {exc}: see metrocloud surveillance decide --help"
            ) from None
        if isinstance(size, bool) or not isinstance(size, int):
            raise CliError(f"lot_size must be a whole number, got {size!r}")
        aql = spec.get("aql")
        node, actor, extra = _open(data_dir, db, token)
        decision = svc.record_lot_decision(
            node,
            actor,
            reference=reference,
            plan=svc.sampling_plan(scheme, size, None if aql is None else str(aql)),
            results=sample,
            extra=extra,
        )
    if as_json:
        _echo_json(decision)
        return
    out.print(
        f"lot {escape(decision['reference'])}: [bold]{decision['decision'].upper()}[/bold] - "
        f"{decision['defects']} non-conforming of n = {decision['n']} (accept with at most "
        f"c = {decision['c']}; lot of {decision['lot_size']}, {decision['scheme']})"
    )
    out.print(escape(decision["consequence"]))
    out.print(f"recorded at leaf {decision['leaf_index']}; rule: {escape(decision['rule'])}")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise CliError(f"conforming must be true or false, got {value!r}")


@surveillance_app.command("notify")
def notify(
    instrument: Annotated[
        list[str], typer.Option("--instrument", help="An instrument the notice is about (repeat).")
    ],
    finding: Annotated[str, typer.Option("--finding", help="What was found.")],
    measure: Annotated[
        list[str], typer.Option("--measure", help="A corrective measure required (repeat).")
    ],
    legal_basis: Annotated[
        str, typer.Option("--legal-basis", help="The provision, e.g. 'MID Art. 40, Annex I 8'.")
    ],
    deadline: Annotated[str, typer.Option("--deadline", help="Due date, YYYY-MM-DD.")],
    reference: Annotated[
        str | None, typer.Option("--reference", help="The authority's case reference.")
    ] = None,
    as_json: Json = False,
    token: Token = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Record a non-compliance notice (authority): a non_compliance_found event per
    instrument, open until a corrective action."""
    from metrocloud.services import surveillance as svc

    with _errors():
        try:
            due = date.fromisoformat(deadline.strip())
        except ValueError:
            raise CliError(f"--deadline must be a date YYYY-MM-DD, got {deadline!r}") from None
        node, actor, extra = _open(data_dir, db, token)
        recorded = svc.notify_non_compliance(
            node,
            actor,
            instrument,
            finding=finding,
            measures=measure,
            legal_basis=legal_basis,
            deadline=due,
            reference=reference,
            extra=extra,
        )
    if as_json:
        for r in recorded:
            _echo_json(r)
        return
    for r in recorded:
        out.print(f"{r['instrument_id']}: notice {r['id']} at leaf {r['leaf_index']}")


@surveillance_app.command("notices")
def notices(
    state: Annotated[str, typer.Option("--state", help="open, closed or all.")] = "open",
    instrument: Annotated[
        str | None, typer.Option("--instrument", help="Only this instrument.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.", min=1)] = 1000,
    as_json: Json = False,
    token: Token = None,
    data_dir: DataDir = Path("metrocloud-data"),
    db: Db = None,
) -> None:
    """Non-compliance notices on the instruments the token's party may read; open ones have
    no corrective action after them."""
    from metrocloud.services import surveillance as svc

    with _errors():
        states = {"open": True, "closed": False, "all": None}
        if state not in states:
            raise CliError(f"--state must be open, closed or all, got {state!r}")
        node, actor, _ = _open(data_dir, db, token)
        items: list[dict[str, Any]] = []
        cursor = None
        while len(items) < limit:
            page = svc.list_non_compliance(
                node,
                actor,
                open_=states[state],
                instrument_id=instrument,
                limit=min(1000, limit - len(items)),
                cursor=cursor,
            )
            items += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
    if as_json:
        for n in items:
            _echo_json(n)
        return
    table = Table(title=f"{len(items)} {state} non-compliance notice(s)")
    for col in ("event", "instrument", "found", "deadline", "open", "finding"):
        table.add_column(col, overflow="fold")
    for n in items:
        notice = n["notice"] or {}
        table.add_row(
            n["id"],
            n["instrument_id"],
            n["occurred_at"],
            notice.get("deadline", "-"),
            "yes" if n["open"] else f"no ({n['closed_by']})",
            escape(notice.get("finding", "")),
        )
    out.print(table)
