"""GAN losses on discriminator logits, and gradient penalties.

All functions are pure and jittable; logits are `[B]` (any float dtype, reduced in float32).

| kind | D loss | G loss |
| --- | --- | --- |
| wgan | E[D(fake)] - E[D(real)] (pair with `gradient_penalty`) | -E[D(fake)] |
| nonsaturating | E[softplus(-D(real))] + E[softplus(D(fake))] | E[softplus(-D(fake))] |
| hinge | E[relu(1 - D(real))] + E[relu(1 + D(fake))] | -E[D(fake)] |
| lsgan | 0.5 E[(D(real) - 1)^2] + 0.5 E[D(fake)^2] | 0.5 E[(D(fake) - 1)^2] |

softplus(-l) = -log sigmoid(l): the non-saturating loss is the logistic cross-entropy.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

LOSS_KINDS = ("wgan", "nonsaturating", "hinge", "lsgan")


def _check(kind: str) -> None:
  if kind not in LOSS_KINDS:
    raise ValueError(f"loss kind={kind!r} not in {LOSS_KINDS}")


def _f32(x: Array) -> Array:
  return jnp.asarray(x).astype(jnp.float32)


def d_loss(kind: str, real_logits: Array, fake_logits: Array) -> Array:
  """Discriminator loss (to minimise) for `kind`; a float32 scalar."""
  _check(kind)
  r, f = _f32(real_logits), _f32(fake_logits)
  if kind == "wgan":
    return f.mean() - r.mean()
  if kind == "nonsaturating":
    return jax.nn.softplus(-r).mean() + jax.nn.softplus(f).mean()
  if kind == "hinge":
    return jax.nn.relu(1.0 - r).mean() + jax.nn.relu(1.0 + f).mean()
  return 0.5 * jnp.square(r - 1.0).mean() + 0.5 * jnp.square(f).mean()


def g_loss(kind: str, fake_logits: Array) -> Array:
  """Generator loss (to minimise) for `kind`; a float32 scalar."""
  _check(kind)
  f = _f32(fake_logits)
  if kind in ("wgan", "hinge"):
    return -f.mean()
  if kind == "nonsaturating":
    return jax.nn.softplus(-f).mean()
  return 0.5 * jnp.square(f - 1.0).mean()


def _grad_norms(d_fn: Callable[[Array], Array], x: Array) -> Array:
  """Per-sample L2 norms of d D(x)_i / d x_i, float32 [B]."""
  # Samples are independent in D (no BatchNorm), so the gradient of the sum is per sample.
  g = jax.grad(lambda v: _f32(d_fn(v)).sum())(x)
  g = g.astype(jnp.float32).reshape(g.shape[0], -1)
  # The tiny constant keeps the gradient of the norm finite at g == 0.
  return jnp.sqrt(jnp.square(g).sum(axis=1) + 1e-12)


def gradient_penalty(d_fn: Callable[[Array], Array], real: Array, fake: Array,
                     key: Array) -> Array:
  """WGAN-GP penalty E[(||grad_x D(x_hat)|| - 1)^2] at random interpolates (Gulrajani et al.).

  x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] per sample. `d_fn` maps a batch to
  logits [B]; the result is a float32 scalar, to be weighted by lambda (10 in MuseGAN) by the
  caller. Gradients flow into whatever `d_fn` closes over (D's params).
  """
  shape = (real.shape[0],) + (1,) * (real.ndim - 1)
  eps = jax.random.uniform(key, shape, dtype=jnp.float32)
  x_hat = (eps * _f32(real) + (1.0 - eps) * _f32(fake)).astype(real.dtype)
  return jnp.square(_grad_norms(d_fn, x_hat) - 1.0).mean()


def r1_penalty(d_fn: Callable[[Array], Array], real: Array) -> Array:
  """R1 penalty 0.5 * E[||grad_x D(x)||^2] on real data (Mescheder et al. 2018).

  Convention: the 1/2 is included here and gamma is not, so the caller adds `gamma * r1_penalty`
  to the D loss, which equals the paper's (gamma / 2) * E||grad D||^2.
  """
  g = jax.grad(lambda v: _f32(d_fn(v)).sum())(real)
  g = g.astype(jnp.float32).reshape(g.shape[0], -1)
  return 0.5 * jnp.square(g).sum(axis=1).mean()


def critic_loss(loss_config, d_fn: Callable[[Array], Array], real: Array, fake: Array,
                key: jax.Array) -> tuple[Array, dict[str, Array]]:
  """D's loss of `loss_config.kind` with its penalties (gp_weight, r1_gamma), and its parts as
  metrics: d_loss, gp, r1, d_real, d_fake (the mean logits)."""
  real_logits, fake_logits = d_fn(real), d_fn(fake)
  loss = d_loss(loss_config.kind, real_logits, fake_logits)
  gp = r1 = jnp.zeros([], jnp.float32)
  if loss_config.gp_weight > 0:
    gp = gradient_penalty(d_fn, real, fake, key)
    loss = loss + loss_config.gp_weight * gp
  if loss_config.r1_gamma > 0:
    r1 = r1_penalty(d_fn, real)
    loss = loss + loss_config.r1_gamma * r1
  return loss, dict(d_loss=loss, gp=gp, r1=r1, d_real=real_logits.mean(),
                    d_fake=fake_logits.mean())
