"""Experiment configs: ml_collections files, command-line overrides and up-front validation.

A config file is a Python file with `get_config(arg: str | None) -> ConfigDict` (big_vision
style). `load_config("configs/x.py:arg", ["--config.train.global_batch=32"])` loads it, applies
overrides and validates every value, so that a typo fails in a second instead of after a
compilation.
"""

from __future__ import annotations

import ast
import difflib
import json
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import ml_collections

from jaxgan import errors, models, optim, paths
from jaxgan import workdir as workdir_lib
from jaxgan.errors import ConfigError  # noqa: F401  (raised here, caught by the command line)
from jaxgan.models import voices_config

ConfigDict = ml_collections.ConfigDict


# Keys whose values come from a fixed set. Models and optimizers validate their own sections.
SPLIT_MODES = ("shard", "replicate")
CHOICES: dict[str, tuple[Any, ...]] = {
    "data.split_mode": SPLIT_MODES,
    "loss.kind": ("wgan", "nonsaturating", "hinge", "lsgan"),
    "train.best_mode": ("max", "min"),
    "train.nonfinite": ("stop", "skip", "rollback"),
    "train.on_save_error": ("stop", "retry"),
}
# Keys that must be positive integers / non-negative numbers.
POSITIVE_INTS = (
    "data.n_bars", "data.steps_per_beat", "data.num_pitches", "train.global_batch",
    "train.num_steps", "train.log_every", "train.ckpt_every", "train.keep_ckpts",
    "loss.n_critic", "train.slope_every", "train.nonfinite_max_skips",
    "train.nonfinite_max_rollbacks",
)
NON_NEGATIVE = (
    "loss.gp_weight", "loss.r1_gamma", "data.transpose", "train.sample_every",
    "train.eval_every", "loss.critic_warmup_steps", "train.profile_steps",
)


