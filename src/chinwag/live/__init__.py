"""The live gateway: ``/v1/events`` (Server-Sent Events, long poll) and ``/v1/ws`` (WebSocket),
served by asyncio, a coroutine per connection, fed by one hub per process.

A transport layer like ``web``: it may import ``chat``, ``store`` and ``config``; only the entry
points (``chinwag.asgi``, ``chinwag.cli``) import it.
"""

from chinwag.live.gateway import Gateway

__all__ = ["Gateway"]
