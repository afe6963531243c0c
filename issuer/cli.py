"""The `issuer` command (also `flask --app issuer ...`): set-up, issuing, verifying, keys, tokens, backup."""

from __future__ import annotations

import csv
import getpass
import hashlib
import json
import os
import shutil
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import inspect, select, text

from . import issuing, mail, revocation
from .catalogue import DEMO_CATALOGUE, CatalogueError, load_catalogue
from .credentials import normalise_email
from .db import get_session, migrate
from .formats import FormatError, parse_submission
from .identity import get_context, get_verifier, keyring_exists, reset_context
from .keys import KeyRing
from .models import Achievement, AuditEntry, Base
from .tokens import TokenError, create_token, revoke_tokens_named

DEV_TOKEN_NAME = "development admin"


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in some containers
        return "cli"


def _raw_entries(path: Path) -> list[dict]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list(data.get("microcredentials", [])) if isinstance(data, dict) else []


def load_catalogue_file(path: Path) -> tuple[int, int]:
    entries = load_catalogue(path)
    session = get_session()
    added, updated = issuing.store_catalogue(session, entries, _raw_entries(path), actor=actor())
    session.commit()
    return added, updated


@click.command("init")
@click.option("--catalogue", "catalogue_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Catalogue to load instead of the demo catalogue.")
@click.option("--no-token", is_flag=True, help="Do not create a development admin token.")
@with_appcontext
def init_command(catalogue_file: Path | None, no_token: bool) -> None:
    """Create or upgrade the database, generate keys if there are none, load the catalogue.

    Safe to run again: existing keys, badges and catalogue edits are kept."""
    app = current_app
    migrate(app.extensions["issuer.engine"])
    key_dir = Path(app.config["ISSUER_KEY_DIR"])
    jwt_algorithm = app.config["ISSUER_JWT_ALGORITHM"]
    if not keyring_exists(app.config):
        passphrase = app.config.get("ISSUER_KEY_PASSPHRASE")
        KeyRing.create(key_dir, passphrase, algorithms=("Ed25519", jwt_algorithm))
        if passphrase:
            click.echo(f"generated signing keys in {key_dir} (encrypted with ISSUER_KEY_PASSPHRASE)")
        else:
            click.echo(f"generated development keys in {key_dir}: not encrypted, so the service starts with "
                       "them only when ISSUER_DEVELOPMENT=1 (for production set ISSUER_KEY_PASSPHRASE and "
                       "run `issuer keys encrypt`)")
    else:
        keyring = KeyRing.load(key_dir, app.config.get("ISSUER_KEY_PASSPHRASE"))
        if not any(k.algorithm == jwt_algorithm and k.status == "current" for k in keyring.all()):
            # ISSUER_JWT_ALGORITHM was changed since the keys were made: add a key for it.
            key = keyring.add_algorithm(jwt_algorithm)
            click.echo(f"added a {jwt_algorithm} key for VC-JWT: {key.kid}")
    reset_context(app)
    ctx = get_context()
    session = get_session()
    issuing.store_identity(session, ctx, actor=actor())
    session.commit()
    if catalogue_file or session.query(Achievement).count() == 0:
        path = catalogue_file or DEMO_CATALOGUE
        added, updated = load_catalogue_file(path)
        click.echo(f"catalogue {path.name}: {added} added, {updated} updated")
    click.echo(f"issuer {ctx.did}")
    if not no_token:
        revoke_tokens_named(session, DEV_TOKEN_NAME)
        _, secret = create_token(session, DEV_TOKEN_NAME, ["admin", "issue", "revoke"])
        session.add(AuditEntry(actor=actor(), action="token.create", subject=DEV_TOKEN_NAME,
                               detail={"scopes": ["admin", "issue", "revoke"]}))
        session.commit()
        base = ctx.base_url
        click.echo("")
        click.echo(f"Admin API token (shown once; `issuer init` makes a new one): {secret}")
        click.echo("Open:")
        click.echo(f"  {base}/                          the catalogue")
        click.echo(f"  {base}/api/v1/achievements       achievements as JSON")
        click.echo(f"  {base}/.well-known/did.json      the issuer's DID document")
        click.echo("Issue a badge:")
        click.echo(f"  curl -X POST {base}/api/v1/credentials -H 'Authorization: Bearer {secret}' \\")
        click.echo("       -H 'Content-Type: application/json' \\")
        first = session.scalars(select(Achievement.code).order_by(Achievement.code)).first() or "CODE"
        click.echo(f"       -d '{{\"achievement\": \"{first}\", \"recipient\": "
                   "{\"email\": \"learner@example.com\", \"name\": \"Chan Tai Man\"}}'")
        click.echo("Staff console (sign in as a member of staff):")
        click.echo(f"  {base}/console/")
        click.echo("  first administrator: .venv/bin/issuer staff create --email you@school.example "
                   "--role administrator")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@with_appcontext
