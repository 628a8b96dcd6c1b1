"""The delivery rules without a network (grid/_settling.py): which messages go in one
request, and what the receiver's answer makes of each outbox row."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from metrocloud.grid._settling import DONE, cut, settle

_STATUSES = st.sampled_from(["applied", "duplicate", "refused", "retry", "later-kind", None])


@given(
    sizes=st.lists(st.integers(0, 5000), max_size=40),
    count=st.integers(1, 50),
    max_bytes=st.integers(1, 20_000),
)
def test_a_request_takes_the_longest_prefix_within_count_and_bytes(
    sizes: list[int], count: int, max_bytes: int
) -> None:
    k = cut(sizes, count=count, max_bytes=max_bytes)
    if not sizes:
        assert k == 0
        return
    assert 1 <= k <= min(count, len(sizes))  # one always goes, in order
    assert k == 1 or sum(sizes[:k]) <= max_bytes
    if k < min(count, len(sizes)):  # stopped by the bytes: the next one would not fit
        assert sum(sizes[: k + 1]) > max_bytes


@st.composite
def _exchange(draw: Any) -> tuple[list[tuple[int, str]], dict[str, Any]]:
    n = draw(st.integers(0, 30))
    sent = [(100 + i, f"m{i}") for i in range(n)]
    results = []
    for _, mid in sent:
        status = draw(_STATUSES)
        if status is not None:  # None: the receiver left it out
            results.append({"message_id": mid, "status": status, "detail": f"why {mid}"})
    results = draw(st.permutations(results))  # order of the results does not matter
    if draw(st.booleans()):
        results = [*results, {"message_id": "not-sent", "status": "applied"}, "junk"]
    return sent, {"results": results}


@given(_exchange())
def test_exactly_the_confirmed_messages_are_delivered_and_nothing_after_a_wait(
    exchange: tuple[list[tuple[int, str]], dict[str, Any]],
) -> None:
    sent, answer = exchange
    status = {
        r["message_id"]: r["status"]
        for r in answer["results"]
        if isinstance(r, dict) and r["message_id"] != "not-sent"
    }
    s, covered = settle(sent, answer)
    # the covered messages are a prefix: up to the first one left out or to be retried
    expected = 0
    for _, mid in sent:
        if mid not in status:
            break
        expected += 1
        if status[mid] not in DONE and status[mid] != "refused":
            break
    assert covered == expected
    prefix = sent[:covered]
    assert list(s.delivered) == [rid for rid, mid in prefix if status[mid] in DONE]
    assert [rid for rid, _ in s.refused] == [rid for rid, mid in prefix if status[mid] == "refused"]
    assert all(detail == f"why m{rid - 100}" for rid, detail in s.refused)
    waiting = [rid for rid, mid in prefix if status[mid] not in DONE | {"refused"}]
    assert (s.retry[0] if s.retry else None) == (waiting[0] if waiting else None)
    assert s.complete == (not waiting)
    touched = set(s.delivered) | {rid for rid, _ in s.refused} | {s.retry[0] if s.retry else 0}
    assert not touched & {rid for rid, _ in sent[covered:]}  # the rest stays pending


def test_an_answer_that_is_no_answer_settles_nothing() -> None:
    for answer in (None, [], {"results": "no"}, {"results": [{"status": "applied"}]}):
        s, covered = settle([(1, "a")], answer)
        assert covered == 0 and not s.delivered and not s.refused and s.retry is None
