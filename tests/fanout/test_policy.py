"""The notification policy case by case (chinwag.fanout.policy): who is a recipient, in Python and
in SQL on a real SQLite database, why a send is skipped, the badge, the email digest plan."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest
from sqlalchemy.engine import Connection

from chinwag.fanout import policy
from chinwag.fanout.policy import RecipientFacts, SendTimeFacts
from chinwag.store.database import Database
from chinwag.store.migrate import upgrade
from chinwag.store.schema import chats, deliveries, devices, memberships, mentions, messages, users
from chinwag.store.states import DeliveryKind, DeliveryStatus, NotifyLevel
from chinwag.web import schemas

LEVELS: list[str | None] = [NotifyLevel.ALL, NotifyLevel.MENTIONS, NotifyLevel.NONE, None]


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("policy") / "policy.db"
    database = Database(f"sqlite:///{path}")
    upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def conn(sqlite_db: Database) -> Iterator[Connection]:
    """One transaction per case, rolled back: every case starts from empty tables."""
    with sqlite_db.engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


def _user(conn: Connection, name: str) -> int:
    return int(
        conn.execute(
            users.insert()
            .values(username=name, display_name=name, password_hash="x", created_at=time.time())
            .returning(users.c.id)
        ).scalar_one()
    )


def _device(
    conn: Connection,
    user_id: int,
    platform: str = "apns",
    *,
    active: bool = True,
    verified: bool = True,
) -> int:
    now = time.time()
    token = f"{platform}-{user_id}-{now}-{active}-{verified}"
    return int(
        conn.execute(
            devices.insert()
            .values(
                user_id=user_id,
                platform=platform,
                token=token,
                token_hash=token[:64],
                active=active,
                verified=verified,
                created_at=now,
                updated_at=now,
                refreshed_at=now,
            )
            .returning(devices.c.id)
        ).scalar_one()
    )


def _chat(conn: Connection, creator: int) -> int:
    return int(
        conn.execute(
            chats.insert()
            .values(title="T", created_by=creator, created_at=time.time())
            .returning(chats.c.id)
        ).scalar_one()
    )


def _member(conn: Connection, chat_id: int, user_id: int, level: str, read: int = 0) -> None:
    conn.execute(
        memberships.insert().values(
            chat_id=chat_id,
            user_id=user_id,
            notify_level=level,
            muted=level == NotifyLevel.NONE,
            last_read_message_id=read,
            joined_at=time.time(),
        )
    )


def _message(conn: Connection, chat_id: int, sender_id: int) -> int:
    return int(
        conn.execute(
            messages.insert()
            .values(chat_id=chat_id, sender_id=sender_id, body="hi", created_at=time.time())
            .returning(messages.c.id)
        ).scalar_one()
    )


def _delivery(
    conn: Connection, message_id: int, device_id: int, user_id: int, platform: str, status: str
) -> None:
    now = time.time()
    conn.execute(
        deliveries.insert().values(
            message_id=message_id,
            device_id=device_id,
            user_id=user_id,
            platform=platform,
            kind=DeliveryKind.ALERT,
            status=status,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )


RECIPIENT_CASES = [
    RecipientFacts(is_sender, level, mentioned, active, verified)
    for is_sender, level, mentioned, active, verified in itertools.product(
        (False, True), LEVELS, (False, True), (True, False), (True, False)
    )
]


def _case_id(facts: RecipientFacts) -> str:
    return (
        f"{'sender' if facts.is_sender else 'other'}-{facts.level or 'outsider'}"
        f"-{'mentioned' if facts.mentioned else 'plain'}"
        f"-{'active' if facts.device_active else 'removed'}"
        f"-{'verified' if facts.device_verified else 'unverified'}"
    )


@pytest.mark.parametrize("facts", RECIPIENT_CASES, ids=_case_id)
def test_sql_and_python_agree_on_who_is_a_recipient(
    conn: Connection, facts: RecipientFacts
) -> None:
    """The expansion's SQL writes a row for the device exactly when the Python rule says so."""
    owner = _user(conn, "owner")
    sender = owner if facts.is_sender else _user(conn, "sender")
    chat_id = _chat(conn, sender)
    if facts.level is not None:
        _member(conn, chat_id, owner, facts.level)
    message_id = _message(conn, chat_id, sender)
    if facts.mentioned:
        conn.execute(mentions.insert().values(message_id=message_id, user_id=owner))
    device_id = _device(conn, owner, active=facts.device_active, verified=facts.device_verified)
    found = conn.execute(policy.alert_recipients(chat_id, sender, message_id)).all()
    in_sql = [row.device_id for row in found] == [device_id]
    assert in_sql is policy.is_alert_recipient(facts)


