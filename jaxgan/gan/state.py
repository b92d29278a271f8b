"""The MuseGAN train state: one plain pytree (so Orbax and the sharding rule see every leaf),
its initial value, its shapes and shardings, and warm starts from another run.

    step, g, g_stats, g_ema, d, g_opt, d_opt, rng
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import checkpoint as ckpt_lib
from jaxgan import sharding as shard_lib
from jaxgan.gan.model import GanModel
from jaxgan.gan.step import Optimizers

log = logging.getLogger("jaxgan")
State = dict[str, Any]
# What a warm start takes from another run; the optimizers and the step start afresh.
WEIGHTS = ("g", "g_stats", "g_ema", "d")


def init_state(model: GanModel, txs: Optimizers, rng: jax.Array) -> State:
  g_key, d_key, rng = jax.random.split(rng, 3)
  g_params, g_stats, d_params = model.init_params(g_key, d_key)
  return {
      "step": jnp.zeros([], jnp.int32),
      "g": g_params,
      "g_stats": g_stats,
      "g_ema": jax.tree.map(jnp.copy, g_params),
      "d": d_params,
      "g_opt": txs.g.init(g_params),
      "d_opt": txs.d.init(d_params),
      "rng": rng,
  }


def shardings(abstract_state: State, mesh, config) -> State:
  """Where each leaf lives: replicated, or split over the fsdp axis (sharding.state_shardings)."""
  return shard_lib.state_shardings(abstract_state, mesh, fsdp_min_size=config.train.fsdp_min_size)


def with_shardings(abstract_state: State, state_sharding: State) -> State:
  """ShapeDtypeStructs carrying their shardings: the target of a checkpoint restore."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      abstract_state, state_sharding)


def warm_start(state: State, state_sharding: State, source: str) -> State:
  """G and D weights (and G's EMA and batch stats) from another run; optimizers start fresh."""
  other, step = ckpt_lib.restore_unstructured(source)
  new = dict(state)
  for key in WEIGHTS:
    if key not in state or key not in other:
      continue   # a voices model without a critic, or warm-started from one
    want = jax.tree.structure(state[key])
    if jax.tree.structure(other[key]) != want:
      raise ValueError(f"train.init_from={source!r}: its {key!r} weights do not fit this model")
    new[key] = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s),
                            other[key], state_sharding[key])
  log.info("warm start from %s (step %d)", source, step)
  return new
