"""The issuer's identity: did:web from the public base URL, the OB Profile, and the loaded key ring."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, current_app

from .issuing import IssuerContext
from .keys import KeyRing
from .multikey import did_web_from_url


def issuer_profile(config) -> dict:
    base = config["ISSUER_BASE_URL"]
    profile = {
        "id": did_web_from_url(base),
        "type": ["Profile"],
        "name": config["ISSUER_NAME"],
        "url": config["ISSUER_URL"],
        "image": {"id": f"{base}/issuer/image.png", "type": "Image"},
    }
    if config.get("ISSUER_EMAIL"):
        profile["email"] = config["ISSUER_EMAIL"]
    return profile


def keyring_exists(config) -> bool:
    return (Path(config["ISSUER_KEY_DIR"]) / "keyring.json").exists()


def load_context(config) -> IssuerContext:
    """Load the key ring (once per process: decrypting keys is slow) and the issuer profile."""
    keyring = KeyRing.load(Path(config["ISSUER_KEY_DIR"]), config.get("ISSUER_KEY_PASSPHRASE"))
    profile = issuer_profile(config)
    return IssuerContext(base_url=config["ISSUER_BASE_URL"], did=profile["id"], profile=profile,
                         keyring=keyring, jwt_algorithm=config["ISSUER_JWT_ALGORITHM"])


def _keyring_stamp(config) -> tuple[int, int] | None:
    try:
        info = (Path(config["ISSUER_KEY_DIR"]) / "keyring.json").stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def get_context(app: Flask | None = None) -> IssuerContext:
    app = app or current_app
    ctx = app.extensions.get("issuer.context")
    # A rotation by another worker, instance or `issuer keys rotate` rewrites keyring.json: reload then, so
    # that every process signs with the new keys and verifies badges signed with them (a stat is cheap).
    stamp = _keyring_stamp(app.config)
    if ctx is None or app.extensions.get("issuer.context_stamp") != stamp:
        ctx = load_context(app.config)
        app.extensions["issuer.context"] = ctx
        app.extensions["issuer.context_stamp"] = stamp
    return ctx


def reset_context(app: Flask) -> None:
    """Forget the loaded keys (after `init` or `keys rotate`) so the next request loads them afresh."""
    app.extensions.pop("issuer.context", None)


def rotate_keys(app: Flask, algorithms: list[str] | None, *, actor: str) -> list:
    """New current keys for `algorithms` (default: every algorithm that has a current key), published in
    the registry with a `key.rotate` audit entry. The one core behind `issuer keys rotate` and
    `POST /api/v1/keys/rotate`; the old keys stay published so the badges they signed keep verifying."""
    from .db import get_session
    from .issuing import store_identity
    from .models import AuditEntry

    ctx = get_context(app)
    current = sorted({k.algorithm for k in ctx.keyring.all() if k.status == "current"})
    chosen = sorted(set(algorithms)) if algorithms else current
    unknown = [a for a in chosen if a not in current]
    if unknown:
        raise ValueError(f"no current key to rotate for {', '.join(unknown)}; current keys: {', '.join(current)}")
    new_keys = [ctx.keyring.rotate(alg) for alg in chosen]
    session = get_session()
    store_identity(session, ctx, actor=actor)
    session.add(AuditEntry(actor=actor, action="key.rotate", subject=ctx.did, detail={"algorithms": chosen}))
    session.commit()
    reset_context(app)
    return new_keys


def local_documents(ctx: IssuerContext) -> dict[str, dict]:
    """Our own DID document and JWKS, so our badges verify without a network round trip to ourselves."""
    from urllib.parse import urlsplit

    from .keys import did_document, jwks

    keys = ctx.keyring.all()
    authority = urlsplit(ctx.base_url).netloc
    return {
        ctx.did: did_document(ctx.did, keys),
        f"https://{authority}/.well-known/jwks.json": jwks(keys),
        f"http://{authority}/.well-known/jwks.json": jwks(keys),
    }


def _local_documents_of(app: Flask, ctx: IssuerContext) -> dict[str, dict]:
    """local_documents(ctx), built once per loaded context and key set rather than per verification
    (a rotation changes the key ids and resets the context, so either way the documents are rebuilt)."""
    kids = tuple(key.kid for key in ctx.keyring.all())
    cached = app.extensions.get("issuer.local_documents")
    if cached is None or cached[0] is not ctx or cached[1] != kids:
        cached = (ctx, kids, local_documents(ctx))
        app.extensions["issuer.local_documents"] = cached
    return cached[2]


# A verifier made here serves one request or command: within it, each of our status lists is read from the
# database once (a 60-badge award application is one snapshot), and never for longer than this (seconds).
LOCAL_LIST_REUSE = 2.0
FETCH_TIMEOUTS_PER_REQUEST = 3


def get_verifier(app: Flask | None = None):
    """A verifier that knows our own keys locally and fetches other issuers' keys under the fetch policy."""
    from .fetch import FetchBudget, FetchPolicy
    from .resolve import KeyResolver
    from .revocation import local_lists
    from .verify import FetchingStatusLists, Verifier

    app = app or current_app
    ctx = get_context(app)
    allow = bool(app.config["ISSUER_ALLOW_PRIVATE_FETCH"])
    timeout = app.config["ISSUER_FETCH_TIMEOUT"]
    # All fetches of this verifier (one request) share FETCH_TIMEOUTS_PER_REQUEST timeouts: a stranger's
    # 200 badges on 200 slow servers cost a few timeouts, not 200.
    policy = FetchPolicy(allow_http=allow, allow_private=allow, timeout=timeout,
                         budget=FetchBudget(FETCH_TIMEOUTS_PER_REQUEST * timeout))
    # A new resolver per verification: its cache must not outlive a key rotation elsewhere.
    # Other issuers' status lists are fetched under the same limits as their keys; our own come from
    # the database (always current, no round trip to ourselves).
    local = local_lists(app.extensions["issuer.sessionmaker"], ctx)
    return Verifier(KeyResolver(local_documents=_local_documents_of(app, ctx), policy=policy),
                    status_lists=FetchingStatusLists(policy, local=local, local_reuse=LOCAL_LIST_REUSE))


def challenge_secret(app: Flask | None = None) -> bytes:
    """The key that makes presentation challenges unforgeable: ISSUER_SECRET_KEY, or a random key kept
    in the instance folder (made once, mode 0600) so that every process of one install shares it."""
    import os
    import secrets

    app = app or current_app
    configured = os.environ.get("ISSUER_SECRET_KEY")
    if configured:
        return configured.encode("utf-8")
    path = Path(app.instance_path) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")


def challenge_issuer(app: Flask | None = None):
    from .presentations import ChallengeIssuer

    return ChallengeIssuer(challenge_secret(app))
