"""The email sender against the SMTP fake: STARTTLS, implicit TLS, AUTH, content, outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from chinwag.config import ConfigError, SmtpSettings
from chinwag.fakes.faults import FaultPlan
from chinwag.fakes.smtp import FakeSmtp, SmtpRecord
from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.push.base import Network
from chinwag.push.email import EmailSender
from chinwag.push.model import DeviceTarget, Notification, Outcome, OutcomeKind, Platform
from chinwag.push.registry import Senders
from chinwag.push.slots import SMTP_SESSIONS

T = TypeVar("T")
NOTE = Notification(
    chat_id=3, message_id=11, chat_title="Book club", sender_name="Cy", preview="Ch. 4"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def device(address: str = "reader@example.org", device_id: int = 1) -> DeviceTarget:
    return DeviceTarget(device_id, Platform.EMAIL, address, f"d{device_id}-uuid")


def run(
    pki: TestPKI,
    scenario: Callable[[FakeSmtp, EmailSender], Awaitable[T]],
    *,
    settings: Callable[[FakeSmtp], SmtpSettings] = lambda fake: fake.settings(),
) -> T:
    async def main() -> T:
        fake = FakeSmtp(pki, email_from="Chinwag <chat@example.com>")
        await fake.start()
        sender = EmailSender(
            settings=settings(fake), network=Network(ca_file=pki.ca_file, timeout=5.0)
        )
        try:
            return await scenario(fake, sender)
        finally:
            await sender.aclose()
            await fake.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "smtps"])
def test_delivers_the_notification_as_an_email(pki: TestPKI, implicit_tls: bool) -> None:
    """Subject is the chat title, body "<sender>: <preview>", ids in headers, over TLS + AUTH."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[Outcome, list[SmtpRecord]]:
        return await sender.send(device(), NOTE), fake.accepted

    outcome, accepted = run(
        pki, scenario, settings=lambda fake: fake.settings(implicit_tls=implicit_tls)
    )
    assert outcome.kind is OutcomeKind.DELIVERED
    [record] = accepted
    message = record.message
    assert record.rcpt_to == ["reader@example.org"]
    assert message["Subject"] == "Book club"
    assert message["To"] == "reader@example.org"
    assert message["X-Chinwag-Chat-Id"] == "3"
    assert message["X-Chinwag-Message-Id"] == "11"
    assert message["Message-ID"] == "<d1-uuid@example.com>"
    assert message.get_content().strip() == "Cy: Ch. 4"


def test_sessions_are_reused(pki: TestPKI) -> None:
    """Twenty sequential emails go through one SMTP session (one login)."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[list[Outcome], int, int]:
        outcomes = [await sender.send(device(f"u{i}@example.org", i), NOTE) for i in range(20)]
        return outcomes, fake.logins, len(fake.accepted)

    outcomes, logins, accepted = run(pki, scenario)
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert (logins, accepted) == (1, 20)


def test_concurrent_sends_use_a_small_pool(pki: TestPKI) -> None:
    """Concurrent emails through the registry all arrive over at most its email slots' worth of
    sessions (one per send in flight)."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[set[OutcomeKind], int, int]:
        registry = Senders({(Platform.EMAIL, "*"): sender})  # default slots: SMTP_SESSIONS
        outcomes = await asyncio.gather(
            *(registry.send(device(f"u{i}@example.org", i), NOTE) for i in range(30))
        )
        return {o.kind for o in outcomes}, fake.logins, len(fake.accepted)

    kinds, logins, accepted = run(pki, scenario)
    assert kinds == {OutcomeKind.DELIVERED}
    assert accepted == 30 and 1 <= logins <= SMTP_SESSIONS


