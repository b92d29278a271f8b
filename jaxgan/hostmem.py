"""Host memory: keep the pages of freed blocks so that XLA's CPU steps do not fault them in again.

XLA's CPU runtime allocates each execution's scratch ("temp") buffer anew, tens of MB for a GAN
step. glibc serves blocks above 32 MB with a fresh `mmap` and returns them with `munmap`, so every
step touches tens of thousands of new pages and takes a page fault on each, a large share of a
small step's wall time. With `mmap` switched off for malloc and the heap's top kept instead of
trimmed, the buffer is carved from pages that are already mapped and nearly all the faults go.
Measured figures: BENCHMARKS.md.

This is a process-wide malloc setting (glibc `mallopt`), applied once when a CPU engine is built;
elsewhere (other C libraries, macOS, accelerators' device memory) it is a no-op. The price: memory
freed in the middle of the heap is reused, not given back to the OS, so peak host memory stays
reserved. Set `JAXGAN_KEEP_HOST_MEMORY=0` to leave malloc alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("jaxgan")

ENV = "JAXGAN_KEEP_HOST_MEMORY"
# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
# Heap top kept up to 2 GiB - 1 (mallopt takes an int): larger than any shipped step's scratch.
_TRIM_THRESHOLD = 2**31 - 1

_applied: bool | None = None


def keep_freed_memory() -> bool:
  """Ask glibc to serve large blocks from the heap and keep freed pages mapped.

  Returns whether the setting is in effect. Idempotent; a no-op (False) off glibc or with
  JAXGAN_KEEP_HOST_MEMORY=0.
  """
  global _applied
  if _applied is not None:
    return _applied
  _applied = False
  if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
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
  _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
  if _applied:
    log.debug("host malloc: mmap off, trim threshold %d bytes (%s=0 to disable)",
              _TRIM_THRESHOLD, ENV)
  return _applied
