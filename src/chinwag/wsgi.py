"""The WSGI entry point: ``gunicorn chinwag.wsgi:application`` (or uWSGI ``--module``).

Configured from the same environment as the ``chinwag`` command. The schema is not migrated here
(many web processes would race); run ``chinwag migrate`` once per upgrade.
"""

from __future__ import annotations

from chinwag.bootstrap import web_services
from chinwag.config import Settings
from chinwag.logs import configure_logging
from chinwag.web import create_app

_settings = Settings.from_env()
configure_logging(json_lines=_settings.log_json)
application = create_app(web_services(_settings))