def serve_command(host: str, port: int) -> None:
    """Serve with the built-in threaded server (for production: gunicorn 'issuer:create_app()')."""
    app = current_app._get_current_object()
    if not keyring_exists(app.config):
        raise click.ClickException("no signing keys yet: run `issuer init` first")
    from . import check_keys
    from .keys import KeyStorageError

    try:
        check_keys(app)  # the same start-up check as gunicorn's create_app()
    except KeyStorageError as exc:
        raise click.ClickException(str(exc)) from None
    from werkzeug.serving import run_simple

    click.echo(f"serving {app.config['ISSUER_BASE_URL']} on http://{host}:{port}/ (Ctrl-C stops)")
    # run_simple, not app.run: Flask ignores app.run() inside its own CLI.
    run_simple(host, port, app, threaded=True, use_reloader=False)


catalogue_group = click.Group("catalogue", help="Manage the catalogue of microcredentials.")


@catalogue_group.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def catalogue_load(file: Path) -> None:
    """Validate FILE (YAML or JSON) and add or update its microcredentials."""
    try:
        added, updated = load_catalogue_file(file)
    except CatalogueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{added} added, {updated} updated")


@click.command("issue")
@click.option("--achievement", required=True, help="Microcredential code.")
@click.option("--email", required=True)
@click.option("--name", default=None)
@click.option("--did", default=None, help="The learner's DID; adds a VC-JWT.")
@click.option("--awarded-on", default=None, help="Award date YYYY-MM-DD (default today).")
@click.option("--result", default=None, help="Grade or score.")
@with_appcontext
def issue_command(achievement, email, name, did, awarded_on, result) -> None:
    """Issue one badge and print its URL (or the URL of the badge already issued for this award)."""
    recipient = {k: v for k, v in {"email": email, "name": name, "did": did}.items() if v}
    body = {"achievement": achievement, "recipient": recipient, "awarded_on": awarded_on, "result": result}
    session = get_session()
    try:
        outcome = issuing.issue(session, get_context(), issuing.parse_request(body), actor=actor())
    except issuing.IssueError as exc:
        raise click.ClickException(str(exc)) from None
    row = outcome.credential
    click.echo(f"{'issued' if outcome.created else 'already issued'}: {row.credential_url}")


@click.command("revoke")
@click.argument("credential_id")
@click.option("--reason", required=True, help="Why: recorded in the audit log and shown as given.")
@click.option("--category", type=click.Choice(revocation.CATEGORIES), default="other", show_default=True,
              help="The reason category the public page shows.")
@with_appcontext
def revoke_command(credential_id: str, reason: str, category: str) -> None:
    """Revoke a badge or award for good (a correction is a new badge); awards that counted a revoked
    badge are re-checked and revoked when they no longer hold."""
    try:
        outcome = revocation.revoke(get_session(), current_app.extensions["issuer.rules"], credential_id,
                                    reason=reason, category=category, actor=actor())
    except revocation.RevocationError as exc:
        raise click.ClickException(str(exc)) from None
    shown = outcome.revocation
    click.echo(f"{'revoked' if outcome.created else 'already revoked'}: {shown['url']} "
               f"({shown['category']}: {shown['reason']})")
    for award in outcome.awards:
        click.echo(f"  award {award['url']}: {award['outcome']}")


def _count_records(file: Path) -> int:
    """CSV records after the header, read as a stream (a quoted cell may span lines)."""
    with file.open(newline="", encoding="utf-8-sig") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


@click.command("issue-batch")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the per-row result as CSV here (default FILE.report.csv).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes that sign badges (default: the number of CPUs; 1 signs in this process).")
@click.option("--chunk-size", type=click.IntRange(1, 5000), default=None,
              help="Rows stored per transaction (default 1000).")
