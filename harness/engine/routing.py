"""Gin's router behaviour, as Ollama configures it: exact methods, Go's 404 page, 405 with `Allow`.

Starlette differs from gin in four ways this module removes: it answers HEAD wherever GET is routed (gin
only where HEAD is registered), it answers an unknown path with its own text, its 405 lists one route's
methods, and it redirects a trailing slash for any method with 307 (gin: only where the same method has the
path without it, 301 for GET and 307 otherwise, before any middleware runs: `TrailingSlashRedirect`).

Ollama sets `HandleMethodNotAllowed`, so a known path asked with another method gets `405 method not
allowed` and an `Allow` header naming every method the path has, in the order gin keeps its method trees
(the order Ollama first registers each method: HEAD, GET, POST, DELETE).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

METHOD_TREE_ORDER = ("HEAD", "GET", "POST", "DELETE")


class ApiError(Exception):
    """An error answer from any route: HTTP status and Ollama's error text (the handlers turn it into
    `{"error": ...}`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> dict[str, str]:
    """The `{"error": ...}` object for a message; every error text leaves the engine through here.

    Texts can carry bytes that are not UTF-8 (the GGUF reader keeps them as surrogate escapes in tensor
    names and keys); they are shown backslash-escaped so that the answer stays valid UTF-8 JSON.
    """
    return {"error": message.encode("utf-8", "backslashreplace").decode("utf-8")}


def error_response(status: int, message: str) -> JSONResponse:
    """Ollama's error answer: `{"error": message}` with `status`."""
    return JSONResponse(error_body(message), status_code=status)


def gin_route(path: str, endpoint: Callable[..., Any], methods: Sequence[str]) -> Route:
    """A route that answers exactly `methods` (no HEAD added to GET)."""
    route = Route(path, endpoint, methods=list(methods))
    route.methods = set(methods)
    return route


def _gin_error(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    """Gin's serveError: the default body as bare `text/plain` (no charset)."""
    headers = {"Content-Type": "text/plain", **(headers or {})}
    return Response(body.encode(), status_code=status, headers=headers)


async def page_not_found(request: Request, exc: Exception) -> Response:
    """Gin's answer to a path no route has."""
    return _gin_error(404, "404 page not found")


class TrailingSlashRedirect:
    """Gin's RedirectTrailingSlash as an outermost ASGI middleware, since gin redirects before any of its
    middleware runs: a path ending in `/` that no route has, whose path without that slash a route has for
    the same method, is redirected there."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    def _routed(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        redirect = (
            scope["type"] == "http"
            and path != "/"
            and path.endswith("/")
            and not self._routed(scope)
            and self._routed({**scope, "path": path[:-1]})
        )
        if redirect:
            await _redirect(Request(scope), path[:-1])(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _redirect(request: Request, path: str) -> Response:
    """Go's http.Redirect as gin calls it: 301 for GET, 307 for other methods; a small HTML body for GET."""
    location = f"{path}?{request.url.query}" if request.url.query else path
    status, text = (301, "Moved Permanently") if request.method == "GET" else (307, "Temporary Redirect")
    headers = {"Location": location}
    if request.method in ("GET", "HEAD"):
        headers["Content-Type"] = "text/html; charset=utf-8"
    body = f'<a href="{html.escape(location)}">{text}</a>.\n\n' if request.method == "GET" else ""
    return Response(body.encode(), status_code=status, headers=headers)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """Gin's answer to a routed path asked with a method it does not have."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    allowed = [method for method in METHOD_TREE_ORDER if method in methods]
    allowed += sorted(methods.difference(METHOD_TREE_ORDER))
    return _gin_error(405, "405 method not allowed", {"Allow": ", ".join(allowed)})
