"""The MuseGAN train step as pure functions: (model, optimizers, state, batch) -> (state, metrics).

One step makes `model.critic_count(step)` discriminator updates, each on the next real batch of
the step's [n_critic, B, ...] batch against fresh fakes, then one generator update; with
loss.reuse_fake the generator's gradient is taken at the last critic update's fakes. Every key
a step uses comes from `step_keys`, `critic_keys` and `generator_keys` below.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxgan import optim
from jaxgan.gan import losses
from jaxgan.gan.model import GanModel

State = dict[str, Any]
# The key of a training condition: fold_in(key, CONDITION_SALT) of its update's key. Its value
# is kept so that runs made earlier reproduce.
CONDITION_SALT = 0xC0D
CRITIC_METRICS = ("d_loss", "gp", "r1", "d_real", "d_fake", "d_grad_norm")


@dataclasses.dataclass(frozen=True)
class Optimizers:
  """The G and D optimizers of a config and their learning-rate schedules."""

  g: optax.GradientTransformation
  d: optax.GradientTransformation
  g_lr: optax.Schedule
  d_lr: optax.Schedule

  @classmethod
  def from_config(cls, config) -> "Optimizers":
    return cls(g=optim.make_optimizer(config.g_optim, "g_optim"),
               d=optim.make_optimizer(config.d_optim, "d_optim"),
               g_lr=optim.learning_rate_fn(config.g_optim, "g_optim"),
               d_lr=optim.learning_rate_fn(config.d_optim, "d_optim"))


class StepKeys(NamedTuple):
  next: jax.Array       # the state's key for the next step
  critic: jax.Array     # folded with the update's index: that critic update's key
  generator: jax.Array  # the generator update (without reuse_fake)


class CriticKeys(NamedTuple):
  z: jax.Array          # the fakes' latents
  gp: jax.Array         # the gradient penalty's interpolation
  binarize: jax.Array   # stochastic binary neurons
  condition: jax.Array  # the training condition (conditional models)


class GeneratorKeys(NamedTuple):
  z: jax.Array
  binarize: jax.Array
  condition: jax.Array


def step_keys(rng: jax.Array) -> StepKeys:
  return StepKeys(*jax.random.split(rng, 3))


def critic_keys(key: jax.Array) -> CriticKeys:
  z, gp, binarize = jax.random.split(key, 3)
  return CriticKeys(z, gp, binarize, jax.random.fold_in(key, CONDITION_SALT))


def generator_keys(key: jax.Array) -> GeneratorKeys:
  z, binarize = jax.random.split(key)
  return GeneratorKeys(z, binarize, jax.random.fold_in(key, CONDITION_SALT))


def d_loss(model: GanModel, d_params, real, fake, style, key) -> tuple[jax.Array, dict]:
  """D's loss (with its penalties) on a real and a fake batch, and its parts as metrics."""
  d_fn = lambda x: model.discriminate(d_params, x, style)  # noqa: E731
  return losses.critic_loss(model.config.loss, d_fn, real, fake, key)


def critic_fakes(model: GanModel, g_params, g_stats, real, style, key, slope):
  """The fakes (and G's new batch statistics) of the critic update keyed by `key`."""
  keys = critic_keys(key)
  cond = model.training_condition(keys.condition, real, style)
  return model.generate(g_params, g_stats, model.latents(keys.z, real.shape[0]), keys.binarize,
                        train=True, slope=slope, cond=cond)


def critic_update(model: GanModel, d_tx: optax.GradientTransformation, g_params, g_stats,
                  d_params, d_opt, real, style, key, slope, fake=None):
  """One D update on a real batch [B, ...] in [-1, 1] (and its styles [B]) against fresh
  fakes (or the given `fake`, see `critic_fakes`): the body of the critic loop, also compiled
  on its own by `jaxgan profile` to count its FLOPs per update."""
  if fake is None:
    fake, _ = critic_fakes(model, g_params, g_stats, real, style, key, slope)
  fake = jax.lax.stop_gradient(fake)
  grads, metrics = jax.grad(
      lambda d: d_loss(model, d, real, fake, style, critic_keys(key).gp), has_aux=True)(d_params)
  updates, d_opt = d_tx.update(grads, d_opt, d_params)
  metrics["d_grad_norm"] = optax.tree_utils.tree_norm(grads)
  return optax.apply_updates(d_params, updates), d_opt, metrics


