"""Training: state, the jitted GAN step, and the loop behind `jaxgan train`.

Read top to bottom: models and optimizers -> state and its shardings -> the pure `train_step`
(all n_critic discriminator updates and the generator update in one compiled function) ->
the loop (data, logging, samples, evaluation, checkpoints, preemption).
"""

from __future__ import annotations

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
from jaxgan import losses, models, optim
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
  """Turns SIGTERM/SIGINT into a flag checked between steps, so a final checkpoint gets saved."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _enable_compilation_cache(workdir: str) -> None:
  cache = os.path.join(workdir, "xla_cache")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def save_config(config, workdir: str) -> None:
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


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
    raise FileNotFoundError(f"{workdir}: no config.json (is it a jaxgan train workdir?)")
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
                                              every=1, keep=1)
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
                       progress: bool = True, evaluate_fn: Callable | None = None) -> State:
  """Trains `config` in `workdir`, resuming from its latest checkpoint if there is one."""
  from jaxgan.data import pipeline  # pylint: disable=import-outside-toplevel
  from jaxgan import summary  # pylint: disable=import-outside-toplevel
  from jaxgan import distributed, profile  # pylint: disable=import-outside-toplevel

  tc = config.train
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if tc.compilation_cache:
    _enable_compilation_cache(workdir)
  mesh = shard_lib.make_mesh(tc.mesh_data, tc.mesh_fsdp)
  distributed.quiet_followers()
  pipeline.check_batch(config, mesh, jax.process_count())
  resolve_styles(config)
  pipeline.resolve_track_facts(config)
  engine = make_engine(config, mesh)
  save_config(config, workdir)
  is_lead = jax.process_index() == 0

  # --- state: resume, warm start or fresh -------------------------------------------------
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       every=tc.ckpt_every, keep=tc.keep_ckpts)
  state, start = checkpointer.restore_latest(engine.abstract_with_shardings())
  if state is None:
    start = 0
    state = engine.init(jax.jit(lambda: jax.random.PRNGKey(tc.seed),
                                out_shardings=shard_lib.replicated(mesh))())
    if tc.init_from:
      state = warm_start(engine, state, tc.init_from)
  else:
    log.info("resumed from %s at step %d", checkpointer.directory, start)
  if start >= tc.num_steps:
    checkpointer.close()
    return state

  # --- data: positioned at the resumed step ----------------------------------------------
  batches = pipeline.train_iterator(config, mesh, start_step=start, data_mode=data_mode)

  # --- compile once, up front (so compile time is visible and separate) ------------------
  first = next(batches)
  t0 = time.perf_counter()
  step_fn = engine.step.lower(state, first).compile()
  compile_s = time.perf_counter() - t0
  log.info("compiled the train step in %.1f s", compile_s)

  if evaluate_fn is None and tc.eval_every:
    windows = _eval_windows(config)
    reference = (data_reference(config, windows)
                 if windows is not None and not voicegan.is_voice_model(config) else None)
    if voicegan.is_voice_model(config):
      evaluate_fn = voicegan.evaluation(config, windows)
    else:
      evaluate_fn = functools.partial(sample_metrics, reference=reference)
  best = BestKeeper(workdir, tc.best_metric, tc.best_mode) if tc.best_metric else None
  writer = summary.Writer(workdir, enabled=is_lead)
  examples_per_step = tc.global_batch * config.loss.n_critic
  bar = summary.progress(start, tc.num_steps, enabled=progress and is_lead)
  pending = None          # metrics of the last logged step, fetched one interval late
  last_time, last_step = time.perf_counter(), start
  step = saved = start
  batch = first
  trace = profile.TraceWindow.for_run(config, workdir, start)   # train.profile_steps
  with _StopSignal() as stop:
    while step < tc.num_steps:
      trace.update(step, state)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = step_fn(state, batch)
      step += 1
      if step % tc.log_every == 0 or step == tc.num_steps:
        # Write the previous interval's metrics: they are long computed, so dispatch never waits.
        shown = writer.scalars(*pending) if pending is not None else {}
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        last_time, last_step = now, step
        pending = (step, dict(metrics, steps_per_s=rate, examples_per_s=rate * examples_per_step))
        bar.update_to(step, shown)
      else:
        bar.update_to(step)
      if tc.sample_every and step % tc.sample_every == 0:
        rolls = engine.sample_ema(state, jax.random.PRNGKey(step), 8)
        writer.pianorolls(step, np.asarray(jax.device_get(rolls)))
      if tc.eval_every and step % tc.eval_every == 0:
        scalars = evaluate_fn(engine, state)
        writer.scalars(step, scalars)
        if best is not None:
          best.offer(step, state, scalars)
      if step % tc.ckpt_every == 0:
        checkpointer.save(step, state, force=True)
        saved = step
      preempted = (stop.received is not None if jax.process_count() == 1
                   else checkpointer.reached_preemption(step))
      if preempted:
        log.warning("stopping at step %d on request; saving a checkpoint", step)
        break
      if step < tc.num_steps:
        batch = next(batches)
  trace.close(state)
  if pending is not None:
    writer.scalars(*pending)
  if saved != step:
    checkpointer.save(step, state, force=True)
  checkpointer.close()
  if best is not None:
    best.close()
  writer.close()
  bar.close()
  return state
