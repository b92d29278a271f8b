"""Making music with a trained generator: a jitted batch sampler, long pieces, interpolation,
and MIDI/PNG output.

    gen = jaxgan.sample.Generator.from_workdir("runs/jsb")     # latest checkpoint, EMA weights
    rolls = jaxgan.sample.sample(gen, jax.random.PRNGKey(0), 64, bars=16)  # bool [64, 16, ...]
    gen.write_midi(rolls[0], "out.mid")
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from jaxgan import checkpoint as ckpt_lib
from jaxgan import config as config_lib
from jaxgan import engines, models, paths
from jaxgan import sharding as shard_lib
from jaxgan import voicegan
from jaxgan import workdir as workdir_lib
from jaxgan.midi import io as midi_io
from jaxgan.midi import pianoroll
from jaxgan.midi.song import Track

BINARIZE = ("threshold", "bernoulli")


def tracks_for(config) -> tuple[Track, ...]:
  """The data set's tracks (names, programs, drums); a generic guess when it is not built."""
  d = config.data
  if d.name != "synthetic":
    try:
      from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
      return tuple(prepare.dataset_info(d.name, data_dir=d.data_dir or None).tracks)
    except Exception:  # not built on this machine: fall back to a generic track set
      pass
  if d.num_tracks == 5:
    return midi_io.MidiConfig(track_mode="lpd5").tracks()
  return tuple(Track(name=f"track{i}", program=0) for i in range(d.num_tracks))


@dataclasses.dataclass
class Generator:
  """A trained generator ready to sample: module, EMA variables, and what the data looked like."""

  config: config_lib.ConfigDict
  engine: engines.Model      # the model alone: no optimizer, no train state
  variables: dict
  step: int
  tracks: tuple[Track, ...]

  @classmethod
  def from_workdir(cls, workdir: str, *, use_ema: bool = True, best: bool = False
                   ) -> "Generator":
    """The run's latest checkpoint, or with best=True the one kept by train.best_metric.

    `workdir` may also be a generator export (`export`, `jaxgan export`): its weights load
    without the discriminator or optimizer state.
    """
    workdir = paths.resolve(workdir)   # a gs:// workdir stays a URL
    if is_export(workdir):
      return cls.from_export(workdir)
    if not paths.isdir(workdir):
      raise FileNotFoundError(f"{workdir}: no such workdir (train one with `jaxgan train "
                              "--config CONFIG --workdir DIR`, or use --pretrained jsb)")
    config = config_lib.load_run_config(workdir)
    model = engines.make_model(config, shard_lib.make_mesh(-1, 1))
    folder = workdir_lib.checkpoints(workdir, best=best)
    if best and not paths.isdir(folder):
      raise FileNotFoundError(f"{workdir}: no best checkpoint (train with "
                              "--config.train.best_metric=... and eval_every > 0)")
    target = model.abstract_generator()
    if not use_ema:
      target["g"] = target.pop("g_ema")
    ckpt = ckpt_lib.Checkpointer(folder, every=1, keep=10 ** 6)
    state, step = ckpt.restore_latest(target, partial=True)
    ckpt.close()
    if state is None:
      raise FileNotFoundError(f"no checkpoint in {folder}: train one with `jaxgan train "
                              f"--config CONFIG --workdir {workdir}`")
    params = state["g_ema"] if use_ema else state["g"]
    return cls(config=config, engine=model, step=int(step), tracks=tracks_for(config),
               variables={"params": params, "batch_stats": state.get("g_stats", {})})

  @classmethod
  def from_export(cls, folder: str) -> "Generator":
    """A generator written by `export`: config.json, export.json and generator.msgpack."""
    folder = paths.resolve(folder)
    config = config_lib.load_run_config(folder)
    info = json.loads(paths.read_text(paths.join(folder, EXPORT_INFO)))
    model = engines.make_model(config, shard_lib.make_mesh(-1, 1))
    template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype),
                            model.abstract_generator()["g_ema"])
    weights = paths.read_bytes(paths.join(folder, EXPORT_WEIGHTS))
    try:
      stored = flax.serialization.msgpack_restore(weights)
      params = flax.serialization.from_state_dict(template, stored)
    except Exception as e:  # a truncated or foreign file: name it, do not guess
      raise ValueError(f"{folder}/{EXPORT_WEIGHTS}: not this model's weights ({e})") from None
    params = jax.tree.map(lambda t, x: jnp.asarray(np.asarray(x), t.dtype), template, params)
    tracks = tuple(Track(name=t["name"], program=int(t["program"]), is_drum=bool(t["is_drum"]))
                   for t in info["tracks"])
    return cls(config=config, engine=model, step=int(info["step"]), tracks=tracks,
               variables={"params": params, "batch_stats": {}})

  @property
  def is_voice_model(self) -> bool:
    return voicegan.is_voice_model(self.config)

  @property
  def bars_per_phrase(self) -> int:
    return self.config.data.n_bars

  @property
  def midi_config(self) -> midi_io.MidiConfig:
    d = self.config.data
    return midi_io.MidiConfig(steps_per_beat=d.steps_per_beat, lowest_pitch=d.lowest_pitch,
                              num_pitches=d.num_pitches, track_mode="parts",
                              track_names=tuple(t.name for t in self.tracks))

  def to_song(self, roll: np.ndarray, *, tempo: float = 100.0, source: str = ""):
    return pianoroll.from_pianoroll(np.asarray(roll), self.midi_config,
                                    time_signature=tuple(self.config.data.meter), tempo=tempo,
                                    tracks=self.tracks, source=source)

  def write_midi(self, roll: np.ndarray, path: str, *, tempo: float = 100.0) -> None:
    midi_io.write_midi(self.to_song(roll, tempo=tempo, source=path), path)

  @property
  def style_names(self) -> tuple[str, ...]:
    """The styles a style-conditioned run knows (empty for other runs)."""
    cc = self.config.conditioning
    return tuple(cc.styles) if cc.style else ()

  def style_id(self, name: str) -> int:
    names = self.style_names
    if not names:
      raise config_lib.ConfigError(
          "--style: this run was not trained with style conditioning "
          "(train with --config.conditioning.style=true on a data set with styles)")
    if name not in names:
      raise config_lib.ConfigError(
          f"--style={name!r} is not a style of this run; known styles: {', '.join(names)}")
    return names.index(name)

  def condition(self, num: int, *, style: str | None = None, key: jax.Array | None = None):
    """Nothing given, with `style` (or random styles) for every piece; None if unconditional."""
    if style is not None:  # style_id raises unless the run is style-conditioned
      ids = jnp.full([num], self.style_id(style), jnp.int32)
      return models.empty_condition(self.engine.data_shape, num, ids)
    if not self.engine.conditional:
      return None
    return self.engine.empty_condition(key if key is not None else jax.random.PRNGKey(0), num)


