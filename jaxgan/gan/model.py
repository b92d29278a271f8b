"""The MuseGAN generator/discriminator pair of a config: generate, discriminate, sample.

What sampling, restoration, evaluation and the train step share; it holds no optimizer and no
train state, so a trained generator loads without them (sample.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from jaxgan import config as config_lib
from jaxgan import models, runtime
from jaxgan import sharding as shard_lib

State = dict[str, Any]
# The key of the random styles of an empty condition: fold_in(key, STYLE_SALT). Its value is
# kept so that runs and samples made earlier reproduce.
STYLE_SALT = 0x5717


class GanModel:
  """The generator and discriminator of one config, compiled for one mesh."""

  def __init__(self, config, mesh: Mesh):
    self.config = config
    self.mesh = mesh
    self.platform, self.compiler_options = runtime.prepare(mesh)
    self.data_shape = config_lib.data_shape(config)
    self.cond = config_lib.conditioning(config)
    if config.conditioning.style and not self.cond["num_styles"]:
      raise config_lib.ConfigError("conditioning.style is on but conditioning.styles is empty: "
                                   "train fills it from the data set (see resolve_styles)")
    self.conditional = bool(self.cond["context"] or self.cond["num_styles"])
    self.generator, self.discriminator = models.build(config.model, self.data_shape, self.cond)
    self.latent_size = int(self.generator.latent_size)

  def jit(self, fn: Callable, **kwargs) -> Callable:
    """`jax.jit` with this model's compiler options (see `runtime.compiler_options`)."""
    return jax.jit(fn, compiler_options=self.compiler_options, **kwargs)

  def init_params(self, g_key: jax.Array, d_key: jax.Array) -> tuple[dict, dict, dict]:
    """(G params, G batch statistics, D params) of a fresh model."""
    z = jnp.zeros([1, self.latent_size], jnp.float32)
    g_vars = self.generator.init(g_key, z, train=False, rng=g_key,
                                 **self._cond_kwargs(self.empty_condition(g_key, 1)))
    style = jnp.zeros([1], jnp.int32) if self.cond["num_styles"] else None
    d_vars = self.discriminator.init(d_key, jnp.zeros((1,) + self.data_shape, jnp.float32),
                                     style)
    return g_vars["params"], g_vars.get("batch_stats", {}), d_vars["params"]

  def abstract_generator(self) -> State:
    """Shapes of what sampling needs of a checkpoint: step, g_ema and g_stats (replicated;
    no g_stats for a generator without batch statistics)."""
    g, stats, _ = jax.eval_shape(self.init_params, *[jax.random.PRNGKey(0)] * 2)
    replicated = shard_lib.replicated(self.mesh)
    tree = {"step": jax.ShapeDtypeStruct([], jnp.int32), "g_ema": g}
    if jax.tree.leaves(stats):
      tree["g_stats"] = stats
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        tree)

  # ------------------------------------------------------------------------------------------
  # Generating.

  def latents(self, key: jax.Array, num: int) -> jax.Array:
    z = jax.random.normal(key, [num, self.latent_size], jnp.float32)
    return jax.lax.with_sharding_constraint(z, shard_lib.batch(self.mesh))

  def empty_condition(self, key: jax.Array, num: int) -> dict[str, jax.Array] | None:
    """Nothing given (and uniformly random styles): unconditional sampling of any model."""
    if not self.conditional:
      return None
    style = None
    if self.cond["num_styles"]:
      style = jax.random.randint(jax.random.fold_in(key, STYLE_SALT), [num], 0,
                                 self.cond["num_styles"])
    return models.empty_condition(self.data_shape, num, style)

  def _cond_kwargs(self, cond) -> dict:
    # Unconditional generators take no `cond` argument at all.
    return {"cond": cond} if self.conditional else {}

  def generate(self, g_params, g_stats, z, key, *, train: bool, slope, cond=None,
               binarize: str | None = None):
    """Generator output in [-1, 1]; with train=True also the updated batch statistics.

    `cond` (conditional models only; None = nothing given, random styles): see
    models/conditional.py. `binarize` overrides the model's output mode (see `models.binary`).
    """
    variables = {"params": g_params, "batch_stats": g_stats}
    if self.conditional and cond is None:
      cond = self.empty_condition(key, z.shape[0])
    kw = dict(slope=slope, rng=key, binarize=binarize, **self._cond_kwargs(cond))
    if train:
      out, updates = self.generator.apply(variables, z, train=True, mutable=["batch_stats"], **kw)
      return out, updates.get("batch_stats", g_stats)
    return self.generator.apply(variables, z, train=False, **kw), g_stats

  def rolls(self, g_params, g_stats, z, key, *, slope, cond=None) -> jax.Array:
    """Boolean piano-rolls (True = sounding) of the generator in eval mode: its output > 0."""
    mode = getattr(getattr(self.generator, "base", self.generator), "binarize", None)
    # tanh(a) > 0 exactly where a > 0: threshold the pre-activation and skip the tanh, the
    # costliest op of the sampler (one per output cell).
    override = "threshold" if mode in ("none", "threshold") else None
    if self.conditional and cond is None:
      cond = self.empty_condition(key, z.shape[0])   # drawn once, whatever the chunking
    # Chunking is only for deterministic outputs: a stochastic mode's draws would then depend
    # on the chunk count, and with it on the platform.
    chunks = self.sample_chunks(z.shape[0]) if override else 1
    size = z.shape[0] // chunks
    outs = []
    for i in range(chunks):
      piece = lambda a: a[i * size:(i + 1) * size]  # noqa: E731  (one chunk: all of a)
      out, _ = self.generate(g_params, g_stats, piece(z), key, train=False, slope=slope,
                             cond=jax.tree.map(piece, cond), binarize=override)
      outs.append(out > 0)
    return jnp.concatenate(outs)

  def sample_chunks(self, num: int) -> int:
    """How many pieces a sampling batch of `num` is cut into (`runtime.sample_chunks`)."""
    return runtime.sample_chunks(self.mesh, num)

  @functools.cached_property
  def sample_ema(self) -> Callable[[State, jax.Array, int], jax.Array]:
    """(state, key, num) -> bool piano-rolls [num, bars, steps, pitches, tracks] of the EMA
    generator (`state` needs step, g_ema and g_stats); conditional models sample with nothing
    given (and random styles)."""

    @functools.partial(self.jit, static_argnums=2)
    def sample(state, key, num):
      kz, kb = jax.random.split(key)
      z = jax.random.normal(kz, [num, self.latent_size], jnp.float32)
      return self.rolls(state["g_ema"], state["g_stats"], z, kb, slope=self.slope(state["step"]))

    return sample

  # ------------------------------------------------------------------------------------------
  # What training adds: conditions drawn from real data, the schedules and the critic.

  def training_condition(self, key, real, style):
    if not self.conditional:
      return None
    cc = self.config.conditioning
    return models.training_condition(
        key, real, style if self.cond["num_styles"] else None,
        infill=float(cc.infill), accompany=float(cc.accompany))

  def slope(self, step: jax.Array) -> jax.Array:
    """Binary-neuron slope annealing (BinaryMuseGAN): rate ** (step / every)."""
    tc = self.config.train
    return jnp.asarray(tc.slope_rate, jnp.float32) ** (step / tc.slope_every)

  def critic_count(self, step: jax.Array) -> jax.Array:
    """D updates at `step`: loss.n_critic, or MuseGAN's larger count (loss.critic_warmup_n)
    during loss.critic_warmup_steps and every loss.critic_every_n steps."""
    lc = self.config.loss
    n = jnp.asarray(lc.n_critic, jnp.int32)
    if lc.critic_warmup_steps or lc.critic_every_n:
      early = step < lc.critic_warmup_steps
      periodic = (step % max(lc.critic_every_n, 1) == 0) & (lc.critic_every_n > 0)
      n = jnp.where(early | periodic, max(lc.critic_warmup_n, lc.n_critic), n)
    return n

  @property
  def single_critic(self) -> bool:
    """Whether every step makes exactly one D update."""
    lc = self.config.loss
    return lc.n_critic == 1 and not lc.critic_warmup_steps and not lc.critic_every_n

  def discriminate(self, d_params, x, style) -> jax.Array:
    """D's logits of pieces `x` in [-1, 1] (with their styles where the model has them)."""
    return self.discriminator.apply({"params": d_params}, x,
                                    style if self.cond["num_styles"] else None)
