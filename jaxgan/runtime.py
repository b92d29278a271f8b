"""Platform tuning in one place: XLA compile options, host memory, CPU sample chunks, the
compilation cache and the stop signal."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from typing import Any

import jax

log = logging.getLogger("jaxgan")

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
  for them: on a CPU, freed memory is kept mapped (`keep_freed_memory`), as XLA's CPU scratch
  buffers would page-fault every step."""
  platform = mesh.devices.flat[0].platform
  if platform == "cpu":
    keep_freed_memory()
  return platform, compiler_options(platform)


# --- Host memory ---------------------------------------------------------------------------------
#
# XLA's CPU runtime allocates each execution's scratch ("temp") buffer anew, tens of MB for a GAN
# step. glibc serves blocks above 32 MB with a fresh `mmap` and returns them with `munmap`, so
# every step touches tens of thousands of new pages and takes a page fault on each, a large share
# of a small step's wall time. With `mmap` switched off for malloc and the heap's top kept instead
# of trimmed, the buffer is carved from pages that are already mapped and nearly all the faults
# go. Measured figures: BENCHMARKS.md.
#
# This is a process-wide malloc setting (glibc `mallopt`), applied once when a CPU engine is
# built; elsewhere (other C libraries, macOS, accelerators' device memory) it is a no-op. The
# price: memory freed in the middle of the heap is reused, not given back to the OS, so peak host
# memory stays reserved. Set `JAXGAN_KEEP_HOST_MEMORY=0` to leave malloc alone.

KEEP_HOST_MEMORY_ENV = "JAXGAN_KEEP_HOST_MEMORY"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Heap top kept up to 2 GiB - 1 (mallopt takes an int): larger than any shipped step's scratch.
_TRIM_THRESHOLD = 2**31 - 1

_kept_freed_memory: bool | None = None


def keep_freed_memory() -> bool:
  """Ask glibc to serve large blocks from the heap and keep freed pages mapped.

  Returns whether the setting is in effect. Idempotent; a no-op (False) off glibc or with
  JAXGAN_KEEP_HOST_MEMORY=0.
  """
  global _kept_freed_memory
  if _kept_freed_memory is not None:
    return _kept_freed_memory
  _kept_freed_memory = False
  if os.environ.get(KEEP_HOST_MEMORY_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
    return False
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other C libraries have no mallopt
    return False
  mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
  # mallopt returns 1 on success; both must hold for the buffer to stay mapped between steps.
  _kept_freed_memory = (bool(mallopt(_M_MMAP_MAX, 0))
                        and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)))
  if _kept_freed_memory:
    log.debug("host malloc: mmap off, trim threshold %d bytes (%s=0 to disable)",
              _TRIM_THRESHOLD, KEEP_HOST_MEMORY_ENV)
  return _kept_freed_memory


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


def skip_absent_tpu() -> bool:
  """Keeps JAX from starting libtpu where no TPU chip is attached; True if it was kept.

  With libtpu installed (the `test` and `tpu` extras bring it, for `jaxgan compile`), JAX tries
  a TPU backend on every machine: on one without TPUs that fails quietly, but libtpu first
  prints "could not determine TPU accelerator type" and an INVALID_ARGUMENT error on every
  command, which read as a failure. `JAX_PLATFORMS`, when set, is left to decide; compiles for
  TPU topologies (`jaxgan compile`) load libtpu on their own and still work. Call it before
  anything touches a backend.
  """
  if os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_FORCE_TPU_INIT"):
    return False
  try:
    from jax._src import hardware_utils, xla_bridge  # pylint: disable=import-outside-toplevel
    if hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0:
      return False
    registration = xla_bridge._backend_factories.get("tpu")  # pylint: disable=protected-access
    if registration is None:
      return False
    # The registration stays, so that "tpu" remains a known platform (modules such as
    # jax.experimental.pallas register TPU lowerings on import); only its start is replaced
    # by one that fails quietly, as the TPU backend does on a machine without chips.
    registration.factory = _no_tpu_attached
    registration.fail_quietly = True
  except (ImportError, AttributeError, OSError):  # another JAX: leave it as it is
    return False
  return True


def _no_tpu_attached():
  raise RuntimeError("no TPU chip is attached (jaxgan skipped libtpu)")
