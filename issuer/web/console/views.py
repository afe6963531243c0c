"""The console's pages. Each calls the same core functions as the JSON API and the command line:
issuing.issue / issue_rows (through staff's cohort jobs), revocation.revoke, issuing.store_catalogue,
awards.evaluate_badges / decide, tokens.create_token, the key ring's rotate."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, time, timedelta

from flask import Response, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func, or_, select

from ... import awards, issuing, mail, revocation, staff
from ...catalogue import CatalogueError, validate_catalogue
from ...credentials import normalise_email
from ...db import get_session
from ...identity import get_context, get_verifier, rotate_keys
from ...images import badge_svg
from ...models import (
    Achievement,
    ApiToken,
    AuditEntry,
    Award,
    AwardApplication,
    ConsoleJob,
    ConsoleJobRow,
    Credential,
    StaffAccount,
    utcnow,
)
from ...tokens import SCOPES, TokenError, create_token
from . import actor, bp, client_address, current_account, require, secret_key, start_session


@bp.get("/")
@require("console.view")
def home():
    db = get_session()
    jobs = db.scalars(select(ConsoleJob).order_by(ConsoleJob.created_at.desc()).limit(5)).all()
    return render_template("console/home.html", jobs=jobs,
                           badges=db.scalar(select(func.count()).select_from(Credential)),
                           courses=db.scalar(select(func.count()).select_from(Achievement)))


# --- catalogue ------------------------------------------------------------------------------------------

@bp.get("/catalogue")
@require("catalogue.view")
def catalogue():
    rows = get_session().scalars(select(Achievement).order_by(Achievement.code)).all()
    q = (request.args.get("q") or "").strip().lower()
    theme, area, level = (request.args.get(k) or None for k in ("theme", "area", "qf"))
    themes = {r.entry["theme"]["code"]: r.entry["theme"] for r in rows}

    def matches(r: Achievement) -> bool:
        e = r.entry
        text = " ".join([r.code, e["name"]["en"], e["name"]["zh-Hant"], e.get("cef_code") or ""]).lower()
        return ((not q or q in text) and (theme is None or e["theme"]["code"] == theme)
                and (area is None or e["area"] == area) and (level is None or str(e["qf_level"]) == level))

    return render_template("console/catalogue.html", rows=[r for r in rows if matches(r)], themes=themes,
                           chosen={"q": request.args.get("q", ""), "theme": theme, "area": area, "qf": level},
                           levels=sorted({r.entry["qf_level"] for r in rows}))


FIELDS = ("code", "name_en", "name_zh", "description_en", "description_zh", "criteria_en", "criteria_zh",
          "credits", "contact_hours", "theme_code", "theme_en", "theme_zh", "theme_colour", "area", "qf_level",
          "language", "cef_code")


def _number(text: str):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text  # the schema names the field
    return int(value) if value.is_integer() else value


def entry_from_form(form) -> dict:
    """A catalogue entry from the form's fields, shaped as the catalogue schema says (the schema validates)."""
    f = {k: (form.get(k) or "").strip() for k in FIELDS}
    languages = [t.strip() for t in f["language"].replace(";", ",").split(",") if t.strip()]
    entry = {
        "code": f["code"].upper(),
        "name": {"en": f["name_en"], "zh-Hant": f["name_zh"]},
        "description": {"en": f["description_en"], "zh-Hant": f["description_zh"]},
        "criteria": {"en": f["criteria_en"], "zh-Hant": f["criteria_zh"]},
        "credits": _number(f["credits"]),
        "contact_hours": _number(f["contact_hours"]),
        "theme": {"code": f["theme_code"], "en": f["theme_en"], "zh-Hant": f["theme_zh"]},
        "area": f["area"],
        "qf_level": _number(f["qf_level"]),
        "language": languages[0] if len(languages) == 1 else languages,
    }
    if f["theme_colour"]:
        entry["theme"]["colour"] = f["theme_colour"]
    if f["cef_code"]:
        entry["cef_code"] = f["cef_code"]
    return entry


