"""The one table of tensor and file types: which types fixtures are built in, their GGML and file-type
numbers, bits per weight, block sizes, the names Ollama's quantize at create accepts, and the comparable key
of a type name. The builder, the weight recipes, quantize, the matrix and the memory estimate all read it.

Block and type sizes come from gguf-py's `GGML_QUANT_SIZES` (ggml's `type_traits`); file types are
llama.cpp's `llama_ftype` (gguf-py's `LlamaFileType`).
"""

from __future__ import annotations

from collections.abc import Mapping

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

T = GGMLQuantizationType

# Fixture builds: the types a profile's 2-D weights can be written in, and each one's GGML type.
BUILD_TYPES: Mapping[str, GGMLQuantizationType] = {"f32": T.F32, "f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}
TENSOR_TYPES = tuple(BUILD_TYPES)
QUANTIZED_TYPES = tuple(name for name, ggml in BUILD_TYPES.items() if ggml in (T.Q8_0, T.Q4_0))
# general.file_type (llama_ftype) of a file whose 2-D weights all have the given build type.
BUILD_FILE_TYPES: Mapping[str, int] = {
    "f32": int(LlamaFileType.ALL_F32),
    "f16": int(LlamaFileType.MOSTLY_F16),
    "q4_0": int(LlamaFileType.MOSTLY_Q4_0),
    "q8_0": int(LlamaFileType.MOSTLY_Q8_0),
}
QUANT_BLOCK_SIZE = GGML_QUANT_SIZES[T.Q8_0][0]  # values per block of q8_0 and q4_0 (32)

# Bits per weight of the types a matrix may name (the widest is the reference for its deltas): fixture
# profiles are built in TENSOR_TYPES; a user's GGUF may also ask the server for Ollama's quantize types.
TYPE_BITS: Mapping[str, float] = {
    "f32": 32.0,
    "bf16": 16.0,
    "f16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.69,
    "q5_k_s": 5.54,
    "q5_1": 6.0,
    "q5_0": 5.5,
    "q4_k_m": 4.89,
    "q4_k_s": 4.58,
    "q4_1": 5.0,
    "q4_0": 4.5,
    "q3_k_l": 4.27,
    "q3_k_m": 3.91,
    "q3_k_s": 3.5,
    "q2_k": 2.63,
}

# Ollama's `ParseFileType` (quantize at create): the names it accepts (upper case) and the file type of each.
OLLAMA_FILE_TYPES: Mapping[str, LlamaFileType] = {
    "F32": LlamaFileType.ALL_F32,
    "F16": LlamaFileType.MOSTLY_F16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
    "Q4_K_S": LlamaFileType.MOSTLY_Q4_K_S,
    "Q4_K_M": LlamaFileType.MOSTLY_Q4_K_M,
    "Q4_K": LlamaFileType.MOSTLY_Q4_K_M,
    "BF16": LlamaFileType.MOSTLY_BF16,
}
OLLAMA_LISTED_TYPES = "F32, F16, Q4_K_S, Q4_K_M, Q8_0"  # what its error message lists
# The file types Ollama quantizes from.
SOURCE_FILE_TYPES: Mapping[int, str] = {
    LlamaFileType.ALL_F32: "F32",
    LlamaFileType.MOSTLY_F16: "F16",
    LlamaFileType.MOSTLY_BF16: "BF16",
}
# Ollama's FileType.ToTensorType: the type a file type's weight matrices get by default.
DEFAULT_TENSOR_TYPES: Mapping[int, GGMLQuantizationType] = {
    LlamaFileType.ALL_F32: T.F32,
    LlamaFileType.MOSTLY_F16: T.F16,
    LlamaFileType.MOSTLY_BF16: T.BF16,
    LlamaFileType.MOSTLY_Q8_0: T.Q8_0,
    LlamaFileType.MOSTLY_Q4_K_S: T.Q4_K,
    LlamaFileType.MOSTLY_Q4_K_M: T.Q4_K,
}
UNQUANTIZED = (T.F32, T.F16, T.BF16)


def type_key(tensor_type: str) -> str:
    """The comparable form of a type name: lower case (`Q4_K_M` -> `q4_k_m`)."""
    return tensor_type.strip().lower()


def bytes_per_value(type_name: str) -> float:
    """Bytes one value takes in a GGML type named in lower case (`f16` -> 2.0, `q8_0` -> 34/32)."""
    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name.upper()]]
    return type_size / block_size


def tensor_nbytes(shape: tuple[int, ...], ggml_type: GGMLQuantizationType) -> int:
    """Bytes of a tensor of numpy `shape` stored as `ggml_type` (rows of whole blocks)."""
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    n_elements = 1
    for dim in shape:
        n_elements *= int(dim)
    return n_elements // block_size * type_size
