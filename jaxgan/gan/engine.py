"""A MuseGAN model with its optimizers and its state, init and step jitted for one mesh."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from jaxgan import sharding as shard_lib
from jaxgan.gan import state as state_lib
from jaxgan.gan import step as step_lib
from jaxgan.gan.model import GanModel, State

Batch = dict[str, jax.Array]


class Trainable:
  """The training members every engine has (`Engine` and voicegan.VoiceEngine): optimizers,
  the state's shapes and shardings, the jitted `init` and the jitted, donating `step`.

  The engine (a model with `jit`) provides `_init(rng) -> state` and the pure, not jitted
  `train_step(state, batch) -> (state, metrics)`; both may read `self.txs`."""

  txs: step_lib.Optimizers
  abstract_state: State
  state_sharding: State
  init: Callable[[jax.Array], State]
  step: Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]
  jit: Callable[..., Callable]
  train_step: Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]

  def _init(self, rng: jax.Array) -> State:
    raise NotImplementedError

  def _set_up_training(self, config: Any, mesh: Mesh) -> None:
    self.txs = step_lib.Optimizers.from_config(config)
    self.abstract_state = jax.eval_shape(self._init, jax.random.PRNGKey(0))
    self.state_sharding = state_lib.shardings(self.abstract_state, mesh, config)
    self.init = self.jit(self._init, out_shardings=self.state_sharding)
    self.step = self.jit(
        self.train_step,
        in_shardings=(self.state_sharding, shard_lib.batch(mesh, leading=1)),
        out_shardings=(self.state_sharding, shard_lib.replicated(mesh)),
        donate_argnums=0)

  def abstract_with_shardings(self) -> State:
    return state_lib.with_shardings(self.abstract_state, self.state_sharding)

  def warm_start(self, state: State, source: str) -> State:
    return state_lib.warm_start(state, self.state_sharding, source)


class Engine(GanModel, Trainable):
  """What training compiles for one config on one mesh: the model (`GanModel`), its
  optimizers, the state's shapes and shardings, and the jitted `init` and `step`."""

  def __init__(self, config, mesh: Mesh):
    super().__init__(config, mesh)
    self._set_up_training(config, mesh)

  def _init(self, rng: jax.Array) -> State:
    return state_lib.init_state(self, self.txs, rng)

  @functools.cached_property
  def train_step(self) -> Callable[[State, Batch], tuple[State, dict]]:
    """(state, batch) -> (state, metrics), not jitted: `step_lib.train_step` of this engine."""
    return functools.partial(step_lib.train_step, self, self.txs)

  def critic_update(self, g_params, g_stats, d_params, d_opt, real, style, key, slope,
                    fake=None):
    """`step_lib.critic_update` with this engine's D optimizer: one D update, the body of the
    critic loop (compiled on its own by `jaxgan profile` to count its FLOPs)."""
    return step_lib.critic_update(self, self.txs.d, g_params, g_stats, d_params, d_opt, real,
                                  style, key, slope, fake)