def base_config() -> ConfigDict:
  """Every key the engine understands, with defaults; config files start from this."""
  c = ConfigDict()

  c.data = ConfigDict()
  c.data.name = "jsb_chorales"       # a TFDS builder of jaxgan.data, or "synthetic"
  c.data.data_dir = ""               # "" = $JAXGAN_DATA_DIR or ~/tensorflow_datasets
  c.data.split = "train"
  c.data.eval_split = "validation"
  c.data.n_bars = 4                  # window length in bars
  c.data.hop_bars = 1                # window start stride when enumerating windows
  c.data.steps_per_beat = 4          # must divide the stored resolution
  c.data.meter = (4, 4)              # songs in other meters are left out of the windows
  c.data.lowest_pitch = 24
  c.data.num_pitches = 84
  c.data.num_tracks = 4              # must match the data set (checked when it is opened)
  c.data.transpose = 0               # max random transposition in semitones (0 = off)
  c.data.track_ranges = ()           # per track (low, high): transposition keeps every note of a
                                     # track inside; () = the data set's (train split), filled
                                     # at train time (old data sets: the pitch window)
  c.data.mono_tracks = ()            # tracks (indices or names) that sound one pitch at a time
  c.data.min_notes = 1               # windows with fewer notes are left out
  c.data.prefetch = 2
  # How processes split the training data (data/pipeline.py): "shard" (each reads its part of
  # the split) or "replicate" (each reads all of it: the same batches on any process count).
  c.data.split_mode = "shard"
  c.data.synthetic_patterns = 4      # "synthetic" only: number of distinct chord patterns

  c.model = ConfigDict()             # filled from jaxgan.models presets by config files

  c.loss = ConfigDict()
  c.loss.kind = "wgan"
  c.loss.gp_weight = 10.0
  c.loss.r1_gamma = 0.0
  c.loss.n_critic = 1                # D updates per G update
  c.loss.critic_warmup_steps = 0     # MuseGAN: more D updates for the first steps...
  c.loss.critic_warmup_n = 100       # ...this many...
  c.loss.critic_every_n = 0          # ...and every this many steps too (0 = never)
  c.loss.reuse_fake = False          # G update on the last critic update's fakes (one G
                                     # forward less; what the ISMIR 2019 tutorial does)

  # model.arch="voices" only (jaxgan/voicegan.py): the loss mix and the training masks.
  c.loss.recon_weight = 1.0          # cross-entropy on the hidden cells
  c.loss.adv_weight = 0.0            # adversarial term (0 = no critic at all)
  c.loss.critic_input = "gumbel"     # the critic reads a Gumbel-softmax sample, or "softmax"
  c.loss.gumbel_beta_max = 100.0     # straight-through Gumbel-softmax: inverse temperature
  c.loss.gumbel_anneal_steps = 10_000  # rises 1 -> beta_max geometrically over these steps
  c.loss.mask_shares = (0.4, 0.3, 0.2, 0.1)  # cells, bars, voices, all: mask kinds per example

  c.g_optim = optim_config(1e-3)
  c.d_optim = optim_config(1e-3)

  # Conditional generation. The generator always sees a context piano-roll and a mask of the
  # (bar, track) cells that are given; training draws, per example, one of: random bars to fill
  # (infilling / restoration), random given tracks (accompaniment), or nothing given.
  c.conditioning = ConfigDict()
  c.conditioning.infill = 0.0        # share of examples with a random span of bars to fill
  c.conditioning.accompany = 0.0     # share of examples with random given tracks
  c.conditioning.style = False       # class-conditional G + projection D on the data's styles
  c.conditioning.styles = ()         # style names; () = the data set's, filled at train time
  c.conditioning.context_features = 128
  c.conditioning.style_features = 32

  c.train = ConfigDict()
  c.train.seed = 0
  c.train.global_batch = 16          # examples per D update, over all devices and hosts
  c.train.num_steps = 1000           # G updates
  c.train.ema_decay = 0.999
  c.train.mesh_data = -1             # -1 = all devices not used by fsdp
  c.train.mesh_fsdp = 1
  c.train.fsdp_min_size = 2**18      # params with fewer elements stay replicated
  c.train.log_every = 50
  c.train.ckpt_every = 500
  c.train.keep_ckpts = 3
  c.train.sample_every = 500         # piano-roll images of EMA samples (0 = off)
  c.train.eval_every = 0             # musical metrics of EMA samples (0 = off)
  c.train.eval_num = 256
  c.train.best_metric = ""           # keep the checkpoint best by this eval scalar ("" = off),
  c.train.best_mode = "max"          # e.g. "eval/oa/mean" (max) or "eval/gap/mean" (min)
  c.train.init_from = ""             # checkpoint dir (or workdir) to warm-start G and D from
  c.train.slope_rate = 1.0           # binary neurons: slope *= rate every slope_every steps
  c.train.slope_every = 1000
  c.train.profile_steps = 0          # trace this many steps after warm-up (0 = off)...
  c.train.profile_start = -1         # ...from this step (-1 = 10 steps after the run starts),
                                     # into WORKDIR/profile
  c.train.compilation_cache = True   # persistent XLA cache in the workdir
  # A step whose losses or new weights are not all finite (NaN, inf): "stop" the run, "skip"
  # that step's update, or "rollback" to the last checkpoint at lower learning rates.
  c.train.nonfinite = "stop"
  c.train.nonfinite_max_skips = 5    # skip: stop after this many skipped steps in a row
  c.train.rollback_lr_factor = 0.5   # rollback: learning rates times this at each rollback
  c.train.nonfinite_max_rollbacks = 3  # rollback: stop after this many to the same checkpoint
  c.train.on_save_error = "stop"     # a failed checkpoint or TensorBoard write: "stop", or
                                     # "retry" it at the next interval
  return c


def optim_config(learning_rate: float) -> ConfigDict:
  """An optimizer section: `optim.default_config()` at `learning_rate`."""
  o = optim.default_config()
  o.learning_rate = learning_rate
  return o


def _import_config_file(path: str):
  # A config is Python that this process imports: a local file (never a workdir's URL).
  if not os.path.isfile(path):
    raise ConfigError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location(f"jaxgan_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config file {path!r} has no get_config()")
  return module


