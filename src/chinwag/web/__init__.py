"""The HTTP tier. Only the entry points (cli, wsgi) import it."""

from chinwag.web.app import create_app
from chinwag.web.services import Services

__all__ = ["Services", "create_app"]