EXPORT_WEIGHTS = "generator.msgpack"
EXPORT_INFO = "export.json"
PRETRAINED = {"jsb": "jsb"}   # --pretrained NAME -> folder in jaxgan/pretrained


def is_export(folder: str) -> bool:
  return paths.isfile(paths.join(folder, EXPORT_WEIGHTS))


def pretrained_path(name: str) -> str:
  """The folder of a generator shipped with the package (`--pretrained NAME`)."""
  if name not in PRETRAINED:
    raise config_lib.ConfigError(f"--pretrained={name!r}: the shipped models are "
                                 f"{', '.join(sorted(PRETRAINED))}")
  # The package's own files: local, wherever the run's files are.
  folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained",
                        PRETRAINED[name])
  if not is_export(folder):
    raise FileNotFoundError(f"{folder}: the shipped model {name!r} is missing from this install")
  return folder


def export(gen: Generator, out: str, *, dtype: str = "float16",
           metrics: dict[str, Any] | None = None) -> str:
  """Writes the generator alone (its sampling weights, the run's config, the tracks) to `out`.

  float16 halves the files; the weights come back as float32 (the sampler's outputs were
  measured unchanged by it on the shipped chorale model: BENCHMARKS.md). Returns `out`.
  """
  if dtype not in ("float16", "float32"):
    raise ValueError(f"dtype={dtype!r} is not one of ('float16', 'float32')")
  out = paths.resolve(out)
  paths.makedirs(out)
  params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)).astype(dtype),
                        gen.variables["params"])
  if jax.tree.leaves(gen.variables.get("batch_stats") or {}):
    raise ValueError("export: models with batch statistics (the MuseGAN models) are exported "
                     "as checkpoints; export serves the voices models")
  paths.write_atomic(paths.join(out, EXPORT_WEIGHTS), flax.serialization.msgpack_serialize(
      flax.serialization.to_state_dict(params)))
  paths.write_atomic(workdir_lib.config_path(out), gen.config.to_json_best_effort(indent=2))
  info = {"step": gen.step, "dtype": dtype,
          "params": int(sum(x.size for x in jax.tree.leaves(params))),
          "tracks": [{"name": t.name, "program": t.program, "is_drum": t.is_drum}
                     for t in gen.tracks]}
  paths.write_atomic(paths.join(out, EXPORT_INFO), json.dumps(info, indent=2))
  if metrics is not None:
    paths.write_atomic(paths.join(out, "metrics.json"), json.dumps(metrics, indent=2))
  return out


