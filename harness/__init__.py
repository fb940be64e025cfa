"""ollama-harness: prove that a model file really works in Ollama."""

__version__ = "0.1.0"
# The name on PyPI ("ollama-harness" there is an unrelated project): `pip install ollama-test-harness[plot]`.
DISTRIBUTION = "ollama-test-harness"
