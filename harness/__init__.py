"""ollama-harness: prove that a model file really works in Ollama."""

__version__ = "0.1.0"
