"""The HTTP API of the contract: parse, authorize, call the domain, render. Nothing else."""

from __future__ import annotations

import logging
import re
import threading

import bottle
import sqlalchemy as sa

from chinwag import __version__
from chinwag.chat import (
    accounts,
    chats,
    device_tests,
    devices,
    messages,
    notify_settings,
    ratelimit,
    verification,
)
from chinwag.chat.errors import InvalidInput, NotFound
from chinwag.chat.models import Chat, Device, Message, User
from chinwag.config import ConfigError
from chinwag.web import schemas as s
from chinwag.web.addresses import client_address, rate_subject, trusted_networks
from chinwag.web.api import Api, HttpError, RequestContext
from chinwag.web.conversations import settings_out

log = logging.getLogger("chinwag.web")

api = Api()  # the routes below; create_app mounts them

AUTH_ERRORS = (401, 422)
CHAT_ERRORS = (401, 404, 422)
SEND_ERRORS = (*CHAT_ERRORS, 429)
CHAT_ID_TEXT = re.compile(r"[0-9]+")
# A device test that waits for its outcome holds one of the web process's threads for up to
# CHINWAG_DEVICE_TEST_WAIT_SECONDS. At most this many wait at once in a process; the others
# answer 202 at once (the client asks GET …/tests/{id}), so that tests, say while no worker
# runs, cannot take every thread from the rest of the API.
WAITING_DEVICE_TESTS = 2
_waiting_device_tests = threading.BoundedSemaphore(WAITING_DEVICE_TESTS)


def user_out(user: User) -> s.UserOut:
    return s.UserOut.model_validate(user)


def chat_out(chat: Chat, *, with_members: bool) -> s.ChatOut:
    return s.ChatOut(
        id=chat.id,
        title=chat.title,
        created_at=chat.created_at,  # type: ignore[arg-type]  # pydantic parses epoch seconds
        muted=chat.muted,
        notify=chat.notify,  # type: ignore[arg-type]  # one of NOTIFY_LEVELS
        unread=chat.unread,
        members=[s.MemberOut.model_validate(m) for m in chat.members] if with_members else None,
    )


def message_out(message: Message) -> s.MessageOut:
    return s.MessageOut(
        id=message.id,
        chat_id=message.chat_id,
        sender=message.sender_username,
        sender_display_name=message.sender_display_name,
        body=message.body,
        client_id=message.client_id,
        created_at=message.created_at,  # type: ignore[arg-type]
        edited_at=message.edited_at,  # type: ignore[arg-type]
        deleted=message.deleted,
    )


def device_out(device: Device) -> s.DeviceOut:
    return s.DeviceOut.model_validate(device)


# --- accounts -----------------------------------------------------------------------------------


@api.route(
    "POST",
    "/v1/users",
    summary="Create an account",
    body=s.CreateUser,
    response=s.UserOut,
    status=201,
    auth=False,
    errors=(409, 422, 429, 503),
    tag="accounts",
)
def create_user(ctx: RequestContext) -> s.UserOut:
    body: s.CreateUser = ctx.body
    ratelimit.hit(ctx.services.db, _rate_limits(ctx).signup_per_address, _client(ctx))
    return user_out(
        accounts.create_user(ctx.services.db, body.username, body.password, body.display_name)
    )


@api.route(
    "POST",
    "/v1/tokens",
    summary="Sign in: exchange username and password for an API token",
    body=s.CreateToken,
    response=s.TokenOut,
    status=201,
    auth=False,
    errors=(401, 422, 429, 503),
    tag="accounts",
)
def create_token(ctx: RequestContext) -> s.TokenOut:
    body: s.CreateToken = ctx.body
    _count_signin(ctx, body.username)
    token, user = accounts.issue_token(ctx.services.db, body.username, body.password)
    return s.TokenOut(token=token, user=user_out(user))


def _client(ctx: RequestContext) -> str:
    """The client's address as rate limits count it: X-Forwarded-For only from trusted
    proxies (a client could forge it), IPv6 per /64."""
    trusted = trusted_networks(ctx.services.settings.trusted_proxies)
    return rate_subject(client_address(bottle.request.environ, trusted))


def _count_signin(ctx: RequestContext, username: str) -> None:
    """Password guesses are limited per (account, address): a guesser slows down only
    themselves, never the owner signing in from elsewhere; and per address over all accounts."""
    limits = _rate_limits(ctx)
    address = _client(ctx)
    ratelimit.hit_all(
        ctx.services.db,
        [
            (limits.signin_per_account, f"{username.strip().lower()}@{address}"),
            (limits.signin_per_address, address),
        ],
    )


