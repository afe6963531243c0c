"""Pages for people: verify a badge, apply for a Certificate or Diploma, browse the catalogue."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, current_app, render_template, request
from flask_babel import lazy_gettext as _l

from .. import awards
from ..db import get_session
from ..formats import FormatError, parse_submission
from ..identity import get_context, get_verifier
from ..models import Achievement
from ..stacking import RulesError
from .awards import learner_actor, uploaded_badges

bp = Blueprint("pages", __name__)

# What each check means, for someone who has never heard of a proof or a DID.
# Lazy: the words are looked up in the reader's language when the page is rendered.
CHECK_WORDS = {
    "schema": (_l("Format"), _l("The file is a well-formed Open Badges 3.0 credential.")),
    "jsonld": (_l("Vocabulary"), _l("Every field means what the Open Badges standard says it means.")),
    "proof": (_l("Signature"), _l("The issuer's digital signature matches the content: nothing was changed since.")),
    "key_provenance": (_l("Issuer"), _l("The key that signed it belongs to the issuer named in it.")),
    "validity_window": (_l("Dates"), _l("It is valid today: not before its start date, not after its end date.")),
    "recipient": (_l("Recipient"), _l("It was issued to the email address you gave.")),
    "status": (_l("Status"), _l("It has not been revoked by the issuer.")),
}


@bp.route("/verify", methods=["GET", "POST"])
def verify_page():
    result = error = None
    if request.method == "POST":
        upload = request.files.get("file")
        pasted = (request.form.get("credential") or "").strip()
        email = (request.form.get("email") or "").strip() or None
        try:
            if upload and upload.filename:
                submission = parse_submission(upload.read(), upload.mimetype, upload.filename)
            elif pasted:
                submission = parse_submission(pasted.encode("utf-8"), None, None)
            else:
                raise FormatError("paste a credential or choose a file to verify")
            result = get_verifier().verify_submission(submission, recipient_email=email).to_json()
            result["checked_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except FormatError as exc:
            error = str(exc)
    status = 400 if error else 200
    return render_template("verify.html", result=result, error=error, words=CHECK_WORDS), status


@bp.route("/awards/apply", methods=["GET", "POST"])
def apply_page():
    """Learners upload the badges they hold, see the decision in plain words, and claim the award."""
    report = error = award = None
    if request.method == "POST":
        rules = current_app.extensions["issuer.rules"]
        try:
            badges = uploaded_badges(max_badges=rules.max_badges)
            body = {"recipient": {"email": request.form.get("email", "")},
                    "credentials": [badge.credential if badge.jwt is None else badge.jwt for badge in badges]}
            if request.form.get("target"):
                body["target"] = request.form["target"]
            application = awards.parse_application(body, max_badges=rules.max_badges, allow_as_of=False)
            application.items = badges
            session, ctx, verifier = get_session(), get_context(), get_verifier()
            if request.form.get("action") == "claim":
                outcome = awards.claim(session, ctx, rules, verifier, application,
                                       trusted=frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"]),
                                       actor=learner_actor(application.email))
                report, award = outcome.report, outcome.award
            else:
                evaluated = awards.evaluate_badges(session, ctx, verifier, application,
                                                   trusted=frozenset(current_app.config["ISSUER_TRUSTED_ISSUERS"]))
                report = awards.decide(evaluated, rules, application).to_json()
        except (FormatError, awards.AwardError, RulesError) as exc:
            error = str(exc)
        # Kept for the staff console's list of applications (issue #8).
        from .. import staff

        award_id = award.id if award is not None else None
        get_session().rollback()
        staff.record_application(get_session(), email=request.form.get("email", ""),
                                 action="claim" if request.form.get("action") == "claim" else "evaluate",
                                 target=request.form.get("target"), report=report, award_id=award_id, error=error)
    status = 400 if error else 200
    return render_template("apply.html", report=report, error=error, award=award, form=request.form), status


@bp.get("/catalogue")
def catalogue_page():
    """Browse microcredentials by theme, area and QF level."""
    rows = get_session().query(Achievement).filter(Achievement.retired.is_(False)).order_by(Achievement.code).all()
    entries = [row.entry for row in rows]
    theme, area, level = (request.args.get(k) or None for k in ("theme", "area", "qf"))
    shown = [e for e in entries
             if (theme is None or e["theme"]["code"] == theme) and (area is None or e["area"] == area)
             and (level is None or str(e["qf_level"]) == level)]
    themes = {e["theme"]["code"]: e["theme"] for e in entries}
    return render_template("catalogue.html", entries=shown, themes=themes, chosen={"theme": theme, "area": area,
                           "qf": level}, levels=sorted({e["qf_level"] for e in entries}))


