"""`harness gguf fix`: repair a broken GGUF file (the planner is in fix_plan.py, the writer in fix_write.py).

`fix_gguf(path, output, options)` plans the repair and writes the corrected copy; see those modules.
"""

from __future__ import annotations

import os

from harness.gguf.fix_plan import Change, FixOptionError, FixOptions, FixPlan, plan_fix
from harness.gguf.fix_write import FixIncompleteError, FixResult, write_fix

__all__ = [
    "Change",
    "FixIncompleteError",
    "FixOptionError",
    "FixOptions",
    "FixPlan",
    "FixResult",
    "fix_gguf",
    "plan_fix",
    "write_fix",
]


def fix_gguf(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    options: FixOptions,
    *,
    in_place: bool = False,
    force: bool = False,
) -> tuple[FixPlan, FixResult]:
    """Plan and write the repair of `path` (see `write_fix` for `in_place` and `force`)."""
    plan = plan_fix(path, options)
    return plan, write_fix(plan, output, in_place=in_place, force=force)
