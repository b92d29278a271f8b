"""Model presets, config validation and the (generator, discriminator) factory.

Model config keys (`model_config(preset)` fills all of them):

  name                preset name (informational)
  arch                'tutorial' (ISMIR 2019 tutorial) | 'hybrid' (AAAI-18 hybrid MuseGAN)
  z_shared            inter-track, time-independent latent size (tutorial: the whole latent)
  z_temporal          inter-track, time-dependent latent size (hybrid only; 0 = off)
  z_private           intra-track, time-independent latent size per track (hybrid only)
  z_private_temporal  intra-track, time-dependent latent size per track (hybrid only)
  temporal_hidden     hidden width of the temporal networks (hybrid only)
  g_channels          generator widths; tutorial: 5 (4 shared blocks, 1 per-track block);
                      hybrid: 5 (3 shared blocks, 2 per-track blocks)
  d_channels          discriminator widths; tutorial: 7; hybrid: 6 (2 per-track, merged
                      per-track, 2 shared, the final bar-pair conv)
  d_chroma            hybrid D: add the chroma stream
  d_onset             hybrid D: add the onset/offset stream
  d_chroma_channels   widths of the chroma stream (2)
  d_onset_channels    widths of the onset/offset stream (3)
  beat_steps          steps per beat for the chroma stream (0 = steps // 4)
  time_strides        hybrid: (t2, t3, tp) factors of steps per bar; () = automatic
  binarize            generator output: 'none' (tanh) | 'threshold' | 'bernoulli' |
                      'deterministic' | 'stochastic' (binary neurons, straight-through)
  g_norm              'batch' | 'none'
  d_norm              'layer' | 'none' (no BatchNorm in D: WGAN-GP penalises per-sample gradients)
  d_leak              LeakyReLU slope in D (tutorial: 0.01, torch's default; hybrid: 0.2)
  dtype               compute dtype 'float32' | 'bfloat16' (params stay float32)
  conv_impl           'fast' (matmul forms) | 'xla' (lax convolutions, reference)
  num_styles          kept for old configs; must be 0 (style conditioning is set by the
                      config's `conditioning` section and passed to `build`)
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from jaxgan.models import binary, conditional, musegan
from jaxgan.models.layers import IMPLS

PRESETS = ("tutorial", "lpd5", "jsb", "tiny")
ARCHS = ("tutorial", "hybrid")
DTYPES = ("float32", "bfloat16")
G_NORMS = ("batch", "none")
D_NORMS = ("layer", "none")

# The data shape (bars, steps, pitches, tracks) each preset is sized for.
PRESET_SHAPES: dict[str, tuple[int, int, int, int]] = {
  "tutorial": (4, 16, 72, 5),
  "lpd5": (4, 48, 84, 5),
  "jsb": (4, 16, 84, 4),
  "tiny": (2, 8, 12, 2),
}

_BASE: dict[str, Any] = {
  "name": "lpd5",
  "arch": "hybrid",
  "z_shared": 32,
  "z_temporal": 32,
  "z_private": 32,
  "z_private_temporal": 32,
  "temporal_hidden": 128,
  "g_channels": (512, 256, 128, 32, 16),
  "d_channels": (16, 32, 64, 128, 256, 512),
  "d_chroma": True,
  "d_onset": True,
  "d_chroma_channels": (32, 64),
  "d_onset_channels": (16, 32, 64),
  "beat_steps": 0,
  "time_strides": (),
  "binarize": "none",
  "g_norm": "batch",
  "d_norm": "layer",
  "d_leak": 0.2,
  "dtype": "float32",
  "conv_impl": "fast",
  "num_styles": 0,
}

_OVERRIDES: dict[str, dict[str, Any]] = {
  "tutorial": {
    "arch": "tutorial", "z_shared": 128, "z_temporal": 0, "z_private": 0,
    "z_private_temporal": 0, "temporal_hidden": 0, "g_channels": (256, 128, 64, 32, 16),
    "d_channels": (16, 16, 64, 64, 128, 128, 256), "d_chroma": False, "d_onset": False,
    "d_leak": 0.01,
  },
  "lpd5": {},
  "jsb": {
    "z_shared": 16, "z_temporal": 16, "z_private": 16, "z_private_temporal": 16,
    "temporal_hidden": 128, "g_channels": (256, 128, 64, 32, 16),
    "d_channels": (16, 32, 64, 64, 128, 256), "d_chroma_channels": (16, 32),
    "d_onset_channels": (8, 16, 32),
  },
  "tiny": {
    "z_shared": 8, "z_temporal": 4, "z_private": 4, "z_private_temporal": 4,
    "temporal_hidden": 8, "g_channels": (16, 16, 8, 4, 4),
    "d_channels": (4, 4, 8, 8, 16, 16), "d_chroma_channels": (4, 8),
    "d_onset_channels": (4, 4, 8),
  },
}


def model_config(preset: str = "lpd5") -> ml_collections.ConfigDict:
  """Every model hyper-parameter of a preset: 'tutorial', 'lpd5', 'jsb' or 'tiny'."""
  if preset not in PRESETS:
    raise ValueError(f"model preset {preset!r} not in {PRESETS}")
  d = dict(_BASE)
  d.update(_OVERRIDES[preset])
  d["name"] = preset
  return ml_collections.ConfigDict(d)


def _choice(cfg: Any, key: str, allowed: Sequence[str]) -> str:
  v = cfg[key]
  if v not in allowed:
    raise ValueError(f"model.{key}={v!r} not in {tuple(allowed)}")
  return v


def _int(cfg: Any, key: str, lo: int = 0) -> int:
  v = cfg[key]
  if isinstance(v, bool) or not isinstance(v, int) or v < lo:
    raise ValueError(f"model.{key}={v!r} must be an int >= {lo}")
  return v


def _ints(cfg: Any, key: str, n: int | None, lo: int = 1) -> tuple[int, ...]:
  v = cfg[key]
  try:
    t = tuple(v)
  except TypeError:
    raise ValueError(f"model.{key}={v!r} must be a sequence of ints") from None
  if (n is not None and len(t) != n) or any(
      isinstance(x, bool) or not isinstance(x, int) or x < lo for x in t):
    want = f"{n} ints" if n is not None else "ints"
    raise ValueError(f"model.{key}={v!r} must be {want} >= {lo}")
  return t


def _bool(cfg: Any, key: str) -> bool:
  v = cfg[key]
  if not isinstance(v, bool):
    raise ValueError(f"model.{key}={v!r} must be a bool")
  return v


def check_data_shape(data_shape: Sequence[int]) -> tuple[int, int, int, int]:
  """Validate (bars, steps, pitches, tracks)."""
  t = tuple(data_shape)
  if len(t) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in t):
    raise ValueError(f"data_shape={data_shape!r} must be 4 positive ints (bars, steps, pitches, "
                     "tracks)")
  return t  # type: ignore[return-value]


def _resolve(model_cfg: Any) -> dict[str, Any]:
  """Validated, complete settings: missing keys take the default of the config's arch."""
  raw = dict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
  unknown = sorted(set(raw) - set(_BASE))
  if unknown:
    raise ValueError(f"unknown model config keys {unknown}; known: {sorted(_BASE)}")
  arch = raw.get("arch", _BASE["arch"])
  if arch not in ARCHS:
    raise ValueError(f"model.arch={arch!r} not in {ARCHS}")
  cfg = dict(model_config("tutorial" if arch == "tutorial" else "lpd5"))
  cfg.update(raw)
  _choice(cfg, "binarize", binary.BINARIZE_MODES)
  _choice(cfg, "g_norm", G_NORMS)
  _choice(cfg, "d_norm", D_NORMS)
  _choice(cfg, "dtype", DTYPES)
  _choice(cfg, "conv_impl", IMPLS)
  for k in ("z_shared", "z_temporal", "z_private", "z_private_temporal", "temporal_hidden",
            "beat_steps", "num_styles"):
    _int(cfg, k)
  if cfg["num_styles"] != 0:
    raise ValueError(f"model.num_styles={cfg['num_styles']!r}: use 0 and turn on "
                     "conditioning.style instead")
  for k in ("d_chroma", "d_onset"):
    _bool(cfg, k)
  if not isinstance(cfg["d_leak"], (int, float)) or not 0 <= cfg["d_leak"] < 1:
    raise ValueError(f"model.d_leak={cfg['d_leak']!r} must be a float in [0, 1)")
  if arch == "tutorial":
    _int(cfg, "z_shared", 1)
    for k in ("z_temporal", "z_private", "z_private_temporal"):
      if cfg[k]:
        raise ValueError(f"model.{k}={cfg[k]!r} must be 0 for arch 'tutorial' (one latent)")
    for k in ("d_chroma", "d_onset"):
      if cfg[k]:
        raise ValueError(f"model.{k}=True is only supported by arch 'hybrid'")
    _ints(cfg, "g_channels", 5)
    _ints(cfg, "d_channels", 7)
  else:
    if cfg["z_shared"] + cfg["z_temporal"] < 1:
      raise ValueError("model.z_shared + model.z_temporal must be >= 1 (the shared network "
                       "needs an input)")
    if (cfg["z_temporal"] or cfg["z_private_temporal"]) and cfg["temporal_hidden"] < 1:
      raise ValueError("model.temporal_hidden must be >= 1 when a temporal latent is used")
    _ints(cfg, "g_channels", 5)
    _ints(cfg, "d_channels", 6)
    _ints(cfg, "d_chroma_channels", 2)
    _ints(cfg, "d_onset_channels", 3)
    _ints(cfg, "time_strides", None)
  return cfg


