"""Email notifications over SMTP (STARTTLS or implicit TLS), through a few reused connections.

``smtp://user:pass@host:port`` upgrades with STARTTLS whenever the server offers it and refuses
to send credentials without it; ``smtps://`` speaks TLS from the first byte. Opening an SMTP
session costs several round trips (greeting, EHLO, STARTTLS, EHLO, AUTH), so sessions are kept
in a small pool and reopened when the server drops them. The registry allows as many sends at
once as the pool keeps sessions (``chinwag.push.slots.SMTP_SESSIONS``).
"""

from __future__ import annotations

import email.utils
import logging
import re
import unicodedata
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import aiosmtplib

from chinwag.config import ConfigError, SmtpSettings
from chinwag.push.base import DEFAULT_NETWORK, BaseSender, Network, provider_ssl_context
from chinwag.push.errors import NETWORK_ERRORS, ConnectionDropped, transport_error
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    NotificationKind,
    Outcome,
    PayloadMode,
    Platform,
)
from chinwag.push.outcome import (
    SmtpStage,
    classify_smtp,
    classify_smtp_reply,
    classify_transport,
    refused_locally,
)

log = logging.getLogger(__name__)

# What breaks a session rather than answers a command (replies are SMTPResponseException, caught
# before these): the network, and aiosmtplib's own session errors.
_SESSION_FAILURES: tuple[type[BaseException], ...] = (*NETWORK_ERRORS, aiosmtplib.SMTPException)


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ConfigError("CHINWAG_SMTP_URL must start with smtp:// or smtps://")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("CHINWAG_SMTP_URL has an invalid port") from None
        if not parts.hostname:
            raise ConfigError("CHINWAG_SMTP_URL has no host")
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if implicit else 25),
            implicit_tls=implicit,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


class _SessionRefused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


# An RFC 2047 encoded-word ("=?charset?q?...?="). The email package decodes these in header
# values it is given, and CPython up to 3.11.9 / 3.12.4 then wrote a decoded CR LF out as a real
# line break: a chat title could add headers (Reply-To, Bcc) to every notification email.
_ENCODED_WORD_OPENER = re.compile(r"=\?")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def header_text(text: str, limit: int = 200) -> str:
    """User text made safe for one header value: one line, no control characters, and no
    encoded-word syntax, so what the header says is exactly what the user typed."""
    text = _LINE_BREAKS.sub(" ", text)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
    text = _ENCODED_WORD_OPENER.sub("= ?", text)  # "= ?" is shown as typed, never decoded
    text = " ".join(text.split())
    return text[:limit] or "chinwag"


VERIFICATION_TEXT = (
    "Your chinwag verification code is {code}.\n\n"
    "Someone added this address to a chinwag account. If it was you, enter the code in chinwag.\n"
    "If it was not, ignore this email: nothing more will be sent to this address.\n"
)


PRIVATE_SUBJECT = "New message in chinwag"
PRIVATE_TEXT = "You have {count} in chinwag. Open chinwag to read {them}.\n"


def private_email_text(notification: Notification) -> str:
    """A minimal or encrypted device's email: no chat title, no sender, no text (a mail client
    cannot decrypt, so an encrypted device's email is as bare as a minimal one's)."""
    count = len(notification.earlier) + 1
    if count == 1:
        return PRIVATE_TEXT.format(count="a new message", them="it")
    return PRIVATE_TEXT.format(count=f"{count} new messages", them="them")


def email_text(notification: Notification) -> str:
    """One line per message: a digest lists the batched earlier messages before the newest."""
    lines = [f"{sender}: {preview}" for sender, preview in notification.earlier]
    lines.append(notification.body)
    return "\n".join(lines) + "\n"


