"""`harness serve`: run the embedded Ollama-compatible engine in the foreground."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from harness.engine.config import EngineConfig, parse_host
from harness.engine.runner import set_parent_death_signal
from harness.errors import HarnessError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `serve` to the `harness` command."""
    parser = subparsers.add_parser(
        "serve",
        help="run the embedded Ollama-compatible engine (llama.cpp runners, Ollama's REST API)",
        description="Serve Ollama's REST API from this machine with llama.cpp runners. Settings come from "
        "OLLAMA_HOST, OLLAMA_MODELS, OLLAMA_KEEP_ALIVE, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_LOADED_MODELS, "
        "OLLAMA_MAX_QUEUE, OLLAMA_CONTEXT_LENGTH and OLLAMA_ORIGINS; the options below override them.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=serve)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="HOST:PORT to bind (default OLLAMA_HOST or 127.0.0.1:11434)")
    parser.add_argument(
        "--models", type=Path, help="models folder (default OLLAMA_MODELS or ~/.ollama/models)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the server's log level (default info)",
    )


def serve(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; every runner is stopped on the way out."""
    import uvicorn

    from harness.engine.routes import build_app

    config = EngineConfig.from_env()
    if args.host:
        host, port = parse_host(args.host)
        config = dataclasses.replace(config, host=host, port=port)
    if args.models:
        config = dataclasses.replace(config, models_dir=args.models)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="time=%(asctime)s level=%(levelname)s msg=%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("harness.engine").info("server config %s", config)
    app = build_app(config)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=args.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
        access_log=args.log_level == "debug",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.engine.commands`: what EmbeddedEngine runs (dies with its parent)."""
    set_parent_death_signal()
    parser = argparse.ArgumentParser(prog="python -m harness.engine.commands")
    add_serve_arguments(parser)
    try:
        return serve(parser.parse_args(argv))
    except HarnessError as error:  # a bad setting, e.g. OLLAMA_ORIGINS: say so, no traceback
        print(f"harness serve: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