@api.route(
    "DELETE",
    "/v1/tokens/current",
    summary="Sign out: the token of this request stops working",
    status=204,
    errors=(401,),
    tag="accounts",
)
def sign_out(ctx: RequestContext) -> None:
    accounts.revoke_token(ctx.services.db, ctx.session)


@api.route(
    "PUT",
    "/v1/me/password",
    summary="Change your password; every other token of yours is revoked",
    body=s.ChangePassword,
    status=204,
    errors=(401, 422, 429, 503),
    tag="accounts",
)
def change_password(ctx: RequestContext) -> None:
    body: s.ChangePassword = ctx.body
    _count_signin(ctx, ctx.member.username)
    accounts.change_password(ctx.services.db, ctx.session, body.old_password, body.new_password)


@api.route(
    "GET",
    "/v1/me",
    summary="The signed-in user and their notification settings",
    response=s.MeOut,
    errors=(401,),
    tag="accounts",
)
def me(ctx: RequestContext) -> s.MeOut:
    settings = settings_out(notify_settings.get_settings(ctx.services.db, ctx.member))
    return s.MeOut(**user_out(ctx.member).model_dump(), settings=settings)


# --- devices ------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/v1/devices",
    summary="Register a device (idempotent for the same token)",
    body=s.CreateDevice,
    response=s.DeviceOut,
    status=201,
    errors=(401, 409, 422),
    tag="devices",
)
def register_device(ctx: RequestContext) -> s.DeviceOut:
    body: s.CreateDevice = ctx.body
    token = body.token if isinstance(body.token, str) else body.token.model_dump()
    payload = devices.payload_choice(body.payload, body.encryption_key)
    settings = ctx.services.settings
    device = devices.register_device(
        ctx.services.db,
        ctx.member,
        body.platform,
        token,
        app=body.app,
        allow_private=settings.push.allow_private_endpoints,
        verify_email=settings.verify_email_devices,
        max_devices=settings.max_devices_per_user,
        payload=payload,
    )
    return device_out(device)


@api.route(
    "POST",
    "/v1/devices/<device_id:int>/verify",
    summary="Verify an email device with the code mailed to it",
    body=s.VerifyDevice,
    response=s.DeviceOut,
    errors=(401, 403, 404, 422),
    tag="devices",
)
def verify_device(ctx: RequestContext, device_id: int) -> s.DeviceOut:
    body: s.VerifyDevice = ctx.body
    verification.verify_device(ctx.services.db, ctx.member, device_id, body.code)
    return device_out(devices.get_device(ctx.services.db, ctx.member, device_id))


@api.route(
    "GET",
    "/v1/devices",
    summary="Your active devices",
    response=s.DeviceList,
    errors=(401,),
    tag="devices",
)
def list_devices(ctx: RequestContext) -> s.DeviceList:
    found = devices.list_devices(ctx.services.db, ctx.member)
    return s.DeviceList(devices=[device_out(d) for d in found])


@api.route(
    "DELETE",
    "/v1/devices/<device_id:int>",
    summary="Remove a device",
    status=204,
    errors=(401, 404),
    tag="devices",
)
def delete_device(ctx: RequestContext, device_id: int) -> None:
    devices.delete_device(ctx.services.db, ctx.member, device_id)


@api.route(
    "GET",
    "/v1/push/vapid-public-key",
    summary="The key browsers subscribe to Web Push with (public: it is a public key)",
    response=s.VapidPublicKey,
    auth=False,
    errors=(404, 503),
    tag="devices",
)
def vapid_public_key(ctx: RequestContext) -> s.VapidPublicKey:
    try:
        key = ctx.services.vapid_public_key()
    except ConfigError as exc:
        log.error("the VAPID key is unusable: %s", exc)
        raise HttpError(503, "unavailable", "Web Push is misconfigured on this server") from None
    if key is None:
        raise HttpError(404, "not_found", "Web Push is off on this server")
    return s.VapidPublicKey(public_key=key)


