"""Rate limits on the endpoints anyone may call without a token (flask-limiter), per client address.

Three groups, each counted per address across all of its endpoints:

- `verify` (default 60/minute): `POST /api/v1/verify`, the `/verify` page's POST, the VC API's
  `/credentials/verify` and `/presentations/verify`;
- `apply` (default 30/minute): `/api/v1/awards` (claim), `/api/v1/awards/evaluate`,
  `/api/v1/awards/challenge` and the `/awards/apply` page's POST;
- `wallet` (default 60/minute): the learner's `wallet-offer` and `wallet-exchange` POSTs, the OpenID4VCI
  token, nonce and credential endpoints, and `POST /exchanges/<id>` (VC API exchanges).

The defaults let a class behind one school NAT verify, apply and take their badges into wallets in the
same few minutes (a wallet pick-up is three or four requests); a script hammering one endpoint is stopped.

`ISSUER_RATE_LIMITS`: unset means these defaults (and no limits at all under TESTING, so the test suite is
not tripped; a test turns them on by setting it); `off` turns every limit off; otherwise `group=limits`
pairs separated by `;`, e.g. `verify=120/minute;apply=20/minute,500/day;wallet=off` (several limits for
a group separated by commas; groups not named keep their defaults).

`ISSUER_RATELIMIT_STORAGE_URL`: `memory://` (each process counts alone) or `redis://host:port/db` (every
worker and instance shares the counters). If Redis cannot be reached the limiter fails open to per-process
counters in memory, logs a warning ("Rate limit storage unreachable"), and goes back to Redis when it
answers again: an outage of the counter store must not take verification down with it.
"""

from __future__ import annotations

import time

from flask import Flask, current_app, render_template
from flask_limiter import Limiter
from limits import parse_many

# group → (default limits, [(endpoint, methods or None for all)])
GROUPS: dict[str, tuple[str, list[tuple[str, list[str] | None]]]] = {
    "verify": ("60/minute", [("api.verify", None), ("pages.verify_page", ["POST"]),
                             ("vcapi.verify_credential", None), ("vcapi.verify_presentation", None)]),
    "apply": ("30/minute", [("awards.claim", None), ("awards.evaluate", None), ("awards.challenge", None),
                            ("pages.apply_page", ["POST"])]),
    "wallet": ("60/minute", [("oid4vci.learner_offer", None), ("vcapi.learner_exchange", None),
                             ("oid4vci.token", None), ("oid4vci.nonce", None), ("oid4vci.credential", None),
                             ("vcapi.exchange", None)]),
}
# A Redis that does not answer must not hold a request for long (seconds).
REDIS_TIMEOUT = 0.5


def parse_rate_limits(text: str | None) -> dict[str, str] | None:
    """The limits of each group from ISSUER_RATE_LIMITS, or None when limits are off. A mistake stops
    start-up with a message that names it."""
    chosen = {group: default for group, (default, _) in GROUPS.items()}
    if text is None or not text.strip():
        return chosen
    if text.strip().lower() == "off":
        return None
    for part in filter(None, (p.strip() for p in text.split(";"))):
        group, sep, value = (s.strip() for s in part.partition("="))
        if not sep or group not in GROUPS:
            raise ValueError(f"ISSUER_RATE_LIMITS: '{part}' should be group=limit with a group among "
                             f"{', '.join(GROUPS)} (e.g. verify=120/minute), or the whole value 'off'")
        if value.lower() == "off":
            chosen.pop(group, None)
            continue
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"ISSUER_RATE_LIMITS: '{value}' for {group} is not a limit such as 120/minute "
                             "or 20/minute,500/day") from None
        chosen[group] = value
    return chosen


def _client() -> str:
    # The same address the console's sign-in throttle uses (its trusted-proxy logic, if any, applies here
    # too); X-Forwarded-For is never read directly.
    from .console import client_address

    return client_address()


def init_app(app: Flask) -> None:
    """Register the limiter after the blueprints, wrapping each listed view in its group's limit."""
    setting = app.config.get("ISSUER_RATE_LIMITS")
    if setting is None and app.config.get("TESTING"):
        setting = "off"
    groups = parse_rate_limits(setting)
    app.extensions["issuer.limiter"] = None
    if not groups:
        return
    storage = app.config.get("ISSUER_RATELIMIT_STORAGE_URL") or "memory://"
    options = {}
    if storage.startswith(("redis://", "rediss://", "redis+unix://")):
        options = {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT}
    # Retry-After is set on the 429 only (errors.py), not on every response as the library's headers would.
    limiter = Limiter(_client, app=app, storage_uri=storage, storage_options=options,
                      strategy="sliding-window-counter", key_prefix=app.config.get("RATELIMIT_KEY_PREFIX", "issuer"),
                      headers_enabled=False, swallow_errors=True, in_memory_fallback_enabled=True)
    for group, value in groups.items():
        for endpoint, methods in GROUPS[group][1]:
            view = app.view_functions.get(endpoint)
            if view is None:
                raise RuntimeError(f"rate limit group {group} names {endpoint}, which is not a view")
            app.view_functions[endpoint] = limiter.shared_limit(value, scope=group, methods=methods)(view)
    app.extensions["issuer.limiter"] = limiter


def retry_after() -> int:
    """Seconds until the breached limit lets this client in again (at least 1)."""
    limiter = current_app.extensions.get("issuer.limiter")
    current = limiter.current_limit if limiter is not None else None
    try:
        return max(1, int(current.reset_at - time.time())) if current is not None else 60
    except Exception:  # the counter store went away between the breach and this answer
        return 60


def too_many_requests_page(seconds: int) -> str:
    """The 429 page for people who posted a form (the verify and apply pages)."""
    return render_template("too_many_requests.html", seconds=seconds)
