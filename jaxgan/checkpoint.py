"""Orbax checkpoints of the train state that resume exactly and refuse corrupt steps.

The data pipeline is addressable by step, so the state's `step` is all the iterator position a
resume needs. A checkpoint that fails to restore is moved aside (`<step>.corrupt`) and the
previous good one is used instead, so one bad write never loses a run.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

log = logging.getLogger("jaxgan")


class Checkpointer:
  """A thin CheckpointManager wrapper: save every N steps (async), keep the last K."""

  def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(os.fspath(directory))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every,
            enable_async_checkpointing=async_save))

  def save(self, step: int, state, *, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                             force=force)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state):
    """(state, step) of the newest checkpoint that restores, or (None, None) when none does."""
    for step in reversed(self.steps()):
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"], step
      except Exception as e:  # orbax raises many types for truncated or garbled files
        log.warning("checkpoint %s/%d does not restore (%s: %s); trying the previous one",
                    self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
        self._set_aside(step)
    return None, None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      path = os.path.join(self.directory, str(step))
      if os.path.isdir(path):
        os.replace(path, path + ".corrupt")
    self.manager.reload()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def restore_unstructured(directory: str):
  """The newest state of another run as host arrays (for warm starts), whatever its config."""
  directory = os.path.abspath(directory)
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    directory = os.path.join(directory, "checkpoints")
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"train.init_from={directory!r}: no checkpoint there")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return restored["state"], step
