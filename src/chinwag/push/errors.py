"""Transport errors: no answer from a provider, because of the network rather than the provider.

The connection layers (``chinwag.push.h2pool``, ``chinwag.push.endpoints``, the SMTP and OAuth
clients) raise only these, never a library's own exceptions, and ``chinwag.push.outcome`` turns
them into outcomes (``classify_transport``). ``transport_error`` is the one translation from the
libraries' exceptions (OSError, ssl, h2, httpx, aiosmtplib) to these types: like httpx's
``map_exceptions``, a caller matches on a type, never on the words of a message.
"""

from __future__ import annotations

import ssl

import aiosmtplib
import h2.exceptions
import httpx


class TransportError(Exception):
    """The request may be re-sent. ``reason`` is short and for operators (logs, last_error)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectFailed(TransportError):
    """No connection: refused, unreachable, name not resolved, closed during setup."""


class TlsFailed(ConnectFailed):
    """The TLS handshake failed (certificate not trusted, protocol mismatch)."""


class NoHttp2(TlsFailed):
    """TLS worked but the server did not agree to HTTP/2 (ALPN ``h2``): try HTTP/1.1."""


class TransportTimeout(TransportError):
    """No answer in time (connecting or waiting for the response)."""


class ConnectionDropped(TransportError):
    """The connection or the stream broke mid-request: reset, closed, protocol error."""


class Goaway(ConnectionDropped):
    """The server's GOAWAY said it never processed this stream."""


class NoStream(TransportError):
    """The connection is up but cannot take one more stream now (limit, ids exhausted)."""


def transport_error(exc: BaseException, *, detailed: bool = True) -> TransportError:
    """The typed error for a library's network exception (the caller catches only those).

    Library exceptions (httpx, aiosmtplib) are named by their type, as they always were in
    last_error; an OSError by its type and message, unless not ``detailed`` (the SMTP sender,
    whose reasons have always been the bare type name).
    """
    if isinstance(exc, TransportError):
        return exc
    error = _typed(exc)
    return error if detailed else type(error)(type(exc).__name__)


def _typed(exc: BaseException) -> TransportError:
    if isinstance(exc, aiosmtplib.SMTPException):
        name = type(exc).__name__
        if isinstance(exc, aiosmtplib.SMTPTimeoutError):
            return TransportTimeout(name)
        if isinstance(exc, aiosmtplib.SMTPConnectError):
            return ConnectFailed(name)
        return ConnectionDropped(name)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TransportTimeout("timeout")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsFailed(f"TLS verification failed: {exc.verify_message}")
    if isinstance(exc, h2.exceptions.ProtocolError):
        return ConnectionDropped(f"HTTP/2 protocol error: {exc}")
    if isinstance(exc, httpx.HTTPError):
        name = type(exc).__name__
        return (
            ConnectFailed(name) if isinstance(exc, httpx.ConnectError) else ConnectionDropped(name)
        )
    described = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ssl.SSLError):
        return TlsFailed(described)
    if isinstance(exc, ConnectionError) and not isinstance(exc, ConnectionRefusedError):
        return ConnectionDropped(described)  # reset, aborted, broken pipe: it was up
    return ConnectFailed(described)


# The exceptions ``transport_error`` knows how to translate; anything else is a bug of ours.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ssl.SSLError, TimeoutError, ConnectionError, aiosmtplib's network errors
    h2.exceptions.ProtocolError,
    httpx.TransportError,
)
