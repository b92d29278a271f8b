"""Training: state, the jitted GAN step, and the loop behind `jaxgan train`.

Read top to bottom: models and optimizers -> state and its shardings -> the pure `train_step`
(all n_critic discriminator updates and the generator update in one compiled function) ->
the loop (the workdir's lock, data, logging, samples, evaluation, checkpoints, preemption,
non-finite values and failed writes; README "Reliability").
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxgan import checkpoint as ckpt_lib
from jaxgan import hostmem
from jaxgan import config as config_lib
from jaxgan import distributed, errors, losses, models, nonfinite, optim, profile
from jaxgan import lock as lock_lib
from jaxgan import sharding as shard_lib
from jaxgan import voicegan
from jaxgan.runtime import CPU_OPT_LEVEL, CPU_OPT_LEVEL_FLAG, compiler_options  # noqa: F401

log = logging.getLogger("jaxgan")
# The smallest piece `Engine.sample_chunks` cuts a CPU sampling batch into.
SAMPLE_CHUNK_MIN = 32

State = dict[str, Any]
# --------------------------------------------------------------------------------------------
# Models, optimizers and the train state.


class Engine:
  """Everything compiled for one config on one mesh: models, optimizers, init and step."""

  def __init__(self, config, mesh: Mesh):
    self.config = config
    self.mesh = mesh
    self.platform = mesh.devices.flat[0].platform
    if self.platform == "cpu":
      hostmem.keep_freed_memory()  # XLA's CPU scratch buffers would page-fault every step
    self.compiler_options = compiler_options(self.platform)
    self.data_shape = config_lib.data_shape(config)
    self.cond = config_lib.conditioning(config)
    if config.conditioning.style and not self.cond["num_styles"]:
      raise config_lib.ConfigError("conditioning.style is on but conditioning.styles is empty: "
                                   "train fills it from the data set (see resolve_styles)")
    self.conditional = bool(self.cond["context"] or self.cond["num_styles"])
    self.generator, self.discriminator = models.build(config.model, self.data_shape, self.cond)
    self.latent_size = int(self.generator.latent_size)
    self.g_tx = optim.make_optimizer(config.g_optim)
    self.d_tx = optim.make_optimizer(config.d_optim)
    self.g_lr = optim.learning_rate_fn(config.g_optim)
    self.d_lr = optim.learning_rate_fn(config.d_optim)
    self.abstract_state = jax.eval_shape(self._init, jax.random.PRNGKey(0))
    self.state_sharding = shard_lib.state_shardings(
        self.abstract_state, mesh, fsdp_min_size=config.train.fsdp_min_size)
    self.init = self.jit(self._init, out_shardings=self.state_sharding)
    batch_sharding = shard_lib.batch(mesh, leading=1)
    self.step = self.jit(
        self._train_step,
        in_shardings=(self.state_sharding, batch_sharding),
        out_shardings=(self.state_sharding, shard_lib.replicated(mesh)),
        donate_argnums=0)

  def jit(self, fn: Callable, **kwargs) -> Callable:
    """`jax.jit` with this engine's compiler options (see `compiler_options`)."""
    return jax.jit(fn, compiler_options=self.compiler_options, **kwargs)

  # The state is one plain pytree, so orbax and the sharding rule see every leaf.
  def _init(self, rng: jax.Array) -> State:
    g_key, d_key, rng = jax.random.split(rng, 3)
    z = jnp.zeros([1, self.latent_size], jnp.float32)
    g_vars = self.generator.init(g_key, z, train=False, rng=g_key,
                                 **self._cond_kwargs(self.empty_condition(g_key, 1)))
    style = jnp.zeros([1], jnp.int32) if self.cond["num_styles"] else None
    d_vars = self.discriminator.init(d_key, jnp.zeros((1,) + self.data_shape, jnp.float32),
                                     style)
    g_params, d_params = g_vars["params"], d_vars["params"]
    return {
        "step": jnp.zeros([], jnp.int32),
        "g": g_params,
        "g_stats": g_vars.get("batch_stats", {}),
        "g_ema": jax.tree.map(jnp.copy, g_params),
        "d": d_params,
        "g_opt": self.g_tx.init(g_params),
        "d_opt": self.d_tx.init(d_params),
        "rng": rng,
    }

  def abstract_with_shardings(self):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        self.abstract_state, self.state_sharding)

  # ------------------------------------------------------------------------------------------
  # The step.

  def latents(self, key: jax.Array, num: int) -> jax.Array:
    z = jax.random.normal(key, [num, self.latent_size], jnp.float32)
    return jax.lax.with_sharding_constraint(z, shard_lib.batch(self.mesh))

  def empty_condition(self, key: jax.Array, num: int) -> dict[str, jax.Array] | None:
    """Nothing given (and uniformly random styles): unconditional sampling of any model."""
    if not self.conditional:
      return None
    style = None
    if self.cond["num_styles"]:
      style = jax.random.randint(jax.random.fold_in(key, 0x5717), [num], 0,
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
    """How many independent pieces a CPU sampler splits a batch of `num` into.

    In eval mode every sample is independent of the others (BatchNorm uses its running
    statistics), so the pieces compute what one batch does (up to float rounding). On a CPU
    they run concurrently on the cores with activations a fraction of the size (the tutorial
    G's per-track activations are 31 MB at batch 256, 0.5 GB at 4,096): 1.17x the bars/s at
    batch 1,024 and 1.30x at 4,096, no measurable change at 256. Accelerators and multi-device
    meshes keep one batch (their kernels want it whole; a piece would sit on one device).
    """
    if self.mesh.size != 1 or self.platform != "cpu":
      return 1
    for n in (8, 4, 2):
      if num % n == 0 and num // n >= SAMPLE_CHUNK_MIN:
        return n
    return 1

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
    """D updates this step: n_critic, or MuseGAN's larger count early on and periodically."""
    lc = self.config.loss
    n = jnp.asarray(lc.n_critic, jnp.int32)
    if lc.critic_warmup_steps or lc.critic_every_n:
      early = step < lc.critic_warmup_steps
      periodic = (step % max(lc.critic_every_n, 1) == 0) & (lc.critic_every_n > 0)
      n = jnp.where(early | periodic, max(lc.critic_warmup_n, lc.n_critic), n)
    return n

  def _d_fn(self, params, x, style):
    return self.discriminator.apply({"params": params}, x,
                                    style if self.cond["num_styles"] else None)

  def _d_loss(self, d_params, real, fake, style, key):
    lc = self.config.loss
    d_fn = lambda x: self._d_fn(d_params, x, style)
    real_logits, fake_logits = d_fn(real), d_fn(fake)
    loss = losses.d_loss(lc.kind, real_logits, fake_logits)
    gp = r1 = jnp.zeros([], jnp.float32)
    if lc.gp_weight > 0:
      gp = losses.gradient_penalty(d_fn, real, fake, key)
      loss = loss + lc.gp_weight * gp
    if lc.r1_gamma > 0:
      r1 = losses.r1_penalty(d_fn, real)
      loss = loss + lc.r1_gamma * r1
    return loss, dict(d_loss=loss, gp=gp, r1=r1, d_real=real_logits.mean(),
                      d_fake=fake_logits.mean())

  def critic_update(self, g_params, g_stats, d_params, d_opt, real, style, key, slope,
                    fake=None):
    """One D update on a real batch [B, ...] in [-1, 1] (and its styles [B]) against fresh
    fakes (or the given `fake`, see `critic_fakes`): the body of the critic loop, also compiled
    on its own by `jaxgan profile` to count its FLOPs per update."""
    if fake is None:
      fake, _ = self.critic_fakes(g_params, g_stats, real, style, key, slope)
    _, key_gp, _ = jax.random.split(key, 3)
    grads, metrics = jax.grad(self._d_loss, has_aux=True)(
        d_params, real, jax.lax.stop_gradient(fake), style, key_gp)
    updates, d_opt = self.d_tx.update(grads, d_opt, d_params)
    metrics["d_grad_norm"] = optax.tree_utils.tree_norm(grads)
    return optax.apply_updates(d_params, updates), d_opt, metrics

  def generator_grads(self, g_params, g_stats, d_params, real, style, key, slope):
    """G's loss against D on fresh fakes keyed by `key` (a batch of real's size, conditioned
    on `real` and `style` where the model is), G's new batch statistics and its gradients: the
    G update without reuse_fake."""
    key_z, key_bin = jax.random.split(key)
    z = self.latents(key_z, real.shape[0])
    cond = self.training_condition(jax.random.fold_in(key, 0xC0D), real, style)

    def g_loss_fn(g):
      fake, stats = self.generate(g, g_stats, z, key_bin, train=True, slope=slope, cond=cond)
      return losses.g_loss(self.config.loss.kind, self._d_fn(d_params, fake, style)), stats

    (g_loss, new_stats), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g_params)
    return g_loss, new_stats, grads

  def critic_fakes(self, g_params, g_stats, real, style, key, slope):
    """The fakes (and G's new batch statistics) of the critic update keyed by `key`."""
    key_z, _, key_bin = jax.random.split(key, 3)
    cond = self.training_condition(jax.random.fold_in(key, 0xC0D), real, style)
    return self.generate(g_params, g_stats, self.latents(key_z, real.shape[0]), key_bin,
                         train=True, slope=slope, cond=cond)

  def _train_step(self, state: State, batch: dict[str, jax.Array]) -> tuple[State, dict]:
    lc = self.config.loss
    real_all = jnp.where(batch["pianoroll"] > 0, 1.0, -1.0).astype(jnp.float32)
    style_all = batch["style"].astype(jnp.int32)
    n_batches = real_all.shape[0]
    rng, d_rng, g_rng = jax.random.split(state["rng"], 3)
    slope = self.slope(state["step"])

    def d_update(i, carry):
      d_params, d_opt, _ = carry
      return self.critic_update(state["g"], state["g_stats"], d_params, d_opt,
                                real_all[i % n_batches], style_all[i % n_batches],
                                jax.random.fold_in(d_rng, i), slope)

    zero = jnp.zeros([], jnp.float32)
    empty = dict(d_loss=zero, gp=zero, r1=zero, d_real=zero, d_fake=zero, d_grad_norm=zero)
    n_critic = self.critic_count(state["step"])
    # With reuse_fake the last critic update runs after the loop, on fakes whose backward pass
    # the G update then uses; a fixed single update needs no loop at all.
    looped = n_critic - 1 if lc.reuse_fake else n_critic
    carry = (state["d"], state["d_opt"], empty)
    if not (lc.reuse_fake and self.single_critic):
      carry = jax.lax.fori_loop(0, looped, d_update, carry)
    d_params, d_opt, d_metrics = carry

    if lc.reuse_fake:
      i = n_critic - 1
      real, style = real_all[i % n_batches], style_all[i % n_batches]
      key = jax.random.fold_in(d_rng, i)
      fake, g_vjp, g_stats = jax.vjp(
          lambda g: self.critic_fakes(g, state["g_stats"], real, style, key, slope),
          state["g"], has_aux=True)
      d_params, d_opt, d_metrics = self.critic_update(
          state["g"], state["g_stats"], d_params, d_opt, real, style, key, slope, fake=fake)
      g_loss, fake_grad = jax.value_and_grad(
          lambda x: losses.g_loss(lc.kind, self._d_fn(d_params, x, style)))(fake)
      (g_grads,) = g_vjp(fake_grad)
    else:
      g_loss, g_stats, g_grads = self.generator_grads(state["g"], state["g_stats"], d_params,
                                                      real_all[0], style_all[0], g_rng, slope)
    updates, g_opt = self.g_tx.update(g_grads, state["g_opt"], state["g"])
    g_params = optax.apply_updates(state["g"], updates)
    new_state = dict(
        step=state["step"] + 1, g=g_params, g_stats=g_stats,
        g_ema=optim.ema_update(state["g_ema"], g_params, self.config.train.ema_decay),
        d=d_params, g_opt=g_opt, d_opt=d_opt, rng=rng)
    metrics = dict(d_metrics, g_loss=g_loss, g_grad_norm=optax.tree_utils.tree_norm(g_grads),
                   n_critic=n_critic, slope=jnp.asarray(slope, jnp.float32),
                   lr_g=self.g_lr(state["step"]), lr_d=self.d_lr(state["step"] * lc.n_critic))
    return new_state, metrics

  @property
  def single_critic(self) -> bool:
    """Whether every step makes exactly one D update."""
    lc = self.config.loss
    return lc.n_critic == 1 and not lc.critic_warmup_steps and not lc.critic_every_n

  # ------------------------------------------------------------------------------------------
  # Sampling from the EMA generator (used for images and evaluation during training).

  @functools.cached_property
  def sample_ema(self) -> Callable[[State, jax.Array, int], jax.Array]:
    """(state, key, num) -> bool piano-rolls [num, bars, steps, pitches, tracks]; conditional
    models sample with nothing given (and random styles)."""

    @functools.partial(self.jit, static_argnums=2)
    def sample(state, key, num):
      kz, kb = jax.random.split(key)
      z = jax.random.normal(kz, [num, self.latent_size], jnp.float32)
      return self.rolls(state["g_ema"], state["g_stats"], z, kb, slope=self.slope(state["step"]))

    return sample


