"""Shared fixtures. The official standards files live in ../shared/standards beside the project; tests
that need them skip, saying why, when that folder is absent."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STANDARDS = PROJECT_ROOT.parent / "shared" / "standards"


@contextlib.contextmanager
def loopback_only_network(who: str) -> Iterator[None]:
    """While it lasts, every DNS name is unknown to the issuer's fetcher and a connection to anything but
    loopback fails the test naming `who`: generated inputs can never reach a real address."""
    from issuer import fetch

    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def loopback_only(address, *args, **kwargs):
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"{who} tried to connect outside the machine: {address}")
        return socket.create_connection(address, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fetch, "getaddrinfo", no_such_name)
        patch.setattr(fetch, "create_connection", loopback_only)
        yield


@pytest.fixture(scope="session")
def standards() -> Path:
    if not STANDARDS.is_dir():
        pytest.skip(f"official standards files not found at {STANDARDS} (../shared/standards)")
    return STANDARDS


@pytest.fixture(scope="session")
def load_standard(standards):
    def load(relative: str):
        path = standards / relative
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix in (".json", ".jsonld") else text

    return load


# --- the application, on SQLite by default or on PostgreSQL when ISSUER_TEST_DATABASE_URL is set ---

def _database_url(tmp_path: Path):
    """A fresh database for one test: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    base = os.environ.get("ISSUER_TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{tmp_path / 'issuer.sqlite'}", None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", (admin, schema)


@pytest.fixture
def app(tmp_path):
    from issuer import create_app

    url, cleanup = _database_url(tmp_path)
    application = create_app({
        "TESTING": True,
        "ISSUER_DATABASE_URL": url,
        "ISSUER_KEY_DIR": str(tmp_path / "keys"),
        "ISSUER_BASE_URL": "http://127.0.0.1:5000",
        "ISSUER_KEY_PASSPHRASE": None,
    })
    application.instance_path = str(tmp_path / "instance")
    result = application.test_cli_runner().invoke(args=["init", "--no-token"])
    assert result.exit_code == 0, result.output
    yield application
    application.extensions["issuer.engine"].dispose()
    if cleanup:
        admin, schema = cleanup
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_token(app):
    from issuer.db import get_session
    from issuer.tokens import create_token

    def make(scopes="issue", name="test"):
        with app.app_context():
            session = get_session()
            _, secret = create_token(session, name, scopes)
            session.commit()
        return secret

    return make


@pytest.fixture
def issue_token(make_token):
    return make_token("issue")
