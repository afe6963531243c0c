"""Errors as RFC 9457 problem details for the API, plain pages for browsers. Never a bare 500 for bad input."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError


class ApiError(Exception):
    """An API error with a status and a message that names the problem."""

    def __init__(self, status: int, detail: str, *, field: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or {}


TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
          406: "Not Acceptable", 409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
          422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
          503: "Service Unavailable"}

# The database away (restarting, failing over, the link cut, SQLite locked past its timeout): the request's
# transaction did not commit (the server rolls it back), so nothing of it is stored; the client is told to
# come back. Only a link lost during COMMIT itself leaves the outcome unknown: Idempotency-Key covers that.
DATABASE_RETRY_AFTER = 5  # seconds
_SQLITE_OUTAGES = ("database is locked", "database table is locked", "database is busy",
                   "unable to open database", "disk i/o error")


def database_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not reachable now" (503, try again) rather than a bug (500)."""
    from sqlalchemy import exc as sa

    if isinstance(exc, (sa.DisconnectionError, sa.TimeoutError)):  # TimeoutError: no pooled connection free
        return True
    if not isinstance(exc, sa.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc, sa.OperationalError):
        module = type(exc.orig).__module__
        if module.startswith("psycopg"):  # connection lost or refused, server shutting down, deadlock, timeout
            return True
        if module.startswith("sqlite3"):  # but not "no such table", a bug
            return str(exc.orig).lower().startswith(_SQLITE_OUTAGES)
    return False


def problem(status: int, detail: str, *, field: str | None = None, headers: dict | None = None) -> Response:
    body = {"type": "about:blank", "title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if field:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _wants_json() -> bool:
    if request.path.startswith(("/api/", "/.well-known/")):
        return True
    if request.is_json:  # a client that sends JSON (VC API, OpenID4VCI, wallet offers) reads JSON back
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return problem(exc.status, exc.detail, field=exc.field, headers=exc.headers)

    from flask_limiter import RateLimitExceeded

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        # Say when to come back; a person who posted a form gets a page, a program gets problem+json.
        from .limits import retry_after, too_many_requests_page

        seconds = retry_after()
        headers = {"Retry-After": str(seconds)}
        if _wants_json() or request.accept_mimetypes.best != "text/html":
            return problem(429, f"too many requests from your address (limit {exc.description}); "
                                f"try again in {seconds} seconds", headers=headers)
        return too_many_requests_page(seconds), 429, headers

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if _wants_json():
            return problem(exc.code or 500, exc.description or exc.name)
        return render_template("error.html", status=exc.code, title=exc.name, detail=exc.description), exc.code

    from sqlalchemy import exc as sa

    @app.errorhandler(sa.DBAPIError)
    @app.errorhandler(sa.DisconnectionError)
    @app.errorhandler(sa.TimeoutError)
    def _database_error(exc: Exception):
        if isinstance(exc, sa.DataError):
            # A value the database cannot keep (a NUL character, PostgreSQL's text cannot hold one; text
            # longer than its column): the request's fault. Nothing is stored: the session is rolled back.
            app.logger.info("refused data on %s %s: %s", request.method, request.path, type(exc.orig).__name__)
            return _http_error(BadRequest("the request holds a value that cannot be stored or looked up, such "
                                          "as a NUL character or an over-long text; remove it and try again"))
        if not database_unavailable(exc):
            return _unexpected(exc)
        from flask_babel import gettext as _

        # Only the driver's message: SQLAlchemy's own text carries the statement's parameters (addresses).
        orig = getattr(exc, "orig", None) or exc
        app.logger.warning("database unavailable on %s %s: %s: %s", request.method, request.path,
                           type(orig).__name__, str(orig).strip().splitlines()[0] if str(orig).strip() else "")
        headers = {"Retry-After": str(DATABASE_RETRY_AFTER)}
        if _wants_json():
            return problem(503, "the database cannot be reached at the moment, so the request was not completed; "
                                f"try again in {DATABASE_RETRY_AFTER} seconds (an issue request repeated with the "
                                "same Idempotency-Key never issues twice)", headers=headers)
        page = render_template("error.html", status=503, title=_("Service Unavailable"),
                               detail=_("The database cannot be reached at the moment, so your request was not "
                                        "completed. Please try again in a few seconds."), detail_translated=True)
        return page, 503, headers

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        err = InternalServerError()
        if _wants_json():
            return problem(500, "an unexpected error occurred; it has been logged")
        return render_template("error.html", status=500, title=err.name, detail=err.description), 500
