"""The render process: shells rendered in a helper process equal the ones rendered here, and
a helper that is not there (not started yet, disabled, dead) only means "render it yourself"."""

from __future__ import annotations

import time

import pytest

from metrocloud.twin import memo_misses
from metrocloud.twin import shells as twin_shells
from metrocloud.twin._render_process import RenderProcess

INSTRUMENTS = [
    (f"01J{i:023d}", f"SN-{i}", "electricity", "01JMAN00000000000000000000", "01JCER0000000000000")
    for i in range(25)
] + [("01JX", 'Ünïcødé "quoted" \\ serial', "water", "m", "c")]
TYPES = [("01JCER0000000000000", "DE-MI003-PTB-001", "Meter 3000", "electricity", "nb", "man")]


def _ready(proc: RenderProcess) -> tuple[list[bytes], list[bytes]]:
    """The first answer of a helper that is starting (None until it has imported)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = proc.render(INSTRUMENTS, TYPES)
        if answer is not None:
            return answer
        time.sleep(0.05)
    raise AssertionError("the render process never became ready")


@pytest.fixture
def proc() -> RenderProcess:
    p = RenderProcess(enabled=True)
    yield p
    p.close()


def test_the_helper_renders_exactly_what_this_process_renders(proc: RenderProcess) -> None:
    instruments, types = _ready(proc)
    assert instruments == [twin_shells.render_instrument(*f) for f in INSTRUMENTS]
    assert types == [twin_shells.render_type(*f) for f in TYPES]
    assert proc.rendered == len(INSTRUMENTS) + len(TYPES)


def test_a_starting_helper_answers_none_at_once(proc: RenderProcess) -> None:
    started = time.monotonic()
    assert proc.render(INSTRUMENTS, TYPES) is None  # it is importing: render yourself
    assert time.monotonic() - started < 5
    assert proc.rendered == 0


def test_disabled_or_nothing_to_render_is_none() -> None:
    off = RenderProcess(enabled=False)
    assert off.render(INSTRUMENTS, TYPES) is None
    assert off._proc is None  # no process started
    assert RenderProcess(enabled=True).render([], []) is None


def test_a_killed_helper_is_replaced(proc: RenderProcess) -> None:
    _ready(proc)
    first = proc._proc
    first.kill()
    first.join(10)
    # the next calls notice it, start another one, and render with it once it is ready
    instruments, _ = _ready(proc)
    assert proc._proc is not first and proc._proc.is_alive()
    assert instruments[0] == twin_shells.render_instrument(*INSTRUMENTS[0])


def test_primed_shells_enter_the_memo_at_their_first_request() -> None:
    twin_shells._instrument_json.cache_clear()
    fields = ("01JPRIMED", "SN-P", "gas", "man", "cert")
    body = twin_shells.render_instrument(*fields)
    twin_shells.prime([(fields, body)], [])
    misses = memo_misses()

    class Row:
        id, serial, category, manufacturer_id, certificate_id = fields

    assert twin_shells.instrument_shell_json(Row()) is body  # the handed-over bytes
    assert memo_misses() == misses + 1
    assert ("i", *fields) not in twin_shells._primed  # taken, not kept twice


def test_primed_shells_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twin_shells, "_primed", {})
    monkeypatch.setattr(twin_shells, "_PRIMED_SIZE", 10)
    twin_shells.prime([((f"id{i}", "s", "c", "m", "x"), b"{}") for i in range(25)], [])
    assert len(twin_shells._primed) == 10
    assert ("i", "id24", "s", "c", "m", "x") in twin_shells._primed  # the newest kept
