"""Joining a multi-host run: Cloud TPU pods and SLURM detect themselves; elsewhere (multi-GPU
machines, tests on one CPU) the coordinator, process count and id come from flags or the
JAXGAN_COORDINATOR / JAXGAN_NUM_PROCESSES / JAXGAN_PROCESS_ID environment variables."""

from __future__ import annotations

import logging
import os

import jax


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
