"""The checker's rules per architecture, as data.

Each `ArchRule` lists the keys an architecture reads (with their accepted types, whether llama.cpp requires
them, the hyperparameter name they feed and the default llama.cpp uses when they are missing), the
consistency conditions between hyperparameters, and, where we are sure of them, the tensors it loads with
their shapes in ggml order (`ne`, row length first) as expressions of the hyperparameters.

Expressions are small Python expressions over hyperparameter names (`n_embd`, `n_head`, `n_vocab`...),
evaluated by `evaluate()` with a whitelist of syntax; `given('x')` is true when hyperparameter x came from
a key rather than a default. Types are written as llama.cpp prints them: u32, i32, f32, f64, bool, str,
arr[str], arr[i32]...

Sources: llama.cpp src/llama-model.cpp (load_hparams, load_tensors), src/llama-vocab.cpp, gguf-py
constants (gguf/constants.py: MODEL_TENSORS, Keys). Architectures llama.cpp knows but that have no entry
here are still checked for the keys every architecture needs (`COMMON_KEYS`), their tokenizer and file
structure.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import CodeType

from harness.gguf.arch_names import LLAMACPP_ARCHITECTURES

LLAMA_MAX_LAYERS = 512
INT32_MAX = 2**31 - 1
MIN_CONTEXT = 8  # a context_length below this cannot hold a prompt and a reply

U32 = ("u32",)
F32 = ("f32",)
STR = ("str",)
BOOL = ("bool",)
# head counts and feed-forward lengths may be one value or one value per layer
U32_OR_PER_LAYER = ("u32", "arr[i32]", "arr[u32]")


@dataclass(frozen=True)
class KeyRule:
    """A metadata key: `key` may contain `{arch}`; `hparam` names the value in expressions."""

    key: str
    types: tuple[str, ...]
    required: bool = False
    hparam: str | None = None
    default: str | None = None  # expression used when the key is missing
    why: str = ""  # what llama.cpp does when the key is missing
    read_by_llamacpp: bool = True  # False: llama.cpp never reads it, so a wrong type is only a warning


@dataclass(frozen=True)
class TensorRule:
    """A tensor: `name` may contain `{i}` (one per block); `shape` is ggml `ne` order, as expressions."""

    name: str
    shape: tuple[str, ...]
    required: bool = True
    when: str = "True"  # the rule applies only when this expression holds
    unless: str | None = None  # not required when this other tensor (template) is present


@dataclass(frozen=True)
class Consistency:
    """A condition between hyperparameters that must hold; `message` is formatted with the hyperparameters."""

    code: str
    condition: str
    message: str
    hint: str
    severity: str = "error"


@dataclass(frozen=True)
class ArchRule:
    """Everything the checker knows about one architecture."""

    name: str
    keys: tuple[KeyRule, ...] = ()
    derived: tuple[tuple[str, str], ...] = ()  # (hparam, expression), evaluated after the keys
    checks: tuple[Consistency, ...] = ()
    tensors: tuple[TensorRule, ...] | None = None  # None: tensors are not checked by name and shape
    shapes: tuple[TensorRule, ...] | None = None  # without `tensors`: shapes of the tensors present only
    needs_tokenizer: bool = True
    llm_keys: bool = True  # COMMON_KEYS apply
    note: str = ""  # shown as an info finding (e.g. an architecture llama.cpp itself does not load)


@dataclass(frozen=True)
class TokenizerRule:
    """What one `tokenizer.ggml.model` value needs."""

    name: str
    needs_merges: bool = False
    byte_tokens: bool = False  # SentencePiece byte fallback: <0x00>..<0xFF> must exist
    decodes_byte_tokens: bool = True  # False: llama.cpp aborts on a BYTE-type token (token_to_byte)
    has_vocab: bool = True  # False: llama.cpp cannot tokenize text with it


# Keys every file may carry, with the types llama.cpp reads them as.
GENERAL_KEYS: tuple[KeyRule, ...] = (
    KeyRule("general.architecture", STR, required=True, why="llama.cpp: unknown model architecture: ''"),
    KeyRule("general.alignment", U32),
    KeyRule("general.file_type", U32),
    KeyRule("general.quantization_version", U32, read_by_llamacpp=False),
    KeyRule("general.name", STR),
    KeyRule("tokenizer.ggml.model", STR),
    KeyRule("tokenizer.ggml.pre", STR),
    KeyRule("tokenizer.ggml.tokens", ("arr[str]",)),
    KeyRule("tokenizer.ggml.scores", ("arr[f32]", "arr[i32]")),
    KeyRule("tokenizer.ggml.token_type", ("arr[i32]",)),
    KeyRule("tokenizer.ggml.merges", ("arr[str]",)),
    KeyRule("tokenizer.ggml.bos_token_id", U32),
    KeyRule("tokenizer.ggml.eos_token_id", U32),
    KeyRule("tokenizer.ggml.unknown_token_id", U32),
    KeyRule("tokenizer.ggml.seperator_token_id", U32),
    KeyRule("tokenizer.ggml.padding_token_id", U32),
    KeyRule("tokenizer.ggml.mask_token_id", U32),
    KeyRule("tokenizer.ggml.eot_token_id", U32),
    KeyRule("tokenizer.ggml.eom_token_id", U32),
    KeyRule("tokenizer.ggml.add_bos_token", BOOL),
    KeyRule("tokenizer.ggml.add_eos_token", BOOL),
    KeyRule("tokenizer.ggml.add_space_prefix", BOOL),
    KeyRule("tokenizer.chat_template", STR),
)

SPECIAL_TOKEN_KEYS = tuple(rule.key for rule in GENERAL_KEYS if rule.key.endswith("_token_id"))

# Keys llama.cpp reads for every LLM architecture (llama_model::load_hparams, before the per-arch switch).
COMMON_KEYS: tuple[KeyRule, ...] = (
    KeyRule("{arch}.context_length", U32, True, "n_ctx_train", why="key not found in model"),
    KeyRule("{arch}.embedding_length", U32, True, "n_embd", why="key not found in model"),
    KeyRule("{arch}.block_count", U32, True, "n_layer", why="key not found in model"),
    KeyRule("{arch}.feed_forward_length", U32_OR_PER_LAYER, False, "n_ff", "0"),
    KeyRule("{arch}.attention.head_count", U32_OR_PER_LAYER, False, "n_head", "0"),
    KeyRule("{arch}.attention.head_count_kv", U32_OR_PER_LAYER, False, "n_head_kv", "n_head"),
    KeyRule("{arch}.attention.key_length", U32, False, "n_embd_head_k", "n_embd // n_head"),
    KeyRule("{arch}.attention.value_length", U32, False, "n_embd_head_v", "n_embd // n_head"),
    KeyRule("{arch}.rope.dimension_count", U32, False, "n_rot", "n_embd_head_k"),
    KeyRule("{arch}.rope.freq_base", F32, False, "rope_freq_base", "10000.0"),
    KeyRule("{arch}.rope.scaling.type", STR),
    KeyRule("{arch}.rope.scaling.factor", F32),
    KeyRule("{arch}.rope.scaling.attn_factor", F32),
    KeyRule("{arch}.rope.scaling.original_context_length", U32),
    KeyRule("{arch}.rope.scaling.finetuned", BOOL),
    KeyRule("{arch}.expert_count", U32, False, "n_expert", "0"),
    KeyRule("{arch}.expert_used_count", U32, False, "n_expert_used", "0"),
    KeyRule("{arch}.vocab_size", U32, False, "vocab_size_key"),
    KeyRule("{arch}.attention.layer_norm_rms_epsilon", F32, False, "norm_rms_eps"),
    KeyRule("{arch}.attention.layer_norm_epsilon", F32, False, "norm_eps"),
    KeyRule("{arch}.attention.sliding_window", U32),
    KeyRule("{arch}.attention.causal", BOOL),
    KeyRule("{arch}.pooling_type", U32),
    KeyRule("{arch}.logit_scale", F32),
    KeyRule("{arch}.attn_logit_softcapping", F32),
    KeyRule("{arch}.final_logit_softcapping", F32),
)

RMS_EPS = KeyRule("{arch}.attention.layer_norm_rms_epsilon", F32, True, "norm_rms_eps", why="key not found")
LAYER_NORM_EPS = KeyRule("{arch}.attention.layer_norm_epsilon", F32, True, "norm_eps", why="key not found")
HEAD_COUNT = KeyRule(
    "{arch}.attention.head_count",
    U32_OR_PER_LAYER,
    True,
    "n_head",
    "0",
    why="llama.cpp defaults it to 0 and then fails on the attention tensors' shapes",
)
FEED_FORWARD = KeyRule(
    "{arch}.feed_forward_length",
    U32_OR_PER_LAYER,
    True,
    "n_ff",
    "0",
    why="llama.cpp defaults it to 0 and then fails on the feed-forward tensors' shapes",
)

ATTENTION_GEOMETRY: tuple[tuple[str, str], ...] = (
    ("n_embd_k_gqa", "n_embd_head_k * n_head_kv"),
    ("n_embd_v_gqa", "n_embd_head_v * n_head_kv"),
    ("n_embd_q", "n_embd_head_k * n_head"),
)

BASIC_CHECKS: tuple[Consistency, ...] = (
    Consistency(
        "zero-blocks",
        f"1 <= n_layer <= {LLAMA_MAX_LAYERS}",
        "{arch}.block_count is {n_layer}; llama.cpp needs 1 to " + str(LLAMA_MAX_LAYERS) + " blocks "
        "(it aborts with GGML_ASSERT otherwise)",
        "set {arch}.block_count to the number of blk.N tensor groups in the file",
    ),
    Consistency(
        "bad-hparam",
        "n_embd >= 1",
        "{arch}.embedding_length is {n_embd}; it must be at least 1",
        "set {arch}.embedding_length to the model's hidden size",
    ),
    Consistency(
        "bad-hparam",
        f"n_ctx_train >= {MIN_CONTEXT}",
        "{arch}.context_length is {n_ctx_train}; llama.cpp caps its context at it, so it cannot hold a "
        "prompt and a reply (0 aborts: GGML_ASSERT(n_ctx > 0))",
        "set {arch}.context_length to the model's training context length",
    ),
    Consistency(
        "bad-hparam",
        f"n_ctx_train <= {INT32_MAX}",
        "{arch}.context_length is {n_ctx_train}, above 2^31-1: llama.cpp reads it into a signed 32-bit "
        "context size, which turns negative (GGML_ASSERT(n_ctx > 0) at the first request)",
        "set {arch}.context_length to the model's training context length",
    ),
)

ATTENTION_CHECKS: tuple[Consistency, ...] = (
    Consistency(
        "bad-head-count",
        "n_head >= 1",
        "{arch}.attention.head_count is {n_head}; it must be at least 1",
        "set {arch}.attention.head_count to the number of attention heads",
    ),
    Consistency(
        "bad-head-count",
        "given('n_embd_head_k') or n_embd % n_head == 0",
        "{arch}.embedding_length {n_embd} is not divisible by {arch}.attention.head_count {n_head}",
        "fix the head count, or store the head size in {arch}.attention.key_length / value_length",
    ),
    Consistency(
        "bad-head-count",
        "1 <= n_head_kv <= n_head and n_head % n_head_kv == 0",
        "{arch}.attention.head_count_kv {n_head_kv} does not divide {arch}.attention.head_count {n_head}",
        "head_count_kv must be a divisor of head_count (equal to it without grouped-query attention)",
    ),
)

ROPE_CHECKS: tuple[Consistency, ...] = (
    Consistency(
        "odd-head-dim",
        "n_rot % 2 == 0",
        "the RoPE dimension ({arch}.rope.dimension_count, default the head size) is {n_rot}, which is odd; "
        "llama.cpp loads it, then aborts with GGML_ASSERT(n_dims % 2 == 0) at the first decode",
        "choose head_count so that the head size is even",
    ),
    Consistency(
        "bad-hparam",
        "rope_freq_base > 0",
        "{arch}.rope.freq_base is {rope_freq_base}; it must be positive",
        "set {arch}.rope.freq_base to the model's RoPE theta (10000.0 for llama 2)",
    ),
)

EPS_CHECKS: tuple[Consistency, ...] = (
    Consistency(
        "bad-hparam",
        "norm_rms_eps >= 0",
        "{arch}.attention.layer_norm_rms_epsilon is {norm_rms_eps}: llama.cpp aborts at the first decode "
        "(GGML_ASSERT(eps >= 0.0f))",
        "set it to the model's rms_norm_eps (e.g. 1e-5)",
    ),
    Consistency(
        "bad-hparam",
        "norm_rms_eps != 0",
        "{arch}.attention.layer_norm_rms_epsilon is 0; it should be a small positive number",
        "set it to the model's rms_norm_eps (e.g. 1e-5)",
        severity="warning",
    ),
)
LAYER_NORM_EPS_CHECKS: tuple[Consistency, ...] = (
    Consistency(
        "bad-hparam",
        "norm_eps >= 0",
        "{arch}.attention.layer_norm_epsilon is {norm_eps}: llama.cpp aborts at the first decode "
        "(GGML_ASSERT(eps >= 0.0f))",
        "set it to the model's layer_norm_eps (e.g. 1e-5)",
    ),
)

# llama.cpp checks n_rot == n_embd_head_k for these architectures only ("invalid n_rot: %u, expected %u").
N_ROT_CHECK = Consistency(
    "bad-rope-dims",
    "n_rot == n_embd_head_k",
    "{arch}.rope.dimension_count is {n_rot}, expected {n_embd_head_k} (the head size); "
    "llama.cpp: invalid n_rot: {n_rot}, expected {n_embd_head_k}",
    "set {arch}.rope.dimension_count to the head size, embedding_length / head_count, or remove the key",
)


# The embedding, final norm and (optional: tied to token_embd when absent) output of every decoder here.
_IO_TENSORS: tuple[TensorRule, ...] = (
    TensorRule("token_embd.weight", ("n_embd", "n_vocab")),
    TensorRule("output_norm.weight", ("n_embd",)),
    TensorRule("output.weight", ("n_embd", "n_vocab"), required=False),
)

LLAMA_TENSORS: tuple[TensorRule, ...] = (
    *_IO_TENSORS,
    TensorRule("rope_freqs.weight", ("n_rot // 2",), required=False),
    TensorRule("blk.{i}.attn_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.attn_q.weight", ("n_embd", "n_embd_q"), unless="blk.{i}.attn_qkv.weight"),
    TensorRule("blk.{i}.attn_k.weight", ("n_embd", "n_embd_k_gqa"), unless="blk.{i}.attn_qkv.weight"),
    TensorRule("blk.{i}.attn_v.weight", ("n_embd", "n_embd_v_gqa"), unless="blk.{i}.attn_qkv.weight"),
    TensorRule(
        "blk.{i}.attn_qkv.weight", ("n_embd", "n_embd_q + n_embd_k_gqa + n_embd_v_gqa"), required=False
    ),
    TensorRule("blk.{i}.attn_q.bias", ("n_embd_q",), required=False),
    TensorRule("blk.{i}.attn_k.bias", ("n_embd_k_gqa",), required=False),
    TensorRule("blk.{i}.attn_v.bias", ("n_embd_v_gqa",), required=False),
    TensorRule("blk.{i}.attn_output.weight", ("n_embd_q", "n_embd")),
    TensorRule("blk.{i}.attn_output.bias", ("n_embd",), required=False),
    TensorRule("blk.{i}.ffn_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.ffn_gate.weight", ("n_embd", "n_ff"), when="n_expert == 0"),
    TensorRule("blk.{i}.ffn_down.weight", ("n_ff", "n_embd"), when="n_expert == 0"),
    TensorRule("blk.{i}.ffn_up.weight", ("n_embd", "n_ff"), when="n_expert == 0"),
    TensorRule("blk.{i}.ffn_gate.bias", ("n_ff",), required=False, when="n_expert == 0"),
    TensorRule("blk.{i}.ffn_down.bias", ("n_embd",), required=False, when="n_expert == 0"),
    TensorRule("blk.{i}.ffn_up.bias", ("n_ff",), required=False, when="n_expert == 0"),
    TensorRule("blk.{i}.ffn_gate_inp.weight", ("n_embd", "n_expert"), when="n_expert > 0"),
    TensorRule("blk.{i}.ffn_gate_exps.weight", ("n_embd", "n_ff", "n_expert"), when="n_expert > 0"),
    TensorRule("blk.{i}.ffn_down_exps.weight", ("n_ff", "n_embd", "n_expert"), when="n_expert > 0"),
    TensorRule("blk.{i}.ffn_up_exps.weight", ("n_embd", "n_ff", "n_expert"), when="n_expert > 0"),
)

QWEN2_TENSORS: tuple[TensorRule, ...] = (
    *_IO_TENSORS,
    TensorRule("blk.{i}.attn_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.attn_q.weight", ("n_embd", "n_embd_q")),
    TensorRule("blk.{i}.attn_k.weight", ("n_embd", "n_embd_k_gqa")),
    TensorRule("blk.{i}.attn_v.weight", ("n_embd", "n_embd_v_gqa")),
    TensorRule("blk.{i}.attn_q.bias", ("n_embd_q",), required=False),
    TensorRule("blk.{i}.attn_k.bias", ("n_embd_k_gqa",), required=False),
    TensorRule("blk.{i}.attn_v.bias", ("n_embd_v_gqa",), required=False),
    TensorRule("blk.{i}.attn_output.weight", ("n_embd_q", "n_embd")),
    TensorRule("blk.{i}.ffn_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.ffn_gate.weight", ("n_embd", "n_ff")),
    TensorRule("blk.{i}.ffn_down.weight", ("n_ff", "n_embd")),
    TensorRule("blk.{i}.ffn_up.weight", ("n_embd", "n_ff")),
)

QWEN3_TENSORS: tuple[TensorRule, ...] = (
    *(rule for rule in QWEN2_TENSORS if not rule.name.endswith(".bias")),
    TensorRule("blk.{i}.attn_q_norm.weight", ("n_embd_head_k",)),
    TensorRule("blk.{i}.attn_k_norm.weight", ("n_embd_head_k",)),
)

GEMMA3_TENSORS: tuple[TensorRule, ...] = (
    *_IO_TENSORS,
    TensorRule("blk.{i}.attn_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.attn_q.weight", ("n_embd", "n_embd_q")),
    TensorRule("blk.{i}.attn_k.weight", ("n_embd", "n_embd_k_gqa")),
    TensorRule("blk.{i}.attn_v.weight", ("n_embd", "n_embd_v_gqa")),
    TensorRule("blk.{i}.attn_output.weight", ("n_embd_q", "n_embd")),
    TensorRule("blk.{i}.attn_q_norm.weight", ("n_embd_head_k",)),
    TensorRule("blk.{i}.attn_k_norm.weight", ("n_embd_head_k",)),
    TensorRule("blk.{i}.post_attention_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.ffn_norm.weight", ("n_embd",)),
    TensorRule("blk.{i}.ffn_gate.weight", ("n_embd", "n_ff")),
    TensorRule("blk.{i}.ffn_down.weight", ("n_ff", "n_embd")),
    TensorRule("blk.{i}.ffn_up.weight", ("n_embd", "n_ff")),
    TensorRule("blk.{i}.post_ffw_norm.weight", ("n_embd",)),
)

DECODER_CHECKS = BASIC_CHECKS + ATTENTION_CHECKS + ROPE_CHECKS

# Keys some architectures require beyond the common ones (llama.cpp: key not found in model ...).
EXPERT_FF = KeyRule("{arch}.expert_feed_forward_length", U32, True, why="key not found in model")
SLIDING_WINDOW = KeyRule("{arch}.attention.sliding_window", U32, True, why="key not found in model")
ROPE_SECTIONS = KeyRule(
    "{arch}.rope.dimension_sections", ("arr[i32]", "arr[u32]"), True, why="key not found in model"
)
HAS_EXPERTS = Consistency(
    "bad-hparam",
    "n_expert > 0",
    "{arch}.expert_count is {n_expert}: this architecture is a mixture of experts and llama.cpp refuses a "
    "model without experts",
    "set {arch}.expert_count and expert_used_count, or use the architecture the weights follow",
)


def _decoder(
    name: str,
    *,
    eps: KeyRule = RMS_EPS,
    extra_keys: tuple[KeyRule, ...] = (),
    checks: tuple[Consistency, ...] = DECODER_CHECKS,
    tensors: tuple[TensorRule, ...] | None = None,
    shapes: tuple[TensorRule, ...] | None = None,
    dense_ffn: bool = True,
    note: str = "",
) -> ArchRule:
    keys = (HEAD_COUNT, eps, *((FEED_FORWARD,) if dense_ffn else ()), *extra_keys)
    eps_checks = EPS_CHECKS if eps is RMS_EPS else LAYER_NORM_EPS_CHECKS
    return ArchRule(name, keys, ATTENTION_GEOMETRY, checks + eps_checks, tensors, shapes, note=note)


_LLAMA_SHAPED = ("refact", "minicpm", "llama-embed", "smollm3", "xverse", "internlm2", "exaone", "ernie4_5")
# Mixture-of-experts architectures whose expert feed-forward length llama.cpp requires.
_EXPERT_FF_ARCHS = ("dots1", "ernie4_5-moe", "mimo2", "step35", "deepseek2-ocr", "afmoe", "deepseek")

ARCH_RULES: dict[str, ArchRule] = {
    rule.name: rule
    for rule in (
        _decoder("llama", checks=(*DECODER_CHECKS, N_ROT_CHECK), tensors=LLAMA_TENSORS),
        # llama.cpp loads these with llama's own code (llama_model::load_tensors: LLM_ARCH_LLAMA's case)
        _decoder("mistral3", tensors=LLAMA_TENSORS),
        _decoder("llama4", dense_ffn=False, extra_keys=(EXPERT_FF,)),
        _decoder("qwen2", tensors=QWEN2_TENSORS),
        _decoder("qwen3", tensors=QWEN3_TENSORS),
        _decoder("qwen2vl", extra_keys=(ROPE_SECTIONS,)),
        _decoder("qwen3vl", extra_keys=(ROPE_SECTIONS,)),
        _decoder("qwen2moe", dense_ffn=False),
        _decoder("qwen3moe", dense_ffn=False),
        _decoder("gemma"),
        _decoder("gemma2"),
        _decoder("gemma3", tensors=GEMMA3_TENSORS),
        _decoder("phi3"),
        _decoder(
            "granite",
            extra_keys=tuple(
                KeyRule(f"{{arch}}.{name}", F32, True, why="key not found in model")
                for name in ("logit_scale", "residual_scale", "embedding_scale", "attention.scale")
            ),
            tensors=LLAMA_TENSORS,
        ),
        # Nemotron (deci): llama's tensors, but a block may leave out attention or feed-forward, so only the
        # shapes of the tensors present are checked (with per-block head counts they are not known here).
        _decoder("deci", shapes=LLAMA_TENSORS),
        # Architectures llama.cpp loads with llama's tensors and graph checks (it runs the llama fixture moved
        # to them: scripts/differential_campaign.py --sweep-architectures).
        *(
            _decoder(name, checks=(*DECODER_CHECKS, N_ROT_CHECK), tensors=LLAMA_TENSORS)
            for name in _LLAMA_SHAPED
        ),
        _decoder("deepseek2", dense_ffn=False),
        _decoder("gpt-oss", dense_ffn=False),
        *(_decoder(name, dense_ffn=False, extra_keys=(EXPERT_FF,)) for name in _EXPERT_FF_ARCHS),
        *(_decoder(name, checks=(*DECODER_CHECKS, HAS_EXPERTS)) for name in ("grok", "smallthinker")),
        *(
            _decoder(name, extra_keys=(SLIDING_WINDOW,))
            for name in ("gemma3n", "exaone-moe", "gemma-embedding")
        ),
        *(_decoder(name, eps=LAYER_NORM_EPS) for name in ("stablelm", "orion")),
        _decoder("command-r", eps=LAYER_NORM_EPS),
        _decoder("starcoder2", eps=LAYER_NORM_EPS),
        _decoder("falcon", eps=LAYER_NORM_EPS, checks=(*DECODER_CHECKS, N_ROT_CHECK)),
        _decoder("bert", eps=LAYER_NORM_EPS, checks=BASIC_CHECKS + ATTENTION_CHECKS),
        _decoder("nomic-bert", eps=LAYER_NORM_EPS),
        _decoder(
            "mllama",
            note="llama.cpp has no 'mllama' architecture: only Ollama's own Go engine runs this file",
        ),
        ArchRule("clip", llm_keys=False, needs_tokenizer=False),  # multimodal projectors (mmproj files)
    )
}

# Tensors of a vision/audio tower that Ollama stores in the same file as the text model (its own engine runs
# them; llama.cpp expects them in a separate mmproj file and refuses the extra tensors).
EMBEDDED_TOWER_PREFIXES = ("v.", "mm.", "a.")

# ... plus those only Ollama runs.
KNOWN_ARCHITECTURES: frozenset[str] = LLAMACPP_ARCHITECTURES | frozenset(ARCH_RULES)

TOKENIZER_RULES: dict[str, TokenizerRule] = {
    rule.name: rule
    for rule in (
        TokenizerRule("llama", byte_tokens=True),
        TokenizerRule("gpt2", needs_merges=True, decodes_byte_tokens=False),
        TokenizerRule("gemma4", needs_merges=True, decodes_byte_tokens=False),
        TokenizerRule("bert", decodes_byte_tokens=False),
        TokenizerRule("t5"),
        TokenizerRule("rwkv"),
        TokenizerRule("plamo2"),
        TokenizerRule("hybriddna", needs_merges=True, decodes_byte_tokens=False),
        TokenizerRule("whitespace", needs_merges=True, decodes_byte_tokens=False),
        TokenizerRule("no_vocab", has_vocab=False),
        TokenizerRule("none", has_vocab=False),
        TokenizerRule("test"),
    )
}


def tensor_base_name(name: str) -> str:
    """A tensor's name as gguf-py's TENSOR_NAMES write it: block number as {bid}, no .weight/.bias."""
    base = re.sub(r"^blk\.\d+\.", "blk.{bid}.", name)
    return base.rsplit(".", 1)[0] if base.endswith((".weight", ".bias")) else base


@functools.lru_cache(maxsize=32)
def gguf_py_tensor_names(architecture: str) -> frozenset[str] | None:
    """The tensors gguf-py's MODEL_TENSORS lists for `architecture` (base names), or None if it has none."""
    # gguf-py (and numpy) are imported here only: a check of an architecture with rules here must not pay
    # their import time.
    from gguf.constants import MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES

    arch = next((a for a, n in MODEL_ARCH_NAMES.items() if n == architecture), None)
    if arch is None or arch not in MODEL_TENSORS:
        return None
    return frozenset(TENSOR_NAMES[t] for t in MODEL_TENSORS[arch])


