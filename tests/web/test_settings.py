"""PUT /v1/me/settings and GET /v1/me over HTTP: quiet hours and mentions breaking through them
(beside quiet_when_active), settings left out keep their value, and every bad value is a 422
naming its field that changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import Api
from tests.web.support import assert_error

NIGHT = {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
DEFAULTS = {"quiet_when_active": False, "quiet_hours": None, "mentions_break_through": False}


def test_me_shows_the_default_settings(api: Api) -> None:
    """A new user has no quiet hours, mentions do not break through, quiet_when_active is off."""
    me = api.user("alice").get("/v1/me")
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "alice"
    assert me.json()["settings"] == DEFAULTS


def test_settings_are_set_shown_kept_and_turned_off(api: Api) -> None:
    """What PUT answers is what GET /v1/me shows; a setting left out keeps its value; null quiet
    hours turns them off."""
    alice = api.user("alice")
    put = alice.put("/v1/me/settings", json={"quiet_hours": NIGHT})
    assert put.status_code == 200, put.text
    assert put.json() == {**DEFAULTS, "quiet_hours": NIGHT}
    assert alice.get("/v1/me").json()["settings"] == put.json()

    both = alice.put("/v1/me/settings", json={"mentions_break_through": True})
    assert both.json() == {**DEFAULTS, "quiet_hours": NIGHT, "mentions_break_through": True}
    active = alice.put("/v1/me/settings", json={"quiet_when_active": True})
    assert active.json()["quiet_hours"] == NIGHT and active.json()["quiet_when_active"] is True

    off = alice.put("/v1/me/settings", json={"quiet_hours": None})
    assert off.json() == {
        "quiet_when_active": True,
        "quiet_hours": None,
        "mentions_break_through": True,
    }
    assert alice.get("/v1/me").json()["settings"] == off.json()


def test_a_same_day_window_and_other_zones_are_accepted(api: Api) -> None:
    """Start before end (no midnight crossing) and any IANA zone of the tz database."""
    alice = api.user("alice")
    for window in (
        {"start": "09:00", "end": "17:30", "timezone": "America/New_York"},
        {"start": "00:00", "end": "23:59", "timezone": "UTC"},
        {"start": "23:00", "end": "06:00", "timezone": "Asia/Kolkata"},
    ):
        response = alice.put("/v1/me/settings", json={"quiet_hours": window})
        assert response.status_code == 200, response.text
        assert response.json()["quiet_hours"] == window


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("hour 24", {"quiet_hours": {**NIGHT, "start": "24:00"}}, "quiet_hours.start"),
    ("one-digit hour", {"quiet_hours": {**NIGHT, "start": "7:00"}}, "quiet_hours.start"),
    ("seconds", {"quiet_hours": {**NIGHT, "end": "07:00:00"}}, "quiet_hours.end"),
    ("minute 60", {"quiet_hours": {**NIGHT, "end": "07:60"}}, "quiet_hours.end"),
    ("12 h clock", {"quiet_hours": {**NIGHT, "end": "7am"}}, "quiet_hours.end"),
    ("a number", {"quiet_hours": {**NIGHT, "start": 22}}, "quiet_hours.start"),
    ("empty end", {"quiet_hours": {**NIGHT, "end": ""}}, "quiet_hours.end"),
    ("start is end", {"quiet_hours": {**NIGHT, "end": "22:00"}}, "quiet_hours"),
    (
        "unknown zone",
        {"quiet_hours": {**NIGHT, "timezone": "Mars/Olympus"}},
        "quiet_hours.timezone",
    ),
    (
        "offset, not a zone",
        {"quiet_hours": {**NIGHT, "timezone": "+02:00"}},
        "quiet_hours.timezone",
    ),
    ("path", {"quiet_hours": {**NIGHT, "timezone": "../../etc/passwd"}}, "quiet_hours.timezone"),
    ("no zone", {"quiet_hours": {"start": "22:00", "end": "07:00"}}, "quiet_hours.timezone"),
    ("extra field", {"quiet_hours": {**NIGHT, "days": "weekdays"}}, "quiet_hours.days"),
    ("a string", {"quiet_hours": "22:00-07:00"}, "quiet_hours"),
    ("break-through null", {"mentions_break_through": None}, "mentions_break_through"),
    ("break-through text", {"mentions_break_through": "yes"}, "mentions_break_through"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in BAD], ids=[n for n, _, _ in BAD])
def test_bad_settings_are_422_naming_the_field_and_change_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    """Each bad value is a 422 whose error names the field; no setting changes, even the valid
    ones sent beside it."""
    alice = api.user("alice")
    assert alice.put("/v1/me/settings", json={"quiet_hours": NIGHT}).status_code == 200
    before = alice.get("/v1/me").json()["settings"]
    response = alice.put("/v1/me/settings", json={"quiet_when_active": True, **body})
    error = assert_error(response, 422)
    assert error["field"] == field, error
    assert alice.get("/v1/me").json()["settings"] == before
