"""Read-ahead of shell listings: the next page of a cold walk is rendered in the background,
the walk's answers stay exactly what they were, and the read-ahead itself keeps its bounds."""

from __future__ import annotations

import threading
import time

import pytest

from metrocloud.services import aas as svc
from metrocloud.services._aas_read_ahead import ReadAhead
from metrocloud.twin import memo_misses
from metrocloud.twin import shells as twin_shells

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


def test_pages_served_from_the_memo_read_nothing_ahead(cold: Pop) -> None:
    _, cursor = _page(cold, None)  # cold: page 2 is rendered ahead
    deadline = time.monotonic() + 10
    while svc._READ_AHEAD._running and time.monotonic() < deadline:
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


def test_one_page_at_a_time_offers_while_busy_are_dropped_and_waits_see_the_result() -> None:
    ahead = ReadAhead()
    release = threading.Event()
    rendered: list[str] = []

    def slow() -> None:
        release.wait(10)
        rendered.append("p2")

    assert ahead.offer("p2", slow)
    assert not ahead.offer("p3", lambda: rendered.append("p3"))  # busy: dropped
    assert not ahead.offer("p2", slow)  # already running
    waiter = threading.Thread(target=lambda: rendered.append(f"wait {ahead.wait('p2')}"))
    waiter.start()
    time.sleep(0.05)
    assert rendered == []  # the request for p2 waits for the read-ahead of p2
    release.set()
    waiter.join(10)
    assert rendered == ["p2", "wait True"]
    assert ahead.wait("p2") is False  # asked for once: forgotten
    assert ahead.wait("never offered") is False


def test_a_failing_read_ahead_is_only_a_lost_hint() -> None:
    ahead = ReadAhead()

    def broken() -> None:
        raise RuntimeError("database gone")

    assert ahead.offer("p2", broken)
    assert ahead.wait("p2") is True  # it ran (and failed): the request renders itself
    rendered: list[str] = []
    assert ahead.offer("p3", lambda: rendered.append("p3"))
    ahead.wait("p3")
    assert rendered == ["p3"] and ahead.done == 1
