"""Node settings, from arguments, environment (``METROCLOUD_*``) or defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from metrocloud.store.database import sqlite_url

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything a node needs to start. Every field can be set as ``METROCLOUD_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="METROCLOUD_", extra="ignore")

    data_dir: Path = Field(
        default=Path("metrocloud-data"),
        description="Directory for keys, the SQLite file and the lake.",
    )
    db: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir.")
    db_schema: str | None = Field(
        default=None, description="PostgreSQL schema (search_path) to use."
    )
    country: str = Field(default="DE", description="Member state of this node (ISO 3166-1).")
    node_name: str = Field(default="metrocloud node", description="Human-readable node name.")
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, description="Port the API listens on.")
    public_base_url: str | None = Field(
        default=None,
        description="URL under which peers and users reach this node; default http://HOST:PORT.",
    )
    token_ttl_days: int = Field(default=90, description="Lifetime of issued bearer tokens.")
    max_batch: int = Field(default=10_000, description="Most instruments in one registration.")
    public_verify_per_minute: int = Field(
        default=60,
        ge=0,
        description="Requests a minute one client address may send to POST /api/v1/public/verify "
        "(bursts of up to 20); 0 turns the limit off.",
    )

    lake_dir: Path | None = Field(
        default=None, description="Directory of the measurement lake; default data_dir/lake."
    )
    lake_compact_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds between the lake writer's maintenance runs: retention (if set), "
        "compaction of the closed days' partitions, vacuum; 0 turns them off.",
    )
    lake_retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Days of readings the lake keeps: older day partitions are dropped by the "
        "maintenance runs; none (default) keeps everything (legal metrology keeps records "
        "for years). Must exceed intake_max_age_days.",
    )
    mqtt: str | None = Field(
        default=None,
        description="MQTT broker the intake subscribes to (mqtt://HOST:PORT); none: HTTP only.",
    )
    intake_max_lines: int = Field(
        default=10_000, ge=1, description="Most signed batches in one POST /api/v1/ingest/batches."
    )
    intake_max_skew_s: int = Field(
        default=300, ge=0, description="How far readings may lie ahead of the node's clock."
    )
    intake_max_age_days: int = Field(
        default=400, ge=1, description="How old readings may be when they arrive."
    )
    verification_periods: dict[str, int] = Field(
        default_factory=dict,
        description="Re-verification periods (years) by category for this member state, "
        'overriding the built-in table (docs/verification.md), e.g. {"MI-003": 16}.',
    )
    exchange_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Largest document (plaintext bytes) a party may send through this node "
        "in one confidential exchange message (docs/exchange.md).",
    )
    # -- the Legal Metrology Grid (docs/grid.md) --
    grid_outbox_interval_s: float = Field(
        default=0.5, gt=0, description="How often the outbox worker looks for due messages."
    )
    grid_outbox_batch: int = Field(
        default=100, ge=1, le=1000, description="Most messages sent to one peer in one request."
    )
    grid_retry_base_s: float = Field(
        default=1.0, gt=0, description="First retry delay for a peer that did not answer."
    )
    grid_retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest retry delay (exponential backoff, jitter)."
    )
    grid_witness_interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between witnessing rounds over all peers."
    )
    grid_max_skew_s: int = Field(
        default=120, ge=1, description="Clock skew accepted on signed node-to-node requests."
    )
    grid_request_timeout_s: float = Field(
        default=10.0, gt=0, description="Timeout of one node-to-node request."
    )
    grid_min_group_size: int = Field(
        default=10,
        ge=1,
        description="Smallest group this node reports in a federated statistic; smaller "
        "groups are suppressed.",
    )
    grid_traffic_bodies: bool = Field(
        default=True, description="Keep the bodies of node-to-node requests in grid_traffic."
    )
    grid_traffic_retention_days: int = Field(
        default=30, ge=1, description="Days delivered messages and traffic records are kept."
    )

    @model_validator(mode="after")
    def _retention_keeps_what_the_intake_accepts(self) -> Settings:
        """Retention raises a watermark below which the lake drops rows on write: with fewer
        days than the intake accepts, a reading accepted (and acknowledged to its device)
        would be dropped on its way into the lake."""
        days = self.lake_retention_days
        if days is not None and days <= self.intake_max_age_days:
            raise ValueError(
                f"lake_retention_days ({days}) must exceed intake_max_age_days "
                f"({self.intake_max_age_days}): the lake would drop readings the intake still "
                "accepts"
            )
        return self

    def lake_path(self) -> Path:
        return self.lake_dir or self.data_dir / "lake"

    def database_url(self) -> str:
        if self.db:
            return self.db
        return sqlite_url(self.data_dir)

    def base_url(self) -> str:
        return self.public_base_url or f"http://{self.host}:{self.port}"
