"""The embedded Ollama-compatible engine: Ollama's REST API in Python, llama.cpp runners in subprocesses."""

from harness.engine.process import EmbeddedEngine

__all__ = ["EmbeddedEngine"]
