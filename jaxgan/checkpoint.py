"""Orbax checkpoints of the train state that resume exactly and refuse corrupt steps.

The data pipeline is addressable by step, so the state's `step` is all the iterator position a
resume needs. A checkpoint that fails to restore is moved aside (`<step>.corrupt`) and the
previous good one is used instead, so one bad write never loses a run.

A save that fails (a full disk, a lost mount: any error of Orbax's writer, which reports it at
the next save or wait) becomes one `CheckpointWriteError` naming the step, the path and the
reason; its temporary folder is removed and the checkpoints before it stay as they were.

The folder may be local or on shared storage: Orbax takes a gs:// URL as it is (an
etils.epath.Path; its arrays go through tensorstore's GCS driver), and the few file operations
here go through jaxgan.paths.
"""

from __future__ import annotations

import logging
import os
import sys

import jax
import orbax.checkpoint as ocp
from etils import epath

from jaxgan import distributed, errors, paths
from jaxgan import workdir as workdir_lib

log = logging.getLogger("jaxgan")
# Orbax writes a step into "<step>.orbax-checkpoint-tmp..." and renames it when complete.
TMP_MARK = ".orbax-checkpoint-tmp"


def orbax_path(directory: str) -> epath.Path:
  """The path Orbax is given for a resolved `directory` (local, or gs:// which Orbax's epath
  and tensorstore both speak)."""
  return epath.Path(directory)


class CheckpointWriteError(errors.WriteError):
  """A checkpoint was not written; the previous ones are intact."""


class Checkpointer:
  """A thin CheckpointManager wrapper: save every N steps (async), keep the last K."""

  def __init__(self, directory: str, *, every: int, keep: int, async_save: bool = True,
               clean_tmp: bool = False):
    """clean_tmp: remove the temporary folders of saves that never finished (a trainer that
    was killed); only for the trainer, which alone writes there (a reader must not: it would
    delete a save in progress)."""
    self.directory = paths.resolve(directory)
    quiet_failed_saves()
    self.manager = ocp.CheckpointManager(
        orbax_path(self.directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=clean_tmp))
    self._in_flight: int | None = None   # the step of the async save not yet known to be done
    # Steps whose save failed: an Orbax writer thread still finishing may write into their
    # temporary folder after it is first removed, so it is removed again once all are done.
    self._failed_steps: set[int | None] = set()

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts saving `step` (async). Raises CheckpointWriteError if the previous save failed
    (then this one has not started) or this one cannot start."""
    self._settle()
    try:
      started = self.manager.save(
          step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=force)
    except Exception as e:  # the writer's errors are OSErrors, ValueErrors (tensorstore), ...
      self._failed(step, e)
    if started:
      self._in_flight = step
    return started

  def _settle(self) -> None:
    """Waits for the save in flight; a failure there becomes a CheckpointWriteError."""
    step, self._in_flight = self._in_flight, None
    try:
      self.manager.wait_until_finished()
    except Exception as e:
      self._failed(step, e)
    self._remove_failed()

  def _remove_tmp(self, step: int | None) -> None:
    """Removes the temporary folders of `step`'s save (of every save when None)."""
    if jax.process_index() == 0 and paths.isdir(self.directory):
      for name in paths.listdir(self.directory):
        if TMP_MARK in name and (step is None or name.split(TMP_MARK)[0] == str(step)):
          paths.rmtree(paths.join(self.directory, name), ignore_errors=True)

  def _remove_failed(self) -> None:
    """With no save in flight: removes what the failed saves' last writes left."""
    for step in self._failed_steps:
      self._remove_tmp(step)
    self._failed_steps.clear()

  def _failed(self, step: int | None, e: Exception) -> None:
    """Removes what the failed save left and raises its CheckpointWriteError."""
    self._failed_steps.add(step)
    self._remove_tmp(step)
    try:
      self.manager.reload()
    except Exception:  # pylint: disable=broad-except  (the folder may be gone altogether)
      pass
    path = paths.join(self.directory, str(step)) if step is not None else self.directory
    raise CheckpointWriteError("checkpoint", path, errors.reason_of(e), step) from None

  def save_now(self, step: int, state, *, on_error: str) -> None:
    """Starts saving `step` (async, whatever `every` says), a failed save handled as
    `on_error` (train.on_save_error) says: raised as it is and naming the checkpoint kept
    ("stop"), or logged, leaving this step to the next interval ("retry"). The previous save's
    failure, reported only now, does not cost this one its turn."""
    for _ in range(2):
      try:
        self.save(step, state, force=True)
        return
      except CheckpointWriteError as e:
        if on_error == "stop":
          raise self.with_kept(e, "stopped (train.on_save_error=stop)") from None
        log.warning("%s; trying again at the next interval (train.on_save_error=retry)", e)
        if e.step == step:
          return
        # That was the previous save, reported now; this one has not started yet.

  def with_kept(self, e: CheckpointWriteError, what: str) -> CheckpointWriteError:
    """`e` with what the run did (`what`) and which checkpoint it keeps."""
    folder = self.directory   # read directly: the manager may be closed
    try:
      steps = sorted(int(n) for n in paths.listdir(folder) if n.isdigit())
    except OSError:   # no folder (nothing saved), or the storage is gone
      steps = []
    kept = (f"the checkpoint of step {steps[-1]} is intact" if steps
            else "no checkpoint was written before")
    return CheckpointWriteError(e.what, e.path, f"{e.reason}; {what}, {kept}", e.step)

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore_latest(self, abstract_state, *, partial: bool = False):
    """(state, step) of the newest checkpoint that restores, or (None, None) when none does.

    partial: restore only the entries of `abstract_state` (a generator for sampling needs
    neither the discriminator nor the optimizers)."""
    if partial:
      args = ocp.args.PyTreeRestore(
          abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
          partial_restore=True)
    else:
      args = ocp.args.StandardRestore(abstract_state)
    for step in reversed(self.steps()):
      try:
        restored, error = self.manager.restore(step, args=ocp.args.Composite(state=args)), None
      except Exception as e:  # orbax raises many types for truncated or garbled files
        restored, error = None, e
        log.warning("checkpoint %s/%d does not restore (%s: %s); trying the previous one",
                    self.directory, step, type(e).__name__, str(e).splitlines()[0][:200])
      # A step that fails on one host is set aside by all: every host resumes from one step.
      if distributed.all_true(error is None):
        return restored["state"], step
      self._set_aside(step)
    return None, None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      path = paths.join(self.directory, str(step))
      try:
        if paths.isdir(path):
          paths.replace(path, path + ".corrupt")
      except OSError as e:  # the next save of this step would fail, and say so
        log.warning("cannot set %s aside: %s", path, errors.reason_of(e))
    self.manager.reload()

  def wait(self) -> None:
    """Waits for the save in flight; raises CheckpointWriteError if it failed."""
    self._settle()

  def close(self) -> None:
    """Waits for the save in flight and closes; raises CheckpointWriteError if it failed."""
    try:
      self._settle()
    finally:
      self.manager.close()
      self._remove_failed()   # every writer thread has ended now


