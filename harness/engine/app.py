"""Ollama's API handlers (the `Engine` service): request parsing, the scheduler and runners, error texts.
The shapes of the answers are `answers.py`; the route table that serves the handlers is `routes.py`."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from harness import __version__
from harness.engine.answers import (
    combine_generation,
    logprobs,
    modelfile_text,
    now,
    parameters_text,
    rendered_only,
    respond,
)
from harness.engine.capabilities import check_request, model_capabilities
from harness.engine.config import EngineConfig, parse_keep_alive
from harness.engine.create import ModelCreator, model_details
from harness.engine.embed import Embeddings
from harness.engine.ggufinfo import GGUFFormatError, GGUFInfo, read_gguf_info
from harness.engine.names import InvalidNameError, ModelName
from harness.engine.options import (
    OptionError,
    completion_fields,
    merge_options,
    prompt_token_limit,
    truncated_prompt,
)
from harness.engine.prompt import ollama_template, render_chat, render_generate
from harness.engine.routing import (
    ApiError,
)
from harness.engine.runner import RunnerDiedError, RunnerLoadError, RunnerRequestError
from harness.engine.scheduler import LoadedModel, LoadOptions, ModelRequest, QueueFullError, Scheduler
from harness.engine.store import (
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    DigestMismatchError,
    InvalidDigestError,
    Manifest,
    Store,
)
from harness.engine.structured import FormatError, format_fields
from harness.engine.thinking import ThinkingParser, ThinkSetting, thinking_events, thinking_tags
from harness.engine.tools import ToolCallParser, tool_call_events, tool_call_tag, tools_of

log = logging.getLogger("harness.engine")

OLLAMA_API_LEVEL = "0.33.0"
# Semver with build metadata: compares equal to the Ollama API level it follows, and names this engine.
ENGINE_VERSION = f"{OLLAMA_API_LEVEL}+harness.{__version__}"
# A rewrite of a completion's stream of chunks (thinking and tool calls parsed out of the text).
Reshape = Callable[[AsyncGenerator[dict[str, Any], None]], AsyncGenerator[dict[str, Any], None]]


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise ApiError(400, f"invalid character in request body: {error}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "json: cannot unmarshal request body into a request object")
    return data


def _parse_name(value: Any, *, required_message: str = "model is required") -> ModelName:
    if not value:
        raise ApiError(400, required_message)
    try:
        return ModelName.parse(str(value))
    except InvalidNameError:
        raise ApiError(400, "invalid model name") from None


def _context_tokens(value: Any) -> list[int]:
    """A generate request's `context` (token ids; absent means none), as Go decodes `[]int`."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise ApiError(400, "context must be an array of token ids")
    return value


def _check_toplogprobs(body: dict[str, Any]) -> None:
    """Ollama's first check of a generate or chat body."""
    top = body.get("top_logprobs") or 0
    if isinstance(top, int) and not 0 <= top <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")