def form_from_entry(e: dict) -> dict:
    lang = e.get("language")
    return {"code": e["code"], "name_en": e["name"]["en"], "name_zh": e["name"]["zh-Hant"],
            "description_en": e["description"]["en"], "description_zh": e["description"]["zh-Hant"],
            "criteria_en": e["criteria"]["en"], "criteria_zh": e["criteria"]["zh-Hant"],
            "credits": e["credits"], "contact_hours": e["contact_hours"], "theme_code": e["theme"]["code"],
            "theme_en": e["theme"]["en"], "theme_zh": e["theme"]["zh-Hant"],
            "theme_colour": e["theme"].get("colour", ""), "area": e["area"], "qf_level": e["qf_level"],
            "language": ", ".join(lang) if isinstance(lang, list) else lang, "cef_code": e.get("cef_code", "")}


@bp.route("/catalogue/new", methods=["GET", "POST"])
@require("catalogue.edit")
def course_new():
    return _course_form(None)


@bp.route("/catalogue/<code>/edit", methods=["GET", "POST"])
@require("catalogue.edit")
def course_edit(code: str):
    row = get_session().get(Achievement, code)
    if row is None:
        abort(404, f"no microcredential {code}")
    return _course_form(row)


def _course_form(row: Achievement | None):
    db = get_session()
    errors: list[str] = []
    form = form_from_entry(row.entry) if row is not None else {"area": "professional", "language": "en"}
    if request.method == "POST":
        form = {k: request.form.get(k, "") for k in FIELDS}
        entry = entry_from_form(request.form)
        if row is not None:
            entry["code"] = row.code  # the code names issued badges: it never changes
            if row.entry.get("image"):
                entry["image"] = row.entry["image"]
        try:
            (mc,) = validate_catalogue({"microcredentials": [entry]})
        except CatalogueError as exc:
            errors = list(exc.errors) if hasattr(exc, "errors") else [str(exc)]
        else:
            if row is None and db.get(Achievement, mc.code) is not None:
                errors = [_("A microcredential with the code %(code)s already exists.", code=mc.code)]
            else:
                retired = row.retired if row is not None else False
                issuing.store_catalogue(db, [mc], [entry], actor=actor())
                db.get(Achievement, mc.code).retired = retired
                db.add(AuditEntry(actor=actor(), action="catalogue.edit" if row else "catalogue.create",
                                  subject=mc.code, detail={"name": entry["name"]}))
                db.commit()
                flash(_("Saved %(code)s.", code=mc.code))
                return redirect(url_for("console.catalogue", q=mc.code))
    return render_template("console/course_form.html", row=row, form=form, errors=errors), 422 if errors else 200


@bp.get("/catalogue/preview.svg")
@require("catalogue.view")
def course_preview():
    """The badge image the form's values would make (the live preview beside the form)."""
    entry = entry_from_form(request.args)
    try:
        (mc,) = validate_catalogue({"microcredentials": [entry]})
    except CatalogueError as exc:
        return Response(str(exc), 422, mimetype="text/plain")
    return Response(badge_svg(mc), mimetype="image/svg+xml")


@bp.post("/catalogue/<code>/retire")
@require("catalogue.edit")
def course_retire(code: str):
    db = get_session()
    row = db.get(Achievement, code)
    if row is None:
        abort(404, f"no microcredential {code}")
    row.retired = request.form.get("retired", "1") == "1"
    db.add(AuditEntry(actor=actor(), action="catalogue.retire" if row.retired else "catalogue.reinstate",
                      subject=code, detail=None))
    db.commit()
    flash(_("%(code)s is retired: no new badges; those issued stay valid.", code=code) if row.retired
          else _("%(code)s is issued again.", code=code))
    return redirect(url_for("console.catalogue", q=code))


# --- issuing --------------------------------------------------------------------------------------------

def _open_courses():
    return get_session().scalars(select(Achievement).where(Achievement.retired.is_(False))
                                 .order_by(Achievement.code)).all()


