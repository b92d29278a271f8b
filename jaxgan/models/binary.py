"""Output activations of the generator: tanh, hard binarization, and binary neurons.

Values follow the data convention: silent -1, sounding +1.

- "none": tanh(a), the usual MuseGAN output (binarized only when sampling).
- "threshold": +1 where a > 0 else -1; no gradient (sampling only).
- "bernoulli": +1 with probability (tanh(a) + 1) / 2 = sigmoid(2a); no gradient (sampling only).
- "deterministic" / "stochastic": binary neurons of BinaryMuseGAN (Dong & Yang, ISMIR 2018).
  With p = sigmoid(slope * a) the forward pass outputs +1 where p > 0.5 (deterministic) or where
  u < p for u ~ U[0, 1) (stochastic), else -1. The backward pass is the sigmoid-adjusted
  straight-through estimator: the gradient of the soft output 2p - 1 = tanh(slope * a / 2), i.e.
  d out / d a = 2 * slope * p * (1 - p). Annealing `slope` upwards makes the estimator sharper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

BINARIZE_MODES = ("none", "threshold", "bernoulli", "deterministic", "stochastic")
STOCHASTIC_MODES = ("bernoulli", "stochastic")


def _pm1(on: Array, dtype) -> Array:
  return jnp.where(on, 1.0, -1.0).astype(dtype)


def threshold(a: Array) -> Array:
  """Hard binarization of a pre-activation (or of a tanh output): sign with 0 -> -1."""
  return jax.lax.stop_gradient(_pm1(a > 0, a.dtype))


def bernoulli(a: Array, rng: Array) -> Array:
  """Sample +1 with probability sigmoid(2a), so that the mean equals tanh(a)."""
  p = jax.nn.sigmoid(2.0 * a.astype(jnp.float32))
  return jax.lax.stop_gradient(_pm1(jax.random.uniform(rng, a.shape) < p, a.dtype))


def straight_through(hard: Array, soft: Array) -> Array:
  """Forward value `hard`, gradient of `soft`."""
  return soft + jax.lax.stop_gradient(hard - soft)


def deterministic_binary(a: Array, slope: float | Array = 1.0) -> Array:
  """Deterministic binary neuron with the sigmoid-adjusted straight-through gradient."""
  p = jax.nn.sigmoid(slope * a)
  return straight_through(_pm1(p > 0.5, a.dtype), 2.0 * p - 1.0)


def stochastic_binary(a: Array, rng: Array, slope: float | Array = 1.0) -> Array:
  """Stochastic binary neuron: +1 with probability sigmoid(slope * a), straight-through gradient."""
  p = jax.nn.sigmoid(slope * a)
  u = jax.random.uniform(rng, a.shape, dtype=jnp.float32)
  return straight_through(_pm1(u < p.astype(jnp.float32), a.dtype), 2.0 * p - 1.0)


def check_mode(mode: str, key: str = "model.binarize") -> str:
  """Raise a ValueError naming `key` unless `mode` is a known binarize mode."""
  if mode not in BINARIZE_MODES:
    raise ValueError(f"{key}={mode!r} not in {BINARIZE_MODES}")
  return mode


def activate(a: Array, mode: str, *, slope: float | Array = 1.0, rng: Array | None = None) -> Array:
  """Map generator pre-activations `a` to an output in [-1, 1] according to `mode`."""
  check_mode(mode)
  if mode == "none":
    return jnp.tanh(a)
  if mode == "threshold":
    return threshold(a)
  if mode == "deterministic":
    return deterministic_binary(a, slope)
  if rng is None:
    raise ValueError(f"binarize mode {mode!r} needs a random key")
  if mode == "bernoulli":
    return bernoulli(a, rng)
  return stochastic_binary(a, rng, slope)


def binarize_output(x: Array, mode: str, rng: Array | None = None) -> Array:
  """Binarize a generator output already in [-1, 1] (e.g. tanh) for sampling.

  "threshold": x > 0; "bernoulli": +1 with probability (x + 1) / 2; "none" returns x unchanged.
  """
  if mode == "none":
    return x
  if mode == "threshold":
    return threshold(x)
  if mode == "bernoulli":
    if rng is None:
      raise ValueError("binarize mode 'bernoulli' needs a random key")
    p = (x.astype(jnp.float32) + 1.0) / 2.0
    return jax.lax.stop_gradient(_pm1(jax.random.uniform(rng, x.shape) < p, x.dtype))
  raise ValueError(f"binarize_output mode={mode!r} not in ('none', 'threshold', 'bernoulli')")