class Engine:
    """State shared by the routes: settings, store, scheduler, creator."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.store = Store(config.models_dir)
        self.scheduler = Scheduler(config, config.models_dir / "runner-logs")
        self.creator = ModelCreator(self.store)
        self.embeddings = Embeddings(self)
        self._capability_cache: dict[tuple[str, str], list[str]] = {}

    # --- helpers ---
    def _capabilities(self, manifest: Manifest, info: GGUFInfo | None = None) -> list[str]:
        """The model's capabilities (capabilities.py), cached per model and template layer: the files are read
        only on a miss (`info`, when the caller has read the model's header already)."""

        model_layer, template_layer = manifest.layer(MEDIA_MODEL), manifest.layer(MEDIA_TEMPLATE)
        assert model_layer is not None
        key = (model_layer.digest, template_layer.digest if template_layer else "")
        if key not in self._capability_cache:
            if info is None:
                try:
                    info = read_gguf_info(self.store.blob_path(model_layer.digest))
                except GGUFFormatError as error:
                    raise ApiError(500, str(error)) from None
            arch = info.header.value("general.architecture")
            pooling = info.header.value(f"{arch}.pooling_type") is not None
            try:
                template = ollama_template(self._layer_text(manifest, MEDIA_TEMPLATE))
                template_vars, tags = template.vars(), thinking_tags(template)
            except ValueError:
                template_vars, tags = [], ("", "")
            self._capability_cache[key] = model_capabilities(
                pooling=pooling, template_vars=template_vars, thinking=all(tags)
            )
        return self._capability_cache[key]

    def _manifest(self, name: ModelName, raw_name: str) -> Manifest:
        manifest = self.store.load(name)
        if manifest is None or manifest.layer(MEDIA_MODEL) is None:
            raise ApiError(404, f"model '{raw_name}' not found")
        return manifest

    def find_model(self, raw_name: str) -> Manifest:
        """The stored model a request names: 400 for a bad name, 404 when there is none."""
        return self._manifest(_parse_name(raw_name), raw_name)

    async def acquire_for(
        self, manifest: Manifest, body: dict[str, Any], *, embedding: bool = False
    ) -> LoadedModel:
        """A slot on `manifest`'s model, loaded with the request's options and keep_alive (and embeddings on,
        if asked); give it back with `scheduler.release`."""
        options = self._options(manifest, body)
        return await self._acquire(self._model_request(manifest, options, self._keep_alive(body), embedding))

    async def release(self, model: LoadedModel) -> None:
        """Give back a slot taken with `acquire_for`."""
        await self.scheduler.release(model)

    def _layer_text(self, manifest: Manifest, media_type: str) -> str | None:
        layer = manifest.layer(media_type)
        return self.store.read_blob_text(layer.digest) if layer else None

    def _layer_json(self, manifest: Manifest, media_type: str) -> Any:
        text = self._layer_text(manifest, media_type)
        return json.loads(text) if text else None

    def _stored_messages(self, manifest: Manifest) -> list[dict[str, Any]]:
        """The Modelfile MESSAGEs (Ollama passes them before the request's own)."""
        return list(self._layer_json(manifest, MEDIA_MESSAGES) or [])

    def _config(self, manifest: Manifest) -> dict[str, Any]:
        return dict(json.loads(self.store.read_blob_text(manifest.config.digest)))

    def _model_request(
        self, manifest: Manifest, options: dict[str, Any], keep_alive_s: float, embedding: bool = False
    ) -> ModelRequest:
        config = self._config(manifest)
        num_ctx = options["num_ctx"] or self.config.context_length
        trained = config.get("context_length")
        if isinstance(trained, int) and trained > 0 and num_ctx > trained:
            log.log(
                logging.WARNING if options["num_ctx"] else logging.DEBUG,
                "requested context size too large for model num_ctx=%d n_ctx_train=%d",
                num_ctx,
                trained,
            )
            num_ctx = trained
        model_layer = manifest.layer(MEDIA_MODEL)
        assert model_layer is not None
        return ModelRequest(
            key=manifest.name.key(),
            display_name=str(manifest.name),
            model_path=self.store.blob_path(model_layer.digest),
            digest=manifest.digest,
            details=model_details(config),
            load_options=LoadOptions(
                num_ctx=max(4, num_ctx),
                num_batch=options["num_batch"],
                num_thread=options["num_thread"] or self.config.num_thread,
                embedding=embedding,
            ),
            keep_alive_s=keep_alive_s,
        )

    def _keep_alive(self, body: dict[str, Any]) -> float:
        if body.get("keep_alive") is None:
            return self.config.keep_alive_s
        try:
            return parse_keep_alive(body["keep_alive"])
        except ValueError as error:
            raise ApiError(400, str(error)) from None

    # --- routes ---
    async def root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": ENGINE_VERSION})

    async def tags(self, request: Request) -> Response:
        models = []
        for manifest in self.store.list():
            if manifest.layer(MEDIA_MODEL) is None:
                continue
            models.append(
                {
                    "name": str(manifest.name),
                    "model": str(manifest.name),
                    "modified_at": manifest.modified_at.astimezone().isoformat(),
                    "size": manifest.size,
                    "digest": manifest.digest.removeprefix("sha256:"),
                    "details": model_details(self._config(manifest)),
                }
            )
        return JSONResponse({"models": models})

    async def ps(self, request: Request) -> Response:
        return JSONResponse({"models": self.scheduler.ps()})

    async def runners(self, request: Request) -> Response:
        """Debug only (not part of Ollama's API): the runner processes, their pids, resident memory
        (`rss_bytes`) and llama.cpp's logged buffer total (`buffer_bytes`, what /api/ps reports); and how
        many requests are waiting for a slot or a load (`pending`, what OLLAMA_MAX_QUEUE bounds)."""
        return JSONResponse({"runners": self.scheduler.runner_pids(), "pending": self.scheduler.pending})

    async def settings(self, request: Request) -> Response:
        """Debug only (not part of Ollama's API): the scheduler settings a client cannot see otherwise, so
        that a test asks them instead of assuming (`num_parallel`, `max_queue`: OLLAMA_NUM_PARALLEL and
        OLLAMA_MAX_QUEUE as this engine read them)."""
        config = self.config
        return JSONResponse(
            {
                "num_parallel": config.num_parallel,
                "max_queue": config.max_queue,
                "max_loaded_models": config.max_loaded_models,
                "context_length": config.context_length,
            }
        )

    async def show(self, request: Request) -> Response:
        return await self.handle_show(await _body(request))

    async def handle_show(self, body: dict[str, Any]) -> Response:
        """/api/show for an already parsed request body (the OpenAI layer calls this too)."""
        raw_name = str(body.get("model") or body.get("name") or "")
        name = _parse_name(raw_name)
        manifest = self._manifest(name, str(name))  # show names a missing model as `model:tag`, as Ollama
        config = self._config(manifest)
        model_layer = manifest.layer(MEDIA_MODEL)
        assert model_layer is not None
        model_path = self.store.blob_path(model_layer.digest)
        try:
            info = read_gguf_info(model_path)
        except GGUFFormatError as error:
            raise ApiError(500, str(error)) from None
        parameters = self._layer_json(manifest, MEDIA_PARAMS) or {}
        template = self._layer_text(manifest, MEDIA_TEMPLATE)
        system = self._layer_text(manifest, MEDIA_SYSTEM)
        licenses = [
            self.store.read_blob_text(layer.digest)
            for layer in manifest.layers
            if layer.media_type == MEDIA_LICENSE
        ]
        answer: dict[str, Any] = {
            "modelfile": modelfile_text(manifest, model_path, template, system, parameters, licenses),
            "parameters": parameters_text(parameters),
            "template": template or "{{ .Prompt }}",
            "details": model_details(config),
            "model_info": info.model_info(verbose=bool(body.get("verbose"))),
            "capabilities": self._capabilities(manifest, info),
            "modified_at": manifest.modified_at.astimezone().isoformat(),
        }
        if system:
            answer["system"] = system
        if licenses:
            answer["license"] = "\n".join(licenses)
        messages = self._layer_json(manifest, MEDIA_MESSAGES)
        if messages:
            answer["messages"] = messages
        if body.get("verbose"):
            answer["tensors"] = info.tensors()
        return JSONResponse(answer)

    async def delete(self, request: Request) -> Response:
        body = await _body(request)
        raw_name = body.get("model") or body.get("name") or ""
        try:
            name = ModelName.parse(raw_name)
        except InvalidNameError:
            raise ApiError(400, f'name "{raw_name}" is invalid') from None
        stored = self.store.resolve(name)
        if stored is None or not self.store.delete(stored):
            raise ApiError(404, f"model '{raw_name}' not found")
        await self.scheduler.unload_key(stored.key())
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        body = await _body(request)
        names = {}
        for field in ("source", "destination"):
            try:
                names[field] = ModelName.parse(body.get(field) or "")
            except InvalidNameError:
                raise ApiError(400, f'{field} "{body.get(field, "")}" is invalid') from None
        if not self.store.copy(names["source"], names["destination"]):
            raise ApiError(404, f'model "{body["source"]}" not found')
        return Response(status_code=200)

    async def head_blob(self, request: Request) -> Response:
        try:
            exists = self.store.has_blob(request.path_params["digest"])
        except InvalidDigestError as error:
            raise ApiError(400, str(error)) from None
        if not exists:
            raise ApiError(404, f'blob "{request.path_params["digest"]}" not found')
        return Response(status_code=200)

    async def create_blob(self, request: Request) -> Response:
        digest = request.path_params["digest"]
        try:
            if self.store.has_blob(digest):
                return Response(status_code=200)
            await self.store.write_blob(digest, request.stream())
        except InvalidDigestError as error:
            raise ApiError(400, str(error)) from None
        except DigestMismatchError as error:
            raise ApiError(400, str(error)) from None
        return Response(status_code=201)

    async def create(self, request: Request) -> Response:
        body = await _body(request)
        name = self.creator.check_request(body)
        events = self.creator.create(name, body)
        return await respond(events, body.get("stream", True) is not False, lambda chunks: chunks[-1])

    async def generate(self, request: Request) -> Response:
        return await self.handle_generate(await _body(request))

    async def handle_generate(self, body: dict[str, Any]) -> Response:
        """/api/generate for an already parsed request body (the OpenAI layer calls this too)."""
        _check_toplogprobs(body)
        raw_name = str(body.get("model") or "")
        name = _parse_name(raw_name)
        if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
            raise ApiError(400, "raw mode does not support template, system, or context")
        manifest = self._manifest(name, raw_name)
        prompt = body.get("prompt") or ""
        loading_only = not prompt and not body.get("images")
        think = ThinkSetting()
        if not (loading_only and self._keep_alive(body) == 0):
            think = check_request("generate", raw_name, self._capabilities(manifest), body)
        if loading_only:
            return await self._load_or_unload(manifest, body, {"response": ""})
        if body.get("raw"):
            text = prompt
        else:
            template = body.get("template") or self._layer_text(manifest, MEDIA_TEMPLATE)
            try:
                text = render_generate(
                    template,
                    system=body.get("system"),
                    prompt=prompt,
                    model_system=self._layer_text(manifest, MEDIA_SYSTEM),
                    model_messages=[] if body.get("context") else self._stored_messages(manifest),
                    suffix=body.get("suffix") or None,
                    think=think,
                )
            except ValueError as error:
                raise ApiError(500, f"template error: {error}") from None
        if body.get("_debug_render_only"):
            return JSONResponse(rendered_only(body, {"response": ""}, text))
        context = None if body.get("raw") else _context_tokens(body.get("context"))
        reshape = self._output_parsers(manifest, text, think, [], chat=False)
        return await self._run(
            manifest, body, text, lambda content: {"response": content}, context=context, reshape=reshape
        )

    async def chat(self, request: Request) -> Response:
        return await self.handle_chat(await _body(request))

    async def handle_chat(self, body: dict[str, Any]) -> Response:
        """/api/chat for an already parsed request body (the OpenAI layer calls this too)."""
        _check_toplogprobs(body)
        raw_name = str(body.get("model") or "")
        name = _parse_name(raw_name)
        manifest = self._manifest(name, raw_name)
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise ApiError(400, "messages must be a list")

        def message(content: str) -> dict[str, Any]:
            return {"message": {"role": "assistant", "content": content}}

        think = ThinkSetting()
        if messages or self._keep_alive(body) != 0:
            think = check_request("chat", raw_name, self._capabilities(manifest), body)
        if not messages:
            return await self._load_or_unload(manifest, body, message(""))

        tools = tools_of(body)
        try:
            text = render_chat(
                self._layer_text(manifest, MEDIA_TEMPLATE),
                messages,
                system=self._layer_text(manifest, MEDIA_SYSTEM),
                model_messages=self._stored_messages(manifest),
                tools=tools,
                think=think,
            )
        except ValueError as error:
            raise ApiError(500, f"template error: {error}") from None
        if body.get("_debug_render_only"):
            return JSONResponse(rendered_only(body, {"message": {"role": "", "content": ""}}, text))
        reshape = self._output_parsers(manifest, text, think, tools, chat=True)
        return await self._run(manifest, body, text, message, reshape=reshape)

    def _output_parsers(
        self, manifest: Manifest, prompt: str, think: ThinkSetting, tools: list[dict[str, Any]], *, chat: bool
    ) -> Reshape | None:
        """What parses the model's output, as Ollama's handlers do: thinking (when on and the model's
        template has tags; a prompt ending in the opening tag starts inside it), then tool calls."""
        template = ollama_template(self._layer_text(manifest, MEDIA_TEMPLATE))
        steps: list[Reshape] = []
        opening, closing = thinking_tags(template)
        if think.value and opening and closing:
            thinking = ThinkingParser(opening, closing)
            if prompt.strip().endswith(opening):
                thinking.add(opening)
            steps.append(functools.partial(thinking_events, parser=thinking, chat=chat))
        if tools:
            parser = ToolCallParser(tool_call_tag(template), tools)
            steps.append(functools.partial(tool_call_events, parser=parser))
        if not steps:
            return None
        return functools.reduce(lambda inner, outer: lambda events: outer(inner(events)), steps)

    async def embed(self, request: Request) -> Response:
        return await self.handle_embed(await _body(request))

    async def handle_embed(self, body: dict[str, Any]) -> Response:
        """/api/embed for an already parsed request body (the OpenAI layer calls this too); see embed.py."""
        return await self.embeddings.embed(body)

    async def legacy_embeddings(self, request: Request) -> Response:
        """/api/embeddings (legacy); see embed.py."""
        return await self.embeddings.embeddings(await _body(request))

    async def _load_or_unload(
        self, manifest: Manifest, body: dict[str, Any], empty: dict[str, Any]
    ) -> Response:
        keep_alive_s = self._keep_alive(body)
        answer = {"model": body["model"], "created_at": now(), **empty, "done": True}
        if keep_alive_s == 0:
            await self.scheduler.unload_when_idle(manifest.name.key())
            return JSONResponse({**answer, "done_reason": "unload"})
        await self.scheduler.release(await self.acquire_for(manifest, body))
        return JSONResponse({**answer, "done_reason": "load"})

    def _options(self, manifest: Manifest, body: dict[str, Any]) -> dict[str, Any]:
        request_options = body.get("options") or {}
        if not isinstance(request_options, dict):
            raise ApiError(400, "options must be an object")
        try:
            return merge_options(self._layer_json(manifest, MEDIA_PARAMS), request_options)
        except OptionError as error:
            raise ApiError(500, str(error)) from None

    async def _acquire(self, model_request: ModelRequest) -> LoadedModel:
        try:
            return await self.scheduler.acquire(model_request)
        except QueueFullError as error:
            raise ApiError(503, str(error)) from None
        except RunnerLoadError as error:
            raise ApiError(500, str(error)) from None

    async def _run(
        self,
        manifest: Manifest,
        body: dict[str, Any],
        prompt: str,
        wrap: Callable[[str], dict[str, Any]],
        *,
        context: list[int] | None = None,
        reshape: Reshape | None = None,
    ) -> Response:
        """Stream one completion. `context` (generate, not raw) is the request's token context, detokenized
        in front of the prompt; the final chunk then carries the `context` of prompt and answer, as Ollama's
        generate does (chat has neither). `reshape` rewrites the stream of chunks (tool calls)."""
        started = time.monotonic_ns()
        options = self._options(manifest, body)
        try:
            output_format = format_fields(body.get("format"))
        except FormatError as error:
            raise ApiError(error.status, str(error)) from None
        model_request = self._model_request(manifest, options, self._keep_alive(body))
        # Ollama bounds the prompt and the tokens of an unlimited generation by the num_ctx asked for, not by
        # the context the model is loaded with (clamped to its trained length): observed on 0.33.
        requested_ctx = options["num_ctx"] or self.config.context_length
        payload = {
            "prompt": prompt,
            **completion_fields(options, requested_ctx),
            **output_format,
        }
        top_logprobs = int(body.get("top_logprobs") or 0) if body.get("logprobs") else -1
        if top_logprobs >= 0:
            payload["n_probs"] = max(top_logprobs, 1)
        model_name = body["model"]
        log.debug("rendered prompt for %s: %s", model_name, json.dumps(prompt))

        async def events() -> AsyncGenerator[dict[str, Any], None]:
            model = await self._acquire(model_request)
            loaded = time.monotonic_ns()
            failed = False
            first_event = True
            pieces: list[str] = []
            try:
                if context:
                    payload["prompt"] = await model.runner.detokenize(context) + prompt
                text = payload["prompt"]
                fitted = await self._fit_prompt(model, text, requested_ctx, options)
                async for event in model.runner.completion({**payload, "prompt": fitted}):
                    if context is not None:
                        pieces.append(event.get("content", ""))
                    if first_event:
                        first_event = False
                        log.debug(
                            "first event from runner: %.2f ms after request start (%.2f ms after slot)",
                            (time.monotonic_ns() - started) / 1e6,
                            (time.monotonic_ns() - loaded) / 1e6,
                        )
                    if not event.get("stop"):
                        if not event.get("content") and top_logprobs < 0:
                            continue  # Ollama sends no chunk for a piece without text (the end token's)
                        chunk = {
                            "model": model_name,
                            "created_at": now(),
                            **wrap(event.get("content", "")),
                            "done": False,
                        }
                        if top_logprobs >= 0:
                            chunk["logprobs"] = logprobs(event, top_logprobs)
                        yield chunk
                        continue
                    timings = event.get("timings", {})
                    final = {
                        "model": model_name,
                        "created_at": now(),
                        **wrap(event.get("content", "")),
                        "done": True,
                        "done_reason": "length" if event.get("stop_type") == "limit" else "stop",
                        "total_duration": time.monotonic_ns() - started,
                        "load_duration": loaded - started,
                        "prompt_eval_count": int(timings.get("prompt_n", 0)) + int(timings.get("cache_n", 0)),
                        "prompt_eval_duration": int(timings.get("prompt_ms", 0.0) * 1e6),
                        "eval_count": int(timings.get("predicted_n", event.get("tokens_predicted", 0))),
                        "eval_duration": int(timings.get("predicted_ms", 0.0) * 1e6),
                    }
                    if context is not None:
                        final["context"] = await model.runner.tokenize(text + "".join(pieces))
                    yield final
            except RunnerDiedError as error:
                failed = True
                raise ApiError(500, str(error)) from None
            except RunnerRequestError as error:
                raise ApiError(400 if error.status == 400 else 500, str(error)) from None
            finally:
                if failed:
                    model.broken = True
                await self.scheduler.release(model)

        chunks = events() if reshape is None else reshape(events())
        return await respond(chunks, body.get("stream", True) is not False, combine_generation)

    async def _fit_prompt(
        self, model: LoadedModel, text: str, num_ctx: int, options: dict[str, Any]
    ) -> str | list[int]:
        """The prompt as the runner gets it: the text, or, when it is over Ollama's limit for the context
        (options.prompt_token_limit), its tokens truncated as Ollama truncates them. Only a text with more
        bytes than the limit can be over it, so others are not tokenized here."""
        limit = prompt_token_limit(num_ctx)
        if len(text.encode()) + 1 <= limit:  # a token is at least one byte; the BOS the only exception
            return text
        tokens = await model.runner.tokenize(text, add_special=True)
        if len(tokens) <= limit:
            return text
        bos = len(tokens) - len(await model.runner.tokenize(text))
        keep = options["num_keep"] + bos
        log.warning(
            "truncating input prompt limit=%d prompt=%d keep=%d new=%d", limit, len(tokens), keep, limit
        )
        return truncated_prompt(tokens, limit, keep)

    async def shutdown(self) -> None:
        await self.scheduler.shutdown()