@with_appcontext
def issue_batch_command(file: Path, report: Path | None, workers: int | None, chunk_size: int | None) -> None:
    """Issue a cohort from a CSV (email, name, achievement, award_date, grade).

    Rows are read as a stream, signed in parallel and stored in chunks, each chunk one transaction; a bad
    row is reported and skipped. Re-running the same file after a crash issues nothing twice: rows
    already issued are reported as such."""
    from . import cohort

    app = current_app
    try:
        total = _count_records(file)
        with file.open(newline="", encoding="utf-8-sig") as handle:
            issuing.check_csv_header(csv.DictReader(handle).fieldnames)
    except UnicodeDecodeError:
        raise click.ClickException(f"{file} is not UTF-8 text") from None
    except csv.Error as exc:
        raise click.ClickException(f"{file} is not a readable CSV file: {exc}") from None
    except issuing.IssueError as exc:
        raise click.ClickException(str(exc)) from None
    report = report or file.with_suffix(".report.csv")
    chunk_size = chunk_size or cohort.CHUNK_ROWS
    workers = workers or os.cpu_count() or 1
    if total <= chunk_size:
        workers = 1  # one chunk: starting worker processes would cost more than they save
    ctx = get_context()
    make_session = app.extensions["issuer.sessionmaker"]
    with file.open(newline="", encoding="utf-8-sig") as handle, \
            report.open("w", newline="", encoding="utf-8") as out, \
            click.progressbar(length=total, label="issuing", file=sys.stderr) as bar:
        writer = csv.writer(out)
        writer.writerow(["line", "status", "detail", "credential_url"])

        def on_chunk(results: list[issuing.RowResult]) -> None:
            writer.writerows([r.line, r.status, r.detail, r.credential_url or ""] for r in results)
            out.flush()
            bar.update(len(results))

        rows = ((i + 2, row) for i, row in enumerate(csv.DictReader(handle)))
        counts = cohort.issue_cohort(make_session, ctx, rows, actor=actor(), workers=workers,
                                     settings=dict(app.config), chunk_size=chunk_size, on_chunk=on_chunk)
    click.echo(f"{counts.issued} issued, {counts.already} already issued, "
               f"{counts.errors} errors; report: {report}")
    if counts.errors:
        with report.open(newline="", encoding="utf-8") as written:
            for r in csv.DictReader(written):
                if r["status"] == "error":
                    click.echo(f"  line {r['line']}: {r['detail']}", err=True)
        sys.exit(2)


@click.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--email", default=None, help="Also check the badge was issued to this email.")
@with_appcontext
def verify_command(file: Path, email: str | None) -> None:
    """Verify a credential file (JSON-LD or VC-JWT); exit 0 when verified, 1 when not."""
    try:
        submission = parse_submission(file.read_bytes(), None, file.name)
    except FormatError as exc:
        raise click.ClickException(str(exc)) from None
    result = get_verifier().verify_submission(submission, recipient_email=email)
    click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    sys.exit(0 if result.verified else 1)


keys_group = click.Group("keys", help="The issuer's signing keys.")


@keys_group.command("list")
@with_appcontext
def keys_list() -> None:
    ctx = get_context()
    for key in ctx.keyring.all():
        click.echo(f"{key.status:8} {key.algorithm:8} {key.created}  {ctx.did}#{key.kid}")
    for gone in ctx.keyring.withdrawn():  # compromised: no longer published, listed so nobody forgets
        click.echo(f"withdrawn {gone.get('algorithm', '?'):7} {gone.get('withdrawn', '?')}  {ctx.did}#{gone['kid']}"
                   f"  ({gone.get('reason', '')})")


@keys_group.command("rotate")
@click.option("--algorithm", type=click.Choice(["Ed25519", "ES256", "RS256"]), default=None,
              help="Rotate only this key (default: every current key).")
@with_appcontext
def keys_rotate(algorithm: str | None) -> None:
    """Make new current keys; the old ones stay published, so badges they signed keep verifying."""
    from .identity import rotate_keys

    did = get_context().did
    try:
        new_keys = rotate_keys(current_app, [algorithm] if algorithm else None, actor=actor())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for key in new_keys:
        click.echo(f"new current {key.algorithm} key: {did}#{key.kid}")


def _backup_passphrase(passphrase_file: Path | None, *, confirm: bool) -> str:
    """The backup's passphrase: the first line of --passphrase-file, or typed at the terminal."""
    if passphrase_file is not None:
        lines = passphrase_file.read_text(encoding="utf-8").splitlines()
        passphrase = lines[0] if lines else ""
    else:
        passphrase = click.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm)
    if not passphrase:
        raise click.ClickException("the backup passphrase is empty")
    return passphrase


@keys_group.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file to write (mode 0600; refused if it exists).")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Read the backup passphrase from this file's first line instead of asking for it.")
@with_appcontext
def keys_export(out: Path, passphrase_file: Path | None) -> None:
    """Write an encrypted backup of the whole key ring (every key, current and retired)."""
    from .keys import MIN_BACKUP_PASSPHRASE, write_private_file

    if out.exists():
        raise click.ClickException(f"{out} already exists; choose a new file for each backup")
    passphrase = _backup_passphrase(passphrase_file, confirm=True)
    if len(passphrase) < MIN_BACKUP_PASSPHRASE:
        raise click.ClickException(f"the backup passphrase must be at least {MIN_BACKUP_PASSPHRASE} characters")
    ctx = get_context()
    data = ctx.keyring.export_backup(passphrase)
    write_private_file(out, data)
    session = get_session()
    kids = [k.kid for k in ctx.keyring.all()]
    session.add(AuditEntry(actor=actor(), action="key.export", subject=ctx.did,
                           detail={"kids": kids, "file": out.name}))
    session.commit()
    click.echo(f"exported {len(kids)} keys to {out}; keep the file and its passphrase apart, both offline")