def rules_for(architecture: str) -> ArchRule:
    """The rule for `architecture`; architectures without an entry get the common keys only."""
    return ARCH_RULES.get(architecture) or ArchRule(architecture)


# ------------------------------------------------------------------------------------------ expressions

_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Call,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.FloorDiv,
    ast.Mod,
    ast.USub,
    ast.Not,
    ast.And,
    ast.Or,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
)


class Unknown(Exception):
    """An expression needs a hyperparameter that is not known (missing, wrong type, per-layer varying)."""


@functools.lru_cache(maxsize=512)
def _compile(expression: str) -> CodeType:
    tree = ast.parse(expression, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"unsupported syntax in rule expression {expression!r}: {type(node).__name__}")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id == "given"):
            raise ValueError(f"only given(...) may be called in rule expression {expression!r}")
    return compile(tree, "<rule>", "eval")


class _Names(dict[str, object]):
    def __missing__(self, name: str) -> object:
        raise Unknown(name)


def evaluate(expression: str, hparams: Mapping[str, object], given: Callable[[str], bool]) -> object:
    """Value of a rule expression; raises `Unknown` when it needs an unknown hyperparameter."""
    names = _Names(hparams)
    names["given"] = given
    try:
        return eval(_compile(expression), {"__builtins__": {}}, names)  # whitelisted AST, see _compile
    except ZeroDivisionError:
        raise Unknown("division by zero") from None


@dataclass
class HParams:
    """Hyperparameters read from the keys (`values`) and which of them came from the file (`given`)."""

    values: dict[str, object] = field(default_factory=dict)
    given: set[str] = field(default_factory=set)

    def eval(self, expression: str) -> object:
        return evaluate(expression, self.values, self.given.__contains__)
