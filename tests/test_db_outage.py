"""The database going away mid-request (issue #9, item 6): 503 with Retry-After, nothing of the request
stored, and the next request after the database is back succeeds. On PostgreSQL the link is cut by a TCP
proxy on 127.0.0.1 between the app and the server; on SQLite the file is locked past the busy timeout or
its folder is moved away."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import uuid

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from issuer import audit
from issuer.models import AuditEntry, Credential, Notification, StatusEntry

PG = os.environ.get("ISSUER_TEST_DATABASE_URL")
TABLES = {"credentials": Credential, "status entries": StatusEntry, "audit entries": AuditEntry,
          "outbox rows": Notification}
BADGE = {"achievement": "AI-101", "recipient": {"email": "outage@example.com"}, "awarded_on": "2025-01-10"}


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(model.__table__)).scalar()
                for name, model in TABLES.items()}


def make_app(tmp_path, url):
    from issuer import create_app

    app = create_app({"TESTING": True, "ISSUER_DATABASE_URL": url, "ISSUER_KEY_DIR": str(tmp_path / "keys"),
                      "ISSUER_BASE_URL": "http://127.0.0.1:5000", "ISSUER_KEY_PASSPHRASE": None})
    app.instance_path = str(tmp_path / "instance")
    result = app.test_cli_runner().invoke(args=["init", "--no-token"])
    assert result.exit_code == 0, result.output
    return app


def token_for(app) -> dict:
    from issuer.db import get_session
    from issuer.tokens import create_token

    with app.app_context():
        session = get_session()
        _, secret = create_token(session, "outage", "issue")
        session.commit()
    return {"Authorization": f"Bearer {secret}"}


def assert_503(response, html=False):
    assert response.status_code == 503, response.data[:500]
    assert int(response.headers["Retry-After"]) > 0
    if html:
        assert response.mimetype == "text/html"
        assert b"Service Unavailable" in response.data and b"try again" in response.data
    else:
        assert response.mimetype == "application/problem+json"
        body = response.get_json()
        assert body["status"] == 503 and "database cannot be reached" in body["detail"]


def issue_retried_succeeds_once(client, headers, engine, before):
    key = {"Idempotency-Key": "outage-retry-1"}
    first = client.post("/api/v1/credentials", json=BADGE, headers={**headers, **key})
    assert first.status_code == 201, first.get_json()
    again = client.post("/api/v1/credentials", json=BADGE, headers={**headers, **key})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    after = counts(engine)
    assert after["credentials"] == before["credentials"] + 1
    assert after["status entries"] == before["status entries"] + 1
    assert after["outbox rows"] == before["outbox rows"] + 1
    assert after["audit entries"] >= before["audit entries"] + 1
    with engine.connect() as conn:
        report = audit.verify(conn)
    assert report.ok, report.summary()


# --- SQLite ----------------------------------------------------------------------------------------------

def test_sqlite_locked_past_its_timeout_gives_503_and_stores_nothing(tmp_path):
    path = tmp_path / "db" / "issuer.sqlite"
    app = make_app(tmp_path, f"sqlite:///{path}?timeout=0.5")
    client, headers, engine = app.test_client(), token_for(app), app.extensions["issuer.engine"]
    before = counts(engine)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        response = client.post("/api/v1/credentials", json=BADGE,
                               headers={**headers, "Idempotency-Key": "outage-retry-1"})
        assert_503(response)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert counts(engine) == before
    issue_retried_succeeds_once(client, headers, engine, before)
    engine.dispose()


def test_sqlite_file_unreachable_gives_503_page_and_problem_then_recovers(tmp_path):
    folder = tmp_path / "db"
    app = make_app(tmp_path, f"sqlite:///{folder / 'issuer.sqlite'}")
    client, engine = app.test_client(), app.extensions["issuer.engine"]
    assert client.get("/").status_code == 200
    engine.dispose()
    folder.rename(tmp_path / "db-away")  # the volume is gone
    try:
        assert_503(client.get("/", headers={"Accept": "text/html"}), html=True)
        assert_503(client.get("/api/v1/achievements"))
    finally:
        (tmp_path / "db-away").rename(folder)
    assert client.get("/").status_code == 200
    assert client.get("/api/v1/achievements").status_code == 200
    engine.dispose()


def test_a_database_bug_is_still_a_500_not_a_503(tmp_path):
    """Only "unreachable" is 503: a missing table is a fault of ours, logged, 500."""
    app = make_app(tmp_path, f"sqlite:///{tmp_path / 'issuer.sqlite'}")

    @app.get("/broken")
    def broken():
        from issuer.db import get_session

        get_session().execute(text("SELECT * FROM no_such_table"))
        return "unreachable"

    response = app.test_client().get("/broken", headers={"Accept": "application/json"})
    assert response.status_code == 500 and "Retry-After" not in response.headers
    app.extensions["issuer.engine"].dispose()


# --- PostgreSQL, through a proxy we can cut -------------------------------------------------------------

class CuttableProxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server; `cut()` drops every connection and refuses new
    ones until `restore()`."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, target):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            doomed, self.sockets = self.sockets, []
        for s in doomed:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def pg_behind_proxy(tmp_path):
    base = make_url(PG.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    direct = create_engine(base.update_query_dict({"options": f"-csearch_path={schema}"}))
    with direct.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    proxy = CuttableProxy((base.host or "127.0.0.1", base.port or 5432))
    url = base.set(host="127.0.0.1", port=proxy.port).update_query_dict({"options": f"-csearch_path={schema}"})
    app = make_app(tmp_path, url.render_as_string(hide_password=False))
    yield app, proxy, direct
    app.extensions["issuer.engine"].dispose()
    proxy.close()
    with direct.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    direct.dispose()


@pytest.mark.skipif(not PG, reason="needs PostgreSQL (ISSUER_TEST_DATABASE_URL); the SQLite cases are above")
def test_postgresql_cut_mid_issue_gives_503_no_partial_record_and_the_retry_succeeds_once(pg_behind_proxy):
    app, proxy, direct = pg_behind_proxy
    client, headers, engine = app.test_client(), token_for(app), app.extensions["issuer.engine"]
    before = counts(direct)
    cuts = []

    @event.listens_for(engine, "after_cursor_execute")
    def _cut_after_the_first_write(conn, cursor, statement, params, context, executemany):
        if not cuts and statement.lstrip().upper().startswith("INSERT INTO STATUS_ENTRIES"):
            cuts.append(statement)
            proxy.cut()  # the status entry is written; the credential, audit and outbox rows are not yet

    response = client.post("/api/v1/credentials", json=BADGE, headers={**headers, "Idempotency-Key": "outage-retry-1"})
    event.remove(engine, "after_cursor_execute", _cut_after_the_first_write)
    assert cuts, "the request never reached its first write"
    assert_503(response)
    proxy.restore()
    assert counts(direct) == before  # the server rolled the half-done transaction back
    issue_retried_succeeds_once(client, headers, direct, before)


@pytest.mark.skipif(not PG, reason="needs PostgreSQL (ISSUER_TEST_DATABASE_URL); the SQLite cases are above")
def test_postgresql_unreachable_gives_503_then_the_pool_recovers(pg_behind_proxy):
    app, proxy, _ = pg_behind_proxy
    client = app.test_client()
    assert client.get("/api/v1/achievements").status_code == 200  # a pooled connection now exists
    proxy.cut()
    assert_503(client.get("/api/v1/achievements"))
    assert_503(client.get("/", headers={"Accept": "text/html"}), html=True)
    proxy.restore()
    assert client.get("/api/v1/achievements").status_code == 200
    assert client.get("/").status_code == 200
