"""The live tests sign up many users: cheap password hashing, as in the API tests."""

from __future__ import annotations

from tests.web.conftest import quick_password_hashing

__all__ = ["quick_password_hashing"]
