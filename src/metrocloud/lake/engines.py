"""Choosing a lake engine by name: ``duckdb`` (embedded, the default) or ``spark``.

Both answer the :class:`~metrocloud.lake.engine.LakeEngine` interface with equal tables over
the same snapshot (docs/lake.md, "Apache Spark"), so a caller picks one by configuration and
nothing else changes. The Spark engine is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Literal

from metrocloud.domain.errors import InvalidInput
from metrocloud.lake.dataset import Lake
from metrocloud.lake.duckdb_engine import DEFAULT_MEMORY_LIMIT, DuckDBEngine
from metrocloud.lake.engine import LakeEngine
from metrocloud.lake.manifest import Snapshot

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["ENGINES", "EngineName", "open_engine"]

EngineName = Literal["duckdb", "spark"]
ENGINES: Final[tuple[EngineName, ...]] = ("duckdb", "spark")


def open_engine(
    source: Lake | Snapshot,
    engine: str = "duckdb",
    *,
    spark_master: str | None = None,
    spark_session: SparkSession | None = None,
    threads: int = 2,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> LakeEngine:
    """A query engine over ``source``: DuckDB (``threads``, ``memory_limit``) or Spark
    (``spark_master``, default ``local[2]``, or an existing ``spark_session``).

    Raises :class:`InvalidInput` for an unknown engine or Spark options given to DuckDB,
    :class:`~metrocloud.lake.errors.EngineUnavailable` when Spark cannot run here."""
    if engine == "duckdb":
        if spark_master is not None or spark_session is not None:
            raise InvalidInput(
                f"a Spark master ({spark_master or 'session'}) applies to the spark engine "
                "only, and the engine is duckdb: add --engine spark or drop --spark-master"
            )
        return DuckDBEngine(source, threads=threads, memory_limit=memory_limit)
    if engine == "spark":
        from metrocloud.lake.spark_engine import DEFAULT_MASTER, SparkEngine

        return SparkEngine(source, master=spark_master or DEFAULT_MASTER, session=spark_session)
    raise InvalidInput(f"unknown lake engine {engine!r}: expected one of {', '.join(ENGINES)}")
