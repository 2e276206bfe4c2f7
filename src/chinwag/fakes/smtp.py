"""A local SMTP server (aiosmtpd) with STARTTLS, AUTH and a record of every accepted message.

It listens twice: ``url`` is ``smtp://user:pass@127.0.0.1:<port>`` requiring STARTTLS before
AUTH (as any honest submission server does) and ``smtps_url`` speaks TLS from the first byte.
Both run on the caller's event loop, so tests need no thread.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import warnings
import weakref
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from chinwag.config import SmtpSettings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.tls import TestPKI, server_ssl_context


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    return "Session.login_data is deprecated" not in record.getMessage()


# aiosmtpd logs a deprecation notice on every successful AUTH (it sets its own deprecated
# Session.login_data); it says nothing about our code and would clutter `chinwag fakes` output.
logging.getLogger("mail.log").addFilter(_not_login_data_notice)

# The HTTP fault names of FaultPlan mapped to SMTP replies: a 421 also closes the session.
_FAULT_REPLIES = {
    "5xx": "451 4.3.0 Temporary local problem, try again",
    "stall": "451 4.3.0 Temporary local problem, try again",
    "429": "421 4.7.0 Too many messages, slow down",
    "drop": "421 4.4.2 Connection dropped",
    "goaway": "421 4.3.2 Service shutting down",
}


@dataclass(frozen=True)
class SmtpRecord:
    mail_from: str
    rcpt_to: list[str]
    message: EmailMessage
    received_at: float = field(default_factory=time.time)


class _Handler:
    def __init__(self, fake: FakeSmtp) -> None:
        self.fake = fake

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if address.lower() in self.fake.refused_senders:
            return "553 5.7.1 Sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self.fake.dead_tokens:
            return "550 5.1.1 Mailbox does not exist"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fake = self.fake
        if fake.faults.latency > 0:
            await asyncio.sleep(fake.faults.latency)
        if fake.data_refusal is not None:
            return fake.data_refusal
        fault = fake.faults.pick()
        if fault is not None:
            fake.faults_injected += 1
            return _FAULT_REPLIES.get(fault, "451 4.3.0 Temporary local problem, try again")
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        fake.accepted.append(SmtpRecord(str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 2.0.0 OK queued"


class FakeSmtp:
    def __init__(
        self, pki: TestPKI, *, faults: FaultPlan | None = None, email_from: str = "chat@example.com"
    ) -> None:
        self.pki = pki
        self.faults = faults if faults is not None else FaultPlan()
        self.email_from = email_from
        self.username = "chinwag"
        self.password = secrets.token_urlsafe(16)
        self.dead_tokens: set[str] = set()  # lower-cased addresses answered with 550
        self.accepted: list[SmtpRecord] = []
        self.refused_senders: set[str] = set()  # lower-cased MAIL FROM addresses answered 553
        self.data_refusal: str | None = None  # a reply to every DATA, e.g. "554 5.7.1 Spam"
        self.faults_injected = 0
        self.logins = 0
        self.sessions = 0
        self._handler = _Handler(self)
        self._servers: list[asyncio.Server] = []
        self._ports: dict[str, int] = {}
        self._live: weakref.WeakSet[SMTP] = weakref.WeakSet()

    @property
    def dead_addresses(self) -> set[str]:
        return self.dead_tokens

    @property
    def port(self) -> int:
        return self._ports["starttls"]

    @property
    def url(self) -> str:
        credentials = f"{quote(self.username)}:{quote(self.password, safe='')}"
        return f"smtp://{credentials}@127.0.0.1:{self._ports['starttls']}"

    @property
    def smtps_url(self) -> str:
        credentials = f"{quote(self.username)}:{quote(self.password, safe='')}"
        return f"smtps://{credentials}@127.0.0.1:{self._ports['implicit']}"

    def settings(self, *, implicit_tls: bool = False) -> SmtpSettings:
        return SmtpSettings(
            url=self.smtps_url if implicit_tls else self.url, email_from=self.email_from
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tls = server_ssl_context(self.pki, alpn=())
        starttls = await loop.create_server(
            lambda: self._session(tls_context=tls, require_starttls=True), "127.0.0.1", 0
        )
        implicit = await loop.create_server(
            lambda: self._session(tls_context=None, require_starttls=False),
            "127.0.0.1",
            0,
            ssl=tls,
        )
        self._servers = [starttls, implicit]
        self._ports = {
            "starttls": starttls.sockets[0].getsockname()[1],
            "implicit": implicit.sockets[0].getsockname()[1],
        }

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        # Python 3.11 servers cannot close their accepted connections themselves.
        for session in list(self._live):
            if session.transport is not None:
                session.transport.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers = []
        self._live.clear()

    def _session(self, *, tls_context: Any, require_starttls: bool) -> SMTP:
        self.sessions += 1
        with warnings.catch_warnings():
            # aiosmtpd warns about AUTH without STARTTLS, not knowing the socket is TLS already.
            warnings.simplefilter("ignore", UserWarning)
            session = SMTP(
                self._handler,
                hostname="fake-smtp.localhost",
                tls_context=tls_context,
                require_starttls=require_starttls,
                auth_required=True,
                auth_require_tls=require_starttls,
                authenticator=self._authenticate,
                loop=asyncio.get_running_loop(),
            )
        self._live.add(session)
        return session

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = secrets.compare_digest(auth_data.login, self.username.encode()) and (
            secrets.compare_digest(auth_data.password, self.password.encode())
        )
        if ok:
            self.logins += 1
        return AuthResult(success=ok, handled=False)
