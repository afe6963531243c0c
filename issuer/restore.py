"""`issuer restore FROM`: a backup made by `issuer backup` into a new instance (issue #9, nothing lost).

The backup's MANIFEST.json sha256s are checked before anything is written. The instance must be new: no
row in any of its tables, and no key file in its key folder; a restore never merges into a live registry.
The database may be of the other kind (a SQLite backup into PostgreSQL, or back): the rows are loaded from
`database.json` into the schema the backup was made with (Alembic, to the backup's revision), in one
transaction, then the schema is upgraded to this version, so an older backup gets newer migrations
(0008 chains the audit log of a backup made before the chain existed). PostgreSQL's id sequences are moved
past the restored ids. The key files are copied as they are (still encrypted when they were), 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import JSON, Date, DateTime, LargeBinary, MetaData, func, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from .db import MIGRATIONS, migrate
from .models import Base

PAGE = 1000
KEY_DIR_EXTRAS = (".gitignore", "README.md")  # what a key folder may hold and still count as empty
SEEDED = ("audit_chain_head",)  # rows a migration writes into an empty database; the backup's replace them


class RestoreError(Exception):
    """A backup that cannot be restored here, with the reason."""


def check_backup(source: Path) -> dict:
    """MANIFEST.json's sha256 of every file, before anything is written; returns the manifest."""
    manifest_path = source / "MANIFEST.json"
    if not manifest_path.is_file():
        raise RestoreError(f"{source} has no MANIFEST.json: not a backup made by `issuer backup`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"{manifest_path} is unreadable: {exc}") from None
    if "database.json" not in files:
        raise RestoreError("the backup's MANIFEST.json does not list database.json")
    root = source.resolve()
    for name, digest in sorted(files.items()):
        path = (source / name).resolve()
        if root not in path.parents:
            raise RestoreError(f"MANIFEST.json names {name!r}, outside the backup folder")
        if not path.is_file():
            raise RestoreError(f"{name} is listed in MANIFEST.json but missing from the backup")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise RestoreError(f"{name} does not match its sha256 in MANIFEST.json: the backup is damaged "
                               "or was changed")
    return manifest


def tables_with_rows(conn: Connection) -> list[str]:
    present = set(inspect(conn).get_table_names())
    return [t.name for t in Base.metadata.sorted_tables if t.name in present and t.name not in SEEDED
            and conn.execute(select(text("1")).select_from(t).limit(1)).first()]


def key_files(key_dir: Path) -> list[str]:
    if not key_dir.exists():
        return []
    return sorted(p.name for p in key_dir.iterdir() if p.name not in KEY_DIR_EXTRAS)


def _value(column, value):
    """A value of database.json back into the column's Python type (`cli._jsonable` in reverse)."""
    if value is None:
        return None
    kind = column.type
    if isinstance(kind, JSON):
        return value
    if isinstance(kind, LargeBinary) and isinstance(value, dict) and set(value) == {"base64"}:
        return base64.b64decode(value["base64"])
    if isinstance(kind, DateTime) and isinstance(value, str):
        moment = datetime.fromisoformat(value)
        # Stored times are UTC; SQLite gives them back without an offset.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if isinstance(kind, Date) and isinstance(value, str):
        return date.fromisoformat(value)
    return value


def _move_sequences(conn: Connection, table) -> None:
    """PostgreSQL: rows were inserted with their ids, which does not move a serial column's sequence."""
    for column in table.primary_key.columns:
        sequence = conn.execute(select(func.pg_get_serial_sequence(table.name, column.name))).scalar()
        if sequence:
            top = conn.execute(select(func.max(column))).scalar()
            conn.execute(text("SELECT setval(CAST(:sequence AS regclass), :next, false)"),
                         {"sequence": sequence, "next": (top or 0) + 1})


def restore(engine: Engine, key_dir: Path, source: Path) -> dict[str, int]:
    """Restore the backup in `source` into the empty database of `engine` and the empty `key_dir`;
    returns the number of rows restored per table. Raises RestoreError before writing anything when the
    backup is damaged or the instance is not new."""
    manifest = check_backup(source)
    dump = json.loads((source / "database.json").read_text(encoding="utf-8"))
    revision, tables = dump.get("alembic_version"), dump.get("tables") or {}
    scripts = ScriptDirectory.from_config(_alembic_config())
    try:
        scripts.get_revision(revision)
    except Exception:
        raise RestoreError(f"the backup's schema revision {revision!r} is unknown to this version of the "
                           "issuer (a backup from a newer version?)") from None
    with engine.connect() as conn:
        busy = tables_with_rows(conn)
        current = (conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                   if inspect(conn).has_table("alembic_version") else None)
    if not busy and current not in (None, revision):
        raise RestoreError(f"the empty database already has schema {current}, the backup {revision}; restore "
                           "into a database without tables")
    if busy:
        raise RestoreError(f"the database is not empty ({', '.join(busy)} have rows); restore only into a new "
                           "instance's empty database")
    if key_files(key_dir):
        raise RestoreError(f"the key folder {key_dir} is not empty ({', '.join(key_files(key_dir))}); restore "
                           "only into an empty one")
    keys = sorted(name for name in manifest["files"] if name.startswith("keys/"))
    if not keys:
        raise RestoreError("the backup holds no key files")

    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    copied = []
    try:
        for name in keys:
            target = key_dir / Path(name).name
            shutil.copyfile(source / name, target)
            target.chmod(0o600)
            copied.append(target)
        migrate(engine, revision)  # the schema the rows were dumped from
        counts = _load(engine, tables)
        migrate(engine)  # then this version's newer migrations, over the restored rows
    except BaseException:
        for target in copied:  # the keys without their registry would only confuse a second attempt
            target.unlink(missing_ok=True)
        raise
    return counts


def _load(engine: Engine, tables: dict[str, list[dict]]) -> dict[str, int]:
    counts = {}
    with engine.begin() as conn:
        meta = MetaData()
        present = set(inspect(conn).get_table_names())
        unknown = sorted(set(tables) - present)
        if unknown:
            raise RestoreError(f"the backup has tables this schema lacks: {', '.join(unknown)}")
        meta.reflect(conn, only=sorted(tables))
        for table in meta.sorted_tables:  # parents before the rows that refer to them
            rows = tables.get(table.name) or []
            if table.name in SEEDED and rows:
                conn.execute(table.delete())
            extra = {name for row in rows[:1] for name in row} - set(table.c.keys())
            if extra:
                raise RestoreError(f"{table.name} in the backup has columns this schema lacks: {sorted(extra)}")
            for start in range(0, len(rows), PAGE):
                batch = [{name: _value(table.c[name], value) for name, value in row.items()}
                         for row in rows[start:start + PAGE]]
                conn.execute(table.insert(), batch)
            if conn.dialect.name == "postgresql":
                _move_sequences(conn, table)
            counts[table.name] = len(rows)
    return counts


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg
