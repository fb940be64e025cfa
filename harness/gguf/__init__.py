"""Build and check GGUF files: specs and profiles, vocab, weight recipes, file plans, the streaming writer,
the checker and its repairs, quantize at create, and llama.cpp in a child process.

Import from the modules (`harness.gguf.build`, `harness.gguf.check`, ...): this package imports nothing, so
that a metadata check does not pay for numpy and the writer at start-up.
"""