class _QuietOrbax(logging.Filter):
  """Drops the tracebacks Orbax's writer threads and tasks log when a save fails (through absl,
  or asyncio's "exception was never retrieved" when they are collected, possibly at exit):
  the Checkpointer reports that failure as one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or not record.exc_info or record.exc_info[2] is None:
      return True
    # absl names itself as the caller, so the traceback tells where the error came from.
    tb = record.exc_info[2]
    while tb is not None:
      if f"{os.sep}orbax{os.sep}" in tb.tb_frame.f_code.co_filename:
        return False
      tb = tb.tb_next
    return True


_quiet = False


def quiet_failed_saves() -> None:
  """Keeps the raw tracebacks of a failed save out of the log, for the rest of the process
  (they come from Orbax's threads, from asyncio when its tasks are collected, and as
  "Event loop is closed" from a write callback that outlived its loop); `Checkpointer`
  reports each failed save as one line instead. Other errors are left alone."""
  global _quiet
  if _quiet:
    return
  _quiet = True
  for name in ("absl", "asyncio"):
    logging.getLogger(name).addFilter(_QuietOrbax())
  previous = sys.unraisablehook

  def hook(unraisable):
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(
        unraisable.exc_value):
      log.debug("ignored after a failed checkpoint write: %s", unraisable.exc_value)
      return
    previous(unraisable)

  sys.unraisablehook = hook


def restore_unstructured(directory: str):
  """The newest state of another run as host arrays (for warm starts), whatever its config."""
  directory = paths.resolve(directory)
  if paths.isdir(workdir_lib.checkpoints(directory)):
    directory = workdir_lib.checkpoints(directory)
  manager = ocp.CheckpointManager(orbax_path(directory),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"train.init_from={directory!r}: no checkpoint there")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  return restored["state"], step