def check_compatible(model_cfg: Any, data_shape: Sequence[int]) -> None:
  """Raise a ValueError when the model config cannot produce/read data of this shape."""
  cfg = _resolve(model_cfg)
  bars, steps, pitches, tracks = check_data_shape(data_shape)
  if cfg["arch"] == "tutorial":
    musegan.tutorial_plan((bars, steps, pitches, tracks))
    return
  musegan.time_plan(steps, tuple(cfg["time_strides"]))
  musegan.pitch_plan(pitches)
  if cfg["d_chroma"]:
    musegan.beat_plan(steps, cfg["beat_steps"])


def latent_size(model_cfg: Any, data_shape: Sequence[int]) -> int:
  """Size of the flat latent z the generator takes."""
  cfg = _resolve(model_cfg)
  tracks = check_data_shape(data_shape)[3]
  return (cfg["z_shared"] + cfg["z_temporal"]
          + tracks * (cfg["z_private"] + cfg["z_private_temporal"]))


def build(model_cfg: Any, data_shape: tuple[int, int, int, int],
          conditioning: dict[str, Any] | None = None) -> tuple[nn.Module, nn.Module]:
  """(generator, discriminator) for data of shape (bars, steps, pitches, tracks).

  `conditioning` ({"context": bool, "num_styles": int, "context_features": int,
  "style_features": int}, see config.conditioning) wraps the generator in a
  `ConditionalGenerator` and gives the discriminator a style projection.
  """
  cfg = _resolve(model_cfg)
  shape = check_data_shape(data_shape)
  check_compatible(cfg, shape)
  cond = dict(conditioning or {})
  num_styles = int(cond.get("num_styles", 0))
  cond_size = ((int(cond.get("context_features", 128)) if cond.get("context") else 0)
               + (int(cond.get("style_features", 32)) if num_styles else 0))
  if not cond_size:
    return _build(cfg, shape, 0, 0)
  gen, disc = _build(cfg, shape, cond_size, num_styles)
  wrapped = conditional.ConditionalGenerator(
      base=gen, data_shape=shape, noise_size=gen.latent_size - cond_size,
      insert_at=cfg["z_shared"], context=bool(cond.get("context")), num_styles=num_styles,
      context_features=int(cond.get("context_features", 128)),
      style_features=int(cond.get("style_features", 32)),
      dtype=jnp.bfloat16 if cfg["dtype"] == "bfloat16" else None)
  return wrapped, disc


