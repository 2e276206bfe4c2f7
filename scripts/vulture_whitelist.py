"""Names vulture (scripts/check) reports that are used, by something it cannot see.

Route functions (``@api.route``), pytest fixtures, ``pytestmark``, pydantic's ``model_config``
and Alembic's revision variables are skipped in ``[tool.vulture]`` of pyproject.toml; what is
left is listed here, each with who uses it. This file is read by vulture, never run.
"""

# ruff: noqa: B018, F821
# Callbacks and attributes of libraries: asyncio protocols, h2, aiosmtpd, Bottle, SQLAlchemy,
# uvicorn, aioapns.
_.connection_made  # asyncio.Protocol (fakes/h2server.py, push/h2pool.py)
_.data_received
_.connection_lost
_.local_settings  # h2.connection.H2Connection's settings to announce
_.encoder  # h2's HPACK encoder, replaced in push/h2pool.py
huffman  # the keyword of hpack.Encoder.encode that push/h2pool.py overrides
_.handle_MAIL  # aiosmtpd handler hooks (fakes/smtp.py)
_.handle_RCPT
_.handle_DATA
rcpt_options  # aiosmtpd passes it to handle_RCPT
mechanism  # aiosmtpd passes it to the authenticator
_.apply  # Bottle plugin API (web/metrics.py)
_.default_error_handler  # Bottle (web/app.py)
_on_connect  # SQLAlchemy event listeners (store/database.py)
_on_begin
_.isolation_level  # the DB-API connection's, set to take over BEGIN
_.should_exit  # uvicorn.Server (tests/conftest.py)
_.protocol_class  # aioapns's connection pool (bench/baselines/aioapns_peer.py)
__getattr__  # module attribute hook: chinwag.asgi:application is built on first use

# Fields of response models, serialized by pydantic (web/admin.py).
mean_seconds
generated_at
deliveries_by_status
step_seconds
recent_failures
access_token  # a query parameter of /v1/events, read by the live gateway
last_failure_at  # Device / DeviceOut: shown by GET /v1/devices (pydantic reads the dataclass)
last_failure_reason

# A pydantic field validator, called by pydantic (web/schemas.py UserSettings).
_._not_null

# Called by name across a process boundary (bench/live.py: client.ask("count_open")).
_.count_open

# owned by the parallel refactors; removed at merge
run_worker_forever  # fanout/worker.py
_.sessions_opened  # push/email.py
_.open_connections  # push/h2pool.py
