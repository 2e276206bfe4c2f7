"""Transport errors, SMTP replies, OAuth answers and local refusals: classified in one place."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import h2.exceptions
import httpx
import pytest

from chinwag.fakes.tls import TestPKI, make_pki, server_ssl_context
from chinwag.push.base import provider_ssl_context
from chinwag.push.errors import (
    ConnectFailed,
    ConnectionDropped,
    Goaway,
    NoHttp2,
    TlsFailed,
    TransportError,
    TransportTimeout,
    transport_error,
)
from chinwag.push.h2pool import H2Pool
from chinwag.push.model import OutcomeKind
from chinwag.push.outcome import (
    LOCAL_REFUSALS,
    OAUTH_BAD_RESPONSE,
    UNREACHABLE,
    SmtpStage,
    classify_oauth,
    classify_oauth_transport,
    classify_smtp_reply,
    classify_transport,
    refused_locally,
)

RETRY = OutcomeKind.RETRY


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(
    ("raised", "expected", "reason"),
    [
        (TimeoutError(), TransportTimeout, "timeout"),
        (httpx.ReadTimeout("slow"), TransportTimeout, "timeout"),
        (httpx.ConnectError("refused"), ConnectFailed, "ConnectError"),
        (httpx.RemoteProtocolError("eof"), ConnectionDropped, "RemoteProtocolError"),
        (ConnectionRefusedError(111, "refused"), ConnectFailed, None),
        (ConnectionResetError(104, "reset"), ConnectionDropped, None),
        (ssl.SSLError(1, "wrong version"), TlsFailed, None),
        (h2.exceptions.ProtocolError("bad frame"), ConnectionDropped, None),
        (aiosmtplib.SMTPServerDisconnected("gone"), ConnectionDropped, "SMTPServerDisconnected"),
        (aiosmtplib.SMTPConnectError("refused"), ConnectFailed, "SMTPConnectError"),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TransportTimeout, "SMTPReadTimeoutError"),
    ],
)
def test_library_exceptions_become_typed_transport_errors(
    raised: BaseException, expected: type[TransportError], reason: str | None
) -> None:
    """Each library's network exception maps to one typed error (the exact class), by type."""
    error = transport_error(raised)
    assert type(error) is expected
    if reason is not None:
        assert error.reason == reason


def test_undetailed_reasons_are_the_bare_type_name() -> None:
    """The SMTP sender's reasons stay the exception's type name, whatever its message says."""
    error = transport_error(ConnectionResetError(104, "reset by 10.0.0.5"), detailed=False)
    assert (type(error), error.reason) == (ConnectionDropped, "ConnectionResetError")
    assert transport_error(TimeoutError(), detailed=False).reason == "TimeoutError"


@pytest.mark.parametrize(
    "error",
    [
        ConnectFailed("connect failed: x"),
        NoHttp2("no h2"),
        TransportTimeout("timeout"),
        ConnectionDropped("connection_lost"),
        Goaway("goaway"),
    ],
)
def test_every_transport_error_is_a_retry_with_its_reason(error: TransportError) -> None:
    """A transport error is RETRY with its reason; for a user's endpoint, one vague reason."""
    outcome = classify_transport(error)
    assert (outcome.kind, outcome.reason, outcome.retry_after) == (RETRY, error.reason, None)
    hidden = classify_transport(error, user_endpoint=True)
    assert (hidden.kind, hidden.reason) == (RETRY, UNREACHABLE)


def test_an_http1_only_server_raises_no_http2_by_type(pki: TestPKI) -> None:
    """A TLS server that does not offer h2 in ALPN makes the pool raise NoHttp2, also while the
    pool backs off from that failed connect (no string matching needed to fall back)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def main() -> list[TransportError]:
        context = server_ssl_context(pki, alpn=("http/1.1",))
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        client = provider_ssl_context(pki.ca_file)
        client.set_alpn_protocols(["h2"])
        pool = H2Pool(f"https://127.0.0.1:{port}", client)
        errors: list[TransportError] = []
        try:
            for _ in range(2):
                try:
                    await pool.request("POST", "/", [], b"", time_limit=5.0)
                except TransportError as error:
                    errors.append(error)
        finally:
            await pool.aclose()
            server.close()
            await server.wait_closed()
        return errors

    errors = asyncio.run(main())
    assert [type(error) for error in errors] == [NoHttp2, NoHttp2]
    assert errors[0].reason.startswith("connect failed")


@pytest.mark.parametrize(
    ("code", "stage", "kind", "reason"),
    [
        (550, SmtpStage.RECIPIENT, OutcomeKind.TOKEN_DEAD, "smtp_550"),
        (450, SmtpStage.RECIPIENT, RETRY, "smtp_450"),
        (550, SmtpStage.SENDER, OutcomeKind.MISCONFIGURED, "smtp_sender_refused"),
        (451, SmtpStage.SENDER, RETRY, "smtp_451"),
        (554, SmtpStage.DATA, OutcomeKind.REJECTED, "smtp_message_refused"),
        (535, SmtpStage.SESSION, OutcomeKind.MISCONFIGURED, "smtp_535"),
        (421, SmtpStage.SESSION, RETRY, "smtp_421"),
    ],
)
def test_smtp_replies_by_stage(code: int, stage: SmtpStage, kind: OutcomeKind, reason: str) -> None:
    """Only a refused recipient is a dead address; a refused sender is ours to fix."""
    outcome = classify_smtp_reply(code, stage)
    assert (outcome.kind, outcome.reason, outcome.status) == (kind, reason, code)


def test_oauth_token_endpoint_answers() -> None:
    """Throttling and outages are retried (with Retry-After); a refused grant is misconfigured."""
    busy = classify_oauth(503, None, 4.0)
    assert (busy.kind, busy.reason, busy.retry_after) == (RETRY, "oauth_http_503", 4.0)
    throttled = classify_oauth(429, "rate", None)
    assert (throttled.kind, throttled.reason) == (RETRY, "oauth_http_429")
    refused = classify_oauth(400, "invalid_grant", 9.0)
    assert (refused.kind, refused.reason, refused.retry_after, refused.status) == (
        OutcomeKind.MISCONFIGURED,
        "oauth_invalid_grant",
        None,
        400,
    )
    assert classify_oauth(401, None, None).reason == "oauth_error"
    assert (OAUTH_BAD_RESPONSE.kind, OAUTH_BAD_RESPONSE.status) == (RETRY, 200)
    lost = classify_oauth_transport(transport_error(httpx.ConnectError("refused")))
    assert (lost.kind, lost.reason) == (RETRY, "oauth_ConnectError")


def test_local_refusals_are_final() -> None:
    """What a sender refuses before asking the provider is never retried."""
    for reason, kind in LOCAL_REFUSALS.items():
        outcome = refused_locally(reason)
        assert (outcome.kind, outcome.reason) == (kind, reason)
        assert outcome.is_final
