"""What a run does when its losses or weights stop being finite numbers (`train.nonfinite`).

`Guard` wraps an engine's pure train step, (state, batch) -> (state, metrics), into
(state, batch, health) -> (state, metrics, health). On device it checks that every floating
metric (the losses and the gradient norms among them) and the new weights of G and D are
finite, and folds the answer into `health`:
a few replicated scalars carried from step to step (the first non-finite step since the run
started, what was not finite there, the skips), so that nothing is missed between the loop's
looks. The loop looks only where it fetches values anyway: the logged metrics (which carry a
copy of `health`, read one interval late like the metrics themselves) and, synchronously,
before a checkpoint, an evaluation or a sample image.

Modes:
  stop      the run stops, naming the step and the first non-finite metric; no checkpoint is
            written from then on, so every checkpoint kept is finite.
  skip      a non-finite step's update is dropped on device (`jnp.where` over the state; the
            step counter and the random key still advance, so data and keys stay where an
            uninterrupted run has them); the run stops after `train.nonfinite_max_skips`
            skipped steps in a row.
  rollback  the loop restores the last checkpoint (all are finite), multiplies the learning
            rates by `train.rollback_lr_factor` and goes on; WORKDIR/rollbacks.json keeps the
            factor, so that a resumed run trains at the lowered rates.

`Policy` is the host's side: it reads each fetched `health` and stops the run, counts skips, or
decides and records a rollback, which the loop (train.py) then carries out.

For trying a policy, $JAXGAN_FAULT_NAN_STEP=N makes step N's generator weights and g_loss NaN
(once: not again after a rollback).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import checkpoint as ckpt_lib
from jaxgan import errors, paths
from jaxgan import workdir as workdir_lib
from jaxgan.errors import NonFiniteError

log = logging.getLogger("jaxgan")

MODES = ("stop", "skip", "rollback")
# The state's weights. The rest follows from them and from the gradients, whose norms are
# metrics: the EMA mixes old and new weights, the optimizer moments are sums of gradients and
# their squares. Checking every leaf of the state too cost several times as much (BENCHMARKS.md).
WEIGHTS = ("g", "d")
FAULT_ENV = "JAXGAN_FAULT_NAN_STEP"
# Health values travel in the metrics under this prefix; the loop strips them before logging.
PREFIX = "nonfinite/"


def fault_step() -> int | None:
  """The step $JAXGAN_FAULT_NAN_STEP asks to poison (None when unset)."""
  text = os.environ.get(FAULT_ENV, "").strip()
  if not text:
    return None
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"${FAULT_ENV}={text!r} must be a step number") from None


def new_health(poison_at: int | None = None) -> dict[str, jax.Array]:
  """The health of a run with nothing non-finite seen yet (call inside jit or on the host)."""
  h = {"first_step": jnp.int32(-1), "first_what": jnp.int32(-1),
       "first_value": jnp.float32(0), "skips": jnp.int32(0), "run": jnp.int32(0),
       "max_run": jnp.int32(0)}
  if poison_at is not None:
    h["poison_at"] = jnp.int32(poison_at)
  return h


def _inexact(x: Any) -> bool:
  return jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)


def _all_finite(tree: Any) -> jax.Array:
  flags = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if _inexact(x)]
  return jnp.stack(flags).all() if flags else jnp.bool_(True)


class Guard:
  """The checked step of one engine's pure `step_fn` in one mode (see the module doc)."""

  def __init__(self, step_fn: Callable, mode: str):
    if mode not in MODES:
      raise ValueError(f"train.nonfinite={mode!r} is not one of {MODES}")
    self.step_fn, self.mode = step_fn, mode
    self.what: list[str] = []   # what health's `first_what` indexes; filled when traced

  def __call__(self, state: dict, batch: dict, health: dict
               ) -> tuple[dict, dict, dict]:
    new, metrics = self.step_fn(state, batch)
    step = new["step"]
    if "poison_at" in health:
      hit = step == health["poison_at"]
      poison = lambda x: jnp.where(hit, jnp.nan, x) if _inexact(x) else x  # noqa: E731
      new = dict(new, g=jax.tree.map(poison, new["g"]))
      if "g_loss" in metrics:
        metrics = dict(metrics, g_loss=poison(metrics["g_loss"]))
    names = sorted(k for k, v in metrics.items() if _inexact(v))
    groups = [k for k in WEIGHTS if k in new]
    self.what = names + [f"the {g!r} weights" for g in groups]
    flags = jnp.stack([jnp.isfinite(metrics[k]).all() for k in names]
                      + [_all_finite(new[g]) for g in groups])
    values = jnp.stack([jnp.sum(jnp.asarray(metrics[k], jnp.float32)) for k in names]
                       + [jnp.float32(jnp.nan)] * len(groups))
    ok = flags.all()
    first = jnp.argmin(flags).astype(jnp.int32)   # the first False
    fresh = ~ok & (health["first_step"] < 0)
    h = dict(health)
    h["first_step"] = jnp.where(fresh, step, health["first_step"]).astype(jnp.int32)
    h["first_what"] = jnp.where(fresh, first, health["first_what"])
    h["first_value"] = jnp.where(fresh, values[first], health["first_value"])
    if self.mode == "skip":
      # Everything but the counter and the key keeps its value from before the step.
      new = {k: v if k in ("step", "rng") else jax.tree.map(
                 lambda a, b: jnp.where(ok, a, b), v, state[k])
             for k, v in new.items()}
      bad = (~ok).astype(jnp.int32)
      h["skips"] = health["skips"] + bad
      h["run"] = jnp.where(ok, 0, health["run"] + 1)
      h["max_run"] = jnp.maximum(health["max_run"], h["run"])
      metrics = dict(metrics, nonfinite_skips=h["skips"])
    metrics = dict(metrics, **{PREFIX + k: v for k, v in h.items()})
    return new, metrics, h

  # --- the host's side ------------------------------------------------------------------------

  def describe(self, health: dict) -> str:
    """'step 7: g_loss = nan' for the first non-finite step of a fetched `health`."""
    i = int(health["first_what"])
    if not 0 <= i < len(self.what):
      what = "a value is not finite"
    elif self.what[i].startswith("the "):   # weights: too many values to show one
      what = f"{self.what[i]} are not finite"
    else:
      what = f"{self.what[i]} = {float(health['first_value'])}"
    return f"step {int(health['first_step'])}: {what}"


