"""Helpers the browser tests share: pages of the web client, each in a browser context of its
own (one person each), signed in through the form or with a token already stored."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect
from tests.conftest import LiveGateway

PASSWORD = "correct horse"
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)  # a loaded machine renders late, never wrongly

# Every context opened by a test; the browser conftest closes them before the server stops, so
# that no open stream holds it.
open_contexts: list[Any] = []


def open_page(browser: Any, live: LiveGateway, init_script: str | None = None) -> Any:
    """The client in a new browser context, not yet signed in; ``page.js_errors`` collects the
    page's uncaught errors."""
    context = browser.new_context(viewport={"width": 1180, "height": 720})
    open_contexts.append(context)
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    page.goto(live.url)
    return page


def sign_in(page: Any, username: str) -> None:
    page.fill("#auth-username", username)
    page.fill("#auth-password", PASSWORD)
    page.click("#sign-in")
    page.wait_for_selector("#workspace:not([hidden])")


def token_of(live: LiveGateway, username: str) -> str:
    answer = httpx.post(f"{live.url}/v1/tokens", json={"username": username, "password": PASSWORD})
    token: str = answer.json()["token"]
    return token


def signed_in_page(browser: Any, live: LiveGateway, username: str) -> Any:
    """A page whose browser already holds the user's token, as after an earlier sign-in."""
    page = open_page(browser, live)
    token = token_of(live, username)
    page.evaluate("token => localStorage.setItem('chinwag.token', token)", token)
    page.reload()
    page.wait_for_selector("#workspace:not([hidden])")
    return page
