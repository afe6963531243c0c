"""Property-based tests (hypothesis) of every parser a stranger can reach.

Each parser gets random bytes and, more usefully, valid documents with mutations (flipped, deleted,
inserted and duplicated bytes; values swapped for random JSON). The properties:

* the parser raises nothing but its module's documented error type (never a KeyError, a RecursionError,
  a library's own exception...), so the web layer can always answer 4xx with the message;
* it answers in bounded time (hypothesis ``deadline``);
* valid inputs round-trip: bake then unbake gives the payload back, sign then verify gives the
  credential back, and a signed JWT changed in any one character no longer verifies.

The examples per property are modest by default (CI); ``HYPOTHESIS_PROFILE=long`` runs many more.
Nothing here opens a connection that leaves the machine: DNS answers come from a stub that knows no
name, and any connect to a non-loopback address fails the test.
"""

from __future__ import annotations

import base64
import io
import json
import os
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from issuer import awards, issuing, oid4vci, staff, status, vcapi
from issuer.baking import BakingError, bake_png, bake_svg, unbake_png, unbake_svg
from issuer.formats import FormatError, parse_json_object, parse_submission
from issuer.keys import SigningKey
from issuer.multikey import did_key
from issuer.parchment import ParchmentError, attached_credential
from issuer.presentations import (
    ChallengeIssuer,
    MemoryChallengeStore,
    PresentationError,
    create_presentation,
    verify_presentation,
)
from issuer.proofs import create_eddsa_rdfc_2022
from issuer.resolve import KeyResolver
from issuer.vcjwt import JwtError, parse_compact, sign_vc_jwt, strip_registered_claims, verify_vc_jwt
from tests.conftest import loopback_only_network
from tests.corpus import data_analysis_badge

# --- how hard to try --------------------------------------------------------------------------------------

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_EXAMPLES = {"ci": 150, "long": 3000}
EXAMPLES = _EXAMPLES.get(PROFILE, _EXAMPLES["ci"])
# Generous for a slow CI machine, tight enough to catch a quadratic parser or a hang.
DEADLINE = timedelta(seconds=2)

