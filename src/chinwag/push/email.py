"""Email notifications over SMTP (STARTTLS or implicit TLS), through a few reused connections.

``smtp://user:pass@host:port`` upgrades with STARTTLS whenever the server offers it and refuses
to send credentials without it; ``smtps://`` speaks TLS from the first byte. Opening an SMTP
session costs several round trips (greeting, EHLO, STARTTLS, EHLO, AUTH), so sessions are kept
in a small pool and reopened when the server drops them.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import unicodedata
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosmtplib

from chinwag.config import ConfigError, SmtpSettings
from chinwag.push.endpoints import provider_ssl_context
from chinwag.push.model import (
    DeviceTarget,
    Notification,
    NotificationKind,
    Outcome,
    OutcomeKind,
    Platform,
)
from chinwag.push.outcome import classify_smtp, connection_failure

log = logging.getLogger(__name__)

# Sessions kept open per sender; SMTP servers limit connections per client, so keep it small.
DEFAULT_POOL_SIZE = 4


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


def email_text(notification: Notification) -> str:
    """One line per message: a digest lists the batched earlier messages before the newest."""
    lines = [f"{sender}: {preview}" for sender, preview in notification.earlier]
    lines.append(notification.body)
    return "\n".join(lines) + "\n"


class EmailSender:
    platform = Platform.EMAIL

    def __init__(
        self,
        settings: SmtpSettings,
        ca_file: Path | None = None,
        max_in_flight: int = DEFAULT_POOL_SIZE,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.server = SmtpServer.parse(settings.url)
        self.email_from = settings.email_from
        self.envelope_from = email.utils.parseaddr(settings.email_from)[1]
        domain = self.envelope_from.rpartition("@")[2]
        self._message_id_domain = domain or "chinwag.invalid"
        self._tls = provider_ssl_context(ca_file)
        self._timeout = timeout
        pool_size = max(1, min(max_in_flight, DEFAULT_POOL_SIZE))
        self._slots = asyncio.Semaphore(pool_size)
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
        message["Subject"] = header_text(notification.title)
        message["X-Chinwag-Chat-Id"] = str(notification.chat_id)
        message["X-Chinwag-Message-Id"] = str(notification.message_id)
        message.set_content(email_text(notification))
        return message

    async def send(self, device: DeviceTarget, notification: Notification) -> Outcome:
        address = device.token
        if "@" not in address or any(ch in address for ch in "\r\n<>,"):
            return Outcome(OutcomeKind.TOKEN_DEAD, reason="invalid_address")
        try:
            message = self.message_for(device, notification)
        except (ValueError, TypeError):
            return Outcome(OutcomeKind.TOKEN_DEAD, reason="invalid_address")
        async with self._slots:
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
                return classify_smtp(code)
            except aiosmtplib.SMTPResponseException as exc:
                # 421 means the server is closing this session; anything else leaves it usable.
                if exc.code == 421:
                    await _discard(session)
                else:
                    self._idle.append(session)
                return _refusal(exc)
            except aiosmtplib.SMTPNotSupported:
                # e.g. an internationalised address and a server without SMTPUTF8.
                self._idle.append(session)
                return Outcome(OutcomeKind.REJECTED, reason="smtp_extension_unsupported")
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                await _discard(session)
                if from_pool:
                    continue
                return connection_failure(type(exc).__name__)
            except (aiosmtplib.SMTPException, OSError) as exc:
                await _discard(session)
                return connection_failure(type(exc).__name__)
            self._idle.append(session)
            return classify_smtp(250)
        return connection_failure("disconnected")

    async def _open(self) -> aiosmtplib.SMTP:
        server = self.server
        session = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            start_tls=False,
            tls_context=self._tls,
            timeout=self._timeout,
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
                    raise _SessionRefused(
                        Outcome(OutcomeKind.MISCONFIGURED, reason="starttls_unavailable")
                    )
            if server.username is not None and server.password is not None:
                await session.login(server.username, server.password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            await _discard(session)
            log.error("smtp login to %s refused: %s", server.host, exc.code)
            raise _SessionRefused(classify_smtp(exc.code)) from None
        except aiosmtplib.SMTPResponseException as exc:
            await _discard(session)
            raise _SessionRefused(classify_smtp(exc.code)) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            await _discard(session)
            raise _SessionRefused(connection_failure(type(exc).__name__)) from None
        self.sessions_opened += 1
        return session

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            try:
                await session.quit()
            except (aiosmtplib.SMTPException, OSError):
                session.close()


def _refusal(exc: aiosmtplib.SMTPResponseException) -> Outcome:
    """Only a refused recipient means the address is dead; the stage decides whose fault it is."""
    if exc.code >= 500 and isinstance(exc, aiosmtplib.SMTPSenderRefused):
        log.error("smtp server refuses our sender address: %s %s", exc.code, exc.message)
        return Outcome(OutcomeKind.MISCONFIGURED, reason="smtp_sender_refused", status=exc.code)
    if exc.code >= 500 and isinstance(exc, aiosmtplib.SMTPDataError):
        # The message itself was refused (content policy, size): the mailbox may be fine.
        return Outcome(OutcomeKind.REJECTED, reason="smtp_message_refused", status=exc.code)
    return classify_smtp(exc.code)


async def _discard(session: aiosmtplib.SMTP) -> None:
    if session.is_connected:
        session.close()
