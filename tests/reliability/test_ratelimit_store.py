"""The rate limiter against real databases: fixed windows, Retry-After, and one shared budget
however many threads (or processes) hit it at once."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
import sqlalchemy as sa
from tests.fanout.recording import RecordingDispatcher

from chinwag.chat.errors import RateLimited
from chinwag.chat.ratelimit import KEY_MAX_CHARS, RateLimit, hit, hit_all, prune
from chinwag.fanout import Worker
from chinwag.store.database import Database
from chinwag.store.schema import rate_limits

pytestmark = pytest.mark.slow

LIMIT = RateLimit("test", 3, window_seconds=60)


def test_the_limit_plus_one_is_refused_with_the_seconds_left(db: Database) -> None:
    """Three hits pass, the fourth in the same window is refused with Retry-After to its end."""
    for _ in range(3):
        hit(db, LIMIT, "alice", now=1200.0)
    with pytest.raises(RateLimited) as refused:
        hit(db, LIMIT, "alice", now=1215.5)
    assert refused.value.retry_after == 45
    assert refused.value.status == 429


def test_the_next_window_starts_afresh_and_subjects_are_apart(db: Database) -> None:
    """A window lasts a minute from the subject's first hit, whatever the wall clock's minute;
    the first hit after it opens a new one; another subject has a budget of its own."""
    hit(db, LIMIT, "bob", now=1230.0)  # opens bob's window, 1230..1290
    for _ in range(3):
        with contextlib.suppress(RateLimited):
            hit(db, LIMIT, "bob", now=1259.0)
    with pytest.raises(RateLimited) as refused:
        hit(db, LIMIT, "bob", now=1280.0)  # across the clock's minute, still bob's window
    assert refused.value.retry_after == 10
    hit(db, LIMIT, "carol", now=1280.0)
    hit(db, LIMIT, "bob", now=1290.0)  # the window of 1290..1350 is new


def test_a_late_clock_does_not_reopen_a_window(db: Database) -> None:
    """A process whose clock lags behind the window's start still counts against that window."""
    for _ in range(3):
        hit(db, LIMIT, "dave", now=1261.0)
    with pytest.raises(RateLimited):
        hit(db, LIMIT, "dave", now=1259.9)


def test_zero_means_off(db: Database) -> None:
    """A limit of 0 never refuses and writes nothing."""
    for _ in range(100):
        hit(db, RateLimit("off", 0), "erin")
    assert prune(db, older_than_seconds=-1e12) == 0


def test_hit_all_counts_every_limit_and_reports_the_longest_wait(db: Database) -> None:
    """Both the account's and the address's counters advance; the refusal names the later end."""
    short = RateLimit("short", 1, window_seconds=10)
    long = RateLimit("long", 1, window_seconds=600)
    hit_all(db, [(short, "x"), (long, "y")], now=1000.0)
    with pytest.raises(RateLimited) as refused:
        hit_all(db, [(short, "x"), (long, "y")], now=1001.0)
    assert refused.value.retry_after == 599  # the 600 s window opened at 1000


def test_long_subjects_fit_the_key_column(db: Database) -> None:
    """A subject longer than the key column is stored by digest and still limited."""
    subject = "z" * 500
    assert len(LIMIT.key(subject)) <= KEY_MAX_CHARS
    for _ in range(3):
        hit(db, LIMIT, subject, now=60.0)
    with pytest.raises(RateLimited):
        hit(db, LIMIT, subject, now=61.0)


def test_concurrent_hits_share_exactly_one_budget(db: Database) -> None:
    """40 threads hitting one subject at once: exactly the limit pass, never more."""
    limit = RateLimit("race", 10)
    passed: list[int] = []
    refused: list[int] = []
    barrier = threading.Barrier(40)

    def one(n: int) -> None:
        barrier.wait()
        try:
            hit(db, limit, "shared", now=3600.0)
            passed.append(n)
        except RateLimited:
            refused.append(n)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(passed) == 10 and len(refused) == 30


def test_prune_removes_old_windows_only(db: Database) -> None:
    """Counters whose window ended over an hour ago go; current ones stay."""
    hit(db, LIMIT, "old", now=0.0)
    hit(db, LIMIT, "new", now=7200.0)
    assert prune(db, now=7200.0) == 1


@pytest.mark.parametrize("uptime", [2.0, 86_400.0], ids=["just-booted", "up-a-day"])
def test_the_worker_prunes_old_counters(db: Database, uptime: float) -> None:
    """Nobody else deletes them: the fan-out worker's hourly housekeeping does, from its first
    step on, whether the machine booted two seconds or a day ago (its monotonic clock)."""
    hit(db, LIMIT, "long ago", now=0.0)
    hit(db, LIMIT, "just now")
    worker = Worker(db, RecordingDispatcher(), clock=lambda: uptime)
    asyncio.run(worker.run_until_idle(limit_seconds=30))
    with db.read() as conn:
        keys = conn.execute(sa.select(rate_limits.c.key)).scalars().all()
    assert keys == [LIMIT.key("just now")]
