"""Email headers built from user text (security finding 2): no header can be smuggled in through
a chat title, neither with raw line breaks nor inside an RFC 2047 encoded-word."""

from __future__ import annotations

import asyncio

import pytest

from chinwag.fakes.smtp import FakeSmtp, SmtpRecord
from chinwag.fakes.tls import TestPKI, make_pki
from chinwag.push.base import Network
from chinwag.push.email import EmailSender, header_text
from chinwag.push.model import DeviceTarget, Notification, OutcomeKind, Platform

HOSTILE_TITLES = [
    "=?utf-8?q?x=0D=0AReply-To:_evil@example?=",
    "=?UTF-8?B?eA0KQmNjOiBldmlsQGV4YW1wbGUK?=",  # base64 of "x\r\nBcc: evil@example\n"
    "Lunch\r\nReply-To: evil@example",
    "Lunch\nBcc: evil@example",
    "Lunch\u2028Reply-To: evil@example\x85Cc: evil@example",
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _deliver(pki: TestPKI, title: str) -> SmtpRecord:
    async def main() -> SmtpRecord:
        fake = FakeSmtp(pki, email_from="Chinwag <chat@example.com>")
        await fake.start()
        sender = EmailSender(
            settings=fake.settings(), network=Network(ca_file=pki.ca_file, timeout=5.0)
        )
        try:
            note = Notification(
                chat_id=1, message_id=2, chat_title=title, sender_name="Eve", preview="hi"
            )
            target = DeviceTarget(1, Platform.EMAIL, "bob@example.org", "d1-uuid")
            outcome = await sender.send(target, note)
            assert outcome.kind is OutcomeKind.DELIVERED, outcome
            return fake.accepted[0]
        finally:
            await sender.aclose()
            await fake.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_chat_title_cannot_add_email_headers(pki: TestPKI, title: str) -> None:
    """The mail that arrives has exactly chinwag's headers; the title is one plain Subject."""
    record = _deliver(pki, title)
    names = sorted(name.lower() for name in record.message)
    assert "reply-to" not in names and "bcc" not in names and "cc" not in names, names
    assert record.rcpt_to == ["bob@example.org"]
    subject = str(record.message["Subject"])
    assert "\r" not in subject and "\n" not in subject
    assert "=?" not in subject  # no encoded-word left for a mail reader to decode


def test_header_text_keeps_ordinary_titles() -> None:
    """Ordinary titles, accents and emoji included, pass unchanged."""
    for title in ("Lunch", "Café crème ☕", "Q3 = ?"):
        assert header_text(title) == title
