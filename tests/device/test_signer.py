"""The batching signer: counter and chain continue across restarts, never reused."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from metrocloud.device import BatchSigner, SignerUnusable
from metrocloud.domain.errors import Conflict
from metrocloud.formats.batches import GENESIS_PREV, InvalidBatch, open_batch, parse_payload
from metrocloud.trust.keys import KeyAlgorithm, PrivateKey

from ._support import INSTRUMENT

SOFTWARE = "5" * 64


def _sign(signer: BatchSigner, t0: int = 0, **extra: Any) -> Any:
    return signer.sign(
        software=SOFTWARE,
        quantity="1-0:1.8.0",
        unit="kWh",
        t=[t0, t0 + 1],
        value=[1.5, 2.5],
        status=[0, 0],
        **extra,
    )


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_counter_and_chain_continue_after_restart(tmp_path: Path, algorithm: str) -> None:
    key = PrivateKey.generate(KeyAlgorithm(algorithm))
    state = tmp_path / "signer.json"
    signer = BatchSigner.open(key, instrument=INSTRUMENT, state_path=state)
    first = parse_payload(_sign(signer).payload)
    second = parse_payload(_sign(signer, 10, cursor={"position": 12}).payload)
    assert (first.counter, first.prev) == (1, GENESIS_PREV)
    assert (second.counter, second.prev) == (2, first.digest)

    restarted = BatchSigner.open(key, instrument=INSTRUMENT, state_path=state)
    assert restarted.counter == 2 and restarted.prev == second.digest
    assert dict(restarted.cursor) == {"position": 12}
    third = _sign(restarted, 20)
    parsed = open_batch(third.wire(), lambda key_id: key.public_key)
    assert (parsed.counter, parsed.prev) == (3, second.digest)


def test_sign_one_is_a_batch_of_one() -> None:
    signer = BatchSigner(PrivateKey.generate(), instrument=INSTRUMENT)
    parsed = signer.sign_one(software=SOFTWARE, quantity="q", unit="u", t=5, value=7.25).parse()
    assert (parsed.t, parsed.value, parsed.status) == ([5], [7.25], [0])


def test_state_of_another_key_is_not_continued(tmp_path: Path) -> None:
    state = tmp_path / "signer.json"
    _sign(BatchSigner.open(PrivateKey.generate(), instrument=INSTRUMENT, state_path=state))
    with pytest.raises(Conflict, match="belongs to key"):
        BatchSigner.open(PrivateKey.generate(), instrument=INSTRUMENT, state_path=state)


def test_invalid_batch_consumes_no_counter(tmp_path: Path) -> None:
    signer = BatchSigner.open(
        PrivateKey.generate(), instrument=INSTRUMENT, state_path=tmp_path / "s"
    )
    with pytest.raises(InvalidBatch):
        signer.sign(software="bad", quantity="q", unit="u", t=[1], value=[1], status=[0])
    assert signer.counter == 0 and parse_payload(_sign(signer).payload).counter == 1


def test_a_failed_state_write_makes_the_signer_refuse(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    state = tmp_path / "signer.json"
    signer = BatchSigner.open(key, instrument=INSTRUMENT, state_path=state)
    _sign(signer)
    with (
        mock.patch("metrocloud.device.signer.write_atomically", side_effect=OSError("disk full")),
        pytest.raises(OSError),
    ):
        _sign(signer)
    with pytest.raises(SignerUnusable):
        _sign(signer)
    reopened = BatchSigner.open(key, instrument=INSTRUMENT, state_path=state)
    assert parse_payload(_sign(reopened).payload).counter == 2  # the unreleased 2 is reused


def test_concurrent_signing_gets_consecutive_counters(tmp_path: Path) -> None:
    signer = BatchSigner.open(
        PrivateKey.generate(), instrument=INSTRUMENT, state_path=tmp_path / "s"
    )
    batches: list[Any] = []

    def work() -> None:
        for _ in range(5):
            batches.append(_sign(signer))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    parsed = sorted((b.parse() for b in batches), key=lambda p: p.counter)
    assert [p.counter for p in parsed] == list(range(1, 21))
    for before, after in itertools.pairwise(parsed):
        assert after.prev == before.digest
