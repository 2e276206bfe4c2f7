"""The expansion against real databases: its cursor (members by user id, each one's devices by
id), every recipient written once across batches, lease loss and takeover, a plan that seeks, and
the rows it writes already claimed for the expanding worker's free send slots."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa
from tests.fanout.recording import RecordingDispatcher
from tests.support.seed import add_chat, add_devices_of, add_members, add_users

from chinwag.fanout import Worker, WorkerOptions
from chinwag.fanout.deliveries import claim_deliveries, load_claimed
from chinwag.fanout.outbox import LeaseLost, OutboxClaim, claim_outbox, expand_batch
from chinwag.fanout.policy import Cursor, recipient_devices
from chinwag.store.database import Database
from chinwag.store.schema import deliveries, devices, messages, outbox
from chinwag.store.states import DeliveryKind


def _group(db: Database, members: int, devices_each: int) -> tuple[int, dict[int, list[int]]]:
    """A message to a chat of ``members`` users (plus its sender), whose devices were registered
    round-robin, so that device ids do not follow user ids: returns the message id and each
    member's device ids."""
    sender, *member_ids = add_users(db, ["sender", *(f"m{i}" for i in range(members))])
    chat_id = add_chat(db, "T", sender)
    add_members(db, chat_id, [sender, *member_ids])
    owned = [
        (user_id, f"{round_ * 1000 + i + 1:064x}")
        for round_ in range(devices_each)
        for i, user_id in enumerate(reversed(member_ids))
    ]
    add_devices_of(db, owned, "apns")
    now = time.time()
    with db.write() as conn:
        message_id: int = conn.execute(
            messages.insert()
            .values(chat_id=chat_id, sender_id=sender, body="hi", created_at=now)
            .returning(messages.c.id)
        ).scalar_one()
        conn.execute(
            outbox.insert().values(
                message_id=message_id, due_at=now, created_at=now, updated_at=now
            )
        )
        rows = conn.execute(sa.select(devices.c.user_id, devices.c.id).order_by(devices.c.id))
        by_user: dict[int, list[int]] = {}
        for user_id, device_id in rows:
            by_user.setdefault(user_id, []).append(device_id)
    return message_id, by_user


def _written(db: Database, message_id: int) -> list[int]:
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(deliveries.c.device_id).where(deliveries.c.message_id == message_id)
            ).scalars()
        )


def test_batches_walk_members_by_user_id_and_write_every_device_once(db: Database) -> None:
    """Batches of 4 over 5 members of 3 devices each (ids not in user order) split members
    between batches, and still write each of the 15 devices once, the cursor advancing through
    (user id, device id) order."""
    message_id, by_user = _group(db, members=5, devices_each=3)
    order = [(user_id, d) for user_id in sorted(by_user) for d in sorted(by_user[user_id])]
    (claim,) = claim_outbox(db, "w", time.time(), 60, 1)
    cursors = []
    done = False
    while not done:
        claim, added, done = expand_batch(db, claim, "w", time.time(), 60, 4)
        cursors.append((claim.cursor, added))
    assert cursors == [
        (Cursor(*order[3]), 4),
        (Cursor(*order[7]), 4),
        (Cursor(*order[11]), 4),
        (Cursor(*order[14]), 3),
    ]
    written = _written(db, message_id)
    assert sorted(written) == sorted(d for _, d in order)
    with db.read() as conn:
        state = conn.execute(
            sa.select(outbox.c.state, outbox.c.expanded_user_id, outbox.c.expanded_through)
        ).one()
    assert tuple(state) == ("done", *order[14])


def test_a_worker_that_lost_its_lease_leaves_the_rest_to_its_successor(db: Database) -> None:
    """A takes one batch, its lease runs out, B claims the fan-out and resumes from A's cursor:
    every device is written once, and A's next batch is refused."""
    message_id, by_user = _group(db, members=4, devices_each=2)
    now = time.time()
    (mine,) = claim_outbox(db, "a", now, 10, 1)
    mine, added, done = expand_batch(db, mine, "a", now, 10, 3)
    assert (added, done) == (3, False)
    (theirs,) = claim_outbox(db, "b", now + 20, 10, 1)
    assert theirs.cursor == mine.cursor
    with pytest.raises(LeaseLost):
        expand_batch(db, mine, "a", now + 21, 10, 3)
    done = False
    while not done:
        theirs, _, done = expand_batch(db, theirs, "b", now + 21, 10, 3)
    written = _written(db, message_id)
    assert sorted(written) == sorted(d for ids in by_user.values() for d in ids)


