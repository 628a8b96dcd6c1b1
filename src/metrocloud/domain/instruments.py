"""Instruments and their life-cycle state machine."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from metrocloud.domain.errors import InvalidInput, RuleViolation
from metrocloud.domain.parties import PartyRole

__all__ = [
    "EVENT_RULES",
    "EventKind",
    "EventRule",
    "Instrument",
    "LifeCycleState",
    "apply_event",
    "validate_nuts",
    "validate_serial",
]


class LifeCycleState(StrEnum):
    REGISTERED = "registered"
    PLACED_ON_MARKET = "placed_on_market"
    IN_SERVICE = "in_service"
    OUT_OF_SERVICE = "out_of_service"
    DECOMMISSIONED = "decommissioned"


class EventKind(StrEnum):
    PLACED_ON_MARKET = "placed_on_market"
    PUT_INTO_SERVICE = "put_into_service"
    VERIFIED = "verified"
    VERIFICATION_FAILED = "verification_failed"
    REPAIRED = "repaired"
    SOFTWARE_UPDATED = "software_updated"
    PARAMETER_CHANGED = "parameter_changed"
    SEAL_BROKEN = "seal_broken"
    TAMPER_DETECTED = "tamper_detected"
    RELOCATED = "relocated"
    INSPECTED = "inspected"
    NON_COMPLIANCE_FOUND = "non_compliance_found"
    CORRECTIVE_ACTION = "corrective_action"
    TAKEN_OUT_OF_SERVICE = "taken_out_of_service"
    DECOMMISSIONED = "decommissioned"


_S = LifeCycleState
_ACTIVE = frozenset({_S.PLACED_ON_MARKET, _S.IN_SERVICE, _S.OUT_OF_SERVICE})
_ALIVE = frozenset({_S.REGISTERED, *_ACTIVE})
_R = PartyRole


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRule:
    """Who may record an event, from which states, and the state it leads to."""

    roles: frozenset[PartyRole]
    from_states: frozenset[LifeCycleState]
    to_state: LifeCycleState | None  # None: the state does not change
    rule: str


EVENT_RULES: dict[EventKind, EventRule] = {
    EventKind.PLACED_ON_MARKET: EventRule(
        roles=frozenset({_R.MANUFACTURER}),
        from_states=frozenset({_S.REGISTERED}),
        to_state=_S.PLACED_ON_MARKET,
        rule="MID 2014/32/EU Art. 8 (manufacturer obligations)",
    ),
    EventKind.PUT_INTO_SERVICE: EventRule(
        roles=frozenset({_R.OPERATOR}),
        from_states=frozenset({_S.PLACED_ON_MARKET, _S.OUT_OF_SERVICE}),
        to_state=_S.IN_SERVICE,
        rule="MID 2014/32/EU Art. 3(8), Art. 7 (putting into use)",
    ),
    EventKind.VERIFIED: EventRule(
        roles=frozenset({_R.AUTHORITY}),
        from_states=_ACTIVE,
        to_state=None,
        rule="national verification law; WELMEC 11.1",
    ),
    EventKind.VERIFICATION_FAILED: EventRule(
        roles=frozenset({_R.AUTHORITY}),
        from_states=_ACTIVE,
        to_state=_S.OUT_OF_SERVICE,
        rule="national verification law; WELMEC 11.1",
    ),
    EventKind.REPAIRED: EventRule(
        roles=frozenset({_R.OPERATOR, _R.MANUFACTURER}),
        from_states=_ACTIVE,
        to_state=None,
        rule="national verification law (repair requires re-verification)",
    ),
    EventKind.SOFTWARE_UPDATED: EventRule(
        roles=frozenset({_R.OPERATOR, _R.MANUFACTURER}),
        from_states=_ALIVE,
        to_state=None,
        rule="WELMEC 7.2 extension D (software download)",
    ),
    EventKind.PARAMETER_CHANGED: EventRule(
        roles=frozenset({_R.OPERATOR, _R.MANUFACTURER}),
        from_states=_ALIVE,
        to_state=None,
        rule="WELMEC 7.2 extension L (event logger)",
    ),
    EventKind.SEAL_BROKEN: EventRule(
        roles=frozenset({_R.OPERATOR, _R.MANUFACTURER, _R.AUTHORITY}),
        from_states=_ACTIVE,
        to_state=None,
        rule="MID 2014/32/EU Annex I point 8 (protection against corruption)",
    ),
    EventKind.TAMPER_DETECTED: EventRule(
        roles=frozenset({_R.OPERATOR, _R.MANUFACTURER, _R.AUTHORITY}),
        from_states=_ALIVE,
        to_state=None,
        rule="MID 2014/32/EU Annex I point 8 (protection against corruption)",
    ),
    EventKind.RELOCATED: EventRule(
        roles=frozenset({_R.OPERATOR}),
        from_states=frozenset({_S.IN_SERVICE, _S.OUT_OF_SERVICE}),
        to_state=None,
        rule="operator duties under national verification law",
    ),
    EventKind.INSPECTED: EventRule(
        roles=frozenset({_R.AUTHORITY}),
        from_states=_ALIVE,
        to_state=None,
        rule="Regulation (EU) 2019/1020 Art. 11 (market surveillance activities)",
    ),
    EventKind.NON_COMPLIANCE_FOUND: EventRule(
        roles=frozenset({_R.AUTHORITY}),
        from_states=_ALIVE,
        to_state=None,
        rule="MID 2014/32/EU Art. 40; Regulation (EU) 2019/1020 Art. 16",
    ),
    EventKind.CORRECTIVE_ACTION: EventRule(
        roles=frozenset({_R.MANUFACTURER, _R.OPERATOR}),
        from_states=_ALIVE,
        to_state=None,
        rule="MID 2014/32/EU Art. 8(8) (corrective measures)",
    ),
    EventKind.TAKEN_OUT_OF_SERVICE: EventRule(
        roles=frozenset({_R.OPERATOR, _R.AUTHORITY}),
        from_states=frozenset({_S.IN_SERVICE}),
        to_state=_S.OUT_OF_SERVICE,
        rule="national verification law",
    ),
    EventKind.DECOMMISSIONED: EventRule(
        roles=frozenset({_R.OPERATOR, _R.MANUFACTURER}),
        from_states=_ALIVE,
        to_state=_S.DECOMMISSIONED,
        rule="national verification law",
    ),
}


def apply_event(state: LifeCycleState, kind: EventKind, role: PartyRole) -> LifeCycleState:
    """The state after ``kind``; :class:`RuleViolation` names the broken rule."""
    rule = EVENT_RULES[kind]
    if role not in rule.roles:
        raise RuleViolation(
            f"{'an' if role.value[0] in 'aeiou' else 'a'} {role} may not record {kind}; only "
            f"{', '.join(sorted(rule.roles))} may",
            rule=rule.rule,
        )
    if state not in rule.from_states:
        raise RuleViolation(
            f"cannot record {kind} for an instrument that is {state}; allowed from "
            f"{', '.join(sorted(rule.from_states))}",
            rule=rule.rule,
        )
    return rule.to_state if rule.to_state is not None else state


_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
_NUTS = re.compile(r"^[A-Z]{2}[0-9A-Z]{0,3}$")


def validate_serial(serial: str) -> str:
    if not _SERIAL.match(serial):
        raise InvalidInput(
            f"serial number must be 1 to 64 characters of letters, digits, '.', '_', '/', '-' "
            f"starting with a letter or digit, got {serial!r}",
            rule="MID 2014/32/EU Art. 8(5) (type, batch or serial number)",
        )
    return serial


def validate_nuts(region: str) -> str:
    if not _NUTS.match(region):
        raise InvalidInput(
            f"region must be a NUTS code (country code and up to 3 characters), got {region!r}",
            rule="Regulation (EC) 1059/2003 (NUTS)",
        )
    return region


@dataclass(frozen=True, kw_only=True, slots=True)
class Instrument:
    """One legally controlled measuring instrument."""

    id: str
    serial: str
    certificate_id: str
    manufacturer_id: str
    state: LifeCycleState = LifeCycleState.REGISTERED
    operator_id: str | None = None
    region: str | None = None
    verified_until: date | None = None

    def __post_init__(self) -> None:
        validate_serial(self.serial)
        if self.region is not None:
            validate_nuts(self.region)
