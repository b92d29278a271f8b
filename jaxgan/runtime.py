"""Platform tuning shared by every compiled function of an engine."""

from __future__ import annotations

import os
from typing import Any

# LLVM's optimization level for XLA's CPU kernels. -O1 instead of XLA's -O3 cuts the XLA compile
# of a train step by 15-20 % of CPU time (musegan_lpd5: 31.2 -> 27.6 s in all, tutorial 19.6 ->
# 15.6 s; scripts/bench_compile.py), and the steps and samplers measured ran as fast or faster.
CPU_OPT_LEVEL_FLAG = "xla_backend_optimization_level"
CPU_OPT_LEVEL = 1


def compiler_options(platform: str, xla_flags: str | None = None) -> dict[str, Any] | None:
  """XLA options for the functions an engine compiles on `platform`; None keeps XLA's defaults.

  On CPU: `CPU_OPT_LEVEL`, unless XLA_FLAGS (`xla_flags`, default the environment's) sets the
  level itself. Accelerators keep XLA's defaults.
  """
  flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
  if platform != "cpu" or CPU_OPT_LEVEL_FLAG in flags:
    return None
  return {CPU_OPT_LEVEL_FLAG: CPU_OPT_LEVEL}