@bp.route("/issue", methods=["GET", "POST"])
@require("credential.issue")
def issue_one():
    error = field = None
    form = request.form if request.method == "POST" else {}
    if request.method == "POST":
        recipient = {k: form.get(k, "").strip() for k in ("email", "name", "did") if form.get(k, "").strip()}
        body = {"achievement": form.get("achievement", ""), "recipient": recipient,
                "awarded_on": form.get("awarded_on") or None, "result": form.get("result") or None}
        db = get_session()
        try:
            outcome = issuing.issue(db, get_context(), issuing.parse_request(body), actor=actor())
        except issuing.IssueError as exc:
            db.rollback()
            error, field = str(exc), exc.field
        else:
            row = outcome.credential
            flash(_("Issued: %(url)s", url=row.credential_url) if outcome.created
                  else _("Already issued: %(url)s", url=row.credential_url))
            return redirect(url_for("console.learner", email=row.recipient_email))
    return render_template("console/issue.html", courses=_open_courses(), form=form, error=error, field=field), \
        400 if error else 200


@bp.route("/cohorts", methods=["GET", "POST"])
@require("credential.issue")
def cohort_upload():
    error = None
    if request.method == "POST":
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            error = _("Choose a CSV file.")
        else:
            try:
                job = staff.create_job(get_session(), upload.read(), upload.filename, actor=actor())
            except staff.StaffError as exc:
                error = str(exc)
            else:
                return redirect(url_for("console.job", job_id=job.id))
    jobs = get_session().scalars(select(ConsoleJob).order_by(ConsoleJob.created_at.desc()).limit(20)).all()
    return render_template("console/cohorts.html", error=error, jobs=jobs), 400 if error else 200


@bp.get("/cohorts/<job_id>")
@require("learners.view")
def job(job_id: str):
    db = get_session()
    found = db.get(ConsoleJob, job_id)
    if found is None:
        abort(404, "no such cohort")
    problems = db.scalar(select(func.count()).select_from(ConsoleJobRow).where(
        ConsoleJobRow.job_id == job_id, ConsoleJobRow.problem.is_not(None)))
    shown = db.scalars(select(ConsoleJobRow).where(ConsoleJobRow.job_id == job_id)
                       .order_by(ConsoleJobRow.problem.is_(None), ConsoleJobRow.line).limit(100)).all()
    if found.status in ("queued", "running"):
        staff.ensure_job_worker(current_app._get_current_object())
    return render_template("console/job.html", job=found, rows=shown, problems=problems,
                           aliases=issuing.CSV_ALIASES)


@bp.post("/cohorts/<job_id>/start")
@require("credential.issue")
def job_start(job_id: str):
    db = get_session()
    found = db.get(ConsoleJob, job_id)
    if found is None:
        abort(404, "no such cohort")
    try:
        staff.start_job(db, found, actor=actor())
    except staff.StaffError as exc:
        abort(exc.status, str(exc))
    staff.ensure_job_worker(current_app._get_current_object())
    return redirect(url_for("console.job", job_id=job_id))


@bp.route("/cohorts/<job_id>/cancel", methods=["GET", "POST"])
@require("cohort.cancel")
def job_cancel(job_id: str):
    """Stop a cohort, after a confirmation page: what was issued stays issued and valid."""
    db = get_session()
    found = db.get(ConsoleJob, job_id)
    if found is None:
        abort(404, "no such cohort")
    if request.method == "POST":
        try:
            staff.cancel_job(db, found, actor=actor())
        except staff.StaffError as exc:
            abort(exc.status, str(exc))
        flash(_("The cohort is cancelled. Badges already issued stay issued and valid; no more will be issued."))
        return redirect(url_for("console.job", job_id=job_id))
    return render_template("console/job_cancel.html", job=found, chunk=staff.CHUNK)