def test_a_range_of_the_cursor_is_exactly_the_rows_of_its_batch(db: Database) -> None:
    """``recipient_devices(after, through)`` is the batch that ended at ``through``, which the
    expansion writes (not the first rows again, which a device added meanwhile would shift)."""
    _, by_user = _group(db, members=3, devices_each=2)
    (claim,) = claim_outbox(db, "w", time.time(), 60, 1)
    with db.read() as conn:
        first = conn.execute(recipient_devices(claim, Cursor()).limit(3)).all()
        through = Cursor(first[-1].user_id, first[-1].device_id)
        ranged = conn.execute(recipient_devices(claim, Cursor(), through)).all()
        rest = conn.execute(recipient_devices(claim, through)).all()
    assert sorted(r.device_id for r in ranged) == sorted(r.device_id for r in first)
    every = sorted(d for ids in by_user.values() for d in ids)
    assert sorted([r.device_id for r in first] + [r.device_id for r in rest]) == every


def test_sqlite_seeks_each_batch_without_sorting_the_group(db: Database) -> None:
    """SQLite's plan of a batch searches the chat's memberships from the cursor on its primary
    key and each member's devices on their index, with no temporary B-tree (which would read
    and sort the whole group for every batch)."""
    if not db.is_sqlite:
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    _group(db, members=3, devices_each=2)
    (claim,) = claim_outbox(db, "w", time.time(), 60, 1)
    query = recipient_devices(claim, Cursor(2, 5)).limit(1000)
    compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.read() as conn:
        plan = " / ".join(row[3] for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "TEMP B-TREE" not in plan, plan
    assert (
        "memberships USING INDEX sqlite_autoindex_memberships_1 (chat_id=? AND user_id>?)" in plan
    )
    assert "devices USING INDEX ix_devices_user_id_active" in plan


def test_a_clear_resumes_after_the_readers_last_device(db: Database) -> None:
    """A clear's cursor is the reader and a device id: the next batch starts after it."""
    (reader,) = add_users(db, ["reader"])
    add_devices_of(db, [(reader, f"{i:064x}") for i in range(1, 6)], "apns")
    with db.read() as conn:
        ids = list(conn.execute(sa.select(devices.c.id).order_by(devices.c.id)).scalars())
    fanout = OutboxClaim(1, 0, 0, 0, 0, kind=DeliveryKind.CLEAR, user_id=reader)
    with db.read() as conn:
        rest = conn.execute(recipient_devices(fanout, Cursor(reader, ids[1]))).all()
    assert [r.device_id for r in rest] == ids[2:]


def _rows(db: Database, message_id: int) -> dict[int, tuple[str, str | None, float | None]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(
                deliveries.c.id,
                deliveries.c.status,
                deliveries.c.lease_owner,
                deliveries.c.lease_until,
            ).where(deliveries.c.message_id == message_id)
        )
        return {r.id: (r.status, r.lease_owner, r.lease_until) for r in rows}


def test_rows_within_the_room_are_written_claimed_and_the_rest_pending(db: Database) -> None:
    """With room for 2 APNs sends, the batch's first 2 APNs rows are written `sending` under
    the expander's lease and come back to it; the others are `pending` for any worker, and
    the claimed ones load as a claim's would."""
    message_id, by_user = _group(db, members=5, devices_each=1)
    now = time.time()
    (claim,) = claim_outbox(db, "w", now, 60, 1)
    mine: list[int] = []
    expand_batch(db, claim, "w", now, 60, 100, {"apns": 2, "fcm": 5}, mine)
    rows = _rows(db, message_id)
    assert len(rows) == 5 and len(mine) == 2
    assert {rows[i] for i in mine} == {("sending", "w", now + 60)}
    assert {rows[i] for i in set(rows) - set(mine)} == {("pending", None, None)}
    loaded = load_claimed(db, "w", now, mine)
    assert sorted(c.delivery_id for c in loaded) == sorted(mine)
    assert all(c.skip is None and c.notification.preview == "hi" for c in loaded)
    first_two = [d for user_id in sorted(by_user) for d in by_user[user_id]][:2]
    assert sorted(c.target.device_id for c in loaded) == sorted(first_two)


def test_a_repeated_batch_claims_none_of_the_rows_written_before(db: Database) -> None:
    """Rows an earlier pass wrote (a worker that died before moving the cursor) are skipped by
    the insert, so the repeat claims none of them: they are claimed as usual, once."""
    message_id, _ = _group(db, members=3, devices_each=1)
    now = time.time()
    (claim,) = claim_outbox(db, "w", now, 60, 1)
    expand_batch(db, claim, "w", now, 60, 2)
    mine: list[int] = []
    expand_batch(db, claim, "w", now, 60, 2, {"apns": 10}, mine)  # from the same cursor
    assert mine == []
    assert len(_rows(db, message_id)) == 2
    assert {status for status, _, _ in _rows(db, message_id).values()} == {"pending"}


def test_rows_claimed_by_a_dead_expander_go_to_another_worker_when_its_lease_ends(
    db: Database,
) -> None:
    """An expander that dies after writing its rows claimed holds them for one lease only:
    then another worker's claim takes them, as it takes any dead worker's rows."""
    _group(db, members=3, devices_each=1)
    now = time.time()
    (claim,) = claim_outbox(db, "dead", now, 10, 1)
    mine: list[int] = []
    expand_batch(db, claim, "dead", now, 10, 100, {"apns": 10}, mine)
    assert len(mine) == 3
    assert claim_deliveries(db, "b", now + 5, 10, 100) == []
    taken = claim_deliveries(db, "b", now + 11, 10, 100)
    assert sorted(c.delivery_id for c in taken) == sorted(mine)


def test_the_worker_sends_the_rows_it_expanded_without_claiming_them_again(db: Database) -> None:
    """With free slots, every row of a 30-device fan-out is written claimed by the expanding
    worker and sent once; a worker with no slot free leaves every row to a claim."""
    message_id, by_user = _group(db, members=30, devices_each=1)
    dispatcher = RecordingDispatcher()
    worker = Worker(db, dispatcher, WorkerOptions(expand_batch=8))
    asyncio.run(worker.run_until_idle(limit_seconds=30))
    assert worker.stats["claimed_by_expansion"] == 30
    assert sorted(d.device_id for d, _ in dispatcher.sent) == sorted(
        d for ids in by_user.values() for d in ids
    )
    assert {status for status, _, _ in _rows(db, message_id).values()} == {"delivered"}


def test_the_details_of_a_claim_are_read_in_the_order_they_are_unpacked() -> None:
    """``_claimed`` unpacks a details row by position: the query's columns are in that order."""
    from chinwag.fanout import deliveries as module

    selected = tuple(module._details_query([1]).selected_columns.keys())
    assert selected == module._DETAILS_COLUMNS


def test_sqlite_claims_due_rows_without_sorting_every_waiting_row(db: Database) -> None:
    """A claim's candidates come from the status index up to the limit, with no temporary
    B-tree (which sorted every waiting row of a 100,000-device fan-out for each claim)."""
    if not db.is_sqlite:
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's")
    from chinwag.fanout import deliveries as module

    due = deliveries.c.status == "pending"
    chosen = module._claimable(db, due, 1000, {})
    assert chosen is not None
    query = sa.select(deliveries.c.id).where(chosen)
    compiled = query.compile(db.engine, compile_kwargs={"literal_binds": True})
    with db.read() as conn:
        plan = " / ".join(row[3] for row in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}")))
    assert "TEMP B-TREE" not in plan, plan
    assert "ix_deliveries_status_next_attempt_at" in plan