def _parse_value(text: str, current: Any, key: str) -> Any:
  """Parses an override string into the type of the value it replaces."""
  if isinstance(current, bool):
    low = text.lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key}={text!r}: expected a boolean (true/false)")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if current is None:
      return text
    raise ConfigError(
        f"--config.{key}={text!r}: expected a {type(current).__name__}") from None
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if current is not None and not isinstance(value, type(current)):
    if isinstance(current, (tuple, list)) and isinstance(value, (tuple, list)):
      return type(current)(value)
    raise ConfigError(
        f"--config.{key}={text!r}: expected a {type(current).__name__}, got "
        f"{type(value).__name__}")
  return value


def _all_keys(c: ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in c.items():
    if isinstance(v, ConfigDict):
      keys += _all_keys(v, f"{prefix}{k}.")
    else:
      keys.append(f"{prefix}{k}")
  return keys


def apply_override(config: ConfigDict, key: str, text: str) -> None:
  """Sets `config.<key>` from its string form; an unknown key is an error with suggestions."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    if not isinstance(node, ConfigDict) or part not in node:
      close = difflib.get_close_matches(key, _all_keys(config), n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"unknown config key {key!r}{hint}")
    if i < len(parts) - 1:
      node = node[part]
  current = node[parts[-1]]
  if isinstance(current, ConfigDict):
    raise ConfigError(f"config key {key!r} is a section, not a value")
  with node.unlocked():
    node[parts[-1]] = _parse_value(text, current, key)


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
  """['--config.a.b=1', '--config.c', '2'] -> [('a.b', '1'), ('c', '2')]."""
  pairs, i = [], 0
  args = list(args)
  while i < len(args):
    arg = args[i]
    if not arg.startswith("--config."):
      raise ConfigError(f"unexpected argument {arg!r}; overrides look like --config.key=value")
    body = arg[len("--config."):]
    if "=" in body:
      key, value = body.split("=", 1)
    elif i + 1 < len(args):
      key, value = body, args[i + 1]
      i += 1
    else:
      raise ConfigError(f"{arg!r} has no value")
    pairs.append((key, value))
    i += 1
  return pairs


def load_config(spec: str, overrides: Sequence[str] | Sequence[tuple[str, str]] = ()) -> ConfigDict:
  """Loads `path[:arg]`, applies overrides (strings or (key, value) pairs) and validates."""
  path, _, arg = spec.partition(":")
  module = _import_config_file(path)
  config = module.get_config(arg or None)
  pairs = (parse_overrides(overrides) if overrides and isinstance(overrides[0], str)
           else list(overrides))
  for key, value in pairs:
    apply_override(config, key, value)
  validate(config)
  return config


def _get(config: ConfigDict, key: str) -> Any:
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def validate(config: ConfigDict) -> None:
  """Checks every value that can be checked without data or devices; raises ConfigError."""
  known = set(_all_keys(base_config()))
  for key in _all_keys(config):
    section = key.split(".")[0]
    if section != "model" and key not in known:
      close = difflib.get_close_matches(key, sorted(known), n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"unknown config key {key!r}{hint}")
  for key, allowed in CHOICES.items():
    if _get(config, key) not in allowed:
      raise ConfigError(f"{key}={_get(config, key)!r} is not one of {allowed}")
  for key in POSITIVE_INTS:
    v = _get(config, key)
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
      raise ConfigError(f"{key}={v!r} must be a positive integer")
  for key in NON_NEGATIVE:
    v = _get(config, key)
    if not isinstance(v, (int, float)) or v < 0:
      raise ConfigError(f"{key}={v!r} must be >= 0")
  factor = config.train.rollback_lr_factor
  if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.0 < factor <= 1.0:
    raise ConfigError(f"train.rollback_lr_factor={factor!r} must be in (0, 1]")
  if not 0.0 <= config.train.ema_decay < 1.0:
    raise ConfigError(f"train.ema_decay={config.train.ema_decay!r} must be in [0, 1)")
  meter = tuple(config.data.meter)
  if len(meter) != 2 or meter[1] not in (1, 2, 4, 8, 16, 32) or meter[0] <= 0:
    raise ConfigError(f"data.meter={meter!r} must be (numerator, denominator), e.g. (4, 4)")
  if (meter[0] * 4 * config.data.steps_per_beat) % meter[1]:
    raise ConfigError(
        f"data.steps_per_beat={config.data.steps_per_beat} gives no whole number of steps per "
        f"bar in {meter[0]}/{meter[1]}")
  start = config.train.profile_start
  if isinstance(start, bool) or not isinstance(start, int) or start < -1:
    raise ConfigError(f"train.profile_start={start!r} must be a step >= 0, or -1 (10 steps "
                      f"after the run starts)")
  if config.train.mesh_fsdp < 1 or (config.train.mesh_data < 1 and config.train.mesh_data != -1):
    raise ConfigError("train.mesh_data must be -1 or >= 1 and train.mesh_fsdp >= 1")
  if config.data.lowest_pitch < 0 or config.data.lowest_pitch + config.data.num_pitches > 128:
    raise ConfigError(
        f"data.lowest_pitch={config.data.lowest_pitch}, data.num_pitches="
        f"{config.data.num_pitches}: the range must lie within MIDI pitches 0..127")
  _validate_tracks(config.data)
  if config.train.best_metric and not config.train.eval_every:
    raise ConfigError(f"train.best_metric={config.train.best_metric!r} needs train.eval_every > 0")
  cc = config.conditioning
  for key in ("infill", "accompany"):
    v = cc[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
      raise ConfigError(f"conditioning.{key}={v!r} must be a share in [0, 1]")
  if cc.infill + cc.accompany > 1.0:
    raise ConfigError(f"conditioning.infill + conditioning.accompany = "
                      f"{cc.infill + cc.accompany} must be <= 1")
  if cc.infill > 0 and config.data.n_bars < 2:
    raise ConfigError("conditioning.infill needs data.n_bars >= 2 (a bar to give, one to fill)")
  if cc.accompany > 0 and config.data.num_tracks < 2:
    raise ConfigError("conditioning.accompany needs data.num_tracks >= 2")
  if not isinstance(cc.style, bool):
    raise ConfigError(f"conditioning.style={cc.style!r} must be true or false")
  if not isinstance(config.loss.reuse_fake, bool):
    raise ConfigError(f"loss.reuse_fake={config.loss.reuse_fake!r} must be true or false")
  for key in ("context_features", "style_features"):
    v = cc[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ConfigError(f"conditioning.{key}={v!r} must be a positive integer")
  # Sections owned by other modules validate themselves.
  for name in ("g_optim", "d_optim"):
    try:
      optim.make_optimizer(config[name])
    except ValueError as e:
      raise ConfigError(f"{name}: {e}") from None
  if voices_config.is_voice_model(config):
    voices_config.check_config(config)
    return
  try:
    models.build(config.model, data_shape(config), conditioning(config, num_styles=1))
  except ValueError as e:
    raise ConfigError(f"model: {e}") from None


def _validate_tracks(d: ConfigDict) -> None:
  ranges = d.track_ranges
  if not isinstance(ranges, (tuple, list)) or (ranges and len(ranges) != d.num_tracks):
    raise ConfigError(f"data.track_ranges={ranges!r} must be () or one (low, high) per track "
                      f"({d.num_tracks} tracks)")
  for i, r in enumerate(ranges):
    ok = (isinstance(r, (tuple, list)) and len(r) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in r))
    if not ok or not 0 <= r[0] <= r[1] <= 127:
      raise ConfigError(f"data.track_ranges[{i}]={r!r} must be (low, high) MIDI pitches with "
                        f"0 <= low <= high <= 127")
  mono = d.mono_tracks
  if not isinstance(mono, (tuple, list)):
    raise ConfigError(f"data.mono_tracks={mono!r} must be a tuple of track indices or names")
  for t in mono:
    if isinstance(t, bool) or not isinstance(t, (int, str)) or (isinstance(t, str) and not t):
      raise ConfigError(f"data.mono_tracks: {t!r} is neither a track index nor a track name")
    if isinstance(t, int) and not 0 <= t < d.num_tracks:
      raise ConfigError(f"data.mono_tracks: track {t} is not in 0..{d.num_tracks - 1}")
  if len(set(mono)) != len(mono):
    raise ConfigError(f"data.mono_tracks={tuple(mono)!r} names a track twice")


def mono_track_indices(config: ConfigDict, track_names: Sequence[str]) -> tuple[int, ...]:
  """data.mono_tracks as sorted track indices; names are looked up in track_names."""
  out = set()
  for t in config.data.mono_tracks:
    if isinstance(t, str):
      if t not in track_names:
        raise ConfigError(f"data.mono_tracks: no track named {t!r}; tracks: "
                          f"{', '.join(track_names)}")
      t = list(track_names).index(t)
    out.add(int(t))
  if len(out) != len(config.data.mono_tracks):
    raise ConfigError(f"data.mono_tracks={tuple(config.data.mono_tracks)!r} names a track twice")
  return tuple(sorted(out))


def track_ranges(config: ConfigDict) -> tuple[tuple[int, int], ...]:
  """data.track_ranges as a tuple of (low, high) ints (a run's config.json holds lists)."""
  return tuple((int(lo), int(hi)) for lo, hi in config.data.track_ranges)


def steps_per_bar(config: ConfigDict) -> int:
  num, den = config.data.meter
  return num * 4 * config.data.steps_per_beat // den


def data_shape(config: ConfigDict) -> tuple[int, int, int, int]:
  """(bars, steps per bar, pitches, tracks) of one training example."""
  d = config.data
  return (d.n_bars, steps_per_bar(config), d.num_pitches, d.num_tracks)


def conditioning(config: ConfigDict, *, num_styles: int | None = None) -> dict[str, Any]:
  """What the models are conditioned on: {"context": bool, "num_styles": int, feature sizes}.

  num_styles defaults to len(conditioning.styles) when style conditioning is on.
  """
  cc = config.get("conditioning") or base_config().conditioning
  styles = 0
  if cc.style:
    styles = len(tuple(cc.styles)) if num_styles is None else num_styles
  return {"context": bool(cc.infill > 0 or cc.accompany > 0), "num_styles": int(styles),
          "context_features": int(cc.context_features),
          "style_features": int(cc.style_features)}


def check_batch(config: ConfigDict, mesh: Any, process_count: int) -> None:
  """The global batch must split evenly over the processes and (given a mesh) the devices."""
  gb = config.train.global_batch
  if gb % process_count:
    raise ConfigError(
        f"train.global_batch={gb} is not divisible by the number of processes ({process_count})")
  if mesh is not None and gb % mesh.size:
    raise ConfigError(
        f"train.global_batch={gb} is not divisible by the number of devices ({mesh.size})")


# --------------------------------------------------------------------------------------------
# The config saved with a run (WORKDIR/config.json, see workdir.py).


def save_run_config(config: ConfigDict, workdir: str) -> None:
  """WORKDIR/config.json (one process of a run writes it); raises errors.WriteError when it
  cannot be written."""
  path = workdir_lib.config_path(workdir)
  try:
    paths.write_atomic(path, config.to_json_best_effort(indent=2))
  except OSError as e:
    raise errors.WriteError("the run's config", path, errors.reason_of(e)) from None


def load_run_config(workdir: str) -> ConfigDict:
  """The config a workdir was trained with (saved as config.json when training starts)."""
  path = workdir_lib.config_path(workdir)
  if not paths.exists(path):
    raise FileNotFoundError(f"{workdir} has no config.json, so no run was trained there: "
                            f"train one with `jaxgan train --config CONFIG --workdir {workdir}`")
  config = ConfigDict(json.loads(paths.read_text(path)))
  config.data.meter = tuple(config.data.meter)
  # Runs from older versions lack keys added since: they get the defaults (the old behaviour).
  base = base_config()
  for section, defaults in base.items():
    if section == "model" or not isinstance(defaults, ConfigDict):
      continue
    if section not in config:
      config[section] = defaults
    for key, value in defaults.items():
      if key not in config[section]:
        config[section][key] = value
  config.conditioning.styles = tuple(config.conditioning.styles)
  if voices_config.is_voice_model(config):
    for key, value in voices_config.LEGACY_DEFAULTS.items():
      if key not in config.model:
        config.model[key] = value
  return config
