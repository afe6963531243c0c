"""The OpenAPI document (issuer/openapi.yaml, served at /api/v1/openapi.json) is kept true:

* every route of the application (but the staff console and static files) is in it, and every path and
  method in it is a route;
* the responses of the main endpoints, for real badges, awards, offers and tokens, validate against the
  schemas it documents for their status and media type;
* schemathesis, driven by the document, sends generated requests to the running service (WSGI, with an
  admin token) and never gets a 5xx or a response the document does not describe.

Nothing leaves the machine: DNS answers come from a stub that knows no name, and a connection to anything
but loopback fails the test.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from importlib.resources import files

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import loopback_only_network

DOCUMENT = yaml.safe_load(files("issuer").joinpath("openapi.yaml").read_text(encoding="utf-8"))
UNDOCUMENTED = ("/console", "/static/")  # a browser application with its own sign-in; files
LEARNER = "chan.tai.man@example.edu.hk"
HOLDER = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXAMPLES = {"ci": 25, "long": 300}.get(PROFILE, 25)


# --- the service under test -----------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def nothing_leaves_the_machine():
    with loopback_only_network("the service"):
        yield


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One application (SQLite, or PostgreSQL with ISSUER_TEST_DATABASE_URL), an admin token, and real
    things to ask about: a badge for an email, one for a DID (it has a JWT), an offer and an exchange."""
    from sqlalchemy import text

    from issuer import create_app
    from issuer.db import get_session
    from issuer.tokens import create_token
    from tests.conftest import _database_url

    tmp = tmp_path_factory.mktemp("openapi")
    url, cleanup = _database_url(tmp)
    app = create_app({"TESTING": True, "ISSUER_DATABASE_URL": url, "ISSUER_KEY_DIR": str(tmp / "keys"),
                      "ISSUER_BASE_URL": "http://127.0.0.1:5000", "ISSUER_KEY_PASSPHRASE": None,
                      "ISSUER_RATE_LIMITS": "off"})
    app.instance_path = str(tmp / "instance")
    result = app.test_cli_runner().invoke(args=["init", "--no-token"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        session = get_session()
        row, token = create_token(session, "openapi", ["admin"])
        session.commit()
        token_id = row.id
    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    made = {}
    for key, recipient in (("badge", {"email": LEARNER, "name": "Chan Tai Man"}),
                           ("did_badge", {"email": LEARNER, "did": HOLDER})):
        code = "AI-101" if key == "badge" else "AI-102"
        response = client.post("/api/v1/credentials", headers=auth,
                               json={"achievement": code, "recipient": recipient})
        assert response.status_code == 201, response.get_json()
        made[key] = response.get_json()
    made["offer"] = client.post(f"/api/v1/credentials/{made['badge']['id']}/offer", headers=auth).get_json()
    made["exchange"] = client.post(f"/api/v1/credentials/{made['badge']['id']}/exchange", headers=auth).get_json()
    yield {"app": app, "token": token, "token_id": token_id, "auth": auth, **made}
    app.extensions["issuer.engine"].dispose()
    if cleanup:
        admin, schema = cleanup
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- the document and the routes ----------------------------------------------------------------------------

def _route_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path template: <int:token_id> → {token_id}."""
    return re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>", r"{\1}", rule)


def _routes(app) -> set[tuple[str, str]]:
    return {(_route_path(rule.rule), method.lower())
            for rule in app.url_map.iter_rules() if not rule.rule.startswith(UNDOCUMENTED)
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def _documented() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {(path, method) for path, item in DOCUMENT["paths"].items() for method in item if method in methods}


def test_every_route_is_documented_and_every_documented_operation_is_a_route(app):
    routes, documented = _routes(app), _documented()
    assert not routes - documented, f"routes missing from issuer/openapi.yaml: {sorted(routes - documented)}"
    assert not documented - routes, f"documented but not routes: {sorted(documented - routes)}"


def test_every_operation_has_a_unique_id_and_documents_its_path_parameters():
    ids = [op["operationId"] for item in DOCUMENT["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    for path, item in DOCUMENT["paths"].items():
        names = set(re.findall(r"{([a-z_]+)}", path))
        for method, operation in item.items():
            declared = {_resolve(p)["name"] for p in operation.get("parameters", []) if _resolve(p)["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}: path parameters {declared} != {names}"


def test_the_document_is_served_as_json_with_this_instance_as_server(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    assert served["openapi"].startswith("3.1")
    assert served["servers"] == [{"url": "http://127.0.0.1:5000"}]
    assert {k: v for k, v in served.items() if k != "servers"} == {k: v for k, v in DOCUMENT.items()
                                                                  if k != "servers"}


def test_every_schema_in_the_document_is_valid_json_schema():
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


# --- responses of the main endpoints against their documented schemas ----------------------------------------

_REGISTRY = Registry().with_resource("urn:openapi", Resource(contents=DOCUMENT, specification=DRAFT202012))


def _at(pointer: str):
    node = DOCUMENT
    for part in pointer.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _follow(pointer: str) -> str:
    """The JSON pointer a (chain of) $ref at ``pointer`` leads to."""
    for _ in range(10):
        node = _at(pointer)
        if not (isinstance(node, dict) and "$ref" in node):
            return pointer
        pointer = node["$ref"]
    raise AssertionError(f"a $ref loop at {pointer}")


def _resolve(node: dict) -> dict:
    return _at(_follow(node["$ref"])) if "$ref" in node else node


def _pointer(text: str) -> str:
    return text.replace("~", "~0").replace("/", "~1")


def conforms(response, path: str, method: str) -> None:
    """The response's status, media type and body are what the document says for this operation."""
    declared = DOCUMENT["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in declared, f"{method.upper()} {path}: status {status} is not documented ({sorted(declared)})"
    described = _follow(f"#/paths/{_pointer(path)}/{method}/responses/{status}")
    content = _at(described).get("content", {})
    if not content:
        return
    assert response.mimetype in content, \
        f"{method.upper()} {path} {status}: {response.mimetype} is not documented ({sorted(content)})"
    schema = content[response.mimetype].get("schema", {})
    if "json" in response.mimetype:
        body = json.loads(response.get_data(as_text=True))
    elif schema.get("format") == "binary":
        return
    else:
        body = response.get_data(as_text=True)
    # Validated in place, so the schema's own $refs resolve against the whole document.
    where = f"urn:openapi{described}/content/{_pointer(response.mimetype)}/schema"
    validator = Draft202012Validator({"$ref": where}, registry=_REGISTRY)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{method.upper()} {path} {status}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message[:200]}" for e in errors[:5])


def test_main_responses_validate_against_their_documented_schemas(service):
    client = service["app"].test_client()
    auth = service["auth"]
    badge, did_badge = service["badge"], service["did_badge"]
    json_ld = {"Accept": "application/vc+ld+json"}
    checked = [
        (client.get("/api/v1/achievements"), "/api/v1/achievements", "get"),
        (client.post("/api/v1/credentials", headers=auth, json={"achievement": "AI-101",
                                                                "recipient": {"email": LEARNER}}),
         "/api/v1/credentials", "post"),
        (client.post("/api/v1/credentials", headers=auth, json={"achievement": "NOPE-1",
                                                                "recipient": {"email": LEARNER}}),
         "/api/v1/credentials", "post"),
        (client.post("/api/v1/credentials", json={}), "/api/v1/credentials", "post"),
        (client.get("/api/v1/notifications", headers=auth), "/api/v1/notifications", "get"),
        (client.post("/api/v1/verify", data=client.get(f"/credentials/{badge['id']}.json").data,
                     content_type="application/json"), "/api/v1/verify", "post"),
        (client.post("/api/v1/verify", data=did_badge["jwt"], content_type="text/plain"), "/api/v1/verify", "post"),
        (client.post("/api/v1/verify", data=b"not a badge", content_type="text/plain"), "/api/v1/verify", "post"),
        (client.post("/api/v1/awards/challenge"), "/api/v1/awards/challenge", "post"),
        (client.post("/api/v1/awards/evaluate", json={"recipient": {"email": LEARNER},
                                                      "credentials": [badge["credential"]]}),
         "/api/v1/awards/evaluate", "post"),
        (client.post("/api/v1/awards", json={"recipient": {"email": LEARNER}, "credentials": [badge["credential"]]}),
         "/api/v1/awards", "post"),
        (client.get("/api/v1/tokens", headers=auth), "/api/v1/tokens", "get"),
        (client.post("/api/v1/tokens", headers=auth, json={"name": "ci", "scopes": ["issue"]}),
         "/api/v1/tokens", "post"),
        (client.get(f"/credentials/{badge['id']}", headers=json_ld), "/credentials/{public_id}", "get"),
        (client.get(f"/credentials/{badge['id']}"), "/credentials/{public_id}", "get"),
        (client.get(f"/credentials/{badge['id']}.json"), "/credentials/{public_id}.json", "get"),
        (client.get(f"/credentials/{did_badge['id']}.jwt"), "/credentials/{public_id}.jwt", "get"),
        (client.get(f"/credentials/{badge['id']}.jwt"), "/credentials/{public_id}.jwt", "get"),
        (client.get("/credentials/no-such-badge.json", headers={"Accept": "application/json"}),
         "/credentials/{public_id}.json", "get"),
        (client.get(f"/credentials/{badge['id']}.png"), "/credentials/{public_id}.png", "get"),
        (client.get(f"/credentials/{badge['id']}/qr.svg"), "/credentials/{public_id}/qr.svg", "get"),
        (client.get("/achievements/AI-101.json"), "/achievements/{code}.json", "get"),
        (client.get("/achievements/AI-101", headers={"Accept": "application/ld+json"}), "/achievements/{code}", "get"),
        (client.get("/.well-known/did.json"), "/.well-known/did.json", "get"),
        (client.get("/.well-known/jwks.json"), "/.well-known/jwks.json", "get"),
        (client.get("/issuer", headers={"Accept": "application/ld+json"}), "/issuer", "get"),
        (client.get("/issuer"), "/issuer", "get"),
        (client.get("/.well-known/openid-credential-issuer"), "/.well-known/openid-credential-issuer", "get"),
        (client.get("/.well-known/oauth-authorization-server"), "/.well-known/oauth-authorization-server", "get"),
        (client.get(service["offer"]["credential_offer_uri"].removeprefix("http://127.0.0.1:5000")),
         "/oid4vci/offers/{offer_id}", "get"),
        (client.post("/oid4vci/nonce"), "/oid4vci/nonce", "post"),
        (client.post("/oid4vci/token", data={"grant_type": "password"}), "/oid4vci/token", "post"),
        (client.post("/oid4vci/credential", json={}), "/oid4vci/credential", "post"),
        (client.post(service["exchange"]["exchange_url"].removeprefix("http://127.0.0.1:5000"), json={}),
         "/exchanges/{offer_id}", "post"),
        (client.post("/credentials/verify", json={"verifiableCredential": badge["credential"]}),
         "/credentials/verify", "post"),
        (client.post("/presentations/verify", json={"verifiablePresentation": {"type": "VerifiablePresentation"}}),
         "/presentations/verify", "post"),
        (client.post(f"/credentials/{badge['id']}/wallet-offer", json={"email": LEARNER}),
         "/credentials/{credential_id}/wallet-offer", "post"),
        (client.post(f"/credentials/{badge['id']}/wallet-exchange", json={"email": LEARNER}),
         "/credentials/{credential_id}/wallet-exchange", "post"),
        (client.get("/verify"), "/verify", "get"),
    ]
    status_url = badge["credential"]["credentialStatus"]["statusListCredential"]
    checked.append((client.get(status_url.removeprefix("http://127.0.0.1:5000")), "/status/{list_id}", "get"))
    # Revoking last: the badge's offer and exchange above needed it unrevoked.
    checked.append((client.post(f"/api/v1/credentials/{badge['id']}/revoke", headers=auth,
                                json={"reason": "issued in error"}),
                    "/api/v1/credentials/{credential_id}/revoke", "post"))
    for response, path, method in checked:
        conforms(response, path, method)
    statuses = {(path, r.status_code) for r, path, _ in checked}
    # The cases above reach the successes they are meant to, not only refusals.
    for expected in [("/api/v1/credentials", 200), ("/api/v1/credentials", 404), ("/api/v1/credentials", 401),
                     ("/api/v1/verify", 200), ("/api/v1/verify", 400), ("/api/v1/awards", 422),
                     ("/credentials/{public_id}.jwt", 200), ("/credentials/{public_id}.jwt", 404),
                     ("/api/v1/tokens", 201), ("/status/{list_id}", 200), ("/exchanges/{offer_id}", 200),
                     ("/credentials/verify", 200), ("/presentations/verify", 400),
                     ("/api/v1/credentials/{credential_id}/revoke", 200)]:
        assert expected in statuses, expected


# --- schemathesis against the running service ----------------------------------------------------------------

@pytest.fixture(scope="module")
def api_schema(service):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", service["app"])
    schema.config.generation.update(max_examples=EXAMPLES, database="none")
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")

# The same checks for every operation: a 5xx is a bug; so is a status, media type or body the document
# does not describe.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10), database=None,
          # too_slow / filter_too_much: each example is a real request against a database.
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_schemathesis_finds_no_server_error_and_no_undocumented_response(case, service):
    token_id = service["token_id"]
    if case.operation.path == "/api/v1/tokens/{token_id}" and case.path_parameters.get("token_id") == token_id:
        case.path_parameters["token_id"] = token_id + 1000  # keep the token the run authenticates with
    _point_at_real_things(case, service)
    case.call_and_validate(headers=service["auth"], checks=CHECKS)


REAL = {"public_id": "did_badge", "credential_id": "did_badge"}


def _point_at_real_things(case, service) -> None:
    """Half the generated path ids name things that exist, so the handlers past the 404 are exercised
    too (chosen from the generated value, so hypothesis can replay and shrink the case)."""
    for name, value in list((case.path_parameters or {}).items()):
        if name in REAL and isinstance(value, str) and len(value) % 2 == 0:
            case.path_parameters[name] = service[REAL[name]]["id"]
        elif name == "code" and isinstance(value, str) and len(value) % 2 == 0:
            case.path_parameters[name] = "AI-101"


# --- what schemathesis found, kept as plain regression tests ------------------------------------------------

def test_a_multipart_file_part_without_a_name_is_a_400_not_a_server_error(client):
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; filename=\"badge.json\"\r\n\r\n{{}}\r\n"
            f"--{boundary}--\r\n").encode()
    for path in ("/api/v1/awards", "/api/v1/awards/evaluate"):
        response = client.post(path, data=body, content_type=f"multipart/form-data; boundary={boundary}")
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
        assert "a part without a name" in response.get_json()["detail"]


def test_a_token_id_past_the_column_range_is_a_404_not_a_server_error(client, make_token):
    auth = {"Authorization": f"Bearer {make_token('admin')}"}
    for token_id in (2**31, 2**63, 10**30):
        response = client.delete(f"/api/v1/tokens/{token_id}", headers=auth)
        assert response.status_code == 404, response.get_data(as_text=True)[:300]


def test_a_nul_character_in_an_id_or_a_field_is_never_a_server_error(client, make_token):
    # PostgreSQL's text cannot hold NUL: every lookup or insert with one failed with a 500 before.
    auth = {"Authorization": f"Bearer {make_token('admin')}"}
    nul = "a\x00b"
    for method, path, body in [
        ("GET", f"/credentials/{nul}", None), ("GET", f"/credentials/{nul}.json", None),
        ("GET", f"/achievements/{nul}", None), ("GET", f"/status/{nul}", None),
        ("GET", f"/oid4vci/offers/{nul}", None), ("GET", f"/awards/achievements/{nul}", None),
        ("GET", f"/api/v1/notifications?credential_id={nul}", None),
        ("POST", f"/api/v1/credentials/{nul}/revoke", {"reason": "x"}),
        ("POST", f"/api/v1/credentials/{nul}/offer", {}),
        ("POST", f"/credentials/{nul}/wallet-offer", {"email": LEARNER}),
        ("POST", "/api/v1/credentials", {"achievement": nul, "recipient": {"email": LEARNER}}),
    ]:
        response = client.open(path, method=method, headers=auth, json=body)
        # SQLite keeps NUL, so a search there may simply find nothing (200); a 5xx is never right.
        assert response.status_code < 500, (method, path, response.status_code)
        assert response.status_code in (200, 400, 404) or method == "POST", (method, path, response.status_code)
    response = client.post("/awards/apply", data={"email": nul, "target": "x" * 400})
    assert response.status_code == 400
