"""Fitting a notification into a provider's payload limit: the one shortening rule.

The preview goes first (cut at a character, "…" appended), so what is kept is the start of what
was said; only when even an empty preview does not fit (a huge chat title or sender name) are
those capped too. Used by APNs (4096 bytes of JSON) and Web Push (4096 bytes of encrypted body).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from chinwag.push.model import Notification

ELLIPSIS = "…"
TITLE_CAP = 200
SENDER_CAP = 100

Render = Callable[[Notification], bytes]


def fit_payload(notification: Notification, render: Render, max_bytes: int) -> bytes:
    """``render(notification)``, with the preview shortened until it is at most ``max_bytes``."""
    payload = render(notification)
    if len(payload) <= max_bytes:
        return payload
    fitted = _shorten_preview(notification, render, max_bytes)
    if fitted is not None:
        return fitted
    # Even an empty preview does not fit: the title or the sender's name is huge. Cap both.
    capped = replace(
        notification,
        chat_title=cut(notification.chat_title, TITLE_CAP),
        sender_name=cut(notification.sender_name, SENDER_CAP),
    )
    return _shorten_preview(capped, render, max_bytes) or render(capped.with_preview(ELLIPSIS))


def cut(text: str, length: int) -> str:
    """``text`` if it is at most ``length`` characters, else its start and "…"."""
    if len(text) <= length:
        return text
    return text[:length].rstrip() + ELLIPSIS


def _shorten_preview(notification: Notification, render: Render, max_bytes: int) -> bytes | None:
    """The longest preview prefix (plus "…") that fits, by binary search over characters."""
    preview = notification.preview
    if len(render(notification.with_preview(ELLIPSIS))) > max_bytes:
        return None
    low, high = 0, len(preview)  # invariant: a prefix of `low` characters fits
    while low < high:
        middle = (low + high + 1) // 2
        if len(render(notification.with_preview(cut(preview, middle)))) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return render(notification.with_preview(cut(preview, low)))