@keys_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Read the backup passphrase from this file's first line instead of asking for it.")
@with_appcontext
def keys_import(file: Path, passphrase_file: Path | None) -> None:
    """Restore a key ring from a backup into an empty key directory (ISSUER_KEY_DIR), encrypting each key
    with this instance's ISSUER_KEY_PASSPHRASE. Then run `issuer init`."""
    from .keys import BackupError, import_backup, read_backup
    from .models import PublicKey

    app = current_app
    passphrase = _backup_passphrase(passphrase_file, confirm=False)
    try:
        backup = read_backup(file.read_bytes(), passphrase)
    except BackupError as exc:
        raise click.ClickException(f"{file}: {exc}; nothing was written") from None
    migrate(app.extensions["issuer.engine"])  # a fresh instance: the audit log needs its table
    session = get_session()
    withdrawn = set(session.scalars(select(PublicKey.kid).where(PublicKey.status == "compromised")))
    key_dir = Path(app.config["ISSUER_KEY_DIR"])
    try:
        ring, written = import_backup(backup, key_dir, app.config.get("ISSUER_KEY_PASSPHRASE"),
                                      withdrawn=withdrawn)
    except BackupError as exc:
        raise click.ClickException(f"{exc}; nothing was written") from None
    if not written:
        click.echo(f"{key_dir} already holds this key ring; nothing to do")
        return
    skipped = sorted(set(backup.kids()) - {k.kid for k in ring.all()})
    session.add(AuditEntry(actor=actor(), action="key.import", subject=str(key_dir),
                           detail={"kids": [k.kid for k in ring.all()], "skipped_withdrawn": skipped}))
    session.commit()
    reset_context(app)
    for kid in skipped:
        click.echo(f"not restored: {kid} was withdrawn as compromised")
    how = "encrypted with ISSUER_KEY_PASSPHRASE" if ring.encrypted else "NOT encrypted (development)"
    click.echo(f"imported {len(ring.all())} keys into {key_dir}, {how}; now run `issuer init`")


@keys_group.command("encrypt")
@with_appcontext
def keys_encrypt() -> None:
    """Encrypt plaintext key files with ISSUER_KEY_PASSPHRASE (development keys made production keys)."""
    from .keys import KeyLoadError, plaintext_key_files

    app = current_app
    passphrase = app.config.get("ISSUER_KEY_PASSPHRASE")
    if not passphrase:
        raise click.ClickException("set ISSUER_KEY_PASSPHRASE to the passphrase the keys should be encrypted with")
    key_dir = Path(app.config["ISSUER_KEY_DIR"])
    if keyring_exists(app.config) and not plaintext_key_files(key_dir):
        raise click.ClickException(f"the keys in {key_dir} are already encrypted; to change the passphrase, "
                                   "export them and import them with the new one (docs/keys.md)")
    try:
        ring = KeyRing.load(key_dir, None)
    except KeyLoadError as exc:
        raise click.ClickException(str(exc)) from None
    ring.encrypt(passphrase)
    session = get_session()
    session.add(AuditEntry(actor=actor(), action="key.encrypt", subject=str(key_dir),
                           detail={"kids": [k.kid for k in ring.all()]}))
    session.commit()
    reset_context(app)
    click.echo(f"encrypted {len(ring.all())} keys in {key_dir} with ISSUER_KEY_PASSPHRASE")


def _signed_by(text: str | None, jwt: str | None, kid: str) -> tuple[bool, bool]:
    """Whether a stored document's proof, and its VC-JWT, were made with key `kid`."""
    from .keys import b64url_decode

    by_proof = False
    if text:
        proofs = json.loads(text).get("proof") or []
        for proof in proofs if isinstance(proofs, list) else [proofs]:
            if isinstance(proof, dict) and str(proof.get("verificationMethod", "")).rsplit("#", 1)[-1] == kid:
                by_proof = True
    by_jwt = False
    if jwt:
        try:
            header = json.loads(b64url_decode(jwt.split(".", 1)[0]))
            by_jwt = isinstance(header, dict) and str(header.get("kid", "")).rsplit("#", 1)[-1] == kid
        except ValueError:
            by_jwt = False
    return by_proof, by_jwt


def _affected(session, kid: str):
    """Badges and awards with a proof or VC-JWT by `kid`, with which of the two it signed."""
    from .models import Award, Credential

    for model in (Credential, Award):
        for row in session.scalars(select(model).order_by(model.created_at)):
            by_proof, by_jwt = _signed_by(row.document, row.jwt, kid)
            if by_proof or by_jwt:
                yield row, by_proof, by_jwt