def make_engine(config, mesh: Mesh) -> "Engine | voicegan.VoiceEngine":
  """The engine of a config: `voicegan.VoiceEngine` for model.arch="voices", else `Engine`."""
  if voicegan.is_voice_model(config):
    return voicegan.VoiceEngine(config, mesh)
  return Engine(config, mesh)


# --------------------------------------------------------------------------------------------
# The loop.


class _StopSignal:
  """Turns SIGTERM/SIGINT into a stop between steps, so a final checkpoint gets saved.

  One process: a flag the loop reads. Several: SIGTERM is left to the handler JAX's preemption
  notifier installed at jax.distributed.initialize (it tells every process through the
  coordination service, and Orbax's reached_preemption then stops them all at the same step);
  a Python handler would replace it. SIGINT (Ctrl-C) is passed on to it as a SIGTERM.
  """

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    multi = jax.process_count() > 1
    handlers = ({signal.SIGINT: self._to_notifier} if multi
                else {signal.SIGTERM: self._handle, signal.SIGINT: self._handle})
    for sig, handler in handlers.items():
      try:
        self._previous[sig] = signal.signal(sig, handler)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signum

  def _to_notifier(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signum
    os.kill(os.getpid(), signal.SIGTERM)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _enable_compilation_cache(workdir: str) -> None:
  cache = os.path.join(workdir, "xla_cache")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def save_config(config, workdir: str) -> None:
  """WORKDIR/config.json (process 0); raises errors.WriteError when it cannot be written."""
  if jax.process_index() == 0:
    path = os.path.join(workdir, "config.json")
    try:
      with open(path, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    except OSError as e:
      raise errors.WriteError("the run's config", path, errors.reason_of(e)) from None


def resolve_styles(config) -> None:
  """With conditioning.style on and no names given, takes the data set's style names."""
  cc = config.conditioning
  if not cc.style or tuple(cc.styles):
    return
  d = config.data
  if d.name == "synthetic":
    from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
    names = pipeline.synthetic_style_names(config)
  else:
    from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
    names = prepare.dataset_info(d.name, data_dir=d.data_dir or None).styles
  if not names:
    raise config_lib.ConfigError(f"conditioning.style: data set {d.name!r} has no styles")
  cc.styles = tuple(names)


def load_run_config(workdir: str):
  """The config a workdir was trained with (saved as config.json when training starts)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir} has no config.json, so no run was trained there: "
                            f"train one with `jaxgan train --config CONFIG --workdir {workdir}`")
  with open(path) as f:
    config = config_lib.ConfigDict(json.load(f))
  config.data.meter = tuple(config.data.meter)
  # Runs from older versions lack keys added since: they get the defaults (the old behaviour).
  base = config_lib.base_config()
  for section, defaults in base.items():
    if section == "model" or not isinstance(defaults, config_lib.ConfigDict):
      continue
    if section not in config:
      config[section] = defaults
    for key, value in defaults.items():
      if key not in config[section]:
        config[section][key] = value
  config.conditioning.styles = tuple(config.conditioning.styles)
  return config


def warm_start(engine: Engine, state: State, source: str) -> State:
  """G and D weights (and G's EMA and batch stats) from another run; optimizers start fresh."""
  other, step = ckpt_lib.restore_unstructured(source)
  new = dict(state)
  for key in ("g", "g_stats", "g_ema", "d"):
    if key not in state or key not in other:
      continue   # a voices model without a critic, or warm-started from one
    want = jax.tree.structure(state[key])
    if jax.tree.structure(other[key]) != want:
      raise ValueError(f"train.init_from={source!r}: its {key!r} weights do not fit this model")
    new[key] = jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s),
                            other[key], engine.state_sharding[key])
  log.info("warm start from %s (step %d)", source, step)
  return new


def _metric_spec(config):
  from jaxgan import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  d = config.data
  return metrics_lib.RollSpec(steps_per_beat=d.steps_per_beat, lowest_pitch=d.lowest_pitch,
                              track_names=tuple(f"track{i}" for i in range(d.num_tracks)))


@dataclasses.dataclass(frozen=True)
class DataReference:
  """What the default evaluation compares samples with, computed once per run: the real
  windows' per-track metrics and per-window song features."""

  track: dict[str, np.ndarray]
  features: dict[str, np.ndarray]


def data_reference(config, windows: np.ndarray) -> DataReference:
  from jaxgan import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  spec = _metric_spec(config)
  return DataReference(track=metrics_lib.track_metrics(windows, spec),
                       features=metrics_lib.song_features(windows, spec))


def sample_metrics(engine: Engine, state: State, reference: DataReference | None = None
                   ) -> dict[str, float]:
  """The default periodic evaluation: MuseGAN metrics of EMA samples, one scalar per track;
  with a `reference` of real windows also how far they are from the data: eval/gap/<metric>
  (relative difference, the data's value floored at 0.1, averaged over tracks; eval/gap/mean
  over metrics) and the set-level overlapping area eval/oa/<feature> (eval/oa/mean; 1 = the
  same).
  """
  from jaxgan import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  rolls = np.asarray(jax.device_get(
      engine.sample_ema(state, jax.random.PRNGKey(0), engine.config.train.eval_num)))
  spec = _metric_spec(engine.config)
  out = {}
  generated = metrics_lib.track_metrics(rolls, spec)
  for name, values in generated.items():
    for i, v in enumerate(np.asarray(values, float)):
      if np.isfinite(v):
        out[f"eval/{name}/track{i}"] = float(v)
  if reference is None:
    return out
  gaps = []
  for name, values in generated.items():
    g, r = np.asarray(values, float), np.asarray(reference.track[name], float)
    ok = np.isfinite(g) & np.isfinite(r)
    if ok.any():
      # Relative to the data's value, floored so that a metric the data has at ~0 (EB of
      # full chorales) does not swamp the rest.
      gap = float(np.mean(np.abs(g[ok] - r[ok]) / np.maximum(np.abs(r[ok]), 0.1)))
      out[f"eval/gap/{name}"] = gap
      gaps.append(gap)
  if gaps:
    out["eval/gap/mean"] = float(np.mean(gaps))
  areas = []
  for name, row in metrics_lib.compare_sets(metrics_lib.song_features(rolls, spec),
                                            reference.features).items():
    if np.isfinite(row["OA"]):
      out[f"eval/oa/{name}"] = float(row["OA"])
      areas.append(float(row["OA"]))
  if areas:
    out["eval/oa/mean"] = float(np.mean(areas))
  return out


class BestKeeper:
  """Keeps the checkpoint with the best value of one eval scalar in WORKDIR/best, with
  best.json saying which step and value; survives restarts."""

  def __init__(self, workdir: str, metric: str, mode: str):
    self.metric, self.mode = metric, mode
    self.json_path = os.path.join(workdir, "best", "best.json")
    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "best", "checkpoints"),
                                              every=1, keep=1, clean_tmp=True)
    self.value = None
    if os.path.exists(self.json_path):
      with open(self.json_path) as f:
        self.value = json.load(f).get("value")

  def better(self, value: float) -> bool:
    if not np.isfinite(value):
      return False
    if self.value is None:
      return True
    return value > self.value if self.mode == "max" else value < self.value

  def offer(self, step: int, state: State, scalars: dict[str, float]) -> bool:
    if self.metric not in scalars:
      raise config_lib.ConfigError(
          f"train.best_metric={self.metric!r} is not among the eval scalars: "
          f"{', '.join(sorted(scalars))}")
    value = float(scalars[self.metric])
    if not self.better(value):
      return False
    self.checkpointer.save(step, state, force=True)
    self.checkpointer.wait()
    self.value = value
    if jax.process_index() == 0:
      with open(self.json_path, "w") as f:
        json.dump({"step": int(step), "metric": self.metric, "value": value}, f)
    log.info("step %d: best %s so far (%.4g), kept in %s", step, self.metric, value,
             os.path.dirname(self.json_path))
    return True

  def close(self) -> None:
    self.checkpointer.close()


