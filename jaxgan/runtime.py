"""Platform tuning in one place: XLA compile options, host memory, CPU sample chunks, the
compilation cache and the stop signal."""

from __future__ import annotations

import os
import signal
from typing import Any

import jax

from jaxgan import hostmem

# LLVM's optimization level for XLA's CPU kernels: -O1 instead of XLA's -O3 compiles a train step
# in clearly less CPU time and the steps and samplers run as fast (BENCHMARKS.md,
# scripts/bench_compile.py).
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


# The smallest piece `sample_chunks` cuts a CPU sampling batch into.
SAMPLE_CHUNK_MIN = 32


def prepare(mesh) -> tuple[str, dict[str, Any] | None]:
  """(platform, compiler options) of the functions compiled for `mesh`, with the host tuned
  for them: on a CPU, freed memory is kept mapped (hostmem.py), as XLA's CPU scratch buffers
  would page-fault every step."""
  platform = mesh.devices.flat[0].platform
  if platform == "cpu":
    hostmem.keep_freed_memory()
  return platform, compiler_options(platform)


def sample_chunks(mesh, num: int) -> int:
  """How many independent pieces a CPU sampler splits a batch of `num` into.

  In eval mode every sample is independent of the others (BatchNorm uses its running
  statistics), so the pieces compute what one batch does (up to float rounding). On a CPU
  they run concurrently on the cores with activations a fraction of the size (faster for
  large batches: BENCHMARKS.md). Accelerators and multi-device meshes keep one batch (their
  kernels want it whole; a piece would sit on one device).
  """
  if mesh.size != 1 or mesh.devices.flat[0].platform != "cpu":
    return 1
  for n in (8, 4, 2):
    if num % n == 0 and num // n >= SAMPLE_CHUNK_MIN:
      return n
  return 1


def enable_compilation_cache(directory: str) -> None:
  """XLA's persistent compilation cache in `directory` (compiles over a second)."""
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


class StopSignal:
  """Turns SIGTERM/SIGINT into a stop between steps, so a final checkpoint gets saved.

  One process: a flag the loop reads. Several: SIGTERM is left to the handler JAX's preemption
  notifier installed at jax.distributed.initialize (it tells every process through the
  coordination service, and Orbax's reached_preemption then stops them all at the same step);
  a Python handler would replace it. SIGINT (Ctrl-C) is passed on to it as a SIGTERM.
  """

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self) -> "StopSignal":
    multi = jax.process_count() > 1
    handlers = ({signal.SIGINT: self._to_notifier} if multi
                else {signal.SIGTERM: self._handle, signal.SIGINT: self._handle})
    for sig, handler in handlers.items():
      try:
        self._previous[sig] = signal.signal(sig, handler)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signum

  def _to_notifier(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signum
    os.kill(os.getpid(), signal.SIGTERM)

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
