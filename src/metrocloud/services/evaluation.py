"""Scoring monitoring and maintenance against ground truth (the simulator's labels).

The labels are plain rows (``metrocloud.sim.LABELS_SCHEMA`` as Python dicts, for instance
``pyarrow.parquet.read_table(path).to_pylist()``): this module does not import the
simulator (it sits above the services). An instrument is scored per fault kind: a true
positive when it carries the labelled kind and an alert that finds it (``finds``), a false
positive when it has the alert but not the label, a false negative the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from metrocloud.services.monitoring import Alert

__all__ = [
    "LABEL_TO_ALERT",
    "CrossingScore",
    "Score",
    "finds",
    "score_alerts",
    "score_crossings",
]

#: labelled fault or tamper kind -> the alert kinds that find it
LABEL_TO_ALERT: Final[Mapping[str, tuple[str, ...]]] = {
    "stuck_register": ("stuck_register",),
    "clock_drift": ("clock_drift",),
    "counter_reset": ("counter_reset",),
    "reverse_flow": ("reverse_flow",),
    "seal_broken": ("seal_broken", "tamper_detected"),
    "unapproved_software": ("unapproved_software",),
    # without a reference meter, under-registration shows only as a step against the peers
    # (a step down: see ``finds``)
    "under_registration": ("under_registration", "peer_deviation"),
}


def finds(alert: Alert, label_kind: str) -> bool:
    """Whether ``alert`` is evidence of ``label_kind``: its kind is one of
    ``LABEL_TO_ALERT[label_kind]``, and a peer-group step counts for under-registration only
    when it goes down (a meter counting more than its peers is not counting less)."""
    if alert.kind not in LABEL_TO_ALERT[label_kind]:
        return False
    if label_kind == "under_registration" and alert.kind == "peer_deviation":
        return float(alert.evidence.get("step_percent", 0.0)) < 0
    return True


@dataclass(frozen=True, slots=True)
class Score:
    kind: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def _label_kinds(row: Mapping[str, Any]) -> set[str]:
    return {f["kind"] for f in row["faults"]}


def score_alerts(
    alerts: Iterable[Alert],
    labels: Sequence[Mapping[str, Any]],
    *,
    only: Iterable[str] | None = None,
) -> dict[str, Score]:
    """Per labelled kind and ``"overall"`` (summed): true and false positives and negatives
    over the labelled instruments (``only``: restrict to these instrument ids)."""
    keep = None if only is None else set(only)
    rows = [r for r in labels if keep is None or r["instrument"] in keep]
    ids = {r["instrument"] for r in rows}
    found: dict[str, set[str]] = {}
    for a in alerts:
        if a.instrument in ids:
            found.setdefault(a.instrument, set()).update(k for k in LABEL_TO_ALERT if finds(a, k))
    out: dict[str, Score] = {}
    for kind in LABEL_TO_ALERT:
        tp = fp = fn = 0
        for r in rows:
            labelled = kind in _label_kinds(r)
            alerted = kind in found.get(r["instrument"], set())
            tp += labelled and alerted
            fp += alerted and not labelled
            fn += labelled and not alerted
        out[kind] = Score(kind, tp, fp, fn)
    out["overall"] = Score(
        "overall",
        sum(s.tp for s in out.values()),
        sum(s.fp for s in out.values()),
        sum(s.fn for s in out.values()),
    )
    return out


@dataclass(frozen=True, slots=True)
class CrossingScore:
    #: labelled crossings among the instruments that have a prediction source (reference)
    labelled: int
    #: of those, predicted within the tolerance
    within: int
    #: |predicted - labelled| per instrument, days
    errors_days: Mapping[str, float]

    @property
    def fraction(self) -> float:
        return self.within / self.labelled if self.labelled else 1.0


def score_crossings(
    predicted: Mapping[str, datetime | None],
    labels: Sequence[Mapping[str, Any]],
    *,
    tolerance: timedelta = timedelta(days=30),
    only_with_reference: bool = True,
) -> CrossingScore:
    """The share of drifting instruments (a labelled ``mpe_crossing_at``) whose predicted
    crossing lies within ``tolerance`` of the label; by default only instruments with a
    reference meter count (the others have no drift signal in the lake)."""
    labelled = within = 0
    errors: dict[str, float] = {}
    for r in labels:
        truth = r.get("mpe_crossing_at")
        if truth is None or (only_with_reference and r.get("reference_quantity") is None):
            continue
        labelled += 1
        guess = predicted.get(r["instrument"])
        if guess is None:
            continue
        delta = abs(guess - truth)
        errors[r["instrument"]] = delta.total_seconds() / 86400
        within += delta <= tolerance
    return CrossingScore(labelled, within, errors)
