"""Tables. Times are UNIX epoch seconds (float) so lease arithmetic is the same on every database.

The migrations in ``migrations/versions`` create exactly these tables; a test compares them.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BIGINT on PostgreSQL, but INTEGER on SQLite where only "INTEGER PRIMARY KEY" is the rowid alias.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(128), nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    # Opt-in: no mobile push while a live stream of this user's is open (see docs/conversations).
    sa.Column("quiet_when_active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_active_at", sa.Float, nullable=True),
    # Quiet hours: phone and browser alerts wait for the window's end ("HH:MM" wall times in the
    # IANA zone quiet_timezone; all three null: none). See chinwag.fanout.policy.quiet_until.
    sa.Column("quiet_start", sa.String(5), nullable=True),
    sa.Column("quiet_end", sa.String(5), nullable=True),
    sa.Column("quiet_timezone", sa.String(64), nullable=True),
    sa.Column("mentions_break_through", sa.Boolean, nullable=False, server_default=sa.false()),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # SHA-256 hex of the token; the token itself is shown once and never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # Written at most once an hour per token (not on every request); a token unused for
    # CHINWAG_TOKEN_IDLE_DAYS expires.
    sa.Column("last_used_at", sa.Float, nullable=True),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    sa.Column("app", sa.String(64), nullable=False, server_default="default"),
    sa.Column("token", sa.Text, nullable=False),
    # Tokens can be long (a Web Push subscription); uniqueness is on their digest.
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("deactivated_reason", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # 0 for install-bound tokens (APNs, FCM, Web Push): one install, one device, which moves to
    # whoever registers it last. The owner's id for email and webhook addresses: each user
    # registers those for themselves, so nobody can take over another user's address.
    sa.Column("scope", Id, nullable=False, server_default="0"),
    # False for an email device until its owner proves the mailbox is theirs; it gets nothing
    # but its verification email meanwhile.
    sa.Column("verified", sa.Boolean, nullable=False, server_default=sa.true()),
    # The HMAC key of a webhook device's signatures, shown once at registration.
    sa.Column("webhook_secret", sa.String(128), nullable=True),
    # What the provider may see: full, minimal (ids and a generic alert) or encrypted (the full
    # notification sealed with encryption_key, the base64 of the device's own AES-256 key, a
    # secret of its owner: never logged, never returned by the API).
    sa.Column("payload", sa.String(16), nullable=False, server_default="full"),
    sa.Column("encryption_key", sa.String(64), nullable=True),
    # Set at registration and every re-registration (the app refreshing its token); a device
    # silent for CHINWAG_DEVICE_STALE_DAYS is deactivated by the worker's hourly pruning.
    sa.Column("refreshed_at", sa.Float, nullable=False),
    # What the worker last heard from the provider about this device (GET /v1/devices).
    sa.Column("last_success_at", sa.Float, nullable=True),
    sa.Column("last_failure_at", sa.Float, nullable=True),
    sa.Column("last_failure_reason", sa.String(500), nullable=True),
    sa.UniqueConstraint("platform", "app", "token_hash", "scope"),
    sa.Index("ix_devices_user_id_active", "user_id", "active"),
    # The hourly pruning of stale devices reads only those it deactivates (migration 0010).
    sa.Index("ix_devices_active_refreshed_at", "active", "refreshed_at"),
)

chats = sa.Table(
    "chats",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("created_by", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("chat_id", Id, sa.ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("muted", sa.Boolean, nullable=False, server_default=sa.false()),
    # all | mentions | none. "muted" is kept equal to (notify_level == "none") for old clients.
    sa.Column("notify_level", sa.String(16), nullable=False, server_default="all"),
    sa.Column("last_read_message_id", Id, nullable=False, server_default="0"),
    sa.Column("joined_at", sa.Float, nullable=False),
    sa.Index("ix_memberships_user_id", "user_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("chat_id", Id, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    sa.Column("sender_id", Id, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("client_id", sa.String(128), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("edited_at", sa.Float, nullable=True),
    sa.Column("deleted_at", sa.Float, nullable=True),
    # A retried send with the same client_id must find the first message, never make a second.
    sa.UniqueConstraint("chat_id", "sender_id", "client_id"),
    sa.Index("ix_messages_chat_id_id", "chat_id", "id"),
)

mentions = sa.Table(
    "mentions",
    metadata,
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)

# The durable record that a fan-out still has to be expanded into delivery rows, written in the
# transaction of the change that asks for it: a message (kind alert, one per message), a read
# marker moved (clear, one per message and reader), a message deleted (removal), a device's
# owner asking for a test notification (test: no message, one device). Which devices each kind
# reaches is decided by chinwag.fanout.policy when a worker expands it. Workers claim a row with
# a lease (lease_until) so a dead worker's claim simply expires.
outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    # Null only for a test, which is about no message.
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="alert"),
    # The reader whose devices a clear goes to; 0 for alert and removal, whose devices the
    # policy finds from the message.
    sa.Column("user_id", Id, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
    # The expansion's cursor (chinwag.fanout.policy.Cursor): the last device expanded into
    # deliveries and its owner's id; expansion resumes after it after a crash. 0 until the
    # expansion begins. A test is one device and one delivery: expanded_through is that
    # delivery's id once expanded.
    sa.Column("expanded_through", Id, nullable=False, server_default="0"),
    sa.Column("expanded_user_id", Id, nullable=False, server_default="0"),
    # The one device a test goes to; null for every other kind.
    sa.Column("device_id", Id, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=True),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("message_id", "kind", "user_id"),
    sa.Index("ix_outbox_state_due_at", "state", "due_at"),
)

# One row per (message, device): its status is what GET /v1/messages/{id}/deliveries shows.
# A test notification's row has no message (message_id null, kind test).
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("message_id", Id, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
    sa.Column("device_id", Id, sa.ForeignKey("devices.id", ondelete="CASCADE"), nullable=False),
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("platform", sa.String(16), nullable=False),
    # alert: the message itself · clear: a silent badge/clear update after reading elsewhere ·
    # removal: withdraws the notification of a deleted message · test: POST /v1/devices/{id}/test.
    sa.Column("kind", sa.String(16), nullable=False, server_default="alert"),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.UniqueConstraint("message_id", "device_id", "kind"),
    sa.Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# The live stream's source: every event a member may see, in one global order, so any web
# process can serve any client's stream and resume it from Last-Event-ID.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("chat_id", Id, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=True),
    # Set for events meant for one user only (their read markers, their delivery updates).
    sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_events_chat_id_id", "chat_id", "id"),
    sa.Index("ix_events_user_id_id", "user_id", "id"),
)

# When each email device last got a digest for a chat: later messages wait for the window.
email_digests = sa.Table(
    "email_digests",
    metadata,
    sa.Column("device_id", Id, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("chat_id", Id, sa.ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("last_sent_at", sa.Float, nullable=False),
)

# Windowed counters shared by every web process (sign-in and send limits).
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("window_start", sa.Float, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
)

# The code that proves an email device's mailbox belongs to its owner. The worker mails ``code``
# once (through the SMTP sender) and then clears it; only its digest stays, to check the answer.
device_verifications = sa.Table(
    "device_verifications",
    metadata,
    sa.Column("device_id", Id, sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("code", sa.String(16), nullable=True),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("wrong_attempts", sa.Integer, nullable=False, server_default="0"),
    # pending | sending | sent | failed: the mailing's own record
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("send_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=True),
    sa.Index("ix_device_verifications_status_next_attempt_at", "status", "next_attempt_at"),
)

# Keys chinwag generates for itself, once per deployment, shared by every process through the
# database (the VAPID key of Web Push when CHINWAG_VAPID_PRIVATE_KEY is unset). Written only by
# an insert that keeps the first row: two processes starting at once end up with one key.
server_keys = sa.Table(
    "server_keys",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Per provider and app, what the worker last heard: written with each batch of outcomes, read by
# /admin and /metrics. credentials_ok turns false on a MISCONFIGURED (or UNAVAILABLE) outcome and
# back to true on any answer that proves the provider accepted our credentials.
provider_health = sa.Table(
    "provider_health",
    metadata,
    sa.Column("platform", sa.String(16), primary_key=True),
    sa.Column("app", sa.String(64), primary_key=True),
    sa.Column("last_success_at", sa.Float, nullable=True),
    sa.Column("last_error_at", sa.Float, nullable=True),
    # The outcome class (retry, rejected, misconfigured, unavailable) and its text.
    sa.Column("last_error_class", sa.String(16), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("credentials_ok", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated_at", sa.Float, nullable=False),
)
