"""The progress throttling on its own: pure code, no database, no Celery."""

from __future__ import annotations

from typing import Any

import pytest

from django_taskqueue.progress import ProgressBuffer, ProgressWrite, percent_from


class TestProgressBuffer:
    def test_first_value_is_written_then_buffered_within_the_interval(self) -> None:
        buf = ProgressBuffer(min_interval=1.0, step=5)
        assert buf.offer(1, "", None, now=0.0) == ProgressWrite(1, "", None, True)
        assert buf.offer(2, "", None, now=0.5) is None
        assert buf.offer(3, "", None, now=0.9) is None
        assert buf.offer(4, "", None, now=1.0) == ProgressWrite(4, "", None, False)

    def test_flush_returns_the_newest_buffered_value_once(self) -> None:
        buf = ProgressBuffer(min_interval=10.0, step=5)
        buf.offer(1, "a", None, now=0.0)
        buf.offer(50, "b", None, now=1.0)
        buf.offer(99.6, "c", {"k": 1}, now=2.0)
        assert buf.flush() == ProgressWrite(99, "c", {"k": 1}, True)
        assert buf.flush() is None

    def test_flush_puts_the_last_written_value_in_the_history(self) -> None:
        buf = ProgressBuffer(min_interval=0.0, step=10)
        buf.offer(90, "", None, now=0.0)
        assert buf.offer(93, "", None, now=1.0) == ProgressWrite(93, "", None, False)
        assert buf.flush() == ProgressWrite(93, "", None, True)
        assert buf.flush() is None

    def test_history_on_step_or_message_change(self) -> None:
        buf = ProgressBuffer(min_interval=0.0, step=10)
        got = [
            buf.offer(p, m, None, now=float(i))
            for i, (p, m) in enumerate([(0, "a"), (5, "a"), (10, "a"), (11, "b"), (12, "b")])
        ]
        assert [w.history for w in got if w] == [True, False, True, True, False]

    def test_thousands_of_calls_cause_a_bounded_number_of_writes(self) -> None:
        buf = ProgressBuffer(min_interval=0.5, step=5)
        # 10,000 calls over 2 simulated seconds: one write per half second at most.
        writes = [buf.offer(i / 100, f"item {i}", None, now=i * 0.0002) for i in range(10_000)]
        assert sum(w is not None for w in writes) == 4
        final = buf.flush()
        assert final is not None
        assert final.progress == 99

    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            ((40, None, None), 40.0),
            ((None, 3, 4), 75.0),
            ((150, None, None), 100.0),
            ((-3, None, None), 0.0),
        ],
    )
    def test_percent_from(self, args: tuple[Any, Any, Any], expected: float) -> None:
        assert percent_from(*args) == expected

    @pytest.mark.parametrize("args", [(None, None, None), (None, 1, 0), (float("nan"), None, None)])
    def test_percent_from_rejects(self, args: tuple[Any, Any, Any]) -> None:
        with pytest.raises(ValueError, match=r"percentage|total|NaN"):
            percent_from(*args)
