"""Build and check GGUF files: specs and profiles, vocab, weight recipes, file plans, the streaming writer."""

from harness.gguf.build import BuiltModel, build_cached, build_gguf, write_gguf
from harness.gguf.plan import KV, GGUFPlan, TensorPlan, plan_gguf
from harness.gguf.spec import ModelSpec, OracleSpec, list_profiles, load_profile

__all__ = [
    "KV",
    "BuiltModel",
    "GGUFPlan",
    "ModelSpec",
    "OracleSpec",
    "TensorPlan",
    "build_cached",
    "build_gguf",
    "list_profiles",
    "load_profile",
    "plan_gguf",
    "write_gguf",
]
