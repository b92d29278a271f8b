"""The training loop behind `jaxgan train`: set up, loop, tear down.

The maths lives elsewhere: the model pair, the pure train step and the state in jaxgan/gan (the
voices model in voicegan.py), chosen by `engines.make_engine`; evaluation and the best
checkpoint in evaluate.py; the workdir's files in workdir.py. Here: the workdir's lock, the mesh,
one jit of the step (with the non-finite check, shardings and donation), data, logging, samples,
evaluation, checkpoints, preemption, non-finite values and failed writes (README "Reliability").
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxgan import checkpoint as ckpt_lib
from jaxgan import config as config_lib
from jaxgan import (distributed, engines, errors, evaluate, nonfinite, paths, profiling, runtime,
                    summary)
from jaxgan import lock as lock_lib
from jaxgan import sharding as shard_lib
from jaxgan import workdir as workdir_lib
from jaxgan.data import pipeline

log = logging.getLogger("jaxgan")
State = dict[str, Any]


def train_and_evaluate(config, workdir: str, *, progress: bool = True,
                       evaluate_fn: Callable | None = None, force: bool = False) -> State:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  One trainer per workdir: a second one raises lock.WorkdirBusy unless `force` (see lock.py).
  Non-finite losses or weights are handled as train.nonfinite says (nonfinite.py; stopping
  raises nonfinite.NonFiniteError), a failed write as train.on_save_error says (stopping
  raises errors.WriteError). Each of these errors has a one-line message.
  """
  workdir = paths.resolve(workdir)   # a gs:// workdir stays a URL
  distributed.agreed(paths.makedirs, workdir)
  with lock_lib.hold(workdir, force=force) as lock:
    run = _Run(config, workdir, lock, progress=progress, evaluate_fn=evaluate_fn)
    return run.train()


def _read_rollbacks(workdir: str) -> dict:
  """WORKDIR/rollbacks.json: the learning-rate factor of earlier rollbacks and their events."""
  path = workdir_lib.rollbacks(workdir)
  if not paths.exists(path):
    return {"lr_factor": 1.0, "events": []}
  try:
    record = json.loads(paths.read_text(path))
    factor = float(record["lr_factor"])
    events = list(record["events"])
  except (ValueError, KeyError, TypeError) as e:
    raise config_lib.ConfigError(
        f"{path} is not a rollback record ({type(e).__name__}: {e}); delete it to train at the "
        "config's learning rates") from None
  return {"lr_factor": factor, "events": events}


def _scaled_learning_rates(config, factor: float):
  """A copy of `config` with both learning rates times `factor` (the config itself if 1)."""
  if factor == 1.0:
    return config
  scaled = copy.deepcopy(config)
  for name in ("g_optim", "d_optim"):
    scaled[name].learning_rate = float(scaled[name].learning_rate) * factor
  return scaled


