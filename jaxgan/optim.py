"""Optimizers, learning-rate schedules and the EMA of generator weights.

Optimizer config keys (`default_config()` lists them with their defaults):

  name           'adam' | 'adamw' | 'sgd'
  learning_rate  peak learning rate (> 0)
  b1, b2, eps    Adam moments and epsilon (MuseGAN: b1 0.5, b2 0.9)
  weight_decay   adamw: decoupled decay; adam/sgd: L2 term added to the gradient; 0 = off
  momentum       sgd momentum (0 = plain SGD); nesterov: bool
  schedule       'constant' | 'warmup_cosine' | 'linear_decay'
  warmup_steps   linear warm-up from 0 to learning_rate over this many steps (every schedule)
  decay_steps    step at which the decaying schedules reach their end value, warm-up included
  end_lr_factor  end value of the decaying schedules, as a fraction of learning_rate
  clip_norm      clip gradients to this global norm before the optimizer; 0 = off
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "warmup_cosine", "linear_decay")

_DEFAULTS: dict[str, Any] = {
  "name": "adam",
  "learning_rate": 1e-3,
  "b1": 0.5,
  "b2": 0.9,
  "eps": 1e-8,
  "weight_decay": 0.0,
  "momentum": 0.0,
  "nesterov": False,
  "schedule": "constant",
  "warmup_steps": 0,
  "decay_steps": 0,
  "end_lr_factor": 0.0,
  "clip_norm": 0.0,
}


def default_config() -> ml_collections.ConfigDict:
  """Optimizer config with every key at its default (Adam 1e-3, betas (0.5, 0.9), constant)."""
  return ml_collections.ConfigDict(dict(_DEFAULTS))


def _resolve(cfg: Any, prefix: str) -> dict[str, Any]:
  raw = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  unknown = sorted(set(raw) - set(_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown {prefix} config keys {unknown}; known: {sorted(_DEFAULTS)}")
  c = dict(_DEFAULTS)
  c.update(raw)

  def bad(key: str, why: str) -> ValueError:
    return ValueError(f"{prefix}.{key}={c[key]!r} {why}")

  if c["name"] not in OPTIMIZERS:
    raise bad("name", f"not in {OPTIMIZERS}")
  if c["schedule"] not in SCHEDULES:
    raise bad("schedule", f"not in {SCHEDULES}")
  for key in ("learning_rate", "eps"):
    if not float(c[key]) > 0:
      raise bad(key, "must be > 0")
  for key in ("b1", "b2", "momentum"):
    if not 0 <= float(c[key]) < 1:
      raise bad(key, "must be in [0, 1)")
  for key in ("weight_decay", "clip_norm"):
    if not float(c[key]) >= 0:
      raise bad(key, "must be >= 0")
  if not 0 <= float(c["end_lr_factor"]) <= 1:
    raise bad("end_lr_factor", "must be in [0, 1]")
  for key in ("warmup_steps", "decay_steps"):
    if isinstance(c[key], bool) or int(c[key]) != c[key] or c[key] < 0:
      raise bad(key, "must be an int >= 0")
  if not isinstance(c["nesterov"], bool):
    raise bad("nesterov", "must be a bool")
  if c["schedule"] != "constant" and c["decay_steps"] <= c["warmup_steps"]:
    raise bad("decay_steps", f"must exceed warmup_steps={c['warmup_steps']} for schedule "
              f"{c['schedule']!r}")
  return c


def learning_rate_fn(cfg: Any, prefix: str = "optim") -> optax.Schedule:
  """The learning-rate schedule of `cfg`: step -> learning rate (for the optimizer and logging)."""
  c = _resolve(cfg, prefix)
  lr = float(c["learning_rate"])
  warm = int(c["warmup_steps"])
  end = lr * float(c["end_lr_factor"])
  if c["schedule"] == "constant":
    if not warm:
      return optax.constant_schedule(lr)
    return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm])
  decay = int(c["decay_steps"])
  if c["schedule"] == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, warm, decay, end)
  tail = optax.linear_schedule(lr, end, decay - warm)
  if not warm:
    return tail
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), tail], [warm])


def make_optimizer(cfg: Any, prefix: str = "optim") -> optax.GradientTransformation:
  """Build the optimizer of `cfg` (gradient clipping first, then weight decay, then the update)."""
  c = _resolve(cfg, prefix)
  lr = learning_rate_fn(c, prefix)
  parts = []
  if c["clip_norm"] > 0:
    parts.append(optax.clip_by_global_norm(float(c["clip_norm"])))
  wd = float(c["weight_decay"])
  if c["name"] == "adamw":
    parts.append(optax.adamw(lr, b1=float(c["b1"]), b2=float(c["b2"]), eps=float(c["eps"]),
                             weight_decay=wd))
  else:
    if wd > 0:
      parts.append(optax.add_decayed_weights(wd))
    if c["name"] == "adam":
      parts.append(optax.adam(lr, b1=float(c["b1"]), b2=float(c["b2"]), eps=float(c["eps"])))
    else:
      m = float(c["momentum"])
      parts.append(optax.sgd(lr, momentum=m if m > 0 else None, nesterov=bool(c["nesterov"])))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)


def ema_update(ema_params: Any, params: Any, decay: float | jax.Array) -> Any:
  """decay * ema + (1 - decay) * params, leaf by leaf, keeping the EMA's dtypes (jittable)."""

  def upd(e, p):
    d = jnp.asarray(decay, jnp.float32)
    out = d * e.astype(jnp.float32) + (1.0 - d) * p.astype(jnp.float32)
    return out.astype(e.dtype)

  return jax.tree_util.tree_map(upd, ema_params, params)