@pytest.mark.parametrize(
    ("level", "mentioned", "expected"),
    [
        (NotifyLevel.ALL, False, True),
        (NotifyLevel.ALL, True, True),
        (NotifyLevel.MENTIONS, False, False),
        (NotifyLevel.MENTIONS, True, True),
        (NotifyLevel.NONE, False, False),
        (NotifyLevel.NONE, True, True),
        (None, True, False),
        (None, False, False),
    ],
)
def test_notify_levels_table(level: str | None, mentioned: bool, expected: bool) -> None:
    """ "all" hears everything, "mentions" only mentions, a mention pierces "none", and a
    non-member hears nothing."""
    assert policy.hears(level, mentioned) is expected


def _facts(**changes: object) -> SendTimeFacts:
    facts = SendTimeFacts(
        kind=DeliveryKind.ALERT,
        platform="apns",
        device_active=True,
        device_owner_id=7,
        recipient_id=7,
        is_member=True,
        notify_level=NotifyLevel.ALL,
        mentioned=False,
        message_deleted=False,
        quiet_when_active=False,
        last_active_at=None,
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


NOW = 1_000_000.0


@dataclass(frozen=True)
class SkipCase:
    name: str
    changes: dict[str, object]
    reason: str | None


SKIP_CASES = [
    SkipCase("send", {}, None),
    SkipCase("device removed", {"device_active": False}, "device removed"),
    SkipCase("device moved", {"device_owner_id": 8}, "device now belongs to another user"),
    SkipCase("deleted", {"message_deleted": True}, "message deleted"),
    SkipCase("left", {"is_member": False, "notify_level": None}, "no longer a member"),
    SkipCase("muted", {"notify_level": NotifyLevel.NONE}, "chat muted"),
    SkipCase("muted but mentioned", {"notify_level": NotifyLevel.NONE, "mentioned": True}, None),
    SkipCase(
        "mentions only", {"notify_level": NotifyLevel.MENTIONS}, "notify level: mentions only"
    ),
    SkipCase(
        "active on a live client, mobile",
        {"quiet_when_active": True, "last_active_at": NOW - 10},
        "user active on a live client",
    ),
    SkipCase(
        "active on a live client, email",
        {"quiet_when_active": True, "last_active_at": NOW - 10, "platform": "email"},
        None,
    ),
    SkipCase(
        "live client seen long ago",
        {"quiet_when_active": True, "last_active_at": NOW - policy.ACTIVE_WINDOW_SECONDS},
        None,
    ),
    SkipCase("active but not quiet", {"last_active_at": NOW - 10}, None),
    SkipCase(
        "clear to a muted chat's device",
        {"kind": DeliveryKind.CLEAR, "notify_level": NotifyLevel.NONE},
        None,
    ),
    SkipCase(
        "removal of a deleted message",
        {"kind": DeliveryKind.REMOVAL, "message_deleted": True},
        None,
    ),
    SkipCase(
        "removal to a removed device",
        {"kind": DeliveryKind.REMOVAL, "device_active": False},
        "device removed",
    ),
]


@pytest.mark.parametrize("case", SKIP_CASES, ids=lambda case: case.name)
def test_skip_reason_at_send_time(case: SkipCase) -> None:
    """Each send-time fact skips an alert with its own reason; silent updates skip only for
    their device."""
    assert policy.skip_reason(_facts(**case.changes), NOW) == case.reason


@pytest.mark.parametrize(
    ("kind", "carries"),
    [(DeliveryKind.ALERT, True), (DeliveryKind.CLEAR, True), (DeliveryKind.REMOVAL, False)],
)
def test_which_kinds_carry_a_badge(kind: DeliveryKind, carries: bool) -> None:
    """Alerts and clears carry the badge; a removal does not touch it."""
    assert policy.carries_badge(kind) is carries


def test_badge_counts_unread_of_chats_not_muted(conn: Connection) -> None:
    """The badge sums unread messages of "all" and "mentions" chats, not of "none" ones, and
    never counts one's own or read messages."""
    reader, sender = _user(conn, "reader"), _user(conn, "sender")
    for level, unread in [(NotifyLevel.ALL, 2), (NotifyLevel.MENTIONS, 3), (NotifyLevel.NONE, 5)]:
        chat_id = _chat(conn, sender)
        _member(conn, chat_id, sender, NotifyLevel.ALL)
        read = _message(conn, chat_id, sender)
        _member(conn, chat_id, reader, level, read=read)
        for _ in range(unread):
            _message(conn, chat_id, sender)
        _message(conn, chat_id, reader)
    lonely = _user(conn, "lonely")
    assert policy.badge_counts(conn, [reader, lonely]) == {reader: 5, lonely: 0}


@dataclass(frozen=True)
class Fanout:
    kind: DeliveryKind
    message_id: int
    chat_id: int
    sender_id: int
    user_id: int
    device_id: int = 0


def test_a_test_reaches_its_device_if_still_the_owners_active_and_verified(
    conn: Connection,
) -> None:
    """A test goes to its one device, whatever the chats; not once inactive, unverified or moved."""
    owner, other = _user(conn, "owner"), _user(conn, "other")
    usable = _device(conn, owner, "apns")
    inactive = _device(conn, owner, "apns", active=False)
    unverified = _device(conn, owner, "email", verified=False)
    theirs = _device(conn, other, "apns")

    def reached(device_id: int) -> list[int]:
        fanout = Fanout(DeliveryKind.TEST, 0, 0, 0, owner, device_id)
        return [
            row.device_id for row in conn.execute(policy.recipient_devices(fanout, policy.Cursor()))
        ]

    assert reached(usable) == [usable]
    assert reached(inactive) == reached(unverified) == reached(theirs) == []
    assert not policy.carries_badge(DeliveryKind.TEST)


def test_clear_reaches_the_readers_active_badge_devices(conn: Connection) -> None:
    """A clear goes to the reader's active APNs, FCM and Web Push devices only."""
    reader, other = _user(conn, "reader"), _user(conn, "other")
    chat_id = _chat(conn, other)
    message_id = _message(conn, chat_id, other)
    wanted = [_device(conn, reader, p) for p in ("apns", "fcm", "webpush")]
    _device(conn, reader, "email")
    _device(conn, reader, "webhook")
    _device(conn, reader, "apns", active=False)
    _device(conn, other, "apns")
    fanout = Fanout(DeliveryKind.CLEAR, message_id, chat_id, other, reader)
    found = conn.execute(policy.recipient_devices(fanout, policy.Cursor())).all()
    assert [row.device_id for row in found] == wanted
    after_first = conn.execute(
        policy.recipient_devices(fanout, policy.Cursor(reader, wanted[0]))
    ).all()
    assert [row.device_id for row in after_first] == wanted[1:]


def test_removal_reaches_devices_that_showed_the_alert(conn: Connection) -> None:
    """A removal goes to devices whose alert was delivered or being sent, on badge platforms."""
    sender, member = _user(conn, "sender"), _user(conn, "member")
    chat_id = _chat(conn, sender)
    message_id = _message(conn, chat_id, sender)
    statuses = {
        ("apns", DeliveryStatus.DELIVERED): True,
        ("fcm", DeliveryStatus.SENDING): True,
        ("webpush", DeliveryStatus.DELIVERED): True,
        ("email", DeliveryStatus.DELIVERED): False,
        ("apns", DeliveryStatus.PENDING): False,
        ("apns", DeliveryStatus.FAILED): False,
        ("fcm", DeliveryStatus.SKIPPED): False,
    }
    wanted = []
    for (platform, status), reached in statuses.items():
        device_id = _device(conn, member, platform)
        _delivery(conn, message_id, device_id, member, platform, status)
        if reached:
            wanted.append(device_id)
    fanout = Fanout(DeliveryKind.REMOVAL, message_id, chat_id, sender, 0)
    found = conn.execute(policy.recipient_devices(fanout, policy.Cursor())).all()
    assert [row.device_id for row in found] == wanted


@dataclass(frozen=True)
class Email:
    id: int
    device_id: int
    chat_id: int


def test_digest_plan_holds_emails_inside_the_window() -> None:
    """An email whose device and chat got one less than a window ago waits for the window."""
    plan = policy.plan_email_digest([Email(1, 10, 5)], {(10, 5): NOW - 20}, NOW, 60)
    assert plan.held == [(1, NOW + 40)] and plan.leaders == {}


def test_digest_plan_first_due_email_leads_the_rest_fold_in() -> None:
    """Of several due at once for one device and chat, the first leads and the others are held
    for its digest; another chat or device has its own leader."""
    emails = [Email(1, 10, 5), Email(2, 10, 5), Email(3, 10, 6), Email(4, 11, 5)]
    plan = policy.plan_email_digest(emails, {(10, 5): NOW - 61}, NOW, 60)
    assert plan.held == [(2, NOW)]
    assert plan.leaders == {(10, 5): 1, (10, 6): 3, (11, 5): 4}


@pytest.mark.parametrize(
    ("platform", "kind", "digestible"),
    [
        ("email", DeliveryKind.ALERT, True),
        ("apns", DeliveryKind.ALERT, False),
        ("email", DeliveryKind.CLEAR, False),
    ],
)
def test_only_email_alerts_are_digested(
    platform: str, kind: DeliveryKind, digestible: bool
) -> None:
    """Digests fold email alerts only."""
    assert policy.is_digestible(platform, kind) is digestible


def test_not_configured_provider_is_asked_again_later() -> None:
    """A delivery whose provider is not configured is asked again after the recheck interval."""
    assert policy.recheck_unavailable_at(NOW) == NOW + policy.UNAVAILABLE_RECHECK_SECONDS


def test_api_statuses_are_the_delivery_statuses() -> None:
    """The statuses the API documents are exactly the values of the status enum."""
    assert set(get_args(schemas.DeliveryStatus)) == {s.value for s in DeliveryStatus}


def test_levels_table_covers_every_notify_level() -> None:
    """Every notify level has a rule, and only "none" stays out of the badge."""
    assert set(policy.LEVELS) == set(NotifyLevel)
    assert [level for level, rule in policy.LEVELS.items() if not rule.in_badge] == [
        NotifyLevel.NONE
    ]