# database=None: no .hypothesis folder in the working tree; a failure prints its reproducing example.
FUZZ = settings(max_examples=EXAMPLES, deadline=DEADLINE, database=None)
# Slower properties (RSA/PDF/HTTP) get fewer examples, still scaled by the profile.
FUZZ_SLOW = settings(FUZZ, max_examples=max(EXAMPLES // 3, 30))


# --- inputs -----------------------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` after one to four edits: flip, delete, insert, duplicate a slice, truncate."""
    data = bytearray(original)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "delete", "insert", "duplicate", "truncate", "set"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(min_value=1, max_value=64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "duplicate" and data:
            data[at:at] = data[at : at + draw(st.integers(min_value=1, max_value=256))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


@st.composite
def json_mutated(draw, document: dict) -> dict:
    """``document`` with one to three members, anywhere in it, replaced by random JSON or removed."""
    doc = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        parent, key = doc, None
        for _depth in range(draw(st.integers(min_value=0, max_value=4))):
            children = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            if not children:
                break
            key = draw(st.sampled_from(children))
            if not isinstance(parent[key], (dict, list)) or not parent[key]:
                break
            parent, key = parent[key], None
        if key is None:
            children = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            if not children:
                continue
            key = draw(st.sampled_from(children))
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = draw(json_values)
    return doc


# --- fixed material: keys, a credential, images ------------------------------------------------------------

HOLDER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
HOLDER = did_key(HOLDER_KEY.public_key())
HOLDER_VM = f"{HOLDER}#{HOLDER.removeprefix('did:key:')}"
ISSUER_KEY = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
ISSUER = did_key(ISSUER_KEY.public_key())
ISSUER_VM = f"{ISSUER}#{ISSUER.removeprefix('did:key:')}"
DOMAIN = "issuer.example"

CREDENTIAL = data_analysis_badge(ISSUER, HOLDER)
CREDENTIAL_TEXT = json.dumps(CREDENTIAL, ensure_ascii=False)
SVG = ('<?xml version="1.0" encoding="UTF-8"?>\n'
       '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="4"/></svg>\n')


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (31, 78, 121)).save(out, "PNG")
    return out.getvalue()


PNG = _png()
BAKED_PNG = bake_png(PNG, CREDENTIAL_TEXT)
BAKED_SVG = bake_svg(SVG, CREDENTIAL_TEXT, jwt=False).encode("utf-8")
ES256 = SigningKey.generate("ES256")
EDDSA = SigningKey.generate("Ed25519")
JWT_ES256 = sign_vc_jwt(CREDENTIAL, ES256, f"{ISSUER}#{ES256.kid}")
JWT_EDDSA = sign_vc_jwt(CREDENTIAL, EDDSA, f"{ISSUER}#{EDDSA.kid}")


def _parchment_pdf(attachments: dict[str, bytes]) -> bytes:
    """A small PDF with files attached, as a parchment carries its credential (core font, no Noto)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="Parchment")
    for name, content in attachments.items():
        pdf.embed_file(bytes=content, basename=name, desc="credential")
    return bytes(pdf.output())


PDF = _parchment_pdf({"credential.json": CREDENTIAL_TEXT.encode("utf-8"), "credential.jwt": JWT_ES256.encode()})

CSV_HEADER = "email,name,achievement,award_date,grade\n"
CSV = (CSV_HEADER + "chan@example.edu.hk,陳大文 Chan Tai Man,AI-101,2026-01-05,A\n"
       'lee@example.edu.hk,"Lee, Siu Ming",DA-101,,"B+"\n').encode("utf-8")


@pytest.fixture(scope="module", autouse=True)
def nothing_leaves_the_machine():
    """Every DNS name is unknown, and a connection to anything but loopback fails the test. Module-wide,
    so hypothesis examples share it (a function-scoped fixture is not reset between examples)."""
    with loopback_only_network("a parser"):
        yield


# --- the submission reader (formats.py): JSON, JWS, PNG, SVG, PDF -------------------------------------------

def _read(data: bytes, content_type: str | None = None, filename: str | None = None) -> None:
    try:
        submission = parse_submission(data, content_type, filename)
    except FormatError as exc:
        assert str(exc), "a FormatError must say what is wrong"
        return
    assert (submission.credential is None) != (submission.jwt is None)
    if submission.credential is not None:
        assert isinstance(submission.credential, dict)


@FUZZ
@given(st.binary(max_size=4096), st.sampled_from([None, "application/json", "image/svg+xml", "text/plain"]),
       st.sampled_from([None, "badge.svg", "badge.png", "badge.pdf", "badge.json"]))
def test_random_bytes_are_read_or_refused_with_a_format_error(data, content_type, filename):
    _read(data, content_type, filename)


@FUZZ
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n", b"<svg ", b"{", b"[", b"eyJ", b"\xef\xbb\xbf{",
                        b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'>"]),
       st.binary(max_size=2048))
def test_bytes_that_start_like_a_known_format_are_read_or_refused(prefix, rest):
    _read(prefix + rest)


@FUZZ
@given(st.text(max_size=2000))
def test_any_text_is_read_or_refused(text):
    _read(text.encode("utf-8", "surrogatepass"))
    try:
        parse_submission(text)  # a str too, lone surrogates included
    except FormatError:
        pass


@FUZZ
@given(mutated(CREDENTIAL_TEXT.encode("utf-8")))
def test_a_mutated_json_credential_is_read_or_refused(data):
    _read(data)


@FUZZ
@given(json_mutated(CREDENTIAL))
def test_a_credential_with_random_values_parses_to_exactly_that_object(document):
    text = json.dumps(document, ensure_ascii=False)
    assert parse_submission(text.encode("utf-8")).credential == document


@FUZZ
@given(json_values)
def test_strict_json_reader_accepts_objects_and_refuses_everything_else_with_a_format_error(value):
    text = json.dumps(value)
    try:
        parsed = parse_json_object(text)
    except FormatError:
        assert not isinstance(value, dict) or "{" * 65 in text.replace(" ", "") or _depth(value) > 64
        return
    assert parsed == value


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@FUZZ
@given(st.integers(min_value=1, max_value=5000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]))
def test_deep_nesting_is_refused_quickly_whatever_the_depth(depth, opener):
    for text in (opener * depth, opener * depth + "1" + ("]" if opener == "[" else "}") * depth):
        try:
            parse_json_object(text)
        except FormatError:
            pass


@FUZZ
@given(mutated(BAKED_PNG))
def test_a_mutated_baked_png_is_read_or_refused(data):
    _read(data)
    try:
        unbake_png(data)
    except BakingError:
        pass


@FUZZ
@given(mutated(BAKED_SVG))
def test_a_mutated_baked_svg_is_read_or_refused(data):
    _read(data, "image/svg+xml", "badge.svg")
    try:
        unbake_svg(data)
    except BakingError:
        pass


@FUZZ_SLOW
@given(mutated(PDF))
def test_a_mutated_parchment_pdf_is_read_or_refused(data):
    _read(data)
    try:
        attached_credential(data)
    except ParchmentError:
        pass


@FUZZ_SLOW
@given(st.dictionaries(st.sampled_from(["credential.json", "credential.jwt", "a.json", "b.jwt", "notes.txt"]),
                       st.binary(min_size=1, max_size=300), max_size=4))
def test_pdfs_with_any_attachments_give_the_credential_or_a_parchment_error(attachments):
    try:
        text = attached_credential(_parchment_pdf(attachments))
    except ParchmentError:
        return
    chosen = [attachments[n] for n in ("credential.json", "credential.jwt") if n in attachments]
    assert text.encode("utf-8") == (chosen[0] if chosen else next(
        v for n, v in attachments.items() if n.endswith((".json", ".jwt"))))


def test_a_pdf_parchment_gives_back_its_json_credential():
    assert parse_submission(PDF).credential == CREDENTIAL


# --- baking round trips ----------------------------------------------------------------------------------

payloads = st.text(min_size=1, max_size=500).filter(lambda s: s.strip())


@FUZZ
@given(payloads)
def test_bake_then_unbake_png_gives_the_payload_back(payload):
    try:
        baked = bake_png(PNG, payload)
    except BakingError:
        assert "\x00" in payload or any(0xD800 <= ord(c) <= 0xDFFF for c in payload)
        return
    found = unbake_png(baked)
    assert (found.kind, found.payload) == ("ob3", payload.strip())
    assert bake_png(baked, payload) == baked, "re-baking replaces the chunk rather than adding one"


@FUZZ
@given(json_mutated(CREDENTIAL))
def test_bake_then_unbake_svg_gives_the_credential_back(document):
    text = json.dumps(document, ensure_ascii=False)
    baked = bake_svg(SVG, text, jwt=False)
    assert json.loads(unbake_svg(baked).payload) == document
    assert parse_submission(baked.encode("utf-8")).credential == document


@FUZZ
@given(payloads)
def test_baking_any_text_into_an_svg_round_trips_or_is_refused(payload):
    try:
        baked = bake_svg(SVG, payload, jwt=False)
    except BakingError:
        return
    expected = payload.replace("\r\n", "\n").replace("\r", "\n").strip()
    assert unbake_svg(baked).payload == expected


def test_a_baked_jwt_round_trips_through_png_and_svg():
    assert parse_submission(bake_png(PNG, JWT_ES256)).jwt == JWT_ES256
    assert parse_submission(bake_svg(SVG, JWT_ES256, jwt=True).encode()).jwt == JWT_ES256


# --- VC-JWT ---------------------------------------------------------------------------------------------

jws_like = st.from_regex(r"[A-Za-z0-9_=+/-]{0,80}(\.[A-Za-z0-9_=+/-]{0,80}){0,5}", fullmatch=True)


@FUZZ
@given(st.one_of(jws_like, st.text(max_size=300), st.binary(max_size=300)))
def test_parse_compact_raises_only_jwt_error(token):
    try:
        header, payload = parse_compact(token)
    except JwtError:
        return
    assert isinstance(header, dict) and isinstance(payload, dict)


@FUZZ
@given(json_values, json_values)
def test_any_json_header_and_payload_parse_or_raise_jwt_error(header, payload):
    def segment(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{segment(header)}.{segment(payload)}.c2ln"
    for reader in (parse_compact, lambda t: verify_vc_jwt(t, ES256.public_key), parse_submission):
        try:
            reader(token)
        except (JwtError, FormatError):
            pass


@FUZZ
@given(json_mutated(CREDENTIAL), st.sampled_from(["ES256", "EdDSA"]))
def test_sign_then_verify_gives_the_credential_back(document, alg):
    key = ES256 if alg == "ES256" else EDDSA
    try:
        token = sign_vc_jwt(document, key, f"{ISSUER}#{key.kid}")
    except JwtError:
        return  # the credential lacks what the claims need (iss, jti, sub, nbf): refused, by design
    try:
        verified = verify_vc_jwt(token, key.public_key)
    except JwtError as exc:
        # Signing copies what it can; verifying also checks the claims agree with a well-formed
        # credential, so a mutated one may still be refused, but only with a JwtError naming why.
        assert str(exc)
        return
    assert strip_registered_claims(verified) == document


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@FUZZ
@given(st.sampled_from([JWT_ES256, JWT_EDDSA]), st.data())
def test_a_signed_jwt_changed_in_any_one_character_fails_to_verify(token, data):
    at = data.draw(st.integers(min_value=0, max_value=len(token) - 1))
    replacement = data.draw(st.sampled_from(B64URL + ". =").filter(lambda c: c != token[at]))
    changed = token[:at] + replacement + token[at + 1 :]
    key = ES256 if token is JWT_ES256 else EDDSA
    with pytest.raises(JwtError):
        verify_vc_jwt(changed, key.public_key)


@FUZZ
@given(st.sampled_from([JWT_ES256, JWT_EDDSA]), mutated(b"x"))
def test_a_signed_jwt_with_bytes_mutated_fails_or_is_refused(token, _unused):
    # Byte-level edits of the token's text (non-ASCII included) are never accepted as the original.
    raw = token.encode()
    key = ES256 if token is JWT_ES256 else EDDSA
    for changed in (raw[:-1], raw + b"A", raw.replace(b".", b"..", 1), raw[:10] + b"\xff" + raw[10:]):
        with pytest.raises(JwtError):
            verify_vc_jwt(changed, key.public_key)


def test_a_signed_jwt_verifies_unchanged():
    assert strip_registered_claims(verify_vc_jwt(JWT_ES256, ES256.public_key)) == CREDENTIAL


# --- the cohort CSV (the console's upload; issue-batch reads the same rows) --------------------------------

@FUZZ
@given(st.one_of(st.binary(max_size=2000), mutated(CSV),
                 st.text(alphabet=st.sampled_from('ab,"\n\r\x00;é陳 '), max_size=300).map(
                     lambda t: (CSV_HEADER + t).encode("utf-8"))))
def test_cohort_csv_is_read_or_refused_with_a_staff_error_and_every_row_gets_a_verdict(data):
    try:
        rows = staff.read_csv(data)
    except staff.StaffError as exc:
        assert str(exc)
        return
    codes = {"AI-101": False, "DA-101": True}
    for line, raw in rows:
        assert line >= 2
        if None in raw:
            continue  # the console reports "more cells than the header" itself
        verdict = staff.row_problem(codes, raw)
        assert verdict is None or isinstance(verdict, str)
        try:
            issuing.csv_row_request(raw)
        except issuing.IssueError:
            pass


def test_a_cell_over_the_csv_field_limit_is_a_staff_error():
    with pytest.raises(staff.StaffError, match="not a readable CSV"):
        staff.read_csv(CSV_HEADER.encode() + b'"' + b"x" * 200_000 + b'",Tai Man,AI-101,,\n')


def test_a_valid_cohort_csv_round_trips_its_rows():
    rows = staff.read_csv(CSV)
    assert [line for line, _ in rows] == [2, 3]
    assert rows[1][1]["name"] == "Lee, Siu Ming"
    assert staff.row_problem({"AI-101": False, "DA-101": False}, rows[0][1]) is None


# --- presentations -----------------------------------------------------------------------------------------

SECRET = b"s" * 32


def _badge() -> dict:
    return create_eddsa_rdfc_2022(CREDENTIAL, ISSUER_KEY, ISSUER_VM, created="2026-01-01T00:00:00Z")


BADGE = _badge()


@FUZZ
@given(st.one_of(st.text(max_size=100), st.binary(max_size=60).map(
    lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())))
def test_a_random_challenge_is_refused_with_a_presentation_error(challenge):
    with pytest.raises(PresentationError):
        ChallengeIssuer(SECRET).check(challenge, DOMAIN)


@FUZZ_SLOW
@given(st.data())
def test_a_mutated_presentation_is_refused_with_a_presentation_error(data):
    challenges = ChallengeIssuer(SECRET)
    vp = create_presentation([BADGE], holder=HOLDER, private_key=HOLDER_KEY, verification_method=HOLDER_VM,
                             challenge=challenges.issue(DOMAIN)["challenge"], domain=DOMAIN)
    changed = data.draw(json_mutated(vp))
    assume(changed != vp)
    try:
        presented = verify_presentation(changed, resolver=KeyResolver(), challenges=challenges,
                                        store=MemoryChallengeStore(), domain=DOMAIN)
    except PresentationError as exc:
        assert str(exc)
        return
    # Only a change the proof does not cover may pass (none should, since the proof covers it all but
    # its own value); if one does, it must still name the signer as holder.
    assert presented.holder == HOLDER


@FUZZ
@given(json_values)
def test_any_json_as_a_presentation_is_refused_with_a_presentation_error(value):
    with pytest.raises(PresentationError):
        verify_presentation(value, resolver=KeyResolver(), challenges=ChallengeIssuer(SECRET),
                            store=MemoryChallengeStore(), domain=DOMAIN)


def test_a_presentation_round_trips_once():
    challenges, store = ChallengeIssuer(SECRET), MemoryChallengeStore()
    vp = create_presentation([BADGE], holder=HOLDER, private_key=HOLDER_KEY, verification_method=HOLDER_VM,
                             challenge=challenges.issue(DOMAIN)["challenge"], domain=DOMAIN)
    presented = verify_presentation(vp, resolver=KeyResolver(), challenges=challenges, store=store, domain=DOMAIN)
    assert (presented.holder, presented.credentials) == (HOLDER, [BADGE])
    with pytest.raises(PresentationError, match="already used"):
        verify_presentation(vp, resolver=KeyResolver(), challenges=challenges, store=store, domain=DOMAIN)


# --- request bodies: the pure parsers behind the API ----------------------------------------------------

ISSUE_BODY = {"achievement": "AI-101", "recipient": {"email": "chan@example.edu.hk", "name": "Chan Tai Man",
                                                     "did": HOLDER},
              "awarded_on": "2026-01-05", "result": "A", "evidence": [{"narrative": "Project"}]}
APPLICATION = {"recipient": {"email": "chan@example.edu.hk"}, "credentials": [CREDENTIAL, JWT_ES256],
               "target": "anything"}
VC_API_ISSUE = {"credential": CREDENTIAL, "options": {"credentialStatus": {"type": "BitstringStatusListEntry"}}}
OID4VCI_REQUEST = {"credential_configuration_id": next(iter(oid4vci.CONFIGURATIONS)),
                   "proofs": {"jwt": ["eyJ.eyJ.sig"]}}
STATUS_ENTRY = {"id": "https://x.example/status/1#5", "type": "BitstringStatusListEntry",
                "statusPurpose": "revocation", "statusListIndex": "5",
                "statusListCredential": "https://x.example/status/1"}

BODY_PARSERS = [
    (issuing.parse_request, ISSUE_BODY, issuing.IssueError),
    (lambda b: awards.parse_application(b, max_badges=20, allow_as_of=True), APPLICATION, awards.AwardError),
    (vcapi.parse_issue_request, VC_API_ISSUE, vcapi.VcApiError),
    (oid4vci.parse_credential_request, OID4VCI_REQUEST, oid4vci.OAuthError),
    (status.parse_entry, STATUS_ENTRY, status.StatusError),
]


@pytest.mark.parametrize("parse, valid, error", BODY_PARSERS,
                         ids=["issue", "award-application", "vc-api-issue", "oid4vci-credential", "status-entry"])
def test_request_body_parsers_accept_their_valid_body(parse, valid, error):
    parse(json.loads(json.dumps(valid)))


@pytest.mark.parametrize("parse, valid, error", BODY_PARSERS,
                         ids=["issue", "award-application", "vc-api-issue", "oid4vci-credential", "status-entry"])
@FUZZ
@given(data=st.data())
def test_request_body_parsers_raise_only_their_error(parse, valid, error, data):
    body = data.draw(st.one_of(json_values, json_mutated(valid)))
    try:
        parse(body)
    except error as exc:
        assert str(exc)


STATUS_LIST = {
    "@context": ["https://www.w3.org/ns/credentials/v2"], "id": "https://x.example/status/1",
    "type": ["VerifiableCredential", "BitstringStatusListCredential"], "issuer": ISSUER,
    "validFrom": "2026-01-01T00:00:00Z",
    "credentialSubject": {"id": "https://x.example/status/1#list", "type": "BitstringStatusList",
                          "statusPurpose": "revocation",
                          "encodedList": "uH4sIAAAAAAAAA-3OAQkAAAgDsEewf1pLHETYEiwBAAAAAAAAAAAAAIBn5joAAAAA0L"
                                         "dwG8UUAEAAAA"},
}


def test_a_valid_status_list_reads_a_clear_entry():
    assert status.read_status(status.parse_entry(STATUS_ENTRY), STATUS_LIST) == 0


@FUZZ
@given(json_mutated(STATUS_LIST))
def test_a_mutated_status_list_gives_a_status_or_a_status_error(list_doc):
    # Found by this test: a type list holding an object made set() raise TypeError (a 500 upstream).
    try:
        value = status.read_status(status.parse_entry(STATUS_ENTRY), list_doc)
    except status.StatusError as exc:
        assert str(exc)
        return
    assert value in (0, 1)


# --- the HTTP API: random and mutated bodies never give a 5xx nor store anything ---------------------------

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One application for all the examples (a fresh one per example would cost seconds each)."""
    from sqlalchemy import text

    from issuer import create_app
    from issuer.db import get_session
    from issuer.tokens import create_token
    from tests.conftest import _database_url

    tmp = tmp_path_factory.mktemp("fuzz-api")
    url, cleanup = _database_url(tmp)
    app = create_app({"TESTING": True, "ISSUER_DATABASE_URL": url, "ISSUER_KEY_DIR": str(tmp / "keys"),
                      "ISSUER_BASE_URL": "http://127.0.0.1:5000", "ISSUER_KEY_PASSPHRASE": None,
                      "ISSUER_RATE_LIMITS": "off"})
    app.instance_path = str(tmp / "instance")
    result = app.test_cli_runner().invoke(args=["init", "--no-token"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        session = get_session()
        _, token = create_token(session, "fuzz", "admin")
        session.commit()
    yield app, token
    app.extensions["issuer.engine"].dispose()
    if cleanup:
        admin, schema = cleanup
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


POST_ENDPOINTS = [
    ("/api/v1/credentials", ISSUE_BODY),
    ("/api/v1/achievements", {"code": "FZ-101", "name": "Fuzz"}),
    ("/api/v1/credentials/nope/revoke", {"reason": "x", "category": "error"}),
    ("/api/v1/verify", CREDENTIAL),
    ("/api/v1/verify", {"credential": JWT_ES256, "recipient_email": "chan@example.edu.hk"}),
    ("/api/v1/awards/evaluate", APPLICATION),
    ("/api/v1/awards/challenge", {}),
    ("/api/v1/awards", APPLICATION),
    ("/credentials/issue", VC_API_ISSUE),
    ("/credentials/verify", {"verifiableCredential": CREDENTIAL}),
    ("/presentations/verify", {"verifiablePresentation": {"type": ["VerifiablePresentation"]}}),
    ("/oid4vci/credential", OID4VCI_REQUEST),
    ("/exchanges/nope", {}),
]
STORED_TABLES = ["credentials", "awards", "award_applications", "audit_log", "notifications", "status_entries",
                 "wallet_copies"]


def _counts(app) -> dict[str, int]:
    from sqlalchemy import text

    from issuer.db import get_session

    with app.app_context():
        session = get_session()
        return {t: session.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in STORED_TABLES}


# too_slow: each example is a full request against a database; the deadline still bounds each one.
@settings(FUZZ_SLOW, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(POST_ENDPOINTS), st.data())
def test_api_bodies_random_or_mutated_get_4xx_or_2xx_never_5xx_and_a_refusal_stores_nothing(api, endpoint, data):
    app, token = api
    path, valid = endpoint
    kind = data.draw(st.sampled_from(["json", "mutated-json", "bytes", "mutated-bytes"]))
    if kind == "json":
        body = json.dumps(data.draw(json_values)).encode()
    elif kind == "mutated-json":
        body = json.dumps(data.draw(json_mutated(valid))).encode()
    elif kind == "bytes":
        body = data.draw(st.binary(max_size=500))
    else:
        body = data.draw(mutated(json.dumps(valid).encode()))
    before = _counts(app)
    response = app.test_client().post(path, data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code < 500, (path, body[:300], response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        assert response.mimetype in ("application/problem+json", "application/json"), response.mimetype
        assert response.get_json(), "a refusal names the problem"
        assert _counts(app) == before, f"{path} stored something although it refused the request"


def test_a_credential_whose_type_holds_an_object_is_a_verdict_not_a_server_error(api):
    # Found by the long profile of the test above: POST /credentials/verify answered 500 (TypeError).
    app, _ = api
    for kind in ([{}], [["VerifiableCredential"]], {"a": 1}):
        response = app.test_client().post("/credentials/verify", json={
            "verifiableCredential": {**CREDENTIAL, "type": kind}})
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert response.get_json()["verified"] is False


def _depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@FUZZ
@given(json_values, st.booleans())
def test_the_depth_measured_before_parsing_is_the_depth_of_the_value(value, ascii_only):
    """formats.json_depth reads brackets outside strings only: strings full of brackets, quotes and
    backslashes (escaped or not, any Unicode) never change the figure."""
    from issuer.formats import json_depth

    assert json_depth(json.dumps(value, ensure_ascii=ascii_only)) == _depth(value)