def _eval_windows(config) -> np.ndarray | None:
  """Real windows of the eval split for the default evaluation (None when there are none)."""
  from jaxgan import evaluate  # pylint: disable=import-outside-toplevel
  try:
    real = evaluate.real_windows(config, config.data.eval_split, config.train.eval_num)
  except Exception as e:  # no such split in this data set: evaluate without the data
    log.warning("no %s windows for evaluation (%s); eval/gap and eval/oa are off",
                config.data.eval_split, e)
    return None
  return real if len(real) else None


def train_and_evaluate(config, workdir: str, *, data_mode: str = "shard",
                       progress: bool = True, evaluate_fn: Callable | None = None,
                       force: bool = False) -> State:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one.

  One trainer per workdir: a second one raises lock.WorkdirBusy unless `force` (see lock.py).
  Non-finite losses or weights are handled as train.nonfinite says (nonfinite.py; stopping
  raises nonfinite.NonFiniteError), a failed write as train.on_save_error says (stopping
  raises errors.WriteError). Each of these errors has a one-line message.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  with lock_lib.hold(workdir, force=force) as lock:
    run = _Run(config, workdir, lock, data_mode=data_mode, progress=progress,
               evaluate_fn=evaluate_fn)
    return run.train()


ROLLBACKS_FILE = "rollbacks.json"


