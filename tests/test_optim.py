"""Optimizers, schedules, clipping and EMA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxgan import config as config_lib
from jaxgan import optim


def _close(a, b, tol=1e-6):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def _cfg(**kw):
  d = optim.default_config().to_dict()
  d.update(kw)
  return ml_collections.ConfigDict(d)


def test_constant_schedule_with_and_without_warmup():
  f = optim.learning_rate_fn(_cfg(learning_rate=2e-4))
  for s in (0, 10, 10_000):
    _close(f(s), 2e-4)
  f = optim.learning_rate_fn(_cfg(learning_rate=1e-3, warmup_steps=10))
  _close(f(0), 0.0)
  _close(f(5), 5e-4)
  _close(f(10), 1e-3)
  _close(f(1000), 1e-3)


def test_warmup_cosine_schedule():
  f = optim.learning_rate_fn(_cfg(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10,
                                  decay_steps=110, end_lr_factor=0.1))
  _close(f(0), 0.0)
  _close(f(5), 0.5)
  _close(f(10), 1.0)
  # Half-way through the cosine part: end + (peak - end) / 2.
  _close(f(60), 0.55, 1e-5)
  _close(f(110), 0.1, 1e-6)
  _close(f(500), 0.1, 1e-6)


def test_linear_decay_schedule():
  f = optim.learning_rate_fn(_cfg(learning_rate=1.0, schedule="linear_decay", decay_steps=100))
  _close(f(0), 1.0)
  _close(f(25), 0.75)
  _close(f(100), 0.0)
  _close(f(200), 0.0)
  f = optim.learning_rate_fn(_cfg(learning_rate=1.0, schedule="linear_decay", warmup_steps=10,
                                  decay_steps=110, end_lr_factor=0.5))
  _close(f(5), 0.5)
  _close(f(10), 1.0)
  _close(f(60), 0.75)
  _close(f(110), 0.5)


def test_sgd_applies_the_scheduled_learning_rate():
  cfg = _cfg(name="sgd", learning_rate=0.1, schedule="linear_decay", decay_steps=4)
  tx, lr = optim.make_optimizer(cfg), optim.learning_rate_fn(cfg)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  g = {"w": jnp.array([1.0, -2.0, 0.5])}
  for step in range(5):
    upd, state = tx.update(g, state, params)
    _close(upd["w"], -lr(step) * g["w"])


def test_adam_matches_optax():
  cfg = _cfg(name="adam", learning_rate=1e-3, b1=0.5, b2=0.9, eps=1e-8)
  tx, ref = optim.make_optimizer(cfg), optax.adam(1e-3, b1=0.5, b2=0.9, eps=1e-8)
  params = {"w": jnp.array([0.5, -1.0])}
  s, r = tx.init(params), ref.init(params)
  for i in range(3):
    g = {"w": jnp.array([0.1 * (i + 1), -0.3])}
    u, s = tx.update(g, s, params)
    v, r = ref.update(g, r, params)
    _close(u["w"], v["w"])


def test_weight_decay_and_momentum():
  params = {"w": jnp.array([2.0, -4.0])}
  zero = {"w": jnp.zeros(2)}
  # adamw with zero gradients: only the decoupled decay, -lr * wd * w.
  tx = optim.make_optimizer(_cfg(name="adamw", learning_rate=0.1, weight_decay=0.01))
  u, _ = tx.update(zero, tx.init(params), params)
  _close(u["w"], -0.1 * 0.01 * params["w"])
  # sgd with L2 decay: gradient + wd * w.
  tx = optim.make_optimizer(_cfg(name="sgd", learning_rate=0.5, weight_decay=0.1))
  u, _ = tx.update(zero, tx.init(params), params)
  _close(u["w"], -0.5 * 0.1 * params["w"])
  # Momentum accumulates: second update = -lr * (g + m * g).
  tx = optim.make_optimizer(_cfg(name="sgd", learning_rate=1.0, momentum=0.9))
  g = {"w": jnp.ones(2)}
  s = tx.init(params)
  _, s = tx.update(g, s, params)
  u, _ = tx.update(g, s, params)
  _close(u["w"], -1.9 * jnp.ones(2))


def test_clipping_bounds_the_update_norm():
  cfg = _cfg(name="sgd", learning_rate=0.5, clip_norm=1.0)
  tx = optim.make_optimizer(cfg)
  params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
  big = {"a": jnp.array([30.0, -40.0, 0.0]), "b": jnp.full((2, 2), 10.0)}
  u, _ = tx.update(big, tx.init(params), params)
  _close(optax.tree.norm(u), 0.5, 1e-5)
  small = {"a": jnp.array([0.1, 0.0, 0.0]), "b": jnp.zeros((2, 2))}
  u, _ = tx.update(small, tx.init(params), params)
  _close(u["a"], -0.05 * jnp.array([1.0, 0.0, 0.0]))


def test_ema_update():
  ema = {"w": jnp.array([1.0, 2.0]), "h": jnp.array([0.0], jnp.bfloat16)}
  p = {"w": jnp.array([3.0, 0.0]), "h": jnp.array([1.0], jnp.bfloat16)}
  out = jax.jit(optim.ema_update)(ema, p, 0.9)
  _close(out["w"], [1.2, 1.8])
  assert out["h"].dtype == jnp.bfloat16
  _close(out["h"].astype(jnp.float32), [0.1], 1e-2)
  # decay 1 keeps the EMA, decay 0 copies the params; a traced decay works too.
  _close(optim.ema_update(ema, p, 1.0)["w"], ema["w"])
  _close(jax.jit(optim.ema_update)(ema, p, jnp.float32(0.0))["w"], p["w"])


@pytest.mark.parametrize("kw,match", [
  ({"name": "rmsprop"}, r"optim.name='rmsprop' not in \('adam', 'adamw', 'sgd'\)"),
  ({"schedule": "step"}, r"optim.schedule='step' not in"),
  ({"learning_rate": 0.0}, r"optim.learning_rate=0.0 must be > 0"),
  ({"b2": 1.0}, r"optim.b2=1.0 must be in \[0, 1\)"),
  ({"clip_norm": -1.0}, r"optim.clip_norm=-1.0 must be >= 0"),
  ({"schedule": "warmup_cosine", "warmup_steps": 10, "decay_steps": 5}, r"optim.decay_steps=5"),
  ({"warmup_steps": 1.5}, r"optim.warmup_steps=1.5 must be an int"),
])
def test_validation_names_the_key(kw, match):
  with pytest.raises(ValueError, match=match):
    optim.make_optimizer(_cfg(**kw))


def test_unknown_key_and_prefix():
  with pytest.raises(ValueError, match="unknown g_optim config keys"):
    optim.make_optimizer({"name": "adam", "lr": 1e-3}, prefix="g_optim")
  with pytest.raises(ValueError, match=r"d_optim.name='x'"):
    optim.learning_rate_fn({"name": "x"}, prefix="d_optim")


def test_config_sections_take_the_optimizer_defaults():
  section = config_lib.optim_config(2e-4).to_dict()
  assert section == dict(optim.default_config().to_dict(), learning_rate=2e-4)
  assert config_lib.base_config().g_optim.to_dict() == optim.default_config().to_dict()
