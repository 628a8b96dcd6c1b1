"""The measurement lake's operations: ``metrocloud lake stats``, ``compact``, ``retain`` and
``vacuum`` (docs/lake.md, "Operations").

``stats`` only reads the manifest: it works while a node runs. The other three rewrite or
delete files, which only the lake's one writer may do: they take the writer lock, and while
a node runs (it holds the lock, and compacts, retains and vacuums itself every
``lake_compact_interval_s``) they are refused with one line on stderr, exit 1. Bad input is
one line on stderr, exit 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from metrocloud.cli._common import CliError, DataDir, _errors, _progress, _settings, app, err, out

if TYPE_CHECKING:
    from metrocloud.lake import Lake

__all__ = ["lake_app"]

lake_app = typer.Typer(
    no_args_is_help=True,
    help="The measurement lake: its files per partition, compaction, retention, vacuum "
    "(docs/lake.md).",
)
app.add_typer(lake_app, name="lake")

AsJson = Annotated[bool, typer.Option("--json", help="One JSON object per category per line.")]


def _node_settings(data_dir: Path) -> Any:
    """The settings the node in ``data_dir`` runs with (options, then ``METROCLOUD_*``)."""
    from pydantic import ValidationError

    try:
        return _settings(data_dir, None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        what = str(first["msg"]).removeprefix("Value error, ")
        raise CliError(
            f"invalid setting {where}: {what}" if where else f"invalid settings: {what}"
        ) from None


def _lake_root(settings: Any) -> Path:
    root: Path = settings.lake_path()
    if not (root / "manifest.json").is_file():
        raise CliError(
            f"no lake at {root} (no manifest.json): a node creates it when it first moves "
            "readings in (set --data-dir or METROCLOUD_LAKE_DIR)"
        )
    return root


@contextmanager
def _writer(data_dir: Path) -> Iterator[Lake]:
    """The lake as its writer; refused (exit 1) while another process is the writer."""
    from metrocloud.domain.errors import Conflict
    from metrocloud.lake import Lake

    settings = _node_settings(data_dir)
    root = _lake_root(settings)
    try:
        lake = Lake.open(root, writer=True)
    except Conflict:
        interval = settings.lake_compact_interval_s
        does = (
            f"it compacts every {interval:g} s"
            if interval > 0
            else "its compaction is off: METROCLOUD_LAKE_COMPACT_INTERVAL_S=0"
        )
        err.print(
            f"[red]error:[/red] lake {escape(str(root))}: the lake's writer is a running node "
            f"({does}); stop it or wait",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    try:
        yield lake
    finally:
        lake.close()


@lake_app.command("stats")
def lake_stats(data_dir: DataDir = Path("metrocloud-data"), as_json: AsJson = False) -> None:
    """Partitions, files, rows and bytes per category, and files per partition (max and
    median: compaction brings a closed day to one file). Reads the manifest only: works
    while the node runs."""
    from metrocloud.lake import Lake
    from metrocloud.lake.maintenance import category_stats

    with _errors():
        root = _lake_root(_node_settings(data_dir))
        manifest = Lake.open(root).snapshot().manifest
        stats = category_stats(manifest)
    if as_json:
        for s in stats:
            typer.echo(json.dumps(asdict(s)))
        return
    table = Table(
        title=f"lake {root} (manifest version {manifest.version})",
        box=box.SIMPLE,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("category", no_wrap=True)
    # a partition is one day of a category: files per day is what compaction brings to one
    for name in ("days", "files", "files/day max", "files/day median", "rows", "MiB"):
        table.add_column(name, justify="right", min_width=max(map(len, name.split())))
    table.add_column("first day", no_wrap=True)
    table.add_column("last day", no_wrap=True)
    for s in stats:
        table.add_row(
            s.category,
            f"{s.partitions:,}",
            f"{s.files:,}",
            str(s.files_per_partition_max),
            f"{s.files_per_partition_median:g}",
            f"{s.rows:,}",
            f"{s.bytes / 2**20:,.1f}",
            s.first_day,
            s.last_day,
        )
    if stats:
        out.print(table)
    else:
        out.print(f"lake {root} holds no readings (manifest version {manifest.version})")
    if manifest.retired:
        out.print(f"{len(manifest.retired)} retired file(s) wait for a vacuum")


@lake_app.command("compact")
def lake_compact(
    data_dir: DataDir = Path("metrocloud-data"),
    min_files: Annotated[
        int, typer.Option("--min-files", help="Compact the partitions holding this many files.")
    ] = 2,
) -> None:
    """Merge the files of every partition (category, day) holding --min-files or more into
    one file sorted by instrument, quantity and time, partition by partition (a progress
    bar); same rows before and after. Takes the lake's writer lock: refused while the node
    runs (it compacts the closed days itself)."""
    from metrocloud.services.measurements import compact_each, compactable

    with _errors():
        if min_files < 2:
            raise CliError(f"--min-files must be 2 or more, got {min_files}")
        with _writer(data_dir) as lake:
            todo = compactable(lake.manifest, min_files=min_files)
            with _progress() as bar:
                task = bar.add_task("compact", total=len(todo))

                def tick(done: int, _total: int) -> None:
                    bar.update(task, completed=done)

                r = compact_each(lake, todo, min_files=min_files, progress=tick)
    out.print(
        f"compacted {r.partitions} partition(s): {r.files_before:,} files into "
        f"{r.files_after:,}, {r.rows:,} rows",
        highlight=False,
    )


@lake_app.command("retain")
def lake_retain(
    keep_days: Annotated[
        int,
        typer.Option(
            "--keep-days",
            help="Keep the days from today (UTC) minus this many; drop the older partitions.",
        ),
    ],
    data_dir: DataDir = Path("metrocloud-data"),
    category: Annotated[
        str | None, typer.Option("--category", help="Only this category (MI-003...).")
    ] = None,
) -> None:
    """Drop the day partitions more than --keep-days days before today (UTC), of all
    categories or one, and raise the watermark so that they never come back. --keep-days
    must exceed the intake's accepted age (METROCLOUD_INTAKE_MAX_AGE_DAYS): a reading the
    intake accepts is never dropped. Takes the lake's writer lock: refused while the node
    runs."""
    from metrocloud.domain.categories import InstrumentCategory

    with _errors():
        settings = _node_settings(data_dir)
        if keep_days <= settings.intake_max_age_days:
            raise CliError(
                f"--keep-days {keep_days} must exceed the intake's accepted age "
                f"({settings.intake_max_age_days} days, METROCLOUD_INTAKE_MAX_AGE_DAYS): "
                "the lake would drop readings the intake still accepts"
            )
        known = [c.value for c in InstrumentCategory]
        if category is not None and category not in known:
            raise CliError(f"--category {category!r} is not a category; known: {known}")
        with _writer(data_dir) as lake:
            r = lake.retain(keep_days, category=category)
    out.print(
        f"kept {category or 'every category'} from {r.cutoff} on: dropped {r.partitions} "
        f"partition(s), {r.rows:,} rows",
        highlight=False,
    )


@lake_app.command("vacuum")
def lake_vacuum(data_dir: DataDir = Path("metrocloud-data")) -> None:
    """Delete the files the manifest no longer lists: files compaction or retention retired
    (a node keeps them an hour for readers of older snapshots), leftovers of a crash. Takes
    the lake's writer lock: refused while the node runs (it vacuums itself)."""
    with _errors(), _writer(data_dir) as lake:
        deleted = lake.vacuum()
    out.print(f"deleted {len(deleted)} file(s)", highlight=False)