@bp.get("/cohorts/<job_id>/progress.json")
@require("learners.view")
def job_progress(job_id: str):
    found = get_session().get(ConsoleJob, job_id)
    if found is None:
        abort(404, "no such cohort")
    if found.status in ("queued", "running"):
        staff.ensure_job_worker(current_app._get_current_object())
    return jsonify(staff.progress(found))


@bp.get("/cohorts/<job_id>/results.csv")
@require("learners.view")
def job_results(job_id: str):
    if get_session().get(ConsoleJob, job_id) is None:
        abort(404, "no such cohort")
    return Response(staff.results_csv(get_session(), job_id), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="cohort-{job_id}-results.csv"'})


# --- learners and their credentials ----------------------------------------------------------------------

@bp.get("/learners")
@require("learners.view")
def learners():
    q = (request.args.get("q") or "").strip()
    found = []
    if q:
        like = f"%{q.lower()}%"
        rows = get_session().execute(
            select(Credential.recipient_email, func.max(Credential.recipient_name), func.count())
            .where(or_(func.lower(Credential.recipient_email).like(like),
                       func.lower(func.coalesce(Credential.recipient_name, "")).like(like)))
            .group_by(Credential.recipient_email).order_by(Credential.recipient_email).limit(100)).all()
        found = [{"email": e, "name": n, "badges": c} for e, n, c in rows]
    return render_template("console/learners.html", q=q, found=found)


@bp.get("/learners/view")
@require("learners.view")
def learner():
    email = normalise_email((request.args.get("email") or "").strip())
    db = get_session()
    badges = db.scalars(select(Credential).where(Credential.recipient_email == email)
                        .order_by(Credential.awarded_on.desc())).all()
    held = db.scalars(select(Award).where(Award.recipient_email == email).order_by(Award.created_at.desc())).all()
    if not badges and not held:
        abort(404, "no badge or award was issued to this email")
    names = {r.code: r.entry["name"] for r in db.scalars(select(Achievement))}
    return render_template("console/learner.html", email=email, badges=badges, awards=held, course_names=names)


def _credential(credential_id: str) -> Credential | Award:
    db = get_session()
    row = db.get(Credential, credential_id) or db.get(Award, credential_id)
    if row is None:
        abort(404, "no such badge or award")
    return row


def awards_that_would_fall(credential: Credential) -> list[dict]:
    """Each award counting this badge, and whether it would still hold without it (nothing is changed)."""
    found = revocation.awards_without(get_session(), current_app.extensions["issuer.rules"], credential)
    return [{"award": award, "falls": not holds} for award, _, holds in found]


@bp.route("/credentials/<credential_id>/revoke", methods=["GET", "POST"])
@require("credential.revoke")
def revoke(credential_id: str):
    row = _credential(credential_id)
    affected = awards_that_would_fall(row) if isinstance(row, Credential) else []
    error = None
    if request.method == "POST":
        db = get_session()
        try:
            outcome = revocation.revoke(db, current_app.extensions["issuer.rules"], credential_id,
                                        reason=request.form.get("reason"), category=request.form.get("category"),
                                        actor=actor())
        except revocation.RevocationError as exc:
            db.rollback()
            error = str(exc)
        else:
            fallen = [a for a in outcome.awards if a.get("outcome") == "revoked"]
            flash(_("Revoked %(url)s.", url=row.credential_url) + (" " + _("%(n)d award(s) revoked with it.",
                                                                          n=len(fallen)) if fallen else ""))
            return redirect(url_for("console.learner", email=row.recipient_email))
    return render_template("console/revoke.html", row=row, affected=affected, error=error,
                           categories=revocation.CATEGORIES, form=request.form), 400 if error else 200


@bp.post("/credentials/<credential_id>/resend")
@require("credential.resend")
def resend(credential_id: str):
    row = _credential(credential_id)
    db = get_session()
    note = mail.enqueue_issued(db, row, get_context())
    db.add(AuditEntry(actor=actor(), action="credential.resend", subject=row.credential_url,
                      detail={"notification": note.id if note else None}))
    db.commit()
    flash(_("The email about %(url)s is queued again.", url=row.credential_url))
    return redirect(url_for("console.learner", email=row.recipient_email))


@bp.route("/learners/check", methods=["GET", "POST"])
@require("award.check")
def award_check():
    """`issuer award check` from the console: the rules over the badges already issued to a learner."""
    email = normalise_email((request.values.get("email") or "").strip())
    report = error = None
    if request.method == "POST":
        db = get_session()
        items = awards.issued_badges_of(db, email)
        if not items:
            error = _("No badges were issued to %(email)s.", email=email)
        else:
            application = awards.Application(email, items)
            evaluated = awards.evaluate_badges(db, get_context(), get_verifier(), application,
                                               trusted=frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"]))
            report = awards.decide(evaluated, current_app.extensions["issuer.rules"], application).to_json()
            db.add(AuditEntry(actor=actor(), action="award.check", subject=email,
                              detail={"eligible": report["eligible"]}))
            db.commit()
    return render_template("console/award_check.html", email=email, report=report, error=error)


# --- award applications ---------------------------------------------------------------------------------

@bp.get("/applications")
@require("applications.view")
def applications():
    q = (request.args.get("q") or "").strip().lower()
    query = select(AwardApplication).order_by(AwardApplication.created_at.desc(), AwardApplication.id.desc())
    if q:
        query = query.where(AwardApplication.email.like(f"%{q}%"))
    rows = get_session().scalars(query.limit(200)).all()
    return render_template("console/applications.html", rows=rows, q=request.args.get("q", ""))


@bp.get("/applications/<int(min=1, max=2147483647):application_id>")
@require("applications.view")
def application(application_id: int):
    row = get_session().get(AwardApplication, application_id)
    if row is None:
        abort(404, "no such application")
    return render_template("console/application.html", row=row, report=row.report or {})


# --- audit ----------------------------------------------------------------------------------------------

def _audit_query():
    args = request.args
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if args.get("actor"):
        query = query.where(func.lower(AuditEntry.actor).like(f"%{args['actor'].strip().lower()}%"))
    if args.get("action"):
        query = query.where(AuditEntry.action == args["action"])
    for name, op in (("from", "ge"), ("to", "lt")):
        if args.get(name):
            try:
                day = date.fromisoformat(args[name])
            except ValueError:
                abort(400, f"{name} must be a date YYYY-MM-DD")
            moment = datetime.combine(day + (timedelta(days=1) if op == "lt" else timedelta()), time.min)
            moment = moment.replace(tzinfo=utcnow().tzinfo)
            query = query.where(AuditEntry.at >= moment if op == "ge" else AuditEntry.at < moment)
    return query


@bp.get("/audit")
@require("audit.view")
def audit():
    db = get_session()
    rows = db.scalars(_audit_query().limit(200)).all()
    actions = db.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)).all()
    return render_template("console/audit.html", rows=rows, actions=actions, args=request.args)


