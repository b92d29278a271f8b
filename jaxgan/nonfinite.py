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
            rates by `train.rollback_lr_factor` and goes on (see train.py).

For trying a policy, $JAXGAN_FAULT_NAN_STEP=N makes step N's generator weights and g_loss NaN
(once: not again after a rollback).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.errors import NonFiniteError  # noqa: F401  (raised by the loop, train.py)

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
