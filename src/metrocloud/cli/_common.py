"""What every ``metrocloud`` command shares: the app, consoles, options, error handling."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from metrocloud.domain.errors import MetrocloudError

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
device_app = typer.Typer(
    no_args_is_help=True,
    help="The reference device: a simulated energy meter that signs its readings (docs/device.md).",
)
app.add_typer(device_app, name="device")
sampling_app = typer.Typer(
    no_args_is_help=True,
    help="Statistical sampling of lots: MID modules F/F1 and ISO 2859-1 (docs/sampling.md).",
)
app.add_typer(sampling_app, name="sampling")

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
        # escaped: messages quote input and usage ("[/TOPIC-PREFIX]"), not rich markup
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
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
