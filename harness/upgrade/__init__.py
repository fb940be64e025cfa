"""The upgrade gate: the same suites on an old and a new Ollama, one verdict per metric and per prompt."""
