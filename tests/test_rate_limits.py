"""Rate limits on the public endpoints: per client address, per group, 429 with Retry-After, shared via Redis."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest

from issuer import create_app
from issuer.web import limits

EVERY_ENDPOINT = {  # endpoint → (method, path) that reaches it; the answer may be 4xx, the count is what matters
    "api.verify": ("post", "/api/v1/verify"),
    "pages.verify_page": ("post", "/verify"),
    "vcapi.verify_credential": ("post", "/credentials/verify"),
    "vcapi.verify_presentation": ("post", "/presentations/verify"),
    "awards.claim": ("post", "/api/v1/awards"),
    "awards.evaluate": ("post", "/api/v1/awards/evaluate"),
    "awards.challenge": ("post", "/api/v1/awards/challenge"),
    "pages.apply_page": ("post", "/awards/apply"),
    "oid4vci.learner_offer": ("post", "/credentials/no-such-badge/wallet-offer"),
    "vcapi.learner_exchange": ("post", "/credentials/no-such-badge/wallet-exchange"),
    "oid4vci.token": ("post", "/oid4vci/token"),
    "oid4vci.nonce": ("post", "/oid4vci/nonce"),
    "oid4vci.credential": ("post", "/oid4vci/credential"),
    "vcapi.exchange": ("post", "/exchanges/no-such-offer"),
}


def instance(app, **settings):
    """Another instance of the same install (same database and keys) with these settings."""
    config = {key: app.config[key] for key in ("TESTING", "ISSUER_DATABASE_URL", "ISSUER_KEY_DIR",
                                               "ISSUER_BASE_URL", "ISSUER_KEY_PASSPHRASE")}
    other = create_app({**config, **settings})
    other.instance_path = app.instance_path
    return other


@pytest.fixture
def instances(app):
    made = []

    def make(**settings):
        other = instance(app, **settings)
        made.append(other)
        return other

    yield make
    for other in made:
        other.extensions["issuer.engine"].dispose()


def post(client, path, address="198.51.100.7", **kwargs):
    return client.post(path, environ_base={"REMOTE_ADDR": address}, **kwargs)


def test_every_listed_endpoint_exists_and_is_in_one_group():
    listed = [endpoint for _, endpoints in limits.GROUPS.values() for endpoint, _ in endpoints]
    assert sorted(listed) == sorted(EVERY_ENDPOINT) and len(set(listed)) == len(listed)


def test_limits_are_off_under_testing_unless_a_test_turns_them_on(client):
    for _ in range(80):
        assert post(client, "/api/v1/awards/challenge").status_code == 200


def test_a_client_over_the_verify_limit_gets_429_with_retry_after_and_a_problem(instances):
    client = instances(ISSUER_RATE_LIMITS="verify=3/minute").test_client()
    for _ in range(3):
        assert post(client, "/api/v1/verify", json={"not": "a credential"}).status_code != 429
    limited = post(client, "/api/v1/verify", json={"not": "a credential"})
    assert limited.status_code == 429
    assert limited.mimetype == "application/problem+json"
    body = limited.get_json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert "3 per 1 minute" in body["detail"] and "try again in" in body["detail"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # One count for the group: the VC API's verify is limited too, for this address only.
    assert post(client, "/credentials/verify", json={}).status_code == 429
    assert post(client, "/api/v1/verify", address="198.51.100.8", json={}).status_code != 429
    # Other groups keep their own (default) limits.
    assert post(client, "/api/v1/awards/challenge").status_code == 200


def test_the_verify_page_answers_a_page_when_limited_and_reading_it_is_free(instances):
    client = instances(ISSUER_RATE_LIMITS="verify=1/minute").test_client()
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    assert post(client, "/verify", data={"credential": "{}"}, headers=browser).status_code != 429
    for _ in range(3):
        assert client.get("/verify", environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 200
    limited = post(client, "/verify", data={"credential": "{}"}, headers=browser)
    assert limited.status_code == 429 and limited.mimetype == "text/html"
    assert "Too Many Requests" in limited.get_data(as_text=True)
    assert int(limited.headers["Retry-After"]) >= 1
    chinese = post(client, "/verify?lang=zh-Hant", data={"credential": "{}"}, headers=browser)
    assert chinese.status_code == 429 and 'lang="zh-Hant"' in chinese.get_data(as_text=True)


@pytest.mark.parametrize("endpoint", sorted(EVERY_ENDPOINT))
def test_each_public_endpoint_is_limited(instances, endpoint):
    client = instances(ISSUER_RATE_LIMITS="verify=1/minute;apply=1/minute;wallet=1/minute").test_client()
    method, path = EVERY_ENDPOINT[endpoint]
    first = getattr(client, method)(path, json={}, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert first.status_code != 429
    second = getattr(client, method)(path, json={}, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert second.status_code == 429 and "Retry-After" in second.headers


def test_the_default_limits_apply_when_the_setting_is_unset_outside_testing(instances):
    app = instances(TESTING=False, ISSUER_DEVELOPMENT=True, ISSUER_MAIL_THREAD=False)
    assert app.extensions["issuer.limiter"] is not None
    client = app.test_client()
    statuses = [post(client, "/api/v1/awards/challenge").status_code for _ in range(31)]
    assert statuses[:30] == [200] * 30 and statuses[30] == 429


def test_off_turns_every_limit_off_even_outside_testing(instances):
    app = instances(TESTING=False, ISSUER_DEVELOPMENT=True, ISSUER_MAIL_THREAD=False, ISSUER_RATE_LIMITS="off")
    assert app.extensions["issuer.limiter"] is None
    client = app.test_client()
    assert all(post(client, "/api/v1/awards/challenge").status_code == 200 for _ in range(40))


def test_the_setting_is_parsed_and_a_mistake_stops_start_up_naming_it(app):
    assert limits.parse_rate_limits(None) == {"verify": "60/minute", "apply": "30/minute", "wallet": "60/minute"}
    assert limits.parse_rate_limits(" OFF ") is None
    assert limits.parse_rate_limits("verify=120/minute; apply=20/minute,500/day;wallet=off") == {
        "verify": "120/minute", "apply": "20/minute,500/day"}
    with pytest.raises(ValueError, match="verify, apply, wallet"):
        limits.parse_rate_limits("upload=5/minute")
    with pytest.raises(ValueError, match="'lots' for verify"):
        limits.parse_rate_limits("verify=lots")
    with pytest.raises(ValueError, match="ISSUER_RATE_LIMITS"):
        instance(app, ISSUER_RATE_LIMITS="verify")


def test_x_forwarded_for_does_not_change_the_client_address(instances):
    client = instances(ISSUER_RATE_LIMITS="apply=2/minute").test_client()
    for n in range(2):
        assert post(client, "/api/v1/awards/challenge", headers={"X-Forwarded-For": f"192.0.2.{n}"}).status_code == 200
    assert post(client, "/api/v1/awards/challenge", headers={"X-Forwarded-For": "192.0.2.99"}).status_code == 429


def redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        return True
    except OSError:
        return False


def test_two_instances_share_their_counters_through_redis(instances):
    import redis

    assert redis_up(), "Redis must run on 127.0.0.1:6379 for this test"
    prefix = f"test-{uuid.uuid4().hex}"
    settings = {"ISSUER_RATE_LIMITS": "apply=4/minute", "ISSUER_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
                "RATELIMIT_KEY_PREFIX": prefix}
    store = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        first, second = instances(**settings).test_client(), instances(**settings).test_client()
        assert [post(c, "/api/v1/awards/challenge").status_code for c in (first, second, first, second)] == [200] * 4
        assert post(first, "/api/v1/awards/challenge").status_code == 429
        assert post(second, "/api/v1/awards/challenge").status_code == 429
        assert any(prefix in key.decode() for key in store.scan_iter(match=f"*{prefix}*"))
        # In memory (the default), each instance counts alone.
        alone = {"ISSUER_RATE_LIMITS": "apply=1/minute"}
        third, fourth = instances(**alone).test_client(), instances(**alone).test_client()
        assert [post(c, "/api/v1/awards/challenge").status_code for c in (third, fourth)] == [200, 200]
    finally:
        for key in store.scan_iter(match=f"*{prefix}*"):
            store.delete(key)
        store.close()


def test_an_unreachable_redis_fails_open_to_counters_in_memory_with_a_warning(instances, caplog):
    with socket.socket() as probe:  # a loopback port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = instances(ISSUER_RATE_LIMITS="apply=2/minute",
                       ISSUER_RATELIMIT_STORAGE_URL=f"redis://127.0.0.1:{port}/0").test_client()
    with caplog.at_level(logging.WARNING):
        statuses = [post(client, "/api/v1/awards/challenge").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # still served, and still limited per process
    assert any("storage unreachable" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