def _generate(engine, variables, z, key, step, binarize: str, cond=None,
              temperature=1.0) -> jax.Array:
  """One compiled function per (engine, shape, mode): latents -> bool piano-rolls."""
  # The binary-neuron slope the run had reached, as in training's own samples.
  if binarize != "bernoulli":
    return engine.rolls(variables["params"], variables["batch_stats"], z, key,
                        slope=engine.slope(step), cond=cond)
  out, _ = engine.generate(variables["params"], variables["batch_stats"], z, key, train=False,
                           slope=engine.slope(step), cond=cond)
  # tanh output x -> probability of a sounding cell sigmoid(2 atanh(x) / T), which is
  # (x + 1) / 2 at T = 1; binary-neuron outputs (exactly +-1) stay as they are.
  logit = 2.0 * jnp.arctanh(jnp.clip(out, -1.0 + 1e-6, 1.0 - 1e-6))
  return jax.random.bernoulli(jax.random.fold_in(key, 1), jax.nn.sigmoid(logit / temperature))


@functools.cache
def _generate_jit(options: tuple[tuple[str, Any], ...]) -> Callable:
  """`_generate` compiled with an engine's compiler options (one jit per set of options)."""
  return jax.jit(_generate, static_argnums=(0, 5), compiler_options=dict(options) or None)


def latents(key: jax.Array, num: int, size: int, *, truncation: float | None = None) -> jax.Array:
  """Standard normal latents, optionally truncated to [-truncation, truncation]."""
  if truncation:
    return jax.random.truncated_normal(key, -truncation, truncation, [num, size], jnp.float32)
  return jax.random.normal(key, [num, size], jnp.float32)


def latent_walk(key: jax.Array, num: int, phrases: int, size: int, *, step: float = 0.35,
                truncation: float | None = None) -> jax.Array:
  """[num, phrases, size] latents where each phrase's latent moves a little from the last.

  z_j = cos(a) z_{j-1} + sin(a) e_j keeps every z_j standard normal while neighbours stay close,
  so chained phrases sound like one piece rather than unrelated clips.
  """
  keys = jax.random.split(key, phrases)
  z = [latents(keys[0], num, size, truncation=truncation)]
  for j in range(1, phrases):
    e = latents(keys[j], num, size, truncation=truncation)
    z.append(math.cos(step) * z[-1] + math.sin(step) * e)
  return jnp.stack(z, 1)


def slerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
  """Spherical interpolation between latents (along the last axis)."""
  an, bn = a / jnp.linalg.norm(a, axis=-1, keepdims=True), b / jnp.linalg.norm(b, axis=-1, keepdims=True)
  omega = jnp.arccos(jnp.clip(jnp.sum(an * bn, -1, keepdims=True), -1.0, 1.0))
  so = jnp.sin(omega)
  lerp = (1 - t) * a + t * b
  return jnp.where(so < 1e-6, lerp, (jnp.sin((1 - t) * omega) / so) * a
                   + (jnp.sin(t * omega) / so) * b)


def decode_latents(gen: Generator, z: jax.Array, key: jax.Array, *,
                   binarize: str = "threshold", cond=None, temperature: float = 1.0
                   ) -> np.ndarray:
  """[N, latent] -> bool piano-rolls [N, bars, steps, pitches, tracks], sharded when N is large.

  `cond`: the condition of a conditional run (see models/conditional.py); None = nothing given.
  """
  if binarize not in BINARIZE:
    raise ValueError(f"binarize={binarize!r} is not one of {BINARIZE}")
  if not temperature > 0:
    raise ValueError(f"temperature={temperature!r} must be > 0")
  mesh = gen.engine.mesh
  if cond is None:
    cond = gen.condition(z.shape[0], key=key)
  if z.shape[0] % mesh.size == 0:
    z = jax.device_put(z, shard_lib.batch(mesh))
    if cond is not None:
      cond = jax.device_put(cond, shard_lib.batch(mesh))
  generate = _generate_jit(tuple(sorted((gen.engine.compiler_options or {}).items())))
  return np.asarray(jax.device_get(generate(gen.engine, gen.variables, z, key, gen.step,
                                            binarize, cond, jnp.float32(temperature))))


