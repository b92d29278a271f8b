"""Losses and penalties against analytic values and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan.gan import losses

KEY = jax.random.PRNGKey(0)
REAL = jnp.array([2.0, -1.0, 0.5])
FAKE = jnp.array([-0.5, 1.5, 0.0])


def _close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def _softplus(x):
  return np.log1p(np.exp(x))


def test_wgan_values():
  _close(losses.d_loss("wgan", REAL, FAKE), FAKE.mean() - REAL.mean())
  _close(losses.g_loss("wgan", FAKE), -FAKE.mean())


def test_nonsaturating_values():
  r, f = np.asarray(REAL), np.asarray(FAKE)
  _close(losses.d_loss("nonsaturating", REAL, FAKE), _softplus(-r).mean() + _softplus(f).mean())
  _close(losses.g_loss("nonsaturating", FAKE), _softplus(-f).mean())
  # At logit 0 both terms are log 2; the G gradient is -sigmoid(-l) / B.
  _close(losses.d_loss("nonsaturating", jnp.zeros(2), jnp.zeros(2)), 2 * np.log(2.0))
  g = jax.grad(lambda l: losses.g_loss("nonsaturating", l))(FAKE)
  _close(g, -jax.nn.sigmoid(-FAKE) / 3)


def test_hinge_values():
  # relu(1 - [2, -1, .5]) = [0, 2, .5]; relu(1 + [-.5, 1.5, 0]) = [.5, 2.5, 1]
  _close(losses.d_loss("hinge", REAL, FAKE), 2.5 / 3 + 4.0 / 3)
  _close(losses.g_loss("hinge", FAKE), -FAKE.mean())


def test_lsgan_values():
  # (r - 1)^2 = [1, 4, .25]; f^2 = [.25, 2.25, 0]
  _close(losses.d_loss("lsgan", REAL, FAKE), 0.5 * 5.25 / 3 + 0.5 * 2.5 / 3)
  # (f - 1)^2 = [2.25, .25, 1]
  _close(losses.g_loss("lsgan", FAKE), 0.5 * 3.5 / 3)


def test_losses_are_float32_scalars_for_bf16_logits():
  for kind in losses.LOSS_KINDS:
    d = losses.d_loss(kind, REAL.astype(jnp.bfloat16), FAKE.astype(jnp.bfloat16))
    g = losses.g_loss(kind, FAKE.astype(jnp.bfloat16))
    assert d.shape == () and d.dtype == jnp.float32
    assert g.shape == () and g.dtype == jnp.float32


def test_unknown_kind():
  with pytest.raises(ValueError, match=r"loss kind='wgan-gp' not in"):
    losses.d_loss("wgan-gp", REAL, FAKE)
  with pytest.raises(ValueError, match="not in"):
    losses.g_loss("bce", FAKE)


@pytest.mark.parametrize("scale,want", [(1.0, 0.0), (3.0, 4.0), (0.5, 0.25)])
def test_gradient_penalty_linear_critic(scale, want):
  # D(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 at any interpolate.
  shape = (4, 2, 3, 5, 2)
  w = jax.random.normal(KEY, shape[1:])
  w = scale * w / jnp.linalg.norm(w)
  d_fn = lambda x: jnp.einsum("b...,...->b", x, w)
  real = jax.random.normal(jax.random.PRNGKey(1), shape)
  fake = jax.random.normal(jax.random.PRNGKey(2), shape)
  _close(losses.gradient_penalty(d_fn, real, fake, KEY), want, 1e-4)


def test_gradient_penalty_interpolates_between_real_and_fake():
  # D(x) = 0.5 ||x||^2 has gradient x: the norm at the interpolate tells where it lies.
  # With real = c * u, fake = 0 and ||u|| = 1, ||x_hat|| = eps * c, eps in [0, 1].
  u = jnp.ones((1, 4)) / 2.0
  real, fake = jnp.tile(3.0 * u, (64, 1)), jnp.zeros((64, 4))
  norms = losses._grad_norms(lambda x: 0.5 * (x ** 2).sum(1), real)
  _close(norms, jnp.full(64, 3.0), 1e-5)
  gp = losses.gradient_penalty(lambda x: 0.5 * (x ** 2).sum(1), real, fake, KEY)
  # E[(3 eps - 1)^2] for eps ~ U[0, 1] is 3 - 3 + 1 = 1; with 64 samples it is near that.
  assert 0.5 < float(gp) < 1.6


def test_gradient_penalty_param_gradient_matches_finite_differences():
  # A critic with parameters, D(x) = sum(a * x^2) + <b, x>: check d GP / d(a, b) numerically.
  shape = (3, 4)
  real = jax.random.normal(jax.random.PRNGKey(1), shape)
  fake = jax.random.normal(jax.random.PRNGKey(2), shape)

  def gp(params):
    a, b = params
    return losses.gradient_penalty(lambda x: (a * x ** 2).sum(1) + x @ b, real, fake, KEY)

  params = (jnp.array([0.3, -0.2, 0.5, 0.1]), jnp.array([0.4, 0.2, -0.6, 0.9]))
  grads = jax.grad(gp)(params)
  h = 1e-3
  for i in range(2):
    for j in range(4):
      hi = tuple(p.at[j].add(h) if k == i else p for k, p in enumerate(params))
      lo = tuple(p.at[j].add(-h) if k == i else p for k, p in enumerate(params))
      fd = (gp(hi) - gp(lo)) / (2 * h)
      _close(grads[i][j], fd, 2e-3)


def test_r1_penalty():
  shape = (5, 3, 4)
  w = jax.random.normal(KEY, shape[1:])
  real = jax.random.normal(jax.random.PRNGKey(1), shape)
  # Linear critic: 0.5 ||w||^2.
  _close(losses.r1_penalty(lambda x: jnp.einsum("bij,ij->b", x, w), real),
         0.5 * jnp.sum(w ** 2), 1e-4)
  # D(x) = 0.5 ||x||^2: gradient x, so 0.5 E ||x||^2.
  _close(losses.r1_penalty(lambda x: 0.5 * (x ** 2).sum((1, 2)), real),
         0.5 * jnp.mean(jnp.sum(real ** 2, (1, 2))), 1e-4)


def test_penalties_jit_and_bf16():
  w = jax.random.normal(KEY, (6,))
  d_fn = lambda x: (x @ w.astype(x.dtype))
  real = jax.random.normal(KEY, (4, 6)).astype(jnp.bfloat16)
  fake = jnp.zeros((4, 6), jnp.bfloat16)
  gp = jax.jit(lambda r, f: losses.gradient_penalty(d_fn, r, f, KEY))(real, fake)
  r1 = jax.jit(lambda r: losses.r1_penalty(d_fn, r))(real)
  assert gp.dtype == jnp.float32 and r1.dtype == jnp.float32
  _close(gp, (jnp.linalg.norm(w.astype(jnp.bfloat16).astype(jnp.float32)) - 1) ** 2, 2e-2)