@api.route(
    "POST",
    "/v1/devices/<device_id:int>/test",
    summary="Send a test notification to one of your devices and answer with its outcome",
    response=s.DeviceTestOut,
    also=(202,),
    errors=(401, 404, 429),
    tag="devices",
)
def test_device(ctx: RequestContext, device_id: int) -> s.DeviceTestOut:
    """Waits up to CHINWAG_DEVICE_TEST_WAIT_SECONDS for the worker to try it: 200 with the
    outcome, or 202 with the test's id if it has not been tried by then (at once when
    WAITING_DEVICE_TESTS tests of this process are waiting already)."""
    services = ctx.services
    test_id = device_tests.request_test(services.db, ctx.member, device_id)
    try:
        services.ring_doorbell(0)  # no message: the doorbell only wakes a worker
    except Exception:  # the sweep finds the outbox row within its interval
        log.warning("doorbell failed for device test %s", test_id, exc_info=True)
    if _waiting_device_tests.acquire(blocking=False):
        try:
            result = device_tests.wait_for_result(
                services.db,
                ctx.member,
                device_id,
                test_id,
                services.settings.device_test_wait_seconds,
            )
        finally:
            _waiting_device_tests.release()
    else:  # enough tests wait already: as it stands now, most likely a 202
        result = device_tests.test_result(services.db, ctx.member, device_id, test_id)
    return _test_out(ctx, result)


@api.route(
    "GET",
    "/v1/devices/<device_id:int>/tests/<test_id:int>",
    summary="How a test notification went (after a 202)",
    response=s.DeviceTestOut,
    also=(202,),
    errors=(401, 404),
    tag="devices",
)
def device_test_result(ctx: RequestContext, device_id: int, test_id: int) -> s.DeviceTestOut:
    result = device_tests.test_result(ctx.services.db, ctx.member, device_id, test_id)
    return _test_out(ctx, result)


def _test_out(ctx: RequestContext, result: device_tests.TestResult) -> s.DeviceTestOut:
    if not result.finished:
        ctx.status = 202
    return s.DeviceTestOut(
        test_id=result.test_id,
        device_id=result.device_id,
        delivery_id=result.delivery_id,
        status=result.status,  # type: ignore[arg-type]  # a DeliveryStatus value
        outcome=result.outcome.value if result.outcome else None,
        reason=result.reason,
        advice=result.advice,
    )


# --- chats --------------------------------------------------------------------------------------


@api.route(
    "POST",
    "/v1/chats",
    summary="Create a group chat (you are a member)",
    body=s.CreateChat,
    response=s.ChatOut,
    status=201,
    errors=AUTH_ERRORS,
)
def create_chat(ctx: RequestContext) -> s.ChatOut:
    body: s.CreateChat = ctx.body
    chat = chats.create_chat(ctx.services.db, ctx.member, body.title, body.members)
    return chat_out(chat, with_members=True)


@api.route("GET", "/v1/chats", summary="Your chats", response=s.ChatList, errors=(401,))
def list_chats(ctx: RequestContext) -> s.ChatList:
    found = chats.list_chats(ctx.services.db, ctx.member)
    return s.ChatList(chats=[chat_out(c, with_members=False) for c in found])


@api.route(
    "GET",
    "/v1/chats/<chat_id:int>",
    summary="One chat with its members",
    response=s.ChatOut,
    errors=(401, 404),
)
def get_chat(ctx: RequestContext, chat_id: int) -> s.ChatOut:
    return chat_out(chats.get_chat(ctx.services.db, ctx.member, chat_id), with_members=True)


@api.route(
    "POST",
    "/v1/chats/<chat_id:int>/members",
    summary="Add a member",
    body=s.AddMember,
    response=s.ChatOut,
    errors=CHAT_ERRORS,
)
def add_member(ctx: RequestContext, chat_id: int) -> s.ChatOut:
    body: s.AddMember = ctx.body
    chat = chats.add_member(ctx.services.db, ctx.member, chat_id, body.username)
    return chat_out(chat, with_members=True)


@api.route(
    "DELETE",
    "/v1/chats/<chat_id:int>/members/<username>",
    summary="Remove a member (anyone may leave; the creator may remove others)",
    status=204,
    errors=(401, 403, 404, 422),
)
def remove_member(ctx: RequestContext, chat_id: int, username: str) -> None:
    chats.remove_member(ctx.services.db, ctx.member, chat_id, username)


@api.route(
    "PUT",
    "/v1/chats/<chat_id:int>/settings",
    summary="Your settings for a chat",
    body=s.ChatSettings,
    response=s.ChatOut,
    errors=CHAT_ERRORS,
)
def update_settings(ctx: RequestContext, chat_id: int) -> s.ChatOut:
    body: s.ChatSettings = ctx.body
    if body.muted is None and body.notify is None:
        raise InvalidInput("send muted or notify", field="notify")
    chat = chats.update_settings(
        ctx.services.db, ctx.member, chat_id, muted=body.muted, notify=body.notify
    )
    return chat_out(chat, with_members=False)


# --- messages -----------------------------------------------------------------------------------


