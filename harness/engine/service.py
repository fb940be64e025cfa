"""What the adapters need of the engine, as Protocols: the embedding handlers and the OpenAI layer are typed
on these, not on the concrete `Engine`, so they depend on the service's shape and never import `app.py`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from harness.engine.scheduler import LoadedModel
    from harness.engine.store import Manifest


class ModelService(Protocol):
    """Finding a stored model and holding a slot on its runner (what the embedding handlers use)."""

    def find_model(self, raw_name: str) -> Manifest:
        """The stored model a request names: ApiError 400 for a bad name, 404 when there is none."""
        ...

    async def acquire_for(
        self, manifest: Manifest, body: dict[str, Any], *, embedding: bool = False
    ) -> LoadedModel:
        """A slot on `manifest`'s model, loaded with the request's options and keep_alive."""
        ...

    async def release(self, model: LoadedModel) -> None:
        """Give back a slot taken with `acquire_for`."""
        ...


class OllamaHandlers(Protocol):
    """Ollama's own /api handlers on parsed bodies (what the OpenAI-compatible layer translates to)."""

    async def handle_chat(self, body: dict[str, Any]) -> Response: ...

    async def handle_generate(self, body: dict[str, Any]) -> Response: ...

    async def handle_embed(self, body: dict[str, Any]) -> Response: ...

    async def handle_show(self, body: dict[str, Any]) -> Response: ...

    async def tags(self, request: Request) -> Response: ...
