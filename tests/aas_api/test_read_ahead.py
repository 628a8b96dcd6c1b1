"""Read-ahead of shell listings: the next page of a cold walk is rendered in the background,
the walk's answers stay exactly what they were, and the read-ahead itself keeps its bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from metrocloud.services import aas as svc
from metrocloud.services._aas_read_ahead import ReadAhead
from metrocloud.twin import memo_misses
from metrocloud.twin import shells as twin_shells
from metrocloud.twin._render_process import RenderProcess

from .conftest import SHELL, Pop, register


@pytest.fixture
def cold(pop: Pop) -> Pop:
    w = pop.world
    cert = w.certificate(w.nb1, w.man2)
    pop.b += register(w, w.man2, cert, [f"R{i:04d}" for i in range(30)])
    twin_shells._instrument_json.cache_clear()
    twin_shells._type_json.cache_clear()
    return pop


def _page(p: Pop, cursor: str | None, limit: int = 5) -> tuple[list[str], str | None]:
    query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
    page = p.ok("/shells", params=query)
    return [s["id"] for s in page["result"]], page["paging_metadata"].get("cursor")


def test_a_cold_walk_renders_each_next_page_ahead_and_answers_the_same(cold: Pop) -> None:
    expected = [s["id"] for s in cold.walk("/shells", limit=1000)]  # one page: nothing ahead
    twin_shells._instrument_json.cache_clear()
    twin_shells._type_json.cache_clear()
    done, misses = svc._READ_AHEAD.done, memo_misses()
    got, cursor = _page(cold, None)
    pages = 1
    while cursor is not None:
        # the client is slower than the read-ahead here (otherwise the request waits for it)
        deadline = time.monotonic() + 10
        while svc._READ_AHEAD.done < done + pages and time.monotonic() < deadline:
            time.sleep(0.005)
        ids, cursor = _page(cold, cursor)
        got += ids
        pages += 1
    assert got == expected  # every shell once, in order, as a single page gave them
    assert pages == 8  # 3 types + 35 instruments by 5
    # every page after the first was rendered ahead, and no shell was rendered twice
    assert svc._READ_AHEAD.done - done == pages - 1
    assert memo_misses() - misses == len(expected)


def test_with_a_render_process_the_next_pages_are_rendered_there(
    cold: Pop, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [s["id"] for s in cold.walk("/shells", limit=1000)]
    helper = RenderProcess(enabled=True)
    monkeypatch.setattr(svc, "_RENDERER", helper)
    try:
        deadline = time.monotonic() + 60
        while helper.render([("x", "s", "gas", "m", "c")], []) is None:  # until it is up
            assert time.monotonic() < deadline, "the render process never became ready"
            time.sleep(0.05)
        before = helper.rendered
        twin_shells._instrument_json.cache_clear()
        twin_shells._type_json.cache_clear()
        done, misses = svc._READ_AHEAD.done, memo_misses()
        got, cursor = _page(cold, None)
        while cursor is not None:
            ids, cursor = _page(cold, cursor)  # at once: the request waits for its page
            got += ids
    finally:
        helper.close()
    assert got == expected
    pages = svc._READ_AHEAD.done - done
    assert pages == 7
    # the pages after the first were rendered by the helper (5 shells each), each shell
    # entered the memo once, and none was left over
    assert helper.rendered - before == len(expected) - 5
    assert memo_misses() - misses == len(expected)
    assert not any(k[1] in {i.removeprefix(SHELL) for i in got} for k in twin_shells._primed)


def test_pages_served_from_the_memo_read_nothing_ahead(cold: Pop) -> None:
    _, cursor = _page(cold, None)  # cold: page 2 is rendered ahead
    deadline = time.monotonic() + 10
    while not svc._READ_AHEAD.idle() and time.monotonic() < deadline:
        time.sleep(0.005)
    done = svc._READ_AHEAD.done
    for _ in range(5):  # the first page again and again (a dashboard polling it): all warm
        ids, again = _page(cold, None)
        assert again == cursor and len(ids) == 5
    time.sleep(0.05)
    assert svc._READ_AHEAD.done == done


def test_a_filtered_listing_reads_nothing_ahead(cold: Pop) -> None:
    done = svc._READ_AHEAD.done
    page = cold.ok("/shells", params={"limit": 2, "idShort": "Instrument_R0001"})
    assert [s["id"] for s in page["result"]] == [SHELL + cold.b[3]]
    time.sleep(0.05)
    assert svc._READ_AHEAD.done == done


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


NEXT = {"p2": "p3", "p3": "p4", "p4": "p5", "p5": None}


def test_one_walk_at_most_depth_pages_ahead_waits_see_the_result() -> None:
    ahead = ReadAhead(depth=2)
    release = threading.Event()
    rendered: list[str] = []

    def render(cursor: str) -> tuple[str | None, None]:
        release.wait(10)
        rendered.append(cursor)
        return NEXT[cursor], None

    assert ahead.offer("A", "p2", render)
    assert not ahead.offer("B", "q2", lambda c: (None, None))  # busy with walk A: dropped
    waiter = threading.Thread(target=lambda: rendered.append(f"wait {ahead.wait('A', 'p2')}"))
    waiter.start()
    time.sleep(0.05)
    assert rendered == []  # the request for p2 waits for the read-ahead of p2
    release.set()
    waiter.join(10)
    assert rendered[0] == "p2" and "wait True" in rendered  # it waited for the rendering
    # p2 asked for: the thread goes on to p3 and p4, then stops two pages ahead
    _until(lambda: ahead.done == 3 and ahead.idle())
    time.sleep(0.05)
    assert [r for r in rendered if r.startswith("p")] == ["p2", "p3", "p4"]
    assert ahead.offer("A", "p3", render)  # already ahead: nothing rendered twice
    time.sleep(0.05)
    assert ahead.done == 3
    assert ahead.wait("A", "p3") is True  # asked for: one page further, p5 (the last)
    _until(lambda: ahead.done == 4 and ahead.idle())
    assert ahead.wait("A", "p3") is False  # asked for once: forgotten
    assert ahead.wait("A", "never offered") is False
    assert ahead.wait("B", "q2") is False
    assert ahead.wait("A", None) is False  # a first page is never read ahead
    # idle now: another walk takes the thread over
    assert ahead.offer("B", "q2", lambda c: (rendered.append(c), None))
    _until(lambda: ahead.done == 5)
    assert rendered[-1] == "q2"


def test_a_failing_read_ahead_is_only_a_lost_hint() -> None:
    ahead = ReadAhead()

    def broken(cursor: str) -> tuple[str | None, None]:
        raise RuntimeError("database gone")

    assert ahead.offer("A", "p2", broken)
    assert ahead.wait("A", "p2") is True  # it ran (and failed): the request renders itself
    rendered: list[str] = []

    def render(cursor: str) -> tuple[str | None, None]:
        rendered.append(cursor)
        return None, None

    assert ahead.offer("A", "p3", render)  # the walk goes on from the page after it
    _until(lambda: bool(rendered))
    assert rendered == ["p3"] and ahead.done == 1


def test_rendering_finished_elsewhere_lets_the_next_page_be_read_meanwhile() -> None:
    ahead = ReadAhead(depth=2)
    read: list[str] = []
    finished: list[str] = []
    gates = {c: threading.Event() for c in NEXT}

    def render(cursor: str) -> tuple[str | None, Callable[[], None]]:
        read.append(cursor)

        def finish() -> None:
            gates[cursor].wait(10)
            if cursor == "p3":
                raise RuntimeError("render process gone")
            finished.append(cursor)

        return NEXT[cursor], finish

    assert ahead.offer("A", "p2", render)
    # p2's rendering is not finished, yet p3's rows were read meanwhile (two pages ahead)
    _until(lambda: read == ["p2", "p3"])
    time.sleep(0.05)
    assert read == ["p2", "p3"] and finished == []
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(ahead.wait("A", "p2")))
    waiter.start()
    time.sleep(0.05)
    assert got == []  # the request waits for the rendering, not only for the rows
    gates["p2"].set()
    waiter.join(10)
    assert got == [True] and finished == ["p2"]
    _until(lambda: read == ["p2", "p3", "p4"])  # p2 asked for: one page further
    gates["p3"].set()  # p3's rendering fails: only a lost hint, its request renders itself
    assert ahead.wait("A", "p3") is True
    gates["p4"].set()
    assert ahead.wait("A", "p4") is True
    assert finished == ["p2", "p4"] and ahead.done == 2
