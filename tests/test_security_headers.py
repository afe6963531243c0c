"""Security headers on every response (issue #9): pages, API, downloads and errors all carry the policy;
inline scripts of our templates run under a per-response nonce; HSTS is sent only over HTTPS; a view's own
stricter headers (the baked SVG download) are kept."""

from __future__ import annotations

import re

import pytest

from issuer.web import security
from tests.test_awards import AI_CERTIFICATE, issue_badges
from tests.test_console import make_staff, sign_in

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def directives(response) -> dict[str, str]:
    value = response.headers["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in value.split(";") if part.strip()}


def assert_hardened(response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.headers.get(name))
    assert "camera=()" in response.headers["Permissions-Policy"]
    csp = directives(response)
    assert csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["form-action"] == "'self'"
    assert csp["base-uri"] == "'none'"
    assert csp["img-src"] == "'self' data:"
    assert "'unsafe-inline'" not in csp["script-src"]
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP in the tests


@pytest.mark.parametrize("path", ["/", "/verify", "/catalogue", "/issuer", "/console/sign-in",
                                  "/.well-known/did.json", "/api/v1/achievements", "/no/such/page",
                                  "/api/v1/no-such-endpoint"])
def test_pages_api_and_errors_carry_the_headers(client, path):
    response = client.get(path)
    assert response.status_code < 500
    assert_hardened(response)


def test_api_posts_and_problem_responses_carry_the_headers(client):
    response = client.post("/api/v1/verify", data=b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert_hardened(response)


def test_downloads_carry_the_headers_and_the_svg_keeps_its_own_stricter_policy(client, issue_token):
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    for kind in ("json", "png", "pdf"):
        response = client.get(f"/credentials/{badge['id']}.{kind}")
        assert response.status_code == 200, kind
        assert_hardened(response)
    svg = client.get(f"/credentials/{badge['id']}.svg")
    assert svg.status_code == 200
    assert svg.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    assert svg.headers["X-Content-Type-Options"] == "nosniff"
    page = client.get(f"/credentials/{badge['id']}")
    assert page.status_code == 200
    assert_hardened(page)


def test_wallet_and_linkedin_links_are_links_not_forms(client, issue_token):
    """CSP does not govern links; form-action 'self' would block a form posting elsewhere: there is none."""
    (badge,) = issue_badges(client, issue_token, AI_CERTIFICATE[:1])
    html = client.get(f"/credentials/{badge['id']}").get_data(as_text=True)
    actions = re.findall(r'<form[^>]*action="([^"]*)"', html)
    assert all(not a.startswith(("http:", "https:", "//")) or a.startswith("http://127.0.0.1:5000/")
               for a in actions), actions


def test_inline_scripts_run_under_a_fresh_nonce_and_injected_markup_gets_none(app, client):
    editor = make_staff(app, "editor@school.example", "catalogue_editor")
    assert sign_in(client, editor).status_code == 302
    nonces = []
    for _ in range(2):
        response = client.get("/console/catalogue/new")
        assert response.status_code == 200
        assert_hardened(response)
        html = response.get_data(as_text=True)
        tags = re.findall(r"<script[^>]*>", html)
        assert tags, "the course form has its preview script"
        script_src = directives(response)["script-src"]
        nonce = re.search(r"'nonce-([^']+)'", script_src).group(1)
        assert tags == [f'<script nonce="{nonce}">'] * len(tags)
        nonces.append(nonce)
    assert nonces[0] != nonces[1]
    # The nonce is added to the template's source only: a value rendered into a page stays escaped.
    with app.test_request_context("/"):
        rendered = app.jinja_env.from_string("<script>{{ value }}</script>").render(value="<script>x</script>")
        assert rendered.count("nonce=") == 1 and "&lt;script&gt;" in rendered


def test_pages_without_inline_scripts_get_no_nonce(client):
    assert "nonce" not in directives(client.get("/verify"))["script-src"]


def test_hsts_only_over_https(app, client):
    assert "Strict-Transport-Security" not in client.get("/").headers
    secure = client.get("/", base_url="https://127.0.0.1")
    assert secure.headers["Strict-Transport-Security"] == security.HSTS
    app.config["ISSUER_BASE_URL"] = "https://badges.example"
    assert client.get("/").headers["Strict-Transport-Security"] == security.HSTS


def test_headers_a_view_set_are_not_overridden(app):
    @app.get("/_test/own-headers")
    def own():
        return "x", 200, {"Content-Security-Policy": "default-src 'none'", "Referrer-Policy": "same-origin"}

    response = app.test_client().get("/_test/own-headers")
    assert response.headers["Content-Security-Policy"] == "default-src 'none'"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_single_sign_on_provider_is_an_allowed_form_target_only_when_configured(app, client):
    """The SSO button posts to us and is redirected to the provider: browsers check that redirect."""
    assert directives(client.get("/console/sign-in"))["form-action"] == "'self'"
    app.config.update(ISSUER_OIDC_ISSUER="https://login.school.example/realms/staff", ISSUER_OIDC_CLIENT_ID="c")
    assert directives(client.get("/console/sign-in"))["form-action"] == "'self' https://login.school.example"
    app.config["ISSUER_OIDC_ISSUER"] = "https://evil.example; script-src *"
    assert directives(client.get("/console/sign-in"))["form-action"] == "'self'"


@pytest.mark.parametrize(("url", "origin"), [
    ("http://127.0.0.1:8080/realm", "http://127.0.0.1:8080"),
    ("https://sso.example", "https://sso.example"),
    ("https://[::1]:9000/x", "https://[::1]:9000"),
    ("javascript:alert(1)", None),
    ("https://a b.example/", None),
    ("https://x.example:99999/", None),
    ("", None),
])
def test_origins_entering_the_policy_are_plain_origins(url, origin):
    assert security.origin_of(url) == origin
