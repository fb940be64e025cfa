"""The engine's route table: every Ollama path with its methods and handler, the OpenAI-compatible routes,
and the ASGI app around them (gin's 404/405 and redirects, Ollama's access checks)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from harness.engine.access import AccessMiddleware, allowed_origins
from harness.engine.app import ENGINE_VERSION, Engine, log
from harness.engine.config import EngineConfig
from harness.engine.openai_compat import openai_routes
from harness.engine.openai_responses import responses_routes
from harness.engine.routing import (
    ApiError,
    TrailingSlashRedirect,
    error_response,
    gin_route,
    method_not_allowed,
    page_not_found,
)


def _handler(method: Callable[[Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await method(request)
        except ApiError as error:
            return error_response(error.status, error.message)
        return response

    return endpoint


NO_REGISTRY = {
    "/api/pull": "pull model manifest: the embedded engine has no registry to pull from; "
    "create the model from a GGUF file instead (POST /api/blobs/:digest, then /api/create with files)",
    "/api/push": "the embedded engine has no registry to push to; push from a real Ollama server",
}


async def _no_registry(request: Request) -> Response:
    """/api/pull and /api/push: this engine has no registry, and says so (Ollama would try the network)."""
    return error_response(500, NO_REGISTRY[request.url.path])


def build_app(config: EngineConfig) -> Starlette:
    """The ASGI app; runners are stopped when the app shuts down."""
    engine = Engine(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("Listening on %s:%d (version %s)", config.host, config.port, ENGINE_VERSION)
        try:
            yield
        finally:
            await engine.shutdown()

    routes = [
        gin_route("/", _handler(engine.root), ["GET", "HEAD"]),
        gin_route("/api/version", _handler(engine.version), ["GET", "HEAD"]),
        gin_route("/api/tags", _handler(engine.tags), ["GET", "HEAD"]),
        gin_route("/api/ps", _handler(engine.ps), ["GET"]),
        gin_route("/api/show", _handler(engine.show), ["POST"]),
        gin_route("/api/delete", _handler(engine.delete), ["DELETE"]),
        gin_route("/api/copy", _handler(engine.copy), ["POST"]),
        gin_route("/api/blobs/{digest}", _handler(engine.head_blob), ["HEAD"]),
        gin_route("/api/blobs/{digest}", _handler(engine.create_blob), ["POST"]),
        gin_route("/api/create", _handler(engine.create), ["POST"]),
        gin_route("/api/generate", _handler(engine.generate), ["POST"]),
        gin_route("/api/chat", _handler(engine.chat), ["POST"]),
        gin_route("/api/embed", _handler(engine.embed), ["POST"]),
        gin_route("/api/embeddings", _handler(engine.legacy_embeddings), ["POST"]),
        gin_route("/harness/runners", _handler(engine.runners), ["GET"]),
        gin_route("/harness/settings", _handler(engine.settings), ["GET"]),
        *(gin_route(path, _no_registry, ["POST"]) for path in NO_REGISTRY),
        *openai_routes(engine),
        *responses_routes(engine),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: page_not_found, 405: method_not_allowed},
        middleware=[
            Middleware(TrailingSlashRedirect, routes=routes),
            Middleware(AccessMiddleware, bind_host=config.host, origins=allowed_origins(config.origins)),
        ],
    )
    app.router.redirect_slashes = False  # gin's trailing-slash redirect is routing.TrailingSlashRedirect
    app.state.engine = engine
    return app