class _Run:
  """One `train_and_evaluate`: what the loop and a rollback share."""

  def __init__(self, config, workdir: str, lock: lock_lib.WorkdirLock | None, *,
               progress: bool, evaluate_fn: Callable | None):
    self.config, self.workdir, self.lock = config, workdir, lock
    tc = config.train
    if tc.compilation_cache:
      runtime.enable_compilation_cache(workdir_lib.xla_cache(workdir))
    self.mesh = shard_lib.make_mesh(tc.mesh_data, tc.mesh_fsdp)
    distributed.quiet_followers()
    # The one check of the batch against the devices: before anything compiles.
    config_lib.check_batch(config, self.mesh, jax.process_count())
    self.is_lead = jax.process_index() == 0
    # Reads of this host's data and workdir, and process 0's write: a failure on one host
    # ends every host with its message (distributed.agreed), not a wait in a collective.
    self.rollbacks = distributed.agreed(self._host_checks)
    if self.rollbacks["lr_factor"] != 1.0:
      log.warning("learning rates x%g after earlier rollbacks (%s)", self.rollbacks["lr_factor"],
                  workdir_lib.rollbacks(workdir))
    self._build()
    distributed.agreed(lambda: self.is_lead and config_lib.save_run_config(config, workdir))
    self.checkpointer = ckpt_lib.Checkpointer(workdir_lib.checkpoints(workdir),
                                              every=tc.ckpt_every, keep=tc.keep_ckpts,
                                              clean_tmp=True)
    self.evaluate_fn = evaluate_fn
    self.best = self.writer = self.bar = None
    self.progress = progress
    self.skips_seen = 0
    self.rolled_back_to: tuple[int, int] | None = None   # (checkpoint step, times in a row)

  def _host_checks(self) -> dict:
    pipeline.resolve_styles(self.config)
    pipeline.resolve_track_facts(self.config)
    return _read_rollbacks(self.workdir)

  def _build(self) -> None:
    """The engine at the current learning rates and its checked, jitted step."""
    self.engine = engines.make_engine(
        _scaled_learning_rates(self.config, self.rollbacks["lr_factor"]), self.mesh)
    self.guard = nonfinite.Guard(self.engine.train_step, self.config.train.nonfinite)
    replicated = shard_lib.replicated(self.mesh)
    self.step_jit = self.engine.jit(
        self.guard,
        in_shardings=(self.engine.state_sharding, shard_lib.batch(self.mesh, leading=1),
                      replicated),
        out_shardings=(self.engine.state_sharding, replicated, replicated),
        donate_argnums=(0, 2))

  def _restore_or_init(self) -> tuple[State, int]:
    tc = self.config.train
    state, start = self.checkpointer.restore_latest(self.engine.abstract_with_shardings())
    if state is not None:
      log.info("resumed from %s at step %d", self.checkpointer.directory, start)
      return state, start
    state = self.engine.init(jax.jit(lambda: jax.random.PRNGKey(tc.seed),
                                     out_shardings=shard_lib.replicated(self.mesh))())
    if tc.init_from:
      state = self.engine.warm_start(state, tc.init_from)
    return state, 0

  def _start(self, state: State, start: int, poison_at: int | None) -> None:
    """Positions the data at `start` and compiles the step, once, up front (so compile time
    is visible and separate)."""
    self.state, self.step, self.saved = state, start, start
    self.health = jax.jit(lambda: nonfinite.new_health(poison_at),
                          out_shardings=shard_lib.replicated(self.mesh))()
    # This host's data (no windows, an unreadable split) fails every host together.
    self.batches = distributed.agreed(pipeline.train_iterator, self.config, self.mesh,
                                      start_step=start, checked=True)
    self.batch = distributed.agreed(next, self.batches)
    t0 = time.perf_counter()
    self.step_fn = self.step_jit.lower(self.state, self.batch, self.health).compile()
    log.info("compiled the train step in %.1f s", time.perf_counter() - t0)
    self.pending = None   # metrics of the last logged step, fetched one interval late
    self.last_time, self.last_step = time.perf_counter(), start

  def train(self) -> State:
    tc = self.config.train
    state, start = self._restore_or_init()
    if start >= tc.num_steps:
      self.checkpointer.close()
      return state
    try:
      self._start(state, start, nonfinite.fault_step())
      if self.evaluate_fn is None and tc.eval_every:
        self.evaluate_fn = distributed.agreed(evaluate.periodic_evaluation, self.config)
      if tc.best_metric:
        self.best = evaluate.BestKeeper(self.workdir, tc.best_metric, tc.best_mode)
      # Process 0 writes the events: failing to open them there ends every host.
      self.writer = distributed.agreed(summary.Writer, self.workdir, enabled=self.is_lead)
      self.bar = summary.progress(start, tc.num_steps, enabled=self.progress and self.is_lead)
      self._loop()
    except BaseException:
      self._close(quiet=True)
      raise
    self._close(quiet=False)
    return self.state

  def _loop(self) -> None:
    tc = self.config.train
    examples_per_step = tc.global_batch * self.config.loss.n_critic
    trace = profiling.TraceWindow.for_run(self.config, self.workdir, self.step)
    with runtime.StopSignal() as stop:
      while self.step < tc.num_steps:
        trace.update(self.step, self.state)
        with jax.profiler.StepTraceAnnotation("train", step_num=self.step):
          self.state, metrics, self.health = self.step_fn(self.state, self.batch, self.health)
        self.step += 1
        step = self.step
        if self.lock is not None and self.lock.lost and jax.process_count() == 1:
          raise lock_lib.WorkdirBusy(f"{self.lock.lost}; stopped at step {step} without "
                                     "saving")
        preempted = (stop.received is not None if jax.process_count() == 1
                     else self.checkpointer.reached_preemption(step))
        last = step == tc.num_steps or preempted
        if step % tc.log_every == 0 or step == tc.num_steps:
          # Write the previous interval's metrics: long computed, so dispatch never waits.
          health = self._write_pending()
          now = time.perf_counter()
          rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
          self.last_time, self.last_step = now, step
          self.pending = (step, dict(metrics, steps_per_s=rate,
                                     examples_per_s=rate * examples_per_step))
          if health is not None and self._act_on(health):
            continue   # rolled back: the loop goes on from the restored step
        else:
          self.bar.update_to(step)
        sample = tc.sample_every and step % tc.sample_every == 0
        evaluate = tc.eval_every and step % tc.eval_every == 0
        save = step % tc.ckpt_every == 0 or last
        # Nothing non-finite is ever saved, evaluated or drawn: look before each of them.
        if (sample or evaluate or save) and self._act_on(nonfinite.host(self.health)):
          continue
        if sample:
          rolls = self.engine.sample_ema(self.state, jax.random.PRNGKey(step), 8)
          self._attempt(self.writer.pianorolls, step, np.asarray(jax.device_get(rolls)))
        if evaluate:
          scalars = self.evaluate_fn(self.engine, self.state)
          self._attempt(self.writer.scalars, step, scalars)
          if self.best is not None:
            self._attempt(self.best.offer, step, self.state, scalars)
        if save:
          self._save(step)
        if preempted:
          log.warning("stopping at step %d on request; saved a checkpoint", step)
          break
        if step < tc.num_steps:
          self.batch = next(self.batches)
    trace.close(self.state)
    self._write_pending()   # its health is older than the look before the last save

  def _write_pending(self) -> dict | None:
    """Writes the metrics of the last logged step; returns the health they carry."""
    if self.pending is None:
      return None
    step, metrics = self.pending
    self.pending = None
    shown, health = nonfinite.split_metrics(
        {k: float(v) for k, v in jax.device_get(metrics).items()})
    self._attempt(self.writer.scalars, step, shown)
    self.bar.update_to(self.step, shown)
    return health or None

  # --- non-finite values ----------------------------------------------------------------------

  def _act_on(self, health: dict) -> bool:
    """Applies train.nonfinite to a fetched health: raises NonFiniteError to stop; returns
    True after a rollback (the loop goes on from the restored step), else False."""
    tc = self.config.train
    if tc.nonfinite == "skip":
      skips = int(health["skips"])
      if skips > self.skips_seen:
        self.skips_seen = skips
        log.warning("skipped %d non-finite step(s) so far, the first at %s", skips,
                    self.guard.describe(health))
      if int(health["max_run"]) >= tc.nonfinite_max_skips:
        raise nonfinite.NonFiniteError(
            f"{int(health['max_run'])} non-finite steps in a row by step {self.step} "
            f"(train.nonfinite_max_skips={tc.nonfinite_max_skips}; the first at "
            f"{self.guard.describe(health)}); stopped. {self._kept()}")
      return False
    if int(health["first_step"]) < 0:
      return False
    what = self.guard.describe(health)
    if tc.nonfinite == "stop":
      raise nonfinite.NonFiniteError(f"non-finite values at {what}; stopped "
                                     f"(train.nonfinite=stop). {self._kept()}")
    self._rollback(what)
    return True

  def _kept(self) -> str:
    """Which checkpoints the run keeps (every one finite)."""
    with contextlib.suppress(errors.WriteError):
      self.checkpointer.wait()
    steps = self.checkpointer.steps()
    if not steps:
      return "No checkpoint was written."
    return (f"Checkpoints kept (all finite): step {', '.join(map(str, steps))} in "
            f"{self.checkpointer.directory}.")

  def _rollback(self, what: str) -> None:
    """Back to the last checkpoint (or the start) at lower learning rates."""
    tc = self.config.train
    self.checkpointer.wait()
    steps = self.checkpointer.steps()
    target = steps[-1] if steps else 0
    times = self.rolled_back_to[1] + 1 if self.rolled_back_to and \
        self.rolled_back_to[0] == target else 1
    if times > tc.nonfinite_max_rollbacks:
      raise nonfinite.NonFiniteError(
          f"non-finite values at {what} after {times - 1} rollback(s) to step {target} "
          f"(train.nonfinite_max_rollbacks={tc.nonfinite_max_rollbacks}); stopped. "
          f"{self._kept()}")
    self.rolled_back_to = (target, times)
    factor = float(self.rollbacks["lr_factor"]) * tc.rollback_lr_factor
    self.rollbacks["lr_factor"] = factor
    self.rollbacks["events"].append({
        "at": what, "restored_step": target, "lr_factor": factor,
        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    if self.is_lead:
      path = workdir_lib.rollbacks(self.workdir)
      try:
        paths.write_atomic(path, json.dumps(self.rollbacks, indent=1))
      except OSError as e:
        raise errors.WriteError("the rollback record", path, errors.reason_of(e)) from None
    scaled = _scaled_learning_rates(self.config, factor)
    log.warning("non-finite values at %s: rolling back to %s with learning rates x%g "
                "(g %.3g, d %.3g)", what, f"the checkpoint of step {target}" if steps
                else "the initial state", factor, scaled.g_optim.learning_rate,
                scaled.d_optim.learning_rate)
    self._build()
    state, start = self._restore_or_init()
    self._start(state, start, poison_at=None)   # an injected fault fires once
    self.bar.update_to(start)

  # --- writes ---------------------------------------------------------------------------------

  def _attempt(self, fn: Callable, *args, **kwargs):
    """fn(...), with a failed write (errors.WriteError) handled as train.on_save_error says:
    raised ("stop") or logged and left for the next interval ("retry")."""
    try:
      return fn(*args, **kwargs)
    except errors.WriteError as e:
      if self.config.train.on_save_error == "stop":
        raise
      log.warning("%s; trying again at the next interval (train.on_save_error=retry)", e)
      return None

  def _save(self, step: int) -> None:
    for _ in range(2):
      try:
        self.checkpointer.save(step, self.state, force=True)
        self.saved = step
        return
      except ckpt_lib.CheckpointWriteError as e:
        if self.config.train.on_save_error == "stop":
          raise self._final(e, "stopped (train.on_save_error=stop)") from None
        log.warning("%s; trying again at the next interval (train.on_save_error=retry)", e)
        if e.step == step:
          return
        # That was the previous save, reported now; this one has not started yet.

  def _final(self, e: ckpt_lib.CheckpointWriteError, what: str
             ) -> ckpt_lib.CheckpointWriteError:
    """`e` with what the run did and which checkpoint it keeps."""
    folder = self.checkpointer.directory   # read directly: the manager may be closed
    try:
      steps = sorted(int(n) for n in paths.listdir(folder) if n.isdigit())
    except OSError:   # no folder (nothing saved), or the storage is gone
      steps = []
    kept = (f"the checkpoint of step {steps[-1]} is intact" if steps
            else "no checkpoint was written before")
    return ckpt_lib.CheckpointWriteError(e.what, e.path, f"{e.reason}; {what}, {kept}", e.step)

  def _close(self, quiet: bool) -> None:
    """Waits for the last save and closes the writers; quiet: after an error, whose message
    is the one to show."""
    parts = [self.checkpointer.close]
    if self.best is not None:
      parts.append(self.best.close)
    if self.writer is not None:
      parts.append(self.writer.close)
    if self.bar is not None:
      parts.append(self.bar.close)
    failure = None
    for close in parts:
      try:
        close()
      except Exception as e:  # pylint: disable=broad-except
        if quiet:
          log.debug("while stopping: %s", e)
        elif failure is None:
          failure = e
    if isinstance(failure, ckpt_lib.CheckpointWriteError):
      when = ("the run ended before a retry" if self.config.train.on_save_error == "retry"
              else "the run has ended")
      raise self._final(failure, when) from None
    if failure is not None:
      raise failure
