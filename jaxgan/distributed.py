"""Joining a multi-host run: Cloud TPU pods and SLURM detect themselves; elsewhere (multi-GPU
machines, tests on one CPU) the coordinator, process count and id come from flags or the
JAXGAN_COORDINATOR / JAXGAN_NUM_PROCESSES / JAXGAN_PROCESS_ID environment variables."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxgan import errors, lock

T = TypeVar("T")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False,
               local_device_count: int | None = None) -> bool:
  """Calls jax.distributed.initialize when a multi-process run is asked for.

  Returns True when this process joined a multi-process run. Must run before any JAX
  computation.
  """
  coordinator = coordinator or os.environ.get("JAXGAN_COORDINATOR")
  if num_processes is None and os.environ.get("JAXGAN_NUM_PROCESSES"):
    num_processes = int(os.environ["JAXGAN_NUM_PROCESSES"])
  if process_id is None and os.environ.get("JAXGAN_PROCESS_ID"):
    process_id = int(os.environ["JAXGAN_PROCESS_ID"])
  if local_device_count:
    jax.config.update("jax_num_cpu_devices", local_device_count)
  if coordinator:
    if num_processes is None or process_id is None:
      raise ValueError("a coordinator address needs the number of processes and this process id")
    if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
      # CPU hosts talk through gloo; harmless where another backend is used.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    return True
  if auto:
    jax.distributed.initialize()  # Cloud TPU pods and SLURM describe themselves
    return jax.process_count() > 1
  return False


def quiet_followers() -> None:
  """On a multi-process run, jaxgan logs at INFO on process 0 only: the others log warnings
  and errors, so that a pod's logs do not repeat every line once per host."""
  if jax.process_index() != 0:
    logging.getLogger("jaxgan").setLevel(logging.WARNING)


# --------------------------------------------------------------------------------------------
# Failing together. A check that can fail on one host only (its data, a file on storage that
# is not shared, a write by process 0) must end every host: the others would otherwise wait
# in the next collective until the coordinator's timeout (minutes) and die without the reason.
# These helpers gather every process's outcome first; with one process they cost nothing.

_MESSAGE_BYTES = 2000   # a failure's message travels as this many bytes (longer ones are cut)


# The errors that travel as themselves (most specific first); others arrive as the first base
# class here, RuntimeError at the least.
_ERROR_TYPES = (errors.ConfigError, errors.NonFiniteError, lock.WorkdirBusy, errors.WriteError,
                FileNotFoundError, PermissionError, OSError, ValueError, RuntimeError)


def _encode(ok: bool, message: str, error: type[BaseException]) -> np.ndarray:
  """One process's outcome as a fixed-size row: [failed, error type, message bytes...]."""
  kind = next((i for i, t in enumerate(_ERROR_TYPES) if issubclass(error, t)),
              len(_ERROR_TYPES) - 1)
  text = np.frombuffer(message.encode("utf-8")[:_MESSAGE_BYTES], np.uint8)
  row = np.zeros(2 + _MESSAGE_BYTES, np.int32)
  row[0], row[1] = int(not ok), kind
  row[2:2 + len(text)] = text
  return row


def decide(rows: np.ndarray, process_index: int) -> BaseException | None:
  """The error this process raises given every process's row (`_encode`), or None when all
  are fine: the first failing process's error, its message prefixed with that process when
  it is not this one (the failing process re-raises its own error)."""
  failed = np.flatnonzero(np.asarray(rows)[:, 0])
  if not len(failed):
    return None
  k = int(failed[0])
  row = np.asarray(rows)[k]
  text = bytes(row[2:].astype(np.uint8)).rstrip(b"\0").decode("utf-8", errors="ignore")
  if k != process_index:
    text = f"process {k}: {text}"
  error = _ERROR_TYPES[int(row[1])]
  return errors.WriteError.relayed(text) if error is errors.WriteError else error(text)


def agree_ok(ok: bool, message: str = "", error: type[BaseException] = RuntimeError) -> None:
  """Raises on every process when `ok` is False on any: `error(message)` of the first that
  failed (see `decide`). Every process must call it, at the same point."""
  if jax.process_count() == 1:
    if not ok:
      raise error(message)
    return
  rows = multihost_utils.process_allgather(_encode(ok, message, error))
  failure = decide(rows, jax.process_index())
  if failure is not None:
    raise failure


def agreed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
  """fn(*args, **kwargs) on every process, failing together: when it raises on any process,
  every process raises (the failing one its own error, with its traceback)."""
  if jax.process_count() == 1:
    return fn(*args, **kwargs)
  try:
    result = fn(*args, **kwargs)
  except Exception as e:
    with contextlib.suppress(Exception):
      agree_ok(False, str(e), type(e))
    raise
  agree_ok(True)
  return result


def all_true(flag: bool) -> bool:
  """Whether `flag` holds on every process (a host-local outcome every process acts on)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.all(multihost_utils.process_allgather(np.int32(bool(flag)))))


def from_lead(flag: bool) -> bool:
  """Process 0's `flag` on every process (a decision process 0 alone can make)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))
