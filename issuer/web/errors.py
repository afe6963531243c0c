"""Errors as RFC 9457 problem details for the API, plain pages for browsers. Never a bare 500 for bad input."""

from __future__ import annotations

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError


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
          422: "Unprocessable Content", 500: "Internal Server Error"}


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
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return problem(exc.status, exc.detail, field=exc.field, headers=exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if _wants_json():
            return problem(exc.code or 500, exc.description or exc.name)
        return render_template("error.html", status=exc.code, title=exc.name, detail=exc.description), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        err = InternalServerError()
        if _wants_json():
            return problem(500, "an unexpected error occurred; it has been logged")
        return render_template("error.html", status=500, title=err.name, detail=err.description), 500