@bp.get("/audit.csv")
@require("audit.view")
def audit_csv():
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "subject", "detail"])
    for row in get_session().scalars(_audit_query()):
        writer.writerow([row.id, row.at.isoformat(), row.actor, row.action, row.subject or "",
                         json.dumps(row.detail, ensure_ascii=False) if row.detail is not None else ""])
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="audit.csv"'})


# --- keys and API tokens (administrator) ------------------------------------------------------------------

@bp.get("/keys")
@require("keys.view")
def keys():
    ctx = get_context()
    tokens = get_session().scalars(select(ApiToken).order_by(ApiToken.id.desc())).all()
    return render_template("console/keys.html", keys=ctx.keyring.all(), did=ctx.did, tokens=tokens, scopes=SCOPES)


@bp.route("/keys/rotate", methods=["GET", "POST"])
@require("keys.rotate")
def keys_rotate():
    ctx = get_context()
    current = sorted({k.algorithm for k in ctx.keyring.all() if k.status == "current"})
    if request.method == "POST":
        if request.form.get("confirm") != "yes":
            flash(_("Tick the box to confirm the rotation."))
            return redirect(url_for("console.keys_rotate"))
        chosen = [a for a in request.form.getlist("algorithm") if a in current] or current
        rotate_keys(current_app._get_current_object(), chosen, actor=actor())
        flash(_("New current keys: %(algs)s. The old keys stay published.", algs=", ".join(chosen)))
        return redirect(url_for("console.keys"))
    return render_template("console/rotate.html", algorithms=current)


