"""The database: one engine per app, a session per request, schema managed by Alembic."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# Statement parameters hold learners' addresses: never in SQL logging (echo, DEBUG) nor in the text of a
# database error that gets logged.
PRIVATE = True


def _rows_unlogged(record: logging.LogRecord) -> bool:
    # SQLAlchemy at DEBUG logs every result row, addresses included: keep the line, drop the values.
    if isinstance(record.msg, str) and record.msg.startswith("Row "):
        record.msg, record.args = "Row (values not logged: they may hold learners' addresses)", ()
    return True


logging.getLogger("sqlalchemy.engine.Engine").addFilter(_rows_unlogged)


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        # A writer waits up to 30 s for another's lock (a `?timeout=` in the URL overrides it), then gets
        # "database is locked", which the web layer answers with 503 and Retry-After.
        options = {} if "timeout=" in url.partition("?")[2] else {"connect_args": {"timeout": 30}}
        engine = create_engine(url, hide_parameters=PRIVATE, **options)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    # pool_pre_ping: a pooled connection that died with the server (restart, failover, a cut link) is
    # replaced on its next checkout, so the first request after the database is back succeeds.
    return create_engine(url, pool_pre_ping=True, hide_parameters=PRIVATE)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest Alembic revision (creates every table on a new database), or to
    `revision` (a restore loads a backup into the schema it was made with, then upgrades)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def init_app(app: Flask) -> None:
    url = app.config["ISSUER_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    app.extensions["issuer.engine"] = engine
    app.extensions["issuer.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(close_session)


def get_session() -> Session:
    if "db_session" not in g:
        g.db_session = current_app.extensions["issuer.sessionmaker"]()
    return g.db_session


def close_session(_exc=None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