def _read_rollbacks(workdir: str) -> dict:
  """WORKDIR/rollbacks.json: the learning-rate factor of earlier rollbacks and their events."""
  path = os.path.join(workdir, ROLLBACKS_FILE)
  if not os.path.exists(path):
    return {"lr_factor": 1.0, "events": []}
  try:
    with open(path) as f:
      record = json.load(f)
    factor = float(record["lr_factor"])
    events = list(record["events"])
  except (ValueError, KeyError, TypeError) as e:
    raise config_lib.ConfigError(
        f"{path} is not a rollback record ({type(e).__name__}: {e}); delete it to train at the "
        "config's learning rates") from None
  return {"lr_factor": factor, "events": events}


def _scaled_learning_rates(config, factor: float):
  """A copy of `config` with both learning rates times `factor` (the config itself if 1)."""
  if factor == 1.0:
    return config
  scaled = copy.deepcopy(config)
  for name in ("g_optim", "d_optim"):
    scaled[name].learning_rate = float(scaled[name].learning_rate) * factor
  return scaled


class _Run:
  """One `train_and_evaluate`: what the loop and a rollback share."""

  def __init__(self, config, workdir: str, lock: lock_lib.WorkdirLock | None, *,
               data_mode: str, progress: bool, evaluate_fn: Callable | None):
    from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
    self.config, self.workdir, self.lock, self.data_mode = config, workdir, lock, data_mode
    tc = config.train
    if tc.compilation_cache:
      _enable_compilation_cache(workdir)
    self.mesh = shard_lib.make_mesh(tc.mesh_data, tc.mesh_fsdp)
    distributed.quiet_followers()
    pipeline.check_batch(config, self.mesh, jax.process_count())
    resolve_styles(config)
    pipeline.resolve_track_facts(config)
    self.is_lead = jax.process_index() == 0
    self.rollbacks = _read_rollbacks(workdir)
    if self.rollbacks["lr_factor"] != 1.0:
      log.warning("learning rates x%g after earlier rollbacks (%s)", self.rollbacks["lr_factor"],
                  os.path.join(workdir, ROLLBACKS_FILE))
    self._build()
    save_config(config, workdir)
    self.checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                              every=tc.ckpt_every, keep=tc.keep_ckpts,
                                              clean_tmp=True)
    self.evaluate_fn = evaluate_fn
    self.best = self.writer = self.bar = None
    self.progress = progress
    self.skips_seen = 0
    self.rolled_back_to: tuple[int, int] | None = None   # (checkpoint step, times in a row)

  def _build(self) -> None:
    """The engine at the current learning rates and its checked, jitted step."""
    self.engine = make_engine(_scaled_learning_rates(self.config, self.rollbacks["lr_factor"]),
                              self.mesh)
    self.guard = nonfinite.Guard(self.engine._train_step,  # pylint: disable=protected-access
                                 self.config.train.nonfinite)
    replicated = shard_lib.replicated(self.mesh)
    self.step_jit = self.engine.jit(
        self.guard,
        in_shardings=(self.engine.state_sharding, shard_lib.batch(self.mesh, leading=1),
                      replicated),
        out_shardings=(self.engine.state_sharding, replicated, replicated),
        donate_argnums=(0, 2))

  def _restore_or_init(self) -> tuple[State, int]:
    tc = self.config.train
    state, start = self.checkpointer.restore_latest(self.engine.abstract_with_shardings())
    if state is not None:
      log.info("resumed from %s at step %d", self.checkpointer.directory, start)
      return state, start
    state = self.engine.init(jax.jit(lambda: jax.random.PRNGKey(tc.seed),
                                     out_shardings=shard_lib.replicated(self.mesh))())
    if tc.init_from:
      state = warm_start(self.engine, state, tc.init_from)
    return state, 0

  def _start(self, state: State, start: int, poison_at: int | None) -> None:
    """Positions the data at `start` and compiles the step, once, up front (so compile time
    is visible and separate)."""
    from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
    self.state, self.step, self.saved = state, start, start
    self.health = jax.jit(lambda: nonfinite.new_health(poison_at),
                          out_shardings=shard_lib.replicated(self.mesh))()
    self.batches = pipeline.train_iterator(self.config, self.mesh, start_step=start,
                                           data_mode=self.data_mode)
    self.batch = next(self.batches)
    t0 = time.perf_counter()
    self.step_fn = self.step_jit.lower(self.state, self.batch, self.health).compile()
    log.info("compiled the train step in %.1f s", time.perf_counter() - t0)
    self.pending = None   # metrics of the last logged step, fetched one interval late
    self.last_time, self.last_step = time.perf_counter(), start

  def train(self) -> State:
    from jaxgan import summary  # pylint: disable=import-outside-toplevel
    tc = self.config.train
    state, start = self._restore_or_init()
    if start >= tc.num_steps:
      self.checkpointer.close()
      return state
    try:
      self._start(state, start, nonfinite.fault_step())
      if self.evaluate_fn is None and tc.eval_every:
        self.evaluate_fn = _default_evaluation(self.config)
      if tc.best_metric:
        self.best = BestKeeper(self.workdir, tc.best_metric, tc.best_mode)
      self.writer = summary.Writer(self.workdir, enabled=self.is_lead)
      self.bar = summary.progress(start, tc.num_steps, enabled=self.progress and self.is_lead)
      self._loop()
    except BaseException:
      self._close(quiet=True)
      raise
    self._close(quiet=False)
    return self.state

  def _loop(self) -> None:
    tc = self.config.train
    examples_per_step = tc.global_batch * self.config.loss.n_critic
    trace = profile.TraceWindow.for_run(self.config, self.workdir, self.step)  # profile_steps
    with _StopSignal() as stop:
      while self.step < tc.num_steps:
        trace.update(self.step, self.state)
        with jax.profiler.StepTraceAnnotation("train", step_num=self.step):
          self.state, metrics, self.health = self.step_fn(self.state, self.batch, self.health)
        self.step += 1
        step = self.step
        if self.lock is not None and self.lock.lost and jax.process_count() == 1:
          raise lock_lib.WorkdirBusy(f"{self.lock.lost}; stopped at step {step} without "
                                     "saving")
        preempted = (stop.received is not None if jax.process_count() == 1
                     else self.checkpointer.reached_preemption(step))
        last = step == tc.num_steps or preempted
        if step % tc.log_every == 0 or step == tc.num_steps:
          # Write the previous interval's metrics: long computed, so dispatch never waits.
          health = self._write_pending()
          now = time.perf_counter()
          rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
          self.last_time, self.last_step = now, step
          self.pending = (step, dict(metrics, steps_per_s=rate,
                                     examples_per_s=rate * examples_per_step))
          if health is not None and self._act_on(health):
            continue   # rolled back: the loop goes on from the restored step
        else:
          self.bar.update_to(step)
        sample = tc.sample_every and step % tc.sample_every == 0
        evaluate = tc.eval_every and step % tc.eval_every == 0
        save = step % tc.ckpt_every == 0 or last
        # Nothing non-finite is ever saved, evaluated or drawn: look before each of them.
        if (sample or evaluate or save) and self._act_on(nonfinite.host(self.health)):
          continue
        if sample:
          rolls = self.engine.sample_ema(self.state, jax.random.PRNGKey(step), 8)
          self._attempt(self.writer.pianorolls, step, np.asarray(jax.device_get(rolls)))
        if evaluate:
          scalars = self.evaluate_fn(self.engine, self.state)
          self._attempt(self.writer.scalars, step, scalars)
          if self.best is not None:
            self._attempt(self.best.offer, step, self.state, scalars)
        if save:
          self._save(step)
        if preempted:
          log.warning("stopping at step %d on request; saved a checkpoint", step)
          break
        if step < tc.num_steps:
          self.batch = next(self.batches)
    trace.close(self.state)
    self._write_pending()   # its health is older than the look before the last save

  def _write_pending(self) -> dict | None:
    """Writes the metrics of the last logged step; returns the health they carry."""
    if self.pending is None:
      return None
    step, metrics = self.pending
    self.pending = None
    shown, health = nonfinite.split_metrics(
        {k: float(v) for k, v in jax.device_get(metrics).items()})
    self._attempt(self.writer.scalars, step, shown)
    self.bar.update_to(self.step, shown)
    return health or None

  # --- non-finite values ----------------------------------------------------------------------

  def _act_on(self, health: dict) -> bool:
    """Applies train.nonfinite to a fetched health: raises NonFiniteError to stop; returns
    True after a rollback (the loop goes on from the restored step), else False."""
    tc = self.config.train
    if tc.nonfinite == "skip":
      skips = int(health["skips"])
      if skips > self.skips_seen:
        self.skips_seen = skips
        log.warning("skipped %d non-finite step(s) so far, the first at %s", skips,
                    self.guard.describe(health))
      if int(health["max_run"]) >= tc.nonfinite_max_skips:
        raise nonfinite.NonFiniteError(
            f"{int(health['max_run'])} non-finite steps in a row by step {self.step} "
            f"(train.nonfinite_max_skips={tc.nonfinite_max_skips}; the first at "
            f"{self.guard.describe(health)}); stopped. {self._kept()}")
      return False
    if int(health["first_step"]) < 0:
      return False
    what = self.guard.describe(health)
    if tc.nonfinite == "stop":
      raise nonfinite.NonFiniteError(f"non-finite values at {what}; stopped "
                                     f"(train.nonfinite=stop). {self._kept()}")
    self._rollback(what)
    return True

  def _kept(self) -> str:
    """Which checkpoints the run keeps (every one finite)."""
    with contextlib.suppress(errors.WriteError):
      self.checkpointer.wait()
    steps = self.checkpointer.steps()
    if not steps:
      return "No checkpoint was written."
    return (f"Checkpoints kept (all finite): step {', '.join(map(str, steps))} in "
            f"{self.checkpointer.directory}.")

  def _rollback(self, what: str) -> None:
    """Back to the last checkpoint (or the start) at lower learning rates."""
    tc = self.config.train
    self.checkpointer.wait()
    steps = self.checkpointer.steps()
    target = steps[-1] if steps else 0
    times = self.rolled_back_to[1] + 1 if self.rolled_back_to and \
        self.rolled_back_to[0] == target else 1
    if times > tc.nonfinite_max_rollbacks:
      raise nonfinite.NonFiniteError(
          f"non-finite values at {what} after {times - 1} rollback(s) to step {target} "
          f"(train.nonfinite_max_rollbacks={tc.nonfinite_max_rollbacks}); stopped. "
          f"{self._kept()}")
    self.rolled_back_to = (target, times)
    factor = float(self.rollbacks["lr_factor"]) * tc.rollback_lr_factor
    self.rollbacks["lr_factor"] = factor
    self.rollbacks["events"].append({
        "at": what, "restored_step": target, "lr_factor": factor,
        "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    if self.is_lead:
      path = os.path.join(self.workdir, ROLLBACKS_FILE)
      try:
        with open(path, "w") as f:
          json.dump(self.rollbacks, f, indent=1)
      except OSError as e:
        raise errors.WriteError("the rollback record", path, errors.reason_of(e)) from None
    scaled = _scaled_learning_rates(self.config, factor)
    log.warning("non-finite values at %s: rolling back to %s with learning rates x%g "
                "(g %.3g, d %.3g)", what, f"the checkpoint of step {target}" if steps
                else "the initial state", factor, scaled.g_optim.learning_rate,
                scaled.d_optim.learning_rate)
    self._build()
    state, start = self._restore_or_init()
    self._start(state, start, poison_at=None)   # an injected fault fires once
    self.bar.update_to(start)

  # --- writes ---------------------------------------------------------------------------------

  def _attempt(self, fn: Callable, *args, **kwargs):
    """fn(...), with a failed write (errors.WriteError) handled as train.on_save_error says:
    raised ("stop") or logged and left for the next interval ("retry")."""
    try:
      return fn(*args, **kwargs)
    except errors.WriteError as e:
      if self.config.train.on_save_error == "stop":
        raise
      log.warning("%s; trying again at the next interval (train.on_save_error=retry)", e)
      return None

  def _save(self, step: int) -> None:
    for _ in range(2):
      try:
        self.checkpointer.save(step, self.state, force=True)
        self.saved = step
        return
      except ckpt_lib.CheckpointWriteError as e:
        if self.config.train.on_save_error == "stop":
          raise self._final(e, "stopped (train.on_save_error=stop)") from None
        log.warning("%s; trying again at the next interval (train.on_save_error=retry)", e)
        if e.step == step:
          return
        # That was the previous save, reported now; this one has not started yet.

  def _final(self, e: ckpt_lib.CheckpointWriteError, what: str
             ) -> ckpt_lib.CheckpointWriteError:
    """`e` with what the run did and which checkpoint it keeps."""
    folder = self.checkpointer.directory   # read directly: the manager may be closed
    steps = sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(
        folder) else []
    kept = (f"the checkpoint of step {steps[-1]} is intact" if steps
            else "no checkpoint was written before")
    return ckpt_lib.CheckpointWriteError(e.what, e.path, f"{e.reason}; {what}, {kept}", e.step)

  def _close(self, quiet: bool) -> None:
    """Waits for the last save and closes the writers; quiet: after an error, whose message
    is the one to show."""
    parts = [self.checkpointer.close]
    if self.best is not None:
      parts.append(self.best.close)
    if self.writer is not None:
      parts.append(self.writer.close)
    if self.bar is not None:
      parts.append(self.bar.close)
    failure = None
    for close in parts:
      try:
        close()
      except Exception as e:  # pylint: disable=broad-except
        if quiet:
          log.debug("while stopping: %s", e)
        elif failure is None:
          failure = e
    if isinstance(failure, ckpt_lib.CheckpointWriteError):
      when = ("the run ended before a retry" if self.config.train.on_save_error == "retry"
              else "the run has ended")
      raise self._final(failure, when) from None
    if failure is not None:
      raise failure


def _default_evaluation(config) -> Callable:
  """The periodic evaluation of a config: voices' or MuseGAN metrics against the data."""
  windows = _eval_windows(config)
  if voicegan.is_voice_model(config):
    return voicegan.evaluation(config, windows)
  reference = data_reference(config, windows) if windows is not None else None
  return functools.partial(sample_metrics, reference=reference)