def _rate_limits(ctx: RequestContext) -> ratelimit.RateLimits:
    settings = ctx.services.settings
    return ratelimit.RateLimits.per_minute(
        signin_account=settings.rate_signin_per_account,
        signin_address=settings.rate_signin_per_address,
        sends=settings.rate_sends_per_user,
        signup_per_hour=settings.rate_signup_per_address_per_hour,
    )


def _send(ctx: RequestContext, chat_id: int, body: str, client_id: str | None) -> s.SendOut:
    settings = ctx.services.settings
    result = messages.send_message(
        ctx.services.db,
        ctx.member,
        chat_id,
        body,
        client_id,
        max_chars=settings.max_message_chars,
        limit=(_rate_limits(ctx).sends_per_user, str(ctx.member.id)),
    )
    if result.created:
        try:
            ctx.services.ring_doorbell(result.message.id)
        except Exception:  # the sweep will find the outbox row; never fail a stored send
            log.warning("doorbell failed for message %s", result.message.id, exc_info=True)
    return s.SendOut(
        message=message_out(result.message), chat=chat_out(result.chat, with_members=False)
    )


@api.route(
    "POST",
    "/v1/chats/<chat_id:int>/messages",
    summary="Send a message; members' devices are notified in the background",
    body=s.SendMessage,
    response=s.SendOut,
    status=201,
    errors=SEND_ERRORS,
    tag="messages",
)
def send_message(ctx: RequestContext, chat_id: int) -> s.SendOut:
    body: s.SendMessage = ctx.body
    return _send(ctx, chat_id, body.body, body.client_id)


@api.route(
    "POST",
    "/groupchat/send",
    summary="The original route: same as sending a message",
    body=s.LegacySend,
    response=s.SendOut,
    status=201,
    errors=SEND_ERRORS,
    tag="messages",
)
def legacy_send(ctx: RequestContext) -> s.SendOut:
    body: s.LegacySend = ctx.body
    conversation = body.conversation
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    if isinstance(conversation, str) and CHAT_ID_TEXT.fullmatch(conversation):
        if len(conversation) > 19:  # beyond any id, and int() refuses 4300+ digits
            raise NotFound("no such chat")
        conversation = int(conversation)
    if isinstance(conversation, int):
        chat_id = conversation
    else:
        chat_id = messages.chat_id_by_title(ctx.services.db, ctx.member, conversation)
    if not 0 < chat_id < 2**63:
        raise NotFound(f"no chat {chat_id}")
    return _send(ctx, chat_id, body.message, None)


@api.route(
    "GET",
    "/v1/chats/<chat_id:int>/messages",
    summary="History, oldest first within a page; follow `next` to go back",
    query=s.HistoryQuery,
    response=s.MessagePage,
    errors=CHAT_ERRORS,
    tag="messages",
)
def history(ctx: RequestContext, chat_id: int) -> s.MessagePage:
    query: s.HistoryQuery = ctx.query
    page, next_cursor = messages.history(
        ctx.services.db, ctx.member, chat_id, query.before, query.limit
    )
    return s.MessagePage(messages=[message_out(m) for m in page], next=next_cursor)


@api.route(
    "GET",
    "/v1/messages/<message_id:int>/deliveries",
    summary="One delivery record per recipient device",
    query=s.DeliveriesQuery,
    response=s.DeliveryPage,
    errors=CHAT_ERRORS,
    tag="messages",
)
def list_deliveries(ctx: RequestContext, message_id: int) -> s.DeliveryPage:
    query: s.DeliveriesQuery = ctx.query
    rows, summary, state, next_cursor = messages.list_deliveries(
        ctx.services.db, ctx.member, message_id, query.after, query.limit
    )
    return s.DeliveryPage(
        message_id=message_id,
        fanout=state,
        summary=summary,
        deliveries=[
            s.DeliveryOut(
                id=d.id,
                device_id=d.device_id,
                platform=d.platform,
                user=d.username,
                status=d.status,  # type: ignore[arg-type]
                attempts=d.attempts,
                last_error=d.last_error,
                updated_at=d.updated_at,  # type: ignore[arg-type]
                delivered_at=d.delivered_at,  # type: ignore[arg-type]
                deferred_until=d.deferred_until,  # type: ignore[arg-type]
            )
            for d in rows
        ],
        next=next_cursor,
    )


# --- system -------------------------------------------------------------------------------------


@api.route(
    "GET",
    "/healthz",
    summary="Liveness and database reachability",
    response=s.Health,
    auth=False,
    errors=(503,),
    tag="system",
)
def healthz(ctx: RequestContext) -> s.Health:
    with ctx.services.db.read() as conn:
        conn.execute(sa.text("SELECT 1"))
    return s.Health(status="ok", database=ctx.services.db.engine.dialect.name, version=__version__)
