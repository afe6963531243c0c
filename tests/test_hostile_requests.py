"""Hostile request bodies on every endpoint that reads JSON, and memory bounds for the bombs (issue #9).

tests/test_hostile_input.py posts the corpus to the endpoints that read *credentials*. Here the same
kinds of damage — malformed, duplicate names, NaN, absurd nesting, invalid UTF-8, a BOM, oversized — go
to every endpoint whose request body is JSON (issuing, the VC API, awards, wallet offers and exchanges,
OpenID4VCI), with valid tokens so that the body really is read. Each must be a 4xx that names the
problem, quickly, with no table gaining a row. A valid issuing request with a duplicate member name is
the case that matters most: before, the last value silently won and a badge was issued.

The bombs of the corpus are also measured with tracemalloc: reading them must not allocate anywhere near
what they would expand to.
"""

from __future__ import annotations

import io
import json
import time
import tracemalloc

import pytest
from sqlalchemy import func, select

from issuer import formats, status
from issuer.db import get_session
from issuer.models import Base
from tests import hostile
from tests.hostile import REJECT
from tests.test_awards import AI_CERTIFICATE, LEARNER, issue_badges
from tests.test_hostile_input import deadline

SECONDS = 10
MiB = 1024 * 1024

# name → (body, a fragment the 4xx message must contain)
BODIES = {
    "malformed": (b'{"achievement": ', "not valid JSON"),
    "duplicate-member": (b'{"a": 1, "a": 2}', "duplicate member name 'a'"),
    "nan": (b'{"a": NaN}', "NaN"),
    "infinity": (b'{"a": -Infinity}', "Infinity"),
    "deep-arrays": (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    "deep-objects": (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested too deep"),
    "just-too-deep": (b'{"a":' + b"[" * 64 + b"]" * 64 + b"}", "nested too deep (65 levels"),
    "invalid-utf8": (hostile.file("invalid-utf8.json"), "UTF-8"),
    "bom": ("\ufeff".encode() + b'{"a": 1}', "not valid JSON"),
    "empty": (b"", "empty"),
}


def table_counts(app) -> dict[str, int]:
    """Rows in every table: 'nothing stored' means none of these changes."""
    with app.app_context():
        session = get_session()
        found = {table.name: session.scalar(select(func.count()).select_from(table))
                 for table in Base.metadata.sorted_tables}
        session.rollback()
        return found


def post(client, url: str, body: bytes, headers: dict, content_type: str = "application/json"):
    start = time.perf_counter()
    with deadline(SECONDS):
        response = client.post(url, data=body, content_type=content_type, headers=headers)
    assert time.perf_counter() - start < SECONDS
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    return response


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def endpoints(client, make_token) -> list[tuple[str, dict]]:
    """Every JSON endpoint, with a token that lets the request reach its body."""
    issue, admin, revoke = make_token("issue"), make_token("admin"), make_token("revoke")
    (badge,) = issue_badges(client, issue, AI_CERTIFICATE[:1])
    offer = client.post(f"/api/v1/credentials/{badge['id']}/exchange", headers=bearer(issue), json={})
    assert offer.status_code == 201, offer.get_json()
    exchange = offer.get_json()["exchange_url"]
    urls = [
        ("/api/v1/credentials", bearer(issue)),
        ("/api/v1/achievements", bearer(admin)),
        (f"/api/v1/credentials/{badge['id']}/revoke", bearer(revoke)),
        ("/api/v1/verify", {}),
        ("/api/v1/awards/evaluate", {}),
        ("/api/v1/awards", {}),
        (f"/api/v1/credentials/{badge['id']}/offer", bearer(issue)),
        (f"/credentials/{badge['id']}/wallet-offer", {}),
        (f"/api/v1/credentials/{badge['id']}/exchange", bearer(issue)),
        ("/credentials/issue", bearer(issue)),
        ("/credentials/verify", {}),
        ("/presentations/verify", {}),
        (exchange[exchange.index("/exchanges/"):], {}),
    ]
    return urls


# An empty body is allowed here (the defaults); every other endpoint needs one.
OPTIONAL_BODY = ("/offer", "/exchange")


@pytest.mark.parametrize("name", list(BODIES))
def test_hostile_json_bodies_are_refused_on_every_json_endpoint(app, client, endpoints, name):
    body, message = BODIES[name]
    before = table_counts(app)
    for url, headers in endpoints:
        if name == "empty" and url.endswith(OPTIONAL_BODY):
            continue
        response = post(client, url, body, headers)
        problem = response.get_json()
        assert response.status_code == 400, (url, response.status_code, problem)
        assert response.mimetype == "application/problem+json", url
        assert message.lower() in problem["detail"].lower(), (url, problem["detail"])
        assert "Traceback" not in problem["detail"]
    assert table_counts(app) == before, f"{name} stored something"


def test_an_oversized_json_body_is_413_on_every_json_endpoint(app, client, endpoints):
    body = b'{"a": "' + b"x" * (5 * MiB) + b'"}'
    before = table_counts(app)
    for url, headers in endpoints:
        response = post(client, url, body, headers)
        assert response.status_code == 413, (url, response.status_code)
        assert response.mimetype in ("application/problem+json", "application/json"), url
        assert response.get_json()["detail"], url
    assert table_counts(app) == before


def test_a_valid_issuing_request_with_a_duplicate_member_issues_nothing(app, client, issue_token):
    code = client.get("/api/v1/achievements").get_json()["achievements"][0]["code"]
    good = json.dumps({"achievement": code, "recipient": {"email": LEARNER}})
    twice = good[:-1] + f', "achievement": "{code}"}}'
    before = table_counts(app)
    response = post(client, "/api/v1/credentials", twice.encode(), bearer(issue_token))
    assert response.status_code == 400
    assert "duplicate member name 'achievement'" in response.get_json()["detail"]
    assert table_counts(app) == before
    # the same request without the repetition is issued, so the refusal above was for the duplicate
    assert post(client, "/api/v1/credentials", good.encode(), bearer(issue_token)).status_code == 201


def test_a_credential_wrapped_in_a_verify_request_keeps_its_duplicate_names_refused(client, issue_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    text = client.get(f"/credentials/{badge['id']}.json").get_data(as_text=True)
    inner = text.rstrip()[:-1] + ', "name": "Another name"}'  # a second "name" after the signed one
    wrapped = '{"credential": ' + inner + "}"
    response = post(client, "/api/v1/verify", wrapped.encode(), {})
    assert response.status_code == 400
    assert "duplicate member name 'name'" in response.get_json()["detail"]


def test_form_fields_holding_json_are_read_strictly(app, client):
    before = table_counts(app)
    for field, value, why in (("presentation", '{"type": "VerifiablePresentation", "type": "x"}', "duplicate"),
                              ("presentation", "[" * 10_000 + "]" * 10_000, "nested too deep"),
                              ("target", '{"level": "Certificate", "level": "Diploma"}', "duplicate")):
        data = {field: value, "credentials": (io.BytesIO(b"{}"), "badge.json", "application/json")}
        if field == "target":
            data["email"] = LEARNER
        with deadline(SECONDS):
            response = client.post("/api/v1/awards/evaluate", data=data, content_type="multipart/form-data")
        assert response.status_code == 400, (field, response.get_json())
        detail = response.get_json()["detail"]
        assert f"form field {field}" in detail and why in detail, detail
    assert table_counts(app) == before


@pytest.fixture
def access_token(client, issue_token) -> str:
    from tests.test_oid4vci import ready

    _, _, access = ready(client, issue_token)
    return access


@pytest.mark.parametrize("name", [n for n in BODIES if n not in ("empty",)])
def test_hostile_openid4vci_credential_requests_are_invalid_requests(app, client, access_token, name):
    body, _ = BODIES[name]
    before = table_counts(app)
    response = post(client, "/oid4vci/credential", body, bearer(access_token))
    answer = response.get_json()
    assert response.status_code == 400, (response.status_code, answer)
    assert answer["error"] == "invalid_credential_request", answer
    assert answer["error_description"]
    assert table_counts(app) == before


# --- memory: reading a bomb must not expand it -----------------------------------------------------------

def peak_while(call) -> tuple[int, float]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = time.perf_counter()
    try:
        call()
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, elapsed


def _bombs() -> list[hostile.Case]:
    credential = json.dumps({"@context": ["https://www.w3.org/ns/credentials/v2"], "type": ["VerifiableCredential"]})
    named = {"huge-json", "deep-nesting", "deep-nesting-objects", "svg-billion-laughs", "svg-external-entity",
             "pdf-bomb-attachment", "pdf-huge-attachment", "pdf-many-attachments", "png-itxt-zlib-bomb",
             "png-ztxt-zlib-bomb", "png-huge-chunk-length"}
    cases = hostile.json_cases() + hostile.svg_cases() + hostile.pdf_cases() + hostile.png_cases(credential)
    chosen = [case for case in cases if case.name in named]
    assert {case.name for case in chosen} == named
    return chosen


BOMBS = _bombs()


@pytest.mark.parametrize("case", BOMBS, ids=[c.name for c in BOMBS])
def test_reading_a_bomb_stays_within_a_small_memory_bound(case):
    """Each of these would take 64 MiB or more (or unbounded recursion) if read naively; reading must be
    refused within a few times the input's own size, in well under a second or two."""
    assert case.expect == REJECT

    def read():
        with pytest.raises(formats.FormatError):
            formats.parse_submission(case.data, case.mimetype, case.filename)

    peak, elapsed = peak_while(read)
    allowed = 16 * MiB + 4 * len(case.data)
    assert peak < allowed, f"{case.name}: {peak / MiB:.1f} MiB at peak (allowed {allowed / MiB:.1f})"
    assert elapsed < 5, f"{case.name}: {elapsed:.1f} s"


def test_a_gzip_bomb_status_list_stays_within_the_decoding_cap_in_memory():
    encoded = hostile.gzip_bomb_list()  # 64 MiB once expanded

    def read():
        with pytest.raises(status.StatusError, match="expands beyond"):
            status.Bitstring.decode(encoded)

    peak, elapsed = peak_while(read)
    # the cap's worth of output and one copy of it while appending: bounded by the cap, not by the bomb
    assert peak < 2 * status.MAX_DECODED_BYTES + 4 * MiB, f"{peak / MiB:.1f} MiB at peak"
    assert elapsed < 5