def _wallet_copies_by(session, kid: str) -> int:
    """Holder-bound copies (JSON with a proof, or a compact JWT) signed by `kid`."""
    from .models import WalletCopy

    count = 0
    for stored in session.scalars(select(WalletCopy.document)):
        by_proof, by_jwt = (_signed_by(stored, None, kid) if stored.lstrip().startswith("{")
                            else _signed_by(None, stored.strip(), kid))
        count += by_proof or by_jwt
    return count


@keys_group.command("withdraw")
@click.argument("kid")
@click.option("--reason", required=True, help="Why (e.g. \"key file found in a leaked backup\"); audited.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def keys_withdraw(kid: str, reason: str, yes: bool) -> None:
    """Withdraw a compromised key: it leaves did.json and jwks.json and its private file is deleted, so
    everything it signed stops verifying. Rotate it first if it is current; re-issue afterwards."""
    from sqlalchemy import update

    from .models import PublicKey, StatusList, utcnow

    app = current_app
    ctx = get_context()
    key = ctx.keyring.find(kid)
    if key is None:
        raise click.ClickException(f"no key {kid} in the key ring (see `issuer keys list`)")
    if key.status == "current":
        raise click.ClickException(f"{key.kid} is the current {key.algorithm} key: run `issuer keys rotate "
                                   f"--algorithm {key.algorithm}` first, then withdraw it")
    session = get_session()
    badges = awards = 0
    for row, _, _ in _affected(session, key.kid):
        if row.__tablename__ == "awards":
            awards += 1
        else:
            badges += 1
    copies = _wallet_copies_by(session, key.kid)
    if not yes:
        click.confirm(f"Withdraw {key.algorithm} key {key.kid}? {badges} badges and {awards} awards it signed "
                      "will stop verifying until they are re-issued", abort=True)
    ctx.keyring.withdraw(key.kid, reason=reason)
    row = session.get(PublicKey, key.kid)
    if row is not None:
        row.status = "compromised"
        row.retired_at = row.retired_at or utcnow()
    # Cached status lists may carry a proof by this key: drop the builds so the next request re-signs them.
    session.execute(update(StatusList).values(document=None, built_version=None, built_at=None))
    session.add(AuditEntry(actor=actor(), action="key.withdraw", subject=f"{ctx.did}#{key.kid}",
                           detail={"algorithm": key.algorithm, "reason": reason, "badges": badges,
                                   "awards": awards, "wallet_copies": copies}))
    session.commit()
    reset_context(app)
    click.echo(f"withdrawn: {ctx.did}#{key.kid} ({key.algorithm}); restart every instance so that it is no "
               "longer published")
    click.echo(f"signed by it: {badges} badges, {awards} awards, {copies} wallet copies")
    if badges or awards:
        click.echo(f"re-issue them: issuer keys reissue --signed-by {key.kid}")


@keys_group.command("reissue")
@click.option("--signed-by", "kid", required=True, help="The withdrawn key whose signatures are replaced.")
@with_appcontext
def keys_reissue(kid: str) -> None:
    """Re-sign, with the current keys, every badge and award whose proof or VC-JWT was made by a withdrawn
    key: same id, URL, content and status entry, a new proof. Learners download their badge again."""
    from . import vcjwt
    from .issuing import serialise, sign
    from .models import utcnow

    ctx = get_context()
    kid = kid.rsplit("#", 1)[-1]
    if ctx.keyring.find(kid) is not None:
        raise click.ClickException(f"{kid} is still in the key ring: withdraw it first "
                                   f"(issuer keys withdraw {kid} --reason ...)")
    if kid not in {w["kid"] for w in ctx.keyring.withdrawn()}:
        raise click.ClickException(f"{kid} is not a withdrawn key of this issuer (see `issuer keys list`)")
    session = get_session()
    stamp = utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    done = 0
    for row, by_proof, by_jwt in list(_affected(session, kid)):
        unsigned = json.loads(row.document)
        unsigned.pop("proof", None)
        old_sha = row.document_sha256
        if by_proof:
            row.document = serialise(sign(ctx, unsigned, stamp))
            row.document_sha256 = hashlib.sha256(row.document.encode("utf-8")).hexdigest()
        if by_jwt:
            key = ctx.keyring.current(ctx.jwt_algorithm)
            row.jwt = vcjwt.sign_vc_jwt(unsigned, key, f"{ctx.did}#{key.kid}")
        session.add(AuditEntry(actor=actor(), action="credential.reissue", subject=row.credential_url,
                               detail={"withdrawn_kid": kid, "old_sha256": old_sha,
                                       "sha256": row.document_sha256, "jwt": by_jwt}))
        done += 1
        if done % 500 == 0:
            session.commit()
    session.commit()
    click.echo(f"re-issued {done} badges and awards signed by {kid}; their URLs are unchanged")


token_group = click.Group("token", help="API tokens.")


@token_group.command("create")
@click.option("--scopes", required=True,
              help="Comma- or space-separated: issue, revoke, catalogue, keys, admin (every scope).")
@click.option("--name", default="api", show_default=True, help="Who or what the token is for.")
@with_appcontext
def token_create(scopes: str, name: str) -> None:
    """Create a token and print it once (only its hash is stored)."""
    session = get_session()
    try:
        row, secret = create_token(session, name, scopes)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    session.add(AuditEntry(actor=actor(), action="token.create", subject=name, detail={"scopes": row.scopes}))
    session.commit()
    click.echo(secret)


@token_group.command("list")
@with_appcontext
def token_list() -> None:
    """Every token: id, name, scopes, created, last used, revoked (never the secret or its hash)."""
    from .tokens import list_tokens, token_view

    for view in map(token_view, list_tokens(get_session())):
        state = f"revoked {view['revoked']}" if view["revoked"] else "active"
        click.echo(f"{view['id']:>4}  {view['name'][:30]:30}  {','.join(view['scopes']):28}  "
                   f"created {view['created']}  last used {view['last_used'] or 'never'}  {state}")


@token_group.command("revoke")
@click.argument("token_id", type=int)
@with_appcontext
def token_revoke(token_id: int) -> None:
    """Revoke a token: the next request that presents it, on any instance, gets 401."""
    from .tokens import revoke_token

    session = get_session()
    try:
        row = revoke_token(session, token_id, actor=actor())
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    session.commit()
    click.echo(f"token {row.id} ({row.name}) revoked")


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@with_appcontext
def backup_command(dest: Path) -> None:
    """Copy the database (a JSON dump of every table, plus the SQLite file itself) and the keys to DEST.

    Keys are copied as they are on disk: encrypted when a passphrase is set. Keep DEST private."""
    app = current_app
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise click.ClickException(f"{dest} is not empty; choose a new folder for each backup")
    engine = app.extensions["issuer.engine"]
    dump: dict[str, list[dict]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if not inspect(conn).has_table(table.name):
                continue
            rows = conn.execute(table.select()).mappings().all()
            dump[table.name] = [{k: _jsonable(v) for k, v in row.items()} for row in rows]
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    files = {"database.json": json.dumps({"alembic_version": version, "tables": dump}, ensure_ascii=False,
                                         indent=1).encode("utf-8")}
    url = app.config["ISSUER_DATABASE_URL"]
    if url.startswith("sqlite:///"):
        target = dest / "database.sqlite"
        with sqlite3.connect(url[len("sqlite:///"):].partition("?")[0]) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
    for name, data in files.items():
        (dest / name).write_bytes(data)
    key_dir = Path(app.config["ISSUER_KEY_DIR"])
    (dest / "keys").mkdir(mode=0o700)
    for item in key_dir.iterdir():
        if item.is_file() and item.name not in (".gitignore", "README.md"):
            shutil.copy2(item, dest / "keys" / item.name)
            (dest / "keys" / item.name).chmod(0o600)
    manifest = {p.relative_to(dest).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(dest.rglob("*")) if p.is_file()}
    (dest / "MANIFEST.json").write_text(json.dumps({
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "database_url": url.split("@")[-1], "files": manifest}, indent=2))
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in dump.items())
    click.echo(f"backup written to {dest}: {counts}")


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@with_appcontext
def restore_command(source: Path) -> None:
    """Restore a backup made by `issuer backup` (the folder SOURCE) into this new instance.

    The database (SQLite or PostgreSQL, either kind of backup) and the key folder must be empty. The
    MANIFEST's sha256s are checked before anything is written. Set the same ISSUER_BASE_URL as the backed-up
    instance (credential URLs are absolute) and its ISSUER_KEY_PASSPHRASE if the keys were encrypted."""
    from .restore import RestoreError, restore

    app = current_app._get_current_object()
    try:
        counts = restore(app.extensions["issuer.engine"], Path(app.config["ISSUER_KEY_DIR"]), source)
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from None
    reset_context(app)
    summary = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    click.echo(f"restored {source}: {summary}")


audit_group = click.Group("audit", help="The hash-chained audit log.")


@audit_group.command("verify")
@click.option("--expect", "expected", multiple=True, metavar="SEQ:HASH",
              help="An entry's hash written down earlier (from a previous run's output); repeatable.")
@with_appcontext
def audit_verify(expected: tuple[str, ...]) -> None:
    """Walk the audit chain: report the first edited, inserted or deleted entry (exit status 1), or
    "N entries, chain intact" with the head's hash, to keep somewhere else."""
    from . import audit

    expect = {}
    for item in expected:
        seq, _, digest = item.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise click.BadParameter(f"{item!r} is not SEQ:HASH (a number and a sha256 in hex)", param_hint="--expect")
        expect[int(seq)] = digest.lower()
    with current_app.extensions["issuer.engine"].connect() as conn:
        report = audit.verify(conn, expect)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


award_group = click.Group("award", help="Stacked Certificates and Diplomas.")


def _application(files: tuple[Path, ...], email: str, target: str | None, as_of: str | None,
                 programme: str | None = None):
    from . import awards

    items = []
    for file in files:
        try:
            submission = parse_submission(file.read_bytes(), None, file.name)
        except FormatError as exc:
            raise click.ClickException(f"{file}: {exc}") from None
        items.append(submission.jwt if submission.format == "vc-jwt" else submission.credential)
    body = {"recipient": {"email": email}, "credentials": items}
    if target:
        body["target"] = target
    if as_of:
        body["as_of"] = as_of
    if programme:
        body["programme"] = programme
    rules = current_app.extensions["issuer.rules"]
    try:
        return awards.parse_application(body, max_badges=rules.max_badges, allow_as_of=as_of is not None)
    except awards.AwardError as exc:
        raise click.ClickException(str(exc)) from None


def _print_report(report: dict) -> None:
    click.echo(json.dumps(report, indent=2, ensure_ascii=False))


@award_group.command("evaluate")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--email", required=True, help="The email the badges were issued to.")
@click.option("--target", default=None, help='e.g. "Certificate in Professional Practice (Artificial Intelligence)"')
@click.option("--as-of", default=None, help="Evaluate as on this date (YYYY-MM-DD).")
@click.option("--programme", default=None, help="Evaluate for this parent programme (its code).")
@with_appcontext
def award_evaluate(files, email, target, as_of, programme) -> None:
    """Print the decision report for these badge files; nothing is stored. Exit 0 when eligible."""
    from . import awards
    from .stacking import RulesError

    application = _application(files, email, target, as_of, programme)
    evaluated = awards.evaluate_badges(get_session(), get_context(), get_verifier(), application,
                                       trusted=frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"]))
    try:
        report = awards.decide(evaluated, current_app.extensions["issuer.rules"], application).to_json()
    except RulesError as exc:
        raise click.ClickException(str(exc)) from None
    _print_report(report)
    sys.exit(0 if report["eligible"] else 1)


@award_group.command("claim")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--email", required=True, help="The email the badges were issued to.")
@click.option("--target", default=None, help="Ask for a specific award title.")
@click.option("--programme", default=None, help="Claim this parent programme's award (its code).")
@with_appcontext
def award_claim(files, email, target, programme) -> None:
    """Claim the award these badges earn; prints its URL (or the award already issued)."""
    from . import awards
    from .stacking import RulesError

    application = _application(files, email, target, None, programme)
    try:
        outcome = awards.claim(get_session(), get_context(), current_app.extensions["issuer.rules"],
                               get_verifier(), application,
                               trusted=frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"]), actor=actor())
    except (RulesError, awards.AwardError) as exc:
        raise click.ClickException(str(exc)) from None
    if outcome.award is None:
        _print_report(outcome.report)
        raise click.ClickException("not eligible: " + "; ".join(outcome.report.get("next") or ["see the report"]))
    status = "issued" if outcome.created else "already issued"
    click.echo(f"{status}: {outcome.award.title_en}: {outcome.award.credential_url}")


@award_group.command("check")
@click.option("--email", required=True, help="The learner's email.")
@with_appcontext
def award_check(email) -> None:
    """Run the rules over the badges this issuer already issued to a learner (who could apply?)."""
    from . import awards

    session = get_session()
    items = awards.issued_badges_of(session, email)
    if not items:
        raise click.ClickException(f"no badges were issued to {email}")
    application = awards.Application(normalise_email(email), items)
    evaluated = awards.evaluate_badges(session, get_context(), get_verifier(), application,
                                       trusted=frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"]))
    report = awards.decide(evaluated, current_app.extensions["issuer.rules"], application).to_json()
    _print_report(report)
    sys.exit(0 if report["eligible"] else 1)


mail_group = click.Group("mail", help="Emails to learners about their badges and awards.")


@mail_group.command("send")
@with_appcontext
def mail_send() -> None:
    """Deliver every message that is due now (by SMTP, or to the outbox folder without ISSUER_SMTP_URL)."""
    report = mail.deliver_pending(current_app._get_current_object(), limit=None)
    click.echo(f"{report.sent} sent, {report.retrying} to retry later, {report.failed} failed")


@mail_group.command("list")
@click.option("--status", type=click.Choice(mail.STATUSES), default=None, help="Only messages in this state.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@with_appcontext
def mail_list(status: str | None, limit: int) -> None:
    """List messages, newest first: id, kind, credential id, status, attempts, last error (no addresses)."""
    for row in mail.list_notifications(get_session(), status=status, limit=limit):
        click.echo(f"{row.id}  {row.kind:12} {row.credential_id:24} {row.status:7} {row.attempts:>2}  "
                   f"{row.last_error or ''}".rstrip())


@mail_group.command("retry")
@click.argument("notification_id")
@with_appcontext
def mail_retry(notification_id: str) -> None:
    """Put a failed (or waiting) message back in the queue, due now; `issuer mail send` or the server sends it."""
    try:
        row = mail.retry(get_session(), notification_id, actor=actor())
    except mail.MailError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{row.id}: pending, due now")


def _jsonable(value):
    if isinstance(value, bytes):
        import base64

        return {"base64": base64.b64encode(value).decode("ascii")}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def register_commands(app: Flask) -> None:
    for command in (init_command, serve_command, catalogue_group, issue_command, issue_batch_command,
                    verify_command, keys_group, token_group, backup_command, award_group, revoke_command,
                    mail_group, staff_group, console_group):
        app.cli.add_command(command)
    app.cli.add_command(audit_group)
    app.cli.add_command(restore_command)


def _create_app():
    from . import create_app

    return create_app(command_line=True)  # `issuer serve` checks the keys itself; `issuer keys` repairs them


main = FlaskGroup(create_app=_create_app, add_default_commands=False, add_version_option=False,
                  help="Open Badges 3.0 issuer: set up, issue, verify, manage keys and tokens.")


# --- the staff console (issue #8) ------------------------------------------------------------------------

staff_group = click.Group("staff", help="Staff accounts of the console (/console).")


@staff_group.command("create")
@click.option("--email", required=True)
@click.option("--role", "roles", required=True, multiple=True,
              help="registrar, catalogue_editor, auditor or administrator; repeat for several.")
@click.option("--name", default=None)
@click.option("--sso-only", is_flag=True, help="No password: the account signs in with single sign-on only.")
@click.option("--totp", is_flag=True, help="Require a TOTP code for a non-administrator too.")
@with_appcontext
def staff_create(email: str, roles: tuple[str, ...], name: str | None, sso_only: bool, totp: bool) -> None:
    """Create a staff account. The password comes from ISSUER_STAFF_PASSWORD or a prompt; an
    administrator's TOTP provisioning URI is printed once, for the authenticator app."""
    import os

    from . import staff

    password = None
    if not sso_only:
        password = os.environ.get("ISSUER_STAFF_PASSWORD") or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True)
    session = get_session()
    try:
        account = staff.create_account(session, email=email, roles=roles, name=name, password=password,
                                       totp=totp, source="cli", actor=actor())
    except staff.StaffError as exc:
        raise click.ClickException(str(exc)) from None
    session.commit()
    click.echo(f"created {account.email} ({account.roles.replace(' ', ', ')})")
    if account.totp_secret:
        click.echo("Add this to the authenticator app (shown once):")
        click.echo(staff.provisioning_uri(account, current_app.config["ISSUER_NAME"]))


@staff_group.command("list")
@with_appcontext
def staff_list() -> None:
    """Every staff account: email, roles, how it signs in, active or not."""
    from .models import StaffAccount

    for row in get_session().scalars(select(StaffAccount).order_by(StaffAccount.email)):
        how = ("password+totp" if row.totp_secret else "password") if row.password_hash else "sso"
        click.echo(f"{row.email:40} {row.roles.replace(' ', ','):32} {how:14} {'active' if row.active else 'inactive'}")


@staff_group.command("reset-link")
@click.option("--email", required=True)
@with_appcontext
def staff_reset_link(email: str) -> None:
    """Print a password reset link for a local account (good for 24 hours and one new password)."""
    from . import staff
    from .web.console import secret_key

    session = get_session()
    account = staff.find_account(session, email)
    if account is None:
        raise click.ClickException(f"no staff account for {email}")
    try:
        token = staff.make_reset_token(session, account, secret_key(current_app), actor=actor())
    except staff.StaffError as exc:
        raise click.ClickException(str(exc)) from None
    session.commit()
    click.echo(f"Password reset link for {account.email} (shown once; it works for {staff.RESET_HOURS} hours "
               "and for one new password):")
    click.echo(f"{current_app.config['ISSUER_BASE_URL']}/console/reset/{token}")


console_group = click.Group("console", help="The staff console's background work.")


@console_group.command("resume")
@with_appcontext
def console_resume() -> None:
    """Finish every cohort left queued, or running with no live worker (after a restart), here."""
    from . import staff

    count = staff.resume_jobs(current_app._get_current_object())
    click.echo(f"{count} cohort job(s) run to the end")