@bp.post("/tokens")
@require("tokens.manage")
def token_create():
    db = get_session()
    name = (request.form.get("name") or "").strip() or "api"
    try:
        row, secret = create_token(db, name, request.form.getlist("scope"))
    except TokenError as exc:
        abort(400, str(exc))
    db.add(AuditEntry(actor=actor(), action="token.create", subject=name, detail={"scopes": row.scopes}))
    db.commit()
    # Shown once, on this response only (never stored, never in a redirect).
    return render_template("console/token_created.html", row=row, secret=secret)


@bp.post("/tokens/<int(min=1, max=2147483647):token_id>/revoke")
@require("tokens.manage")
def token_revoke(token_id: int):
    db = get_session()
    row = db.get(ApiToken, token_id)
    if row is None:
        abort(404, "no such token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.add(AuditEntry(actor=actor(), action="token.revoke", subject=row.name, detail={"id": row.id}))
        db.commit()
    flash(_("Token %(name)s revoked.", name=row.name))
    return redirect(url_for("console.keys"))


# --- staff accounts (administrator) -----------------------------------------------------------------------

@bp.route("/accounts", methods=["GET", "POST"])
@require("accounts.manage")
def accounts():
    db = get_session()
    error = uri = None
    if request.method == "POST":
        try:
            account = staff.create_account(db, email=request.form.get("email", ""),
                                           roles=request.form.getlist("role"), name=request.form.get("name"),
                                           password=request.form.get("password") or None,
                                           totp=bool(request.form.get("totp")), actor=actor())
        except staff.StaffError as exc:
            db.rollback()
            error = str(exc)
        else:
            db.commit()
            if account.totp_secret:
                uri = staff.provisioning_uri(account, current_app.config["ISSUER_NAME"])
            flash(_("Account %(email)s created.", email=account.email))
    rows = db.scalars(select(StaffAccount).order_by(StaffAccount.email)).all()
    return render_template("console/accounts.html", rows=rows, roles=staff.ROLES, error=error, uri=uri,
                           me=current_account()), 400 if error else 200


@bp.post("/accounts/<int(min=1, max=2147483647):account_id>/deactivate")
@require("accounts.manage")
def account_deactivate(account_id: int):
    db = get_session()
    row = db.get(StaffAccount, account_id)
    if row is None:
        abort(404, "no such account")
    if row.id == current_account().id:
        abort(409, "you cannot deactivate your own account")
    staff.deactivate(db, row, actor=actor())
    db.commit()
    flash(_("Account %(email)s deactivated.", email=row.email))
    return redirect(url_for("console.accounts"))


@bp.post("/accounts/<int(min=1, max=2147483647):account_id>/reset-link")
@require("accounts.manage")
def account_reset_link(account_id: int):
    """A password reset link for a local account, shown on this response only (never stored)."""
    db = get_session()
    row = db.get(StaffAccount, account_id)
    if row is None:
        abort(404, "no such account")
    try:
        token = staff.make_reset_token(db, row, secret_key(current_app), actor=actor())
    except staff.StaffError as exc:
        abort(exc.status, str(exc))
    db.commit()
    return render_template("console/reset_link.html", row=row, link=reset_link(token), hours=staff.RESET_HOURS)


def reset_link(token: str) -> str:
    return f"{current_app.config['ISSUER_BASE_URL']}/console/reset/{token}"


def _qr_image(uri: str) -> str:
    import segno

    return segno.make_qr(uri, error="m").svg_data_uri(scale=5, border=4)


def _totp_view(uri_for: StaffAccount, secret: str) -> dict:
    """What a page needs to show a new TOTP secret: the QR code of its otpauth URI, and the secret as text."""
    uri = pyotp_uri(uri_for, secret)
    return {"secret": secret, "uri": uri, "qr": _qr_image(uri),
            "grouped": " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))}


def pyotp_uri(account: StaffAccount, secret: str) -> str:
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=current_app.config["ISSUER_NAME"])


# --- your own account: password and authenticator app ------------------------------------------------------

@bp.route("/account/password", methods=["GET", "POST"])
@require("console.view")
def account_password():
    me = current_account()
    error = field = None
    status = 200
    if request.method == "POST":
        db = get_session()
        try:
            staff.change_password(db, me, request.form.get("current") or "", request.form.get("password") or "",
                                  request.form.get("again") or "", client_address())
        except staff.StaffError as exc:
            db.rollback()
            error, field, status = str(exc), exc.field, exc.status
        else:
            start_session(me)  # other sessions of this account end; this one goes on
            flash(_("Your password is changed. Other sessions of your account are signed out."))
            return redirect(url_for("console.account_password"))
    return render_template("console/password.html", me=me, error=error, field=field,
                           minimum=staff.MIN_PASSWORD), status


@bp.route("/account/totp", methods=["GET", "POST"])
@require("console.view")
def account_totp():
    """Set up or replace the authenticator app: a new secret (QR code and text), saved only when a current
    code from it and the account's password are given. The secret waits in the signed session cookie."""
    from flask import session as cookie

    me = current_account()
    error = field = None
    status = 200
    pending = cookie.get("totp_pending")
    if not isinstance(pending, dict) or pending.get("id") != me.id or not pending.get("secret"):
        pending = {"id": me.id, "secret": staff.new_totp_secret()}
        cookie["totp_pending"] = pending
    if request.method == "POST" and not me.password_hash:
        abort(409, "this account signs in with single sign-on; its second factor is the school's")
    if request.method == "POST":
        db = get_session()
        try:
            staff.reauthenticate(db, me, request.form.get("current") or "", client_address(),
                                 action="staff.totp_setup")
            staff.enrol_totp(db, me, pending["secret"], request.form.get("code") or "", actor=actor())
        except staff.StaffError as exc:
            db.rollback()
            error, field, status = str(exc), exc.field, exc.status
        else:
            db.commit()
            cookie.pop("totp_pending", None)
            start_session(me)
            flash(_("Your authenticator app is set up. Sign-ins now need a code from it."))
            return redirect(url_for("console.account_password"))
    return render_template("console/totp.html", me=me, error=error, field=field,
                           totp=_totp_view(me, pending["secret"])), status


# --- password reset through a link an administrator made (no sign-in) -----------------------------------

@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset(token: str):
    from flask import session as cookie

    db = get_session()
    try:
        account = staff.account_for_reset(db, token, secret_key(current_app))
    except staff.StaffError as exc:
        return render_template("console/reset.html", invalid=str(exc), account=None), exc.status
    enrol = None
    if staff.needs_totp(account) and not account.totp_secret:
        pending = cookie.get("reset_totp")
        if not isinstance(pending, dict) or pending.get("id") != account.id or not pending.get("secret"):
            pending = {"id": account.id, "secret": staff.new_totp_secret()}
            cookie["reset_totp"] = pending
        enrol = _totp_view(account, pending["secret"])
    error = field = None
    if request.method == "POST":
        try:
            staff.reset_password(db, token, secret_key(current_app), request.form.get("password") or "",
                                 request.form.get("again") or "", totp_secret=enrol["secret"] if enrol else None,
                                 code=request.form.get("code"))
        except staff.StaffError as exc:
            db.rollback()
            error, field = str(exc), exc.field
        else:
            cookie.clear()
            flash(_("Your new password is set. Sign in with it."))
            return redirect(url_for("console.sign_in"))
    return render_template("console/reset.html", invalid=None, account=account, enrol=enrol, error=error,
                           field=field, minimum=staff.MIN_PASSWORD), 400 if error else 200