def test_unknown_mailbox_is_token_dead(pki: TestPKI) -> None:
    """550 for the recipient retires the device; the session stays usable for the next one."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[Outcome, Outcome, int]:
        fake.dead_addresses.add("gone@example.org")
        gone = await sender.send(device("gone@example.org"), NOTE)
        fine = await sender.send(device(), NOTE)
        return gone, fine, fake.logins

    gone, fine, logins = run(pki, scenario)
    assert (gone.kind, gone.status) == (OutcomeKind.TOKEN_DEAD, 550)
    assert fine.kind is OutcomeKind.DELIVERED and logins == 1


@pytest.mark.parametrize(("fault", "code"), [("5xx", 451), ("429", 421)])
def test_temporary_failures_are_retry(pki: TestPKI, fault: str, code: int) -> None:
    """451 and 421 temporary failures are RETRY; delivery resumes once they stop."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[Outcome, Outcome]:
        fake.faults = FaultPlan(error_rate=1.0, faults=(fault,))
        failed = await sender.send(device(), NOTE)
        fake.faults = FaultPlan()
        return failed, await sender.send(device(), NOTE)

    failed, after = run(pki, scenario)
    assert (failed.kind, failed.status) == (OutcomeKind.RETRY, code)
    assert after.kind is OutcomeKind.DELIVERED


def test_refused_sender_is_misconfigured_and_refused_content_is_rejected(pki: TestPKI) -> None:
    """553 on MAIL FROM blames our settings; 554 on DATA blames the message, not the mailbox."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[Outcome, Outcome]:
        fake.refused_senders.add("chat@example.com")
        sender_refused = await sender.send(device(), NOTE)
        fake.refused_senders.clear()
        fake.data_refusal = "554 5.7.1 Message looks like spam"
        return sender_refused, await sender.send(device(), NOTE)

    sender_refused, content_refused = run(pki, scenario)
    assert (sender_refused.kind, sender_refused.status) == (OutcomeKind.MISCONFIGURED, 553)
    assert (content_refused.kind, content_refused.status) == (OutcomeKind.REJECTED, 554)


def test_wrong_password_is_misconfigured(pki: TestPKI) -> None:
    """535 authentication failure is MISCONFIGURED: no retry, the device is kept."""

    def wrong(fake: FakeSmtp) -> SmtpSettings:
        return SmtpSettings(fake.url.replace(fake.password, "wrong"), fake.email_from)

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> Outcome:
        return await sender.send(device(), NOTE)

    outcome = run(pki, scenario, settings=wrong)
    assert (outcome.kind, outcome.status) == (OutcomeKind.MISCONFIGURED, 535)


def test_server_gone_is_retry_and_reconnects_when_back(pki: TestPKI) -> None:
    """A dropped pooled session is replaced transparently; a dead server is RETRY."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[Outcome, Outcome, Outcome]:
        first = await sender.send(device(), NOTE)
        for session in list(fake._live):  # the server hangs up on idle sessions
            assert session.transport is not None
            session.transport.close()
        await asyncio.sleep(0.05)
        second = await sender.send(device(), NOTE)
        await fake.stop()
        third = await sender.send(device(), NOTE)
        return first, second, third

    first, second, third = run(pki, scenario)
    assert first.kind is OutcomeKind.DELIVERED
    assert second.kind is OutcomeKind.DELIVERED
    assert third.kind is OutcomeKind.RETRY


def test_addresses_that_cannot_be_mail_are_token_dead(pki: TestPKI) -> None:
    """An address without @ or with header-breaking characters is never sent."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> tuple[list[Outcome], int]:
        bad = ["no-at-sign", "a@b.org\r\nBcc: victim@example.org", "<x@y.org>"]
        outcomes = [await sender.send(device(address), NOTE) for address in bad]
        return outcomes, fake.sessions

    outcomes, sessions = run(pki, scenario)
    assert {o.kind for o in outcomes} == {OutcomeKind.TOKEN_DEAD}
    assert sessions == 0


def test_title_with_line_breaks_cannot_inject_headers(pki: TestPKI) -> None:
    """A chat title carrying CR/LF becomes one subject line, not extra headers."""

    async def scenario(fake: FakeSmtp, sender: EmailSender) -> list[SmtpRecord]:
        note = Notification(3, 11, "Evil\r\nBcc: victim@example.org", "Cy", "hi")
        assert (await sender.send(device(), note)).kind is OutcomeKind.DELIVERED
        return fake.accepted

    [record] = run(pki, scenario)
    assert record.message["Bcc"] is None
    assert record.message["Subject"] == "Evil Bcc: victim@example.org"


def test_bad_smtp_url_is_a_config_error() -> None:
    """Only smtp:// and smtps:// URLs with a host are accepted."""
    for url in ("http://mail.example.com", "smtp://", "smtp://host:notaport"):
        with pytest.raises(ConfigError):
            EmailSender(settings=SmtpSettings(url, "chat@example.com"))
