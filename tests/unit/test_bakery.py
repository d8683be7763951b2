"""The measurement claim's bakery never lets two trials measure one config at once, whatever the
order in which their storage reads and writes land (its shortcut included: a contender that sees
nobody else holds the lock without a second read)."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

from quantuna.study import mutex


class Stepper:
    """Runs contenders in threads, letting exactly one storage operation happen at a time, in an
    order drawn from ``seed``; records the most contenders that held the lock at once."""

    def __init__(self, seed: int, count: int) -> None:
        self.rng = random.Random(seed)
        self.count = count
        self.registers: dict[int, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.parked: set[int] = set()
        self.done: set[int] = set()
        self.go: int | None = None
        self.holding: set[int] = set()
        self.most = 0

    def step(self, me: int) -> None:  # called by a contender before each operation
        with self.cond:
            self.parked.add(me)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.go == me)
            self.go = None
            self.parked.discard(me)

    def contender(self, me: int) -> None:
        def read() -> dict[int, dict[str, Any]]:
            self.step(me)
            return {k: dict(v) for k, v in self.registers.items() if k != me}

        def write(register: dict[str, Any]) -> None:
            self.step(me)
            self.registers[me] = dict(register)

        try:
            assert mutex.enter_bakery(me, read, write)
            self.holding.add(me)
            self.most = max(self.most, len(self.holding))
            for _ in range(3):  # hold it for a few of the others' steps
                self.step(me)
            self.holding.discard(me)
            write({"choosing": False, "ticket": 0})
        finally:
            with self.cond:
                self.done.add(me)
                self.cond.notify_all()

    def run(self) -> int:
        threads = [threading.Thread(target=self.contender, args=(i,), daemon=True)
                   for i in range(self.count)]
        for t in threads:
            t.start()
        for _ in range(20_000):
            with self.cond:
                settled = self.cond.wait_for(
                    lambda: self.go is None and len(self.parked) + len(self.done) == self.count,
                    timeout=10)
                assert settled, "a contender neither parked nor finished"
                if len(self.done) == self.count:
                    break
                self.go = self.rng.choice(sorted(self.parked))
                self.cond.notify_all()
        assert len(self.done) == self.count, "a contender never got the lock"
        return self.most


@pytest.mark.parametrize("count", [2, 3])
def test_no_two_contenders_hold_the_bakery_at_once_in_any_order(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mutex, "POLL_SECONDS", 0.0)
    held = [Stepper(seed, count).run() for seed in range(150)]
    assert max(held) == 1