def sample(gen: Generator, key: jax.Array, num: int, *, bars: int | None = None,
           truncation: float | None = None, binarize: str = "threshold",
           walk_step: float = 0.35, style: str | None = None, temperature: float = 1.0
           ) -> np.ndarray:
  """`num` pieces of `bars` bars (default: one phrase) as bool piano-rolls.

  Pieces longer than the trained phrase chain phrases along a latent walk. Deterministic for a
  given key. `style` names a style of a style-conditioned run (default: a random style per
  piece). `temperature` sharpens (< 1) or flattens (> 1) binarize="bernoulli" sampling.
  """
  bars = bars or gen.bars_per_phrase
  kz, kb = jax.random.split(key)
  if gen.is_voice_model:
    # The voices model reads a piece of any length: one Gibbs chain over all its bars.
    cond = gen.engine.empty_condition(kb, num, bars)
    if style is not None:
      cond["style"] = jnp.full([num], gen.style_id(style), jnp.int32)
    z = latents(kz, num, gen.engine.latent_size, truncation=truncation)
    return decode_latents(gen, z, kb, cond=cond)
  phrases = -(-bars // gen.bars_per_phrase)
  cond = gen.condition(num, style=style, key=kb)
  if cond is not None:  # every phrase of a piece keeps the piece's style
    cond = jax.tree.map(lambda x: jnp.repeat(x, phrases, axis=0), cond)
  z = latent_walk(kz, num, phrases, gen.engine.latent_size, step=walk_step,
                  truncation=truncation).reshape(num * phrases, -1)
  rolls = decode_latents(gen, z, kb, binarize=binarize, cond=cond, temperature=temperature)
  rolls = rolls.reshape((num, phrases * gen.bars_per_phrase) + rolls.shape[2:])
  return rolls[:, :bars]


def interpolate(gen: Generator, key_a: jax.Array, key_b: jax.Array, steps: int, *,
                method: str = "slerp", binarize: str = "threshold",
                style: str | None = None) -> np.ndarray:
  """One piece that morphs from seed a to seed b: `steps` phrases, [steps * bars, ...]."""
  if method not in ("lerp", "slerp"):
    raise ValueError(f"method={method!r} is not one of ('lerp', 'slerp')")
  size = gen.engine.latent_size
  a, b = latents(key_a, 1, size), latents(key_b, 1, size)
  t = jnp.linspace(0.0, 1.0, steps)[:, None]
  z = slerp(a, b, t) if method == "slerp" else (1 - t) * a + t * b
  cond = gen.condition(1, style=style, key=key_a)
  if cond is not None:  # one style for the whole morph
    cond = jax.tree.map(lambda x: jnp.repeat(x, steps, axis=0), cond)
  rolls = decode_latents(gen, z, jax.random.fold_in(key_a, 7), binarize=binarize, cond=cond)
  return rolls.reshape((-1,) + rolls.shape[2:])


def write_samples(gen: Generator, rolls: np.ndarray, out_dir: str, *, prefix: str = "sample",
                  tempo: float = 100.0) -> list[str]:
  """Writes each roll as a MIDI file and all of them as one PNG grid; returns the MIDI paths.

  `out_dir` is local: miditoolkit and matplotlib write local files (copy them to a bucket).
  """
  from jaxgan import summary  # pylint: disable=import-outside-toplevel
  paths.local_only(out_dir, "the samples folder (--out)")
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for i, roll in enumerate(rolls):
    path = os.path.join(out_dir, f"{prefix}_{i:04d}.mid")
    gen.write_midi(roll, path, tempo=tempo)
    written.append(path)
  summary.save_png(summary.render_pianorolls(rolls[:64], columns=min(4, len(rolls))),
                   os.path.join(out_dir, f"{prefix}s.png"))
  return written


def check_options(config, *, num: int, bars: int | None) -> None:
  if num <= 0:
    raise config_lib.ConfigError(f"--num={num} must be positive")
  if bars is not None and bars <= 0:
    raise config_lib.ConfigError(f"--bars={bars} must be positive")