class EmailSender(BaseSender[SmtpSettings]):
    platform = Platform.EMAIL

    def __init__(self, *, settings: SmtpSettings, network: Network = DEFAULT_NETWORK) -> None:
        super().__init__(settings=settings, network=network)
        self.server = SmtpServer.parse(settings.url)
        self.email_from = settings.email_from
        self.envelope_from = email.utils.parseaddr(settings.email_from)[1]
        domain = self.envelope_from.rpartition("@")[2]
        self._message_id_domain = domain or "chinwag.invalid"
        self._tls = provider_ssl_context(network.ca_file)
        self._idle: list[aiosmtplib.SMTP] = []
        self.sessions_opened = 0

    def message_for(self, device: DeviceTarget, notification: Notification) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.email_from
        message["To"] = device.token
        message["Date"] = email.utils.formatdate(localtime=False)
        message["Message-ID"] = f"<{device.delivery_id}@{self._message_id_domain}>"
        if notification.kind is NotificationKind.VERIFICATION:
            # No user text at all: only chinwag's own words and the code.
            message["Subject"] = "Your chinwag verification code"
            message.set_content(VERIFICATION_TEXT.format(code=notification.preview))
            return message
        message["X-Chinwag-Chat-Id"] = str(notification.chat_id)
        message["X-Chinwag-Message-Id"] = str(notification.message_id)
        if device.payload is not PayloadMode.FULL:
            message["Subject"] = PRIVATE_SUBJECT
            message.set_content(private_email_text(notification))
            return message
        message["Subject"] = header_text(notification.title)
        message.set_content(email_text(notification))
        return message

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        address = device.token
        if "@" not in address or any(ch in address for ch in "\r\n<>,"):
            return refused_locally("invalid_address")
        try:
            message = self.message_for(device, notification)
        except (ValueError, TypeError):
            return refused_locally("invalid_address")
        try:
            return await self._deliver(message, address)
        except _SessionRefused as refused:
            return refused.outcome

    async def _deliver(self, message: EmailMessage, address: str) -> Outcome:
        # A pooled session may have been closed by the server while idle: one fresh try then.
        for attempt in range(2):
            from_pool = attempt == 0 and bool(self._idle)
            session = self._idle.pop() if from_pool else await self._open()
            try:
                await session.send_message(message, sender=self.envelope_from, recipients=[address])
            except aiosmtplib.SMTPRecipientsRefused as exc:
                self._idle.append(session)
                code = exc.recipients[0].code if exc.recipients else 550
                return classify_smtp_reply(code, SmtpStage.RECIPIENT)
            except aiosmtplib.SMTPResponseException as exc:
                # 421 means the server is closing this session; anything else leaves it usable.
                if exc.code == 421:
                    await _discard(session)
                else:
                    self._idle.append(session)
                return classify_smtp_reply(exc.code, _stage_of(exc))
            except aiosmtplib.SMTPNotSupported:
                # e.g. an internationalised address and a server without SMTPUTF8.
                self._idle.append(session)
                return refused_locally("smtp_extension_unsupported")
            except _SESSION_FAILURES as exc:
                await _discard(session)
                error = transport_error(exc, detailed=False)
                if from_pool and isinstance(error, ConnectionDropped):
                    continue
                return classify_transport(error)
            self._idle.append(session)
            return classify_smtp(250)
        return classify_transport(ConnectionDropped("disconnected"))

    async def _open(self) -> aiosmtplib.SMTP:
        server = self.server
        session = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            start_tls=False,
            tls_context=self._tls,
            timeout=self.network.timeout,
        )
        try:
            await session.connect()
            await session.ehlo()
            if not server.implicit_tls:
                if session.supports_extension("starttls"):
                    await session.starttls(tls_context=self._tls)
                elif server.username is not None:
                    await _discard(session)
                    log.error("smtp server %s offers no STARTTLS; refusing to log in", server.host)
                    raise _SessionRefused(refused_locally("starttls_unavailable"))
            if server.username is not None and server.password is not None:
                await session.login(server.username, server.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await _discard(session)
            log.error("smtp login to %s refused: %s", server.host, exc.code)
            raise _SessionRefused(classify_smtp_reply(exc.code, SmtpStage.SESSION)) from None
        except aiosmtplib.SMTPResponseException as exc:
            await _discard(session)
            raise _SessionRefused(classify_smtp_reply(exc.code, SmtpStage.SESSION)) from None
        except _SESSION_FAILURES as exc:
            await _discard(session)
            error = transport_error(exc, detailed=False)
            raise _SessionRefused(classify_transport(error)) from None
        self.sessions_opened += 1
        return session

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            try:
                await session.quit()
            except (aiosmtplib.SMTPException, OSError):
                session.close()


def _stage_of(exc: aiosmtplib.SMTPResponseException) -> SmtpStage:
    """Which command a reply answered (``classify_smtp_reply`` decides whose fault it is)."""
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        if exc.code >= 500:
            log.error("smtp server refuses our sender address: %s %s", exc.code, exc.message)
        return SmtpStage.SENDER
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return SmtpStage.DATA
    return SmtpStage.RECIPIENT


async def _discard(session: aiosmtplib.SMTP) -> None:
    if session.is_connected:
        session.close()
