"""The legal rules of the domain layer: transitions that must be refused, with the rule."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metrocloud.domain import (
    EVENT_RULES,
    Certificate,
    CertificateAction,
    CertificateStatus,
    ChecksumAlgorithm,
    ConformityModule,
    EventKind,
    InstrumentCategory,
    InstrumentType,
    InvalidInput,
    LifeCycleState,
    Party,
    PartyRole,
    RuleViolation,
    SoftwareIdentification,
    apply_event,
    next_status,
    validate_nuts,
    validate_serial,
)

SW = SoftwareIdentification(
    name="FW", version="1.0", algorithm=ChecksumAlgorithm.SHA256, checksum="ab" * 32
)


def certificate(status: CertificateStatus = CertificateStatus.VALID) -> Certificate:
    itype = InstrumentType(
        manufacturer_id="m",
        model="EM-340",
        category=InstrumentCategory.MI_003,
        accuracy_class="B",
        software=(SW,),
    )
    return Certificate(
        id="c",
        number="DE-1",
        notified_body_id="nb",
        holder_id="m",
        module=ConformityModule.B,
        instrument_type=itype,
        issued_on=date(2020, 1, 1),
        valid_until=date(2030, 1, 1),
        status=status,
    )


def test_withdrawn_certificate_refuses_registration_naming_the_rule() -> None:
    cert = certificate().apply(CertificateAction.WITHDRAW)
    with pytest.raises(RuleViolation) as exc:
        cert.ensure_allows_registration(date(2025, 1, 1))
    assert "withdrawn" in str(exc.value)
    assert exc.value.rule and "MID" in exc.value.rule


def test_expired_certificate_refuses_registration() -> None:
    cert = certificate()
    assert cert.effective_status(date(2030, 1, 2)) is CertificateStatus.EXPIRED
    with pytest.raises(RuleViolation, match="expired"):
        cert.ensure_allows_registration(date(2030, 1, 2))
    cert.ensure_allows_registration(date(2029, 12, 31))


@pytest.mark.parametrize(
    ("start", "action", "allowed"),
    [
        (CertificateStatus.VALID, CertificateAction.SUSPEND, True),
        (CertificateStatus.SUSPENDED, CertificateAction.REINSTATE, True),
        (CertificateStatus.SUSPENDED, CertificateAction.WITHDRAW, True),
        (CertificateStatus.VALID, CertificateAction.REVISE, True),
        (CertificateStatus.SUSPENDED, CertificateAction.REVISE, False),
        (CertificateStatus.WITHDRAWN, CertificateAction.REINSTATE, False),
        (CertificateStatus.WITHDRAWN, CertificateAction.SUSPEND, False),
        (CertificateStatus.EXPIRED, CertificateAction.WITHDRAW, False),
        (CertificateStatus.VALID, CertificateAction.REINSTATE, False),
    ],
)
def test_certificate_transitions(
    start: CertificateStatus, action: CertificateAction, allowed: bool
) -> None:
    if allowed:
        next_status(start, action)
    else:
        with pytest.raises(RuleViolation, match=f"cannot {action}"):
            next_status(start, action)


@given(st.lists(st.sampled_from(list(CertificateAction)), max_size=12))
def test_withdrawn_and_expired_are_final(actions: list[CertificateAction]) -> None:
    status = CertificateStatus.VALID
    for action in actions:
        try:
            new = next_status(status, action)
        except RuleViolation:
            continue
        assert status not in (CertificateStatus.WITHDRAWN, CertificateStatus.EXPIRED)
        status = new


def test_revision_counts_up() -> None:
    cert = certificate().apply(CertificateAction.REVISE).apply(CertificateAction.REVISE)
    assert cert.revision == 2 and cert.status is CertificateStatus.VALID


def test_verifying_a_decommissioned_instrument_is_refused() -> None:
    with pytest.raises(RuleViolation) as exc:
        apply_event(LifeCycleState.DECOMMISSIONED, EventKind.VERIFIED, PartyRole.AUTHORITY)
    assert "decommissioned" in str(exc.value) and exc.value.rule


def test_only_authorities_verify() -> None:
    with pytest.raises(RuleViolation, match="only authority"):
        apply_event(LifeCycleState.IN_SERVICE, EventKind.VERIFIED, PartyRole.OPERATOR)


def test_module_b_life_cycle() -> None:
    s = LifeCycleState.REGISTERED
    s = apply_event(s, EventKind.PLACED_ON_MARKET, PartyRole.MANUFACTURER)
    s = apply_event(s, EventKind.PUT_INTO_SERVICE, PartyRole.OPERATOR)
    assert s is LifeCycleState.IN_SERVICE
    assert apply_event(s, EventKind.VERIFIED, PartyRole.AUTHORITY) is s
    s = apply_event(s, EventKind.VERIFICATION_FAILED, PartyRole.AUTHORITY)
    assert s is LifeCycleState.OUT_OF_SERVICE
    s = apply_event(s, EventKind.DECOMMISSIONED, PartyRole.OPERATOR)
    assert s is LifeCycleState.DECOMMISSIONED


@given(
    st.lists(
        st.tuples(st.sampled_from(list(EventKind)), st.sampled_from(list(PartyRole))),
        max_size=30,
    )
)
def test_decommissioned_is_final_and_every_refusal_names_a_rule(
    steps: list[tuple[EventKind, PartyRole]],
) -> None:
    state = LifeCycleState.REGISTERED
    for kind, role in steps:
        try:
            new = apply_event(state, kind, role)
        except RuleViolation as exc:
            assert exc.rule == EVENT_RULES[kind].rule
            continue
        assert state is not LifeCycleState.DECOMMISSIONED
        assert role in EVENT_RULES[kind].roles
        state = new


def test_every_event_kind_has_a_rule() -> None:
    assert set(EVENT_RULES) == set(EventKind)


@pytest.mark.parametrize("serial", ["", "-abc", "a b", "x" * 65, "ä123"])
def test_bad_serials(serial: str) -> None:
    with pytest.raises(InvalidInput, match="serial number"):
        validate_serial(serial)


@pytest.mark.parametrize("region", ["de21", "D", "DE2222", "DE-1"])
def test_bad_nuts(region: str) -> None:
    with pytest.raises(InvalidInput, match="NUTS"):
        validate_nuts(region)


def test_accuracy_class_must_exist_for_category() -> None:
    with pytest.raises(InvalidInput, match="accuracy class 'Z'"):
        InstrumentType(
            manufacturer_id="m",
            model="x",
            category=InstrumentCategory.MI_001,
            accuracy_class="Z",
            software=(SW,),
        )


def test_software_checksum_length_is_checked() -> None:
    with pytest.raises(InvalidInput, match="64 lowercase hex"):
        SoftwareIdentification(
            name="FW", version="1", algorithm=ChecksumAlgorithm.SHA256, checksum="ab"
        )


def test_notified_body_needs_its_number() -> None:
    with pytest.raises(InvalidInput, match="4-digit"):
        Party(id="p", name="NB", role=PartyRole.NOTIFIED_BODY, country="DE")
    with pytest.raises(InvalidInput, match="only a notified body"):
        Party(id="p", name="M", role=PartyRole.MANUFACTURER, country="DE", nb_number="0102")
    with pytest.raises(InvalidInput, match="country"):
        Party(id="p", name="M", role=PartyRole.MANUFACTURER, country="XX")


def test_category_legal_basis_cites_the_annex() -> None:
    assert InstrumentCategory.MI_003.legal_basis == "Directive 2014/32/EU, Annex V (MI-003)"
    assert "2014/31/EU" in InstrumentCategory.NAWI.legal_basis
