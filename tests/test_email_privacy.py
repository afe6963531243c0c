"""The learner's email address never appears in a public page, a response, a log record or a stored credential.

One learner's life through the service, with every log record captured at DEBUG: issued, shown on the public
pages (HTML, JSON, JWT, downloads), verified (with and without their address, by the API, the page and the VC
API), a failed award application (API, page and evaluation), a wallet offer, then revoked and verified again.
"""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote

from sqlalchemy import select

from issuer.db import get_session
from issuer.models import AuditEntry, Credential

from .test_awards import AI_CERTIFICATE, auth, issue_badges

EMAIL = "Chan.Tai-Man.8812@Learner.Example.HK"
LOCAL = "Chan.Tai-Man.8812"
OTHER = "someone.else@example.com"


def needles() -> list[str]:
    """The address and its local part, as typed, lower-cased (as we normalise it) and URL-encoded."""
    found = set()
    for value in (EMAIL, LOCAL):
        found |= {value, value.lower(), quote(value, safe=""), quote(value.lower(), safe="")}
    return sorted(found)


def context(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 80):at + len(needle) + 40]


class Seen:
    """Every public answer, kept to be searched for the address afterwards."""

    def __init__(self, client):
        self.client = client
        self.answers: list[tuple[str, int, str]] = []

    def __call__(self, method: str, path: str, **kwargs):
        response = getattr(self.client, method)(path, **kwargs)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        body = response.get_data().decode("latin-1")  # bytes of images too, searched as text
        self.answers.append((f"{method.upper()} {path}", response.status_code, headers + "\n\n" + body))
        return response


def test_the_learners_email_never_appears_in_public_answers_logs_or_stored_credentials(app, client, make_token,
                                                                                      caplog):
    caplog.set_level(logging.DEBUG)
    # Every logger at DEBUG, SQLAlchemy's statements included (it sets its own loggers to WARNING).
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    issue_token, revoke_token = make_token("issue"), make_token("revoke")
    public = Seen(client)

    badge = issue_badges(client, issue_token, AI_CERTIFICATE[:1], email=EMAIL)[0]
    (theirs,) = issue_badges(client, issue_token, AI_CERTIFICATE[1:2], email=OTHER)
    url_path = "/" + badge["url"].split("/", 3)[3]

    # Public pages and downloads.
    page = public("get", url_path, headers={"Accept": "text/html"})
    assert page.status_code == 200
    document = public("get", f"{url_path}.json")
    assert document.status_code == 200
    credential = document.get_json()
    for suffix in (".jwt", ".png", ".svg", "/qr.svg"):
        public("get", url_path + suffix)
    public("get", url_path, headers={"Accept": "application/json"})

    # The recipient is a salted hash, in the credential as served.
    (identity,) = credential["credentialSubject"]["identifier"]
    assert identity["hashed"] is True and identity["identityHash"].startswith("sha256$") and identity["salt"]

    # Verifying, with the right address, the wrong one, and someone else's badge with this learner's address.
    right = public("post", "/api/v1/verify", json={"credential": credential, "recipient_email": EMAIL})
    assert right.get_json()["verified"] is True
    assert public("post", "/api/v1/verify", json={"credential": credential,
                                                  "recipient_email": OTHER}).get_json()["verified"] is False
    public("post", "/api/v1/verify", json={"credential": theirs["credential"], "recipient_email": EMAIL})
    public("post", "/api/v1/verify", data={"recipient_email": EMAIL,
                                           "file": (io.BytesIO(json.dumps(credential).encode()),
                                                    "badge.json")})
    public("post", "/verify", data={"credential": json.dumps(theirs["credential"]), "email": EMAIL},
           headers={"Accept": "text/html"})
    public("post", "/credentials/verify", json={"verifiableCredential": credential})

    # A failed award application: one badge is far from a certificate, another is someone else's.
    application = {"recipient": {"email": EMAIL}, "credentials": [credential, theirs["credential"]]}
    refused = public("post", "/api/v1/awards", json=application)
    assert refused.status_code == 422
    public("post", "/api/v1/awards/evaluate", json=application)
    public("post", "/api/v1/awards", json={"recipient": {"email": EMAIL + "x"}, "credentials": [credential]})
    public("post", "/api/v1/awards", json={"recipient": {"email": LOCAL + "@"}, "credentials": [credential]})
    public("post", "/awards/apply", data={"email": EMAIL, "credentials": json.dumps(theirs["credential"])},
           headers={"Accept": "text/html"})

    # A successful claim too (its audit entry names the learner).
    more = issue_badges(client, issue_token, AI_CERTIFICATE[1:], email=EMAIL)
    claimed = public("post", "/api/v1/awards", json={"recipient": {"email": EMAIL},
                                                     "credentials": [credential] + [b["credential"] for b in more]})
    assert claimed.status_code == 201, claimed.get_json()

    # The learner's wallet offer from the public page: wrong address refused, right one accepted.
    public("post", f"/credentials/{badge['id']}/wallet-offer", json={"email": OTHER})
    public("post", f"/credentials/{badge['id']}/wallet-offer", json={"email": EMAIL})

    # Revocation, then the public page and verification again.
    revoked = client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth(revoke_token),
                          json={"reason": "issued to the wrong learner", "category": "issued in error"})
    assert revoked.status_code == 200, revoked.get_json()
    public.answers.append(("POST revoke (staff)", revoked.status_code, revoked.get_data(as_text=True)))
    public("get", url_path, headers={"Accept": "text/html"})
    again = public("post", "/api/v1/verify", json={"credential": credential, "recipient_email": EMAIL})
    assert again.get_json()["verified"] is False

    found = []
    for where, status, text in public.answers:
        assert status < 500, where
        found += [f"{where} ({status}) shows {n!r}: …{context(text, n)}…" for n in needles() if n in text]

    logged = [(record.name, record.getMessage() + (record.exc_text or "")) for record in caplog.records]
    assert logged, "nothing was logged at DEBUG: the capture is not working"
    for name, message in logged:
        found += [f"a log record of {name} has {n!r}: …{context(message, n)}…" for n in needles() if n in message]

    # The credential as stored (document and JWT) holds only the salted hash; the audit log names the
    # learner by a masked address at most.
    with app.app_context():
        entries = get_session().scalars(select(AuditEntry)).all()
        assert entries
        for entry in entries:
            text = json.dumps([entry.actor, entry.subject, entry.detail], ensure_ascii=False)
            found += [f"audit entry {entry.action} has {n!r}: {text[:300]}" for n in needles() if n in text]
        assert not found, "\n".join(found)
        rows = get_session().scalars(select(Credential)).all()
        assert rows
        for row in rows:
            for needle in needles() + [OTHER]:
                assert needle not in row.document and needle not in (row.jwt or ""), row.id
