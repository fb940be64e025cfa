"""The models a suites session tests, and how they get onto the server.

Fixture profile -> GGUF (`build_cached`) -> Modelfile rendered from `modelfiles/*.j2` -> parsed -> blob upload
(HEAD first) -> structured create fields -> model created under a unique name
`harness-<profile>[-<type>]-<hash8>-<run6>` (hash of the file, the Modelfile and any `quantize`). A user's
GGUF goes the same way after `check_gguf` (errors stop the run with the findings). An existing model
(`--harness-model`) is only looked up. Models this session created are deleted at its end (unless
--harness-keep-models; see harness.plugin). With --harness-keep-models the name has no run part, so a re-run
with nothing changed finds the model on the server and creates nothing (GGUFs are cached by spec hash:
`build_cached`).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, ServerError
from harness.server.client import OllamaRequestError

FIXTURE_MODELFILE = (
    "fixture"  # modelfiles/fixture.j2: FROM the file, a TEMPLATE that passes the prompt through
)
# A user's GGUF without --harness-modelfile gets a Modelfile with only FROM: the server picks the template
# (from the file's tokenizer.chat_template), as `ollama create` does.
_NAME_UNSAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class ModelUnderTest:
    """A model on the server that the suites use.

    `source` is "fixture" (built from a profile), "gguf" (a user's file) or "model" (already on the server);
    `created` says whether this session created it (and so deletes it).
    """

    name: str
    source: str
    created: bool
    profile: str | None = None
    spec: Any = None  # harness.gguf.spec.ModelSpec for fixtures
    spec_hash: str | None = None
    gguf_path: Path | None = None
    gguf_sha256: str | None = None
    digest: str | None = None
    modelfile: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    tensor_type: str | None = None  # the type asked by --harness-matrix (None: the file's own)
    quantize: str | None = None  # the `quantize` the create asked of the server
    file_size: int | None = None  # bytes of the model's files, as the server lists them
    reused: bool = False  # already on the server (--harness-keep-models re-run): not created again
    setup_s: float | None = None  # seconds to build, upload and create (or find) it
    identity: dict[str, Any] = field(
        default_factory=dict
    )  # as the server showed it (`--model`); else derived

    @property
    def context_length(self) -> int | None:
        """The file's trained context length (from the spec or the GGUF header), when known."""
        if self.spec is not None:
            return int(self.spec.context_length)
        if self.gguf_path is not None:
            return gguf_facts(self.gguf_path).get("context_length")
        return None

    @property
    def oracle(self) -> Any:
        """The fixture's OracleSpec (prompt, continuation) when its weights are an oracle, else None."""
        if self.spec is None or getattr(self.spec, "weights", None) != "oracle":
            return None
        return self.spec.oracle

    def identity_fields(self) -> dict[str, Any]:
        """What the user gave (see harness.modelfile.identity): shown by the server for `--model`, else from
        the file, profile, type and Modelfile this session created the model from."""
        if self.identity:
            return self.identity
        # lazy: pytest loads this plugin in every run; a session's modules load when it starts
        from harness.modelfile.identity import model_identity

        return model_identity(
            gguf_sha256=self.gguf_sha256,
            profile=self.profile,
            tensor_type=self.tensor_type,
            quantize=self.quantize,
            modelfile=self.modelfile,
        )

    def to_record(self) -> dict[str, Any]:
        """What run.json keeps about the model."""
        return {
            "name": self.name,
            "source": self.source,
            "created": self.created,
            "profile": self.profile,
            "spec_hash": self.spec_hash,
            "gguf_path": str(self.gguf_path) if self.gguf_path else None,
            "gguf_sha256": self.gguf_sha256,
            "digest": self.digest,
            "modelfile": self.modelfile,
            "details": self.details,
            "tensor_type": self.tensor_type,
            "quantize": self.quantize,
            "file_size": self.file_size,
            "reused": self.reused,
            "setup_s": self.setup_s,
            "identity": self.identity_fields(),
        }


def unique_model_name(kind: str, content_hash: str, run_id: str | None) -> str:
    """`harness-<kind>-<hash8>-<run6>`: unique per run, recognisable, valid as an Ollama model name.
    Without a run id, `harness-<kind>-<hash8>`: the same content always gets the same name (kept models)."""
    safe_kind = _NAME_UNSAFE.sub("-", kind.lower()).strip("-") or "model"
    name = f"harness-{safe_kind}-{content_hash[:8]}"
    return f"{name}-{run_id[-6:]}" if run_id else name


def gguf_facts(path: Path) -> dict[str, Any]:
    """What `show` should report for a GGUF: family (architecture), quantization level, context length."""
    import gguf

    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
    from harness.gguf.reader import read_gguf_header

    header = read_gguf_header(path)
    architecture = header.value("general.architecture")
    facts: dict[str, Any] = {"family": architecture}
    context = header.value(f"{architecture}.context_length")
    facts["context_length"] = int(context) if isinstance(context, int) else None
    file_type = header.value("general.file_type")
    if isinstance(file_type, int):
        try:
            name = gguf.LlamaFileType(file_type).name
        except ValueError:
            name = None
        if name is not None:
            facts["quantization_level"] = name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return facts


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_user_gguf(path: Path) -> Any:
    """Run the checker on a user's GGUF; raises HarnessError listing the findings when it has errors."""
    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
    from harness.gguf.check import check_gguf

    if not path.is_file():
        raise HarnessError(f"--harness-gguf {path}: no such file", "pass the path of a .gguf file")
    report = check_gguf(path)
    if not report.ok:
        findings = "\n".join(
            f"  [{finding.code}] {finding.message}" + (f" (hint: {finding.hint})" if finding.hint else "")
            for finding in report.errors
        )
        raise HarnessError(
            f"--harness-gguf {path} has {len(report.errors)} error(s); it would not load:\n{findings}",
            "fix the file (harness gguf check shows every finding), or test another file",
        )
    return report


class ModelFactory:
    """Creates the session's models (once each) and remembers them on the session (run.json, clean-up)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._by_key: dict[str, ModelUnderTest] = {}

    @property
    def client(self) -> Any:
        return self.session.require_client()

    def __call__(self, profile: str, *, modelfile: str | None = None) -> ModelUnderTest:
        return self.from_profile(profile, modelfile=modelfile)

    @property
    def _run_suffix(self) -> str | None:
        """The run id in model names; none with --harness-keep-models, so a re-run finds its models again."""
        return None if self.session.options.keep_models else self.session.recorder.run_id

    def from_profile(
        self,
        profile: str,
        *,
        modelfile: str | None = None,
        tensor_type: str | None = None,
        weights: str | None = None,
    ) -> ModelUnderTest:
        """The fixture model of `profile` (built, created and remembered on first use); `tensor_type`
        builds it in another type than the profile's (the --harness-matrix), `weights` with another weight
        recipe (an oracle's vocabulary and template with `random` weights: a negative control)."""
        key = f"profile:{profile}:{modelfile}:{tensor_type}:{weights}"
        if key not in self._by_key:
            # lazy: pytest loads this plugin in every run; a session's modules load when it starts
            from harness.gguf.build import build_cached
            from harness.gguf.spec import load_profile

            started = time.perf_counter()
            spec = load_profile(profile)
            if tensor_type is not None:
                spec = spec.replace(tensor_type=tensor_type)
            if weights is not None:
                spec = spec.replace(weights=weights)
            progress = self.session.progress
            progress.update(f"{spec.name}: building the GGUF file (or taking it from the cache)")
            built = build_cached(spec)
            progress.note(
                f"{spec.name}: GGUF {'from the cache' if built.from_cache else 'built'}: {built.path}"
            )
            kind = "-".join(part for part in (spec.name, tensor_type, weights) if part)
            self._by_key[key] = self._create(
                kind,
                built.path,
                modelfile or FIXTURE_MODELFILE,
                source="fixture",
                profile=spec.name,
                spec=spec,
                spec_hash=built.spec_hash,
                sha256=built.sha256,
                tensor_type=tensor_type,
                started=started,
            )
        return self._by_key[key]

    def from_gguf(
        self, path: Path, *, modelfile: str | None = None, tensor_type: str | None = None
    ) -> ModelUnderTest:
        """A model created from the user's GGUF file (already checked at session start); a `tensor_type`
        other than the file's is asked of the server (`quantize`), which raises `QuantizeNotSupported`
        when the server refuses."""
        key = f"gguf:{path}:{modelfile}:{tensor_type}"
        if key not in self._by_key:
            # lazy: pytest loads this plugin in every run; a session's modules load when it starts
            from harness.plugin.matrix import plan_entry

            started = time.perf_counter()
            sha256 = file_sha256(path)
            quantize = None
            if tensor_type is not None:
                quantize = plan_entry(tensor_type, file_type=self._file_type(path)).quantize
            kind = f"{path.stem}-{tensor_type}" if quantize else path.stem
            self._by_key[key] = self._create(
                kind,
                path.resolve(),
                modelfile,
                source="gguf",
                sha256=sha256,
                tensor_type=tensor_type,
                quantize=quantize,
                started=started,
            )
        return self._by_key[key]

    @staticmethod
    def _file_type(path: Path) -> str | None:
        level = gguf_facts(path).get("quantization_level")
        return str(level) if level else None

    def existing(self, name: str) -> ModelUnderTest:
        """A model already on the server (`--harness-model`): looked up, never created nor deleted."""
        key = f"model:{name}"
        if key not in self._by_key:
            # lazy: pytest loads this plugin in every run; a session's modules load when it starts
            from harness.modelfile.identity import identity_from_shown

            try:
                shown = self.client.show(name)
            except ServerError as error:
                raise HarnessError(
                    f"--harness-model {name}: {error.message}",
                    "list the server's models with `ollama list`, or pull the model first",
                ) from error
            model = ModelUnderTest(
                name=name,
                source="model",
                created=False,
                digest=_digest_of(self.client, name),
                details=_details(shown),
                identity=identity_from_shown(_field(shown, "modelfile")),
            )
            self.session.add_model(model)
            self._by_key[key] = model
        return self._by_key[key]

    def _create(
        self,
        kind: str,
        gguf_path: Path,
        modelfile_template: str | None,
        *,
        source: str,
        sha256: str,
        profile: str | None = None,
        spec: Any = None,
        spec_hash: str | None = None,
        tensor_type: str | None = None,
        quantize: str | None = None,
        started: float | None = None,
    ) -> ModelUnderTest:
        """Create the model (named after its content) unless a kept one of that name is on the server."""
        # lazy: pytest loads this plugin in every run; a session's modules load when it starts
        from harness.modelfile.parse import parse_modelfile, quote
        from harness.modelfile.render import render_modelfile

        started = time.perf_counter() if started is None else started
        if modelfile_template is None:
            text = f"FROM {quote(str(gguf_path))}\n"
        else:
            text = render_modelfile(modelfile_template, gguf_path=str(gguf_path))
        content = hashlib.sha256(
            "\0".join([sha256, text.replace(str(gguf_path), "<gguf>"), quantize or ""]).encode()
        ).hexdigest()
        name = unique_model_name(kind, content, self._run_suffix)
        listed = _listing(self.client, name) if self._run_suffix is None else None
        reused = listed is not None
        if listed is None:
            try:
                self.client.create_from_modelfile(
                    name, parse_modelfile(text), relative_dir=gguf_path.parent, quantize=quantize
                )
            except OllamaRequestError as error:
                if quantize is not None and _refused_quantize(error):
                    # lazy: pytest loads this plugin in every run; a session's modules load when it starts
                    from harness.plugin.matrix import quantize_refusal

                    raise quantize_refusal(
                        quantize, self._file_type(gguf_path), error.server_message or error.message
                    ) from error
                raise
            listed = _listing(self.client, name) or {}
        model = ModelUnderTest(
            name=name,
            source=source,
            created=True,
            profile=profile,
            spec=spec,
            spec_hash=spec_hash,
            gguf_path=gguf_path,
            gguf_sha256=sha256,
            digest=listed.get("digest"),
            modelfile=text,
            details=_details(self.client.show(name)),
            tensor_type=tensor_type,
            quantize=quantize,
            file_size=listed.get("size"),
            reused=reused,
            setup_s=round(time.perf_counter() - started, 6),
        )
        self.session.add_model(model)
        return model


def _field(shown: Any, name: str) -> Any:
    """A field of a /api/show answer (a dict, or the ollama client's ShowResponse)."""
    return shown.get(name) if isinstance(shown, dict) else getattr(shown, name, None)


def _details(shown: Any) -> dict[str, Any]:
    details = _field(shown, "details")
    if details is None:
        return {}
    if hasattr(details, "model_dump"):
        return dict(details.model_dump(mode="json"))
    return dict(details)


def _listing(client: Any, name: str) -> dict[str, Any] | None:
    """The server's /api/tags entry for `name` ({"digest", "size"}), or None when it is not listed."""
    try:
        listed = client.list()
    except ServerError:
        return None
    models = listed.get("models") if isinstance(listed, dict) else getattr(listed, "models", listed)
    for entry in models or []:
        fields = entry if isinstance(entry, dict) else entry.model_dump()
        entry_name = fields.get("name") or fields.get("model") or ""
        if str(entry_name).removesuffix(":latest") == name.removesuffix(":latest"):
            return {"digest": fields.get("digest"), "size": fields.get("size")}
    return None


def _digest_of(client: Any, name: str) -> str | None:
    listed = _listing(client, name)
    return listed.get("digest") if listed else None


def _refused_quantize(error: OllamaRequestError) -> bool:
    """Whether a create with `quantize` failed because the server will not write that type: a 400, or an
    error of Ollama's quantize step (a 500 or an in-band error naming quantization: an unknown type, a
    source it cannot quantize)."""
    return error.status_code == 400 or "quantiz" in (error.server_message or error.message).lower()