def split_metrics(metrics: dict) -> tuple[dict, dict]:
  """(metrics to log, health) of a fetched metrics dict."""
  shown = {k: v for k, v in metrics.items() if not k.startswith(PREFIX)}
  health = {k[len(PREFIX):]: v for k, v in metrics.items() if k.startswith(PREFIX)}
  return shown, health


def host(health: dict) -> dict[str, np.ndarray]:
  """A device `health` fetched as numpy scalars."""
  return {k: np.asarray(v) for k, v in jax.device_get(health).items()}


# --- the loop's side: what a fetched health makes the run do ----------------------------------


def read_rollbacks(workdir: str) -> dict:
  """WORKDIR/rollbacks.json: the learning-rate factor of earlier rollbacks and their events."""
  path = workdir_lib.rollbacks(workdir)
  if not paths.exists(path):
    return {"lr_factor": 1.0, "events": []}
  try:
    record = json.loads(paths.read_text(path))
    factor = float(record["lr_factor"])
    events = list(record["events"])
  except (ValueError, KeyError, TypeError) as e:
    raise errors.ConfigError(
        f"{path} is not a rollback record ({type(e).__name__}: {e}); delete it to train at the "
        "config's learning rates") from None
  return {"lr_factor": factor, "events": events}


def scaled_learning_rates(config, factor: float):
  """A copy of `config` with both learning rates times `factor` (the config itself if 1)."""
  if factor == 1.0:
    return config
  scaled = copy.deepcopy(config)
  for name in ("g_optim", "d_optim"):
    scaled[name].learning_rate = float(scaled[name].learning_rate) * factor
  return scaled