def generator_grads(model: GanModel, g_params, g_stats, d_params, real, style, key, slope):
  """G's loss against D on fresh fakes keyed by `key` (a batch of real's size, conditioned
  on `real` and `style` where the model is), G's new batch statistics and its gradients: the
  G update without reuse_fake."""
  keys = generator_keys(key)
  z = model.latents(keys.z, real.shape[0])
  cond = model.training_condition(keys.condition, real, style)

  def g_loss_fn(g):
    fake, stats = model.generate(g, g_stats, z, keys.binarize, train=True, slope=slope, cond=cond)
    return losses.g_loss(model.config.loss.kind, model.discriminate(d_params, fake, style)), stats

  (g_loss, new_stats), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_params)
  return g_loss, new_stats, grads


def schedule_count(opt_state) -> jax.Array:
  """How many updates an optimizer state has seen: its learning-rate schedule's counter."""
  is_schedule = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
  counts = [s.count for s in jax.tree.leaves(opt_state, is_leaf=is_schedule) if is_schedule(s)]
  return counts[0] if counts else jnp.zeros([], jnp.int32)


def train_step(model: GanModel, txs: Optimizers, state: State, batch: dict[str, jax.Array]
               ) -> tuple[State, dict[str, jax.Array]]:
  """One step: the critic updates, the generator update and G's EMA. `batch["pianoroll"]` is
  [n_critic, B, bars, steps, pitches, tracks] (uint8, > 0 = sounding), `batch["style"]`
  [n_critic, B]."""
  lc = model.config.loss
  real_all = jnp.where(batch["pianoroll"] > 0, 1.0, -1.0).astype(jnp.float32)
  style_all = batch["style"].astype(jnp.int32)
  n_batches = real_all.shape[0]
  keys = step_keys(state["rng"])
  slope = model.slope(state["step"])

  def d_update(i, carry):
    d_params, d_opt, _ = carry
    return critic_update(model, txs.d, state["g"], state["g_stats"], d_params, d_opt,
                         real_all[i % n_batches], style_all[i % n_batches],
                         jax.random.fold_in(keys.critic, i), slope)

  zero = jnp.zeros([], jnp.float32)
  carry = (state["d"], state["d_opt"], {name: zero for name in CRITIC_METRICS})
  n_critic = model.critic_count(state["step"])
  # With reuse_fake the last critic update runs after the loop, on fakes whose backward pass
  # the G update then uses; a fixed single update needs no loop at all.
  looped = n_critic - 1 if lc.reuse_fake else n_critic
  if not (lc.reuse_fake and model.single_critic):
    carry = jax.lax.fori_loop(0, looped, d_update, carry)
  d_params, d_opt, d_metrics = carry

  if lc.reuse_fake:
    i = n_critic - 1
    real, style = real_all[i % n_batches], style_all[i % n_batches]
    key = jax.random.fold_in(keys.critic, i)
    fake, g_vjp, g_stats = jax.vjp(
        lambda g: critic_fakes(model, g, state["g_stats"], real, style, key, slope),
        state["g"], has_aux=True)
    d_params, d_opt, d_metrics = critic_update(model, txs.d, state["g"], state["g_stats"],
                                               d_params, d_opt, real, style, key, slope,
                                               fake=fake)
    g_loss, fake_grad = jax.value_and_grad(
        lambda x: losses.g_loss(lc.kind, model.discriminate(d_params, x, style)))(fake)
    (g_grads,) = g_vjp(fake_grad)
  else:
    g_loss, g_stats, g_grads = generator_grads(model, state["g"], state["g_stats"], d_params,
                                               real_all[0], style_all[0], keys.generator, slope)
  updates, g_opt = txs.g.update(g_grads, state["g_opt"], state["g"])
  g_params = optax.apply_updates(state["g"], updates)
  new_state = dict(
      step=state["step"] + 1, g=g_params, g_stats=g_stats,
      g_ema=optim.ema_update(state["g_ema"], g_params, model.config.train.ema_decay),
      d=d_params, g_opt=g_opt, d_opt=d_opt, rng=keys.next)
  # The D learning rate of this step's last critic update, counted in D updates.
  metrics = dict(d_metrics, g_loss=g_loss, g_grad_norm=optax.tree_utils.tree_norm(g_grads),
                 n_critic=n_critic, slope=jnp.asarray(slope, jnp.float32),
                 lr_g=txs.g_lr(state["step"]),
                 lr_d=txs.d_lr(jnp.maximum(schedule_count(d_opt) - 1, 0)))
  return new_state, metrics
