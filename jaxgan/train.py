"""The training loop behind `jaxgan train`: set up, loop, tear down.

The maths lives elsewhere: the model pair, the pure train step and the state in jaxgan/gan (the
voices model in voicegan.py), chosen by `engines.make_engine`; evaluation and the best
checkpoint in evaluate.py; the workdir's files in workdir.py. Here: the workdir's lock, the mesh,
one jit of the step (with the non-finite check, shardings and donation), data, logging, samples,
evaluation, checkpoints, preemption, non-finite values and failed writes (README "Reliability").
"""

from __future__ import annotations

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
    # Reads of this host's data and workdir: a failure on one host ends every host with its
    # message (distributed.agreed), not a wait in a collective.
    self.policy = distributed.agreed(self._host_checks)
    self._build()
    distributed.agreed(lambda: self.is_lead and config_lib.save_run_config(config, workdir))
    self.checkpointer = ckpt_lib.Checkpointer(workdir_lib.checkpoints(workdir),
                                              every=tc.ckpt_every, keep=tc.keep_ckpts,
                                              clean_tmp=True)
    self.evaluate_fn = evaluate_fn
    self.best = self.writer = self.bar = None
    self.progress = progress

  def _host_checks(self) -> nonfinite.Policy:
    pipeline.resolve_styles(self.config)
    pipeline.resolve_track_facts(self.config)
    evaluate.resolve_sampler_priors(self.config)
    return nonfinite.Policy(self.config, self.workdir, is_lead=self.is_lead)

  def _build(self) -> None:
    """The engine at the current learning rates and its checked, jitted step."""
    self.engine = engines.make_engine(
        nonfinite.scaled_learning_rates(self.config, self.policy.lr_factor), self.mesh)
    replicated = shard_lib.replicated(self.mesh)
    self.step_jit = self.engine.jit(
        self.policy.checked(self.engine.train_step),
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
    self.state, self.step = state, start
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
          if health is not None and self._rolled_back(health):
            continue   # rolled back: the loop goes on from the restored step
        else:
          self.bar.update_to(step)
        sample = tc.sample_every and step % tc.sample_every == 0
        evaluate = tc.eval_every and step % tc.eval_every == 0
        save = step % tc.ckpt_every == 0 or last
        # Nothing non-finite is ever saved, evaluated or drawn: look before each of them.
        if (sample or evaluate or save) and self._rolled_back(nonfinite.host(self.health)):
          continue
        if sample:
          rolls = self.engine.sample_ema(self.state, jax.random.PRNGKey(step), 8)
          errors.attempt(tc.on_save_error, self.writer.pianorolls, step,
                         np.asarray(jax.device_get(rolls)))
        if evaluate:
          scalars = self.evaluate_fn(self.engine, self.state)
          errors.attempt(tc.on_save_error, self.writer.scalars, step, scalars)
          if self.best is not None:
            errors.attempt(tc.on_save_error, self.best.offer, step, self.state, scalars)
        if save:
          self.checkpointer.save_now(step, self.state, on_error=tc.on_save_error)
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
    errors.attempt(self.config.train.on_save_error, self.writer.scalars, step, shown)
    self.bar.update_to(self.step, shown)
    return health or None

  def _rolled_back(self, health: dict) -> bool:
    """Applies train.nonfinite to a fetched health (nonfinite.Policy: stopping raises);
    True after a rollback, from which the loop goes on."""
    if not self.policy.act_on(health, self.step, self.checkpointer):
      return False
    self._build()
    state, start = self._restore_or_init()
    self._start(state, start, poison_at=None)   # an injected fault fires once
    self.bar.update_to(start)
    return True

  def _close(self, quiet: bool) -> None:
    """Waits for the last save and closes the writers; quiet: after an error, whose message
    is the one to show."""
    parts = [p for p in (self.checkpointer, self.best, self.writer, self.bar) if p is not None]
    failure = errors.close_all([p.close for p in parts], quiet=quiet)
    if isinstance(failure, ckpt_lib.CheckpointWriteError):
      when = ("the run ended before a retry" if self.config.train.on_save_error == "retry"
              else "the run has ended")
      raise self.checkpointer.with_kept(failure, when) from None
    if failure is not None:
      raise failure