def _build(cfg: dict[str, Any], shape: tuple[int, int, int, int], extra_latent: int,
           num_styles: int) -> tuple[nn.Module, nn.Module]:
  """The unconditional pair; `extra_latent` widens the shared latent for a condition vector."""
  cfg = dict(cfg, z_shared=cfg["z_shared"] + extra_latent)
  dtype = jnp.bfloat16 if cfg["dtype"] == "bfloat16" else jnp.float32
  common = dict(num_styles=num_styles, impl=cfg["conv_impl"], dtype=dtype,
                param_dtype=jnp.float32)
  g_norm = cfg["g_norm"] == "batch"
  d_norm = cfg["d_norm"] == "layer"
  if cfg["arch"] == "tutorial":
    gen = musegan.TutorialGenerator(
      data_shape=shape, latent=cfg["z_shared"], channels=tuple(cfg["g_channels"]),
      binarize=cfg["binarize"], norm=g_norm, **common)
    disc = musegan.TutorialDiscriminator(
      data_shape=shape, channels=tuple(cfg["d_channels"]), norm=d_norm,
      leak=float(cfg["d_leak"]), **common)
    return gen, disc
  strides = tuple(cfg["time_strides"])
  gen = musegan.HybridGenerator(
    data_shape=shape, z_shared=cfg["z_shared"], z_temporal=cfg["z_temporal"],
    z_private=cfg["z_private"], z_private_temporal=cfg["z_private_temporal"],
    temporal_hidden=cfg["temporal_hidden"], channels=tuple(cfg["g_channels"]),
    time_strides=strides, binarize=cfg["binarize"], norm=g_norm, **common)
  disc = musegan.HybridDiscriminator(
    data_shape=shape, channels=tuple(cfg["d_channels"]), chroma=cfg["d_chroma"],
    onset=cfg["d_onset"], chroma_channels=tuple(cfg["d_chroma_channels"]),
    onset_channels=tuple(cfg["d_onset_channels"]), beat_steps=cfg["beat_steps"],
    time_strides=strides, norm=d_norm, leak=float(cfg["d_leak"]), **common)
  return gen, disc


def count_params(variables: Any) -> int:
  """Number of trainable parameters (the 'params' collection if present, else every leaf)."""
  if hasattr(variables, "get") and variables.get("params") is not None:
    variables = variables["params"]
  return int(sum(x.size for x in jax.tree_util.tree_leaves(variables)))


def init_shapes(model_cfg: Any, data_shape: tuple[int, int, int, int],
                batch: int = 2) -> tuple[Any, Any]:
  """Variable shapes of (G, D) via jax.eval_shape: no compilation, no memory."""
  gen, disc = build(model_cfg, data_shape)
  key = jax.random.PRNGKey(0)
  z = jax.ShapeDtypeStruct((batch, gen.latent_size), jnp.float32)
  x = jax.ShapeDtypeStruct((batch,) + tuple(data_shape), jnp.float32)
  gv = jax.eval_shape(lambda k, z: gen.init({"params": k, "binary": k}, z, train=False), key, z)
  dv = jax.eval_shape(lambda k, x: disc.init(k, x), key, x)
  return gv, dv