class Policy:
  """train.nonfinite for one run: the checked step (`checked`) and, on the host, what each
  fetched health makes the run do (`act_on`). The learning-rate factor of the run's rollbacks
  so far (`lr_factor`) is read from its workdir."""

  def __init__(self, config, workdir: str, *, is_lead: bool):
    self.config, self.workdir = config, workdir
    self.is_lead = is_lead   # the one process that writes the rollback record
    self.guard: Guard | None = None
    self.record = read_rollbacks(workdir)
    if self.lr_factor != 1.0:
      log.warning("learning rates x%g after earlier rollbacks (%s)", self.lr_factor,
                  workdir_lib.rollbacks(workdir))
    self.skips_seen = 0
    self.rolled_back_to: tuple[int, int] | None = None   # (checkpoint step, times in a row)

  @property
  def lr_factor(self) -> float:
    return float(self.record["lr_factor"])

  def checked(self, step_fn: Callable) -> Guard:
    """The checked step of an engine's pure `step_fn` (a new one after each rollback)."""
    self.guard = Guard(step_fn, self.config.train.nonfinite)
    return self.guard

  def act_on(self, health: dict, step: int, checkpointer: ckpt_lib.Checkpointer) -> bool:
    """Applies train.nonfinite to a fetched health at the loop's `step`: raises NonFiniteError
    to stop; returns True when the run must roll back (to the last checkpoint at `lr_factor`,
    both recorded already), else False."""
    tc = self.config.train
    guard = self.guard
    if tc.nonfinite == "skip":
      skips = int(health["skips"])
      if skips > self.skips_seen:
        self.skips_seen = skips
        log.warning("skipped %d non-finite step(s) so far, the first at %s", skips,
                    guard.describe(health))
      if int(health["max_run"]) >= tc.nonfinite_max_skips:
        raise NonFiniteError(
            f"{int(health['max_run'])} non-finite steps in a row by step {step} "
            f"(train.nonfinite_max_skips={tc.nonfinite_max_skips}; the first at "
            f"{guard.describe(health)}); stopped. {_kept(checkpointer)}")
      return False
    if int(health["first_step"]) < 0:
      return False
    what = guard.describe(health)
    if tc.nonfinite == "stop":
      raise NonFiniteError(f"non-finite values at {what}; stopped "
                           f"(train.nonfinite=stop). {_kept(checkpointer)}")
    self._record_rollback(what, checkpointer)
    return True

  def _record_rollback(self, what: str, checkpointer: ckpt_lib.Checkpointer) -> None:
    """Lowers `lr_factor` and writes it with the event to WORKDIR/rollbacks.json; stops after
    train.nonfinite_max_rollbacks rollbacks in a row to the same checkpoint."""
    tc = self.config.train
    checkpointer.wait()
    steps = checkpointer.steps()
    target = steps[-1] if steps else 0
    times = self.rolled_back_to[1] + 1 if self.rolled_back_to and \
        self.rolled_back_to[0] == target else 1
    if times > tc.nonfinite_max_rollbacks:
      raise NonFiniteError(
          f"non-finite values at {what} after {times - 1} rollback(s) to step {target} "
          f"(train.nonfinite_max_rollbacks={tc.nonfinite_max_rollbacks}); stopped. "
          f"{_kept(checkpointer)}")
    self.rolled_back_to = (target, times)
    factor = self.lr_factor * tc.rollback_lr_factor
    self.record["lr_factor"] = factor
    self.record["events"].append({
        "at": what, "restored_step": target, "lr_factor": factor,
        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    if self.is_lead:
      path = workdir_lib.rollbacks(self.workdir)
      try:
        paths.write_atomic(path, json.dumps(self.record, indent=1))
      except OSError as e:
        raise errors.WriteError("the rollback record", path, errors.reason_of(e)) from None
    scaled = scaled_learning_rates(self.config, factor)
    log.warning("non-finite values at %s: rolling back to %s with learning rates x%g "
                "(g %.3g, d %.3g)", what, f"the checkpoint of step {target}" if steps
                else "the initial state", factor, scaled.g_optim.learning_rate,
                scaled.d_optim.learning_rate)


def _kept(checkpointer: ckpt_lib.Checkpointer) -> str:
  """Which checkpoints the run keeps (every one finite)."""
  with contextlib.suppress(errors.WriteError):
    checkpointer.wait()
  steps = checkpointer.steps()
  if not steps:
    return "No checkpoint was written."
  return (f"Checkpoints kept (all finite): step {', '.join(map(str, steps))} in "
          f"{checkpointer.directory}.")
