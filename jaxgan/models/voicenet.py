"""The "voices" architecture: a generator that fills hidden cells of a piece, one categorical
choice per (voice, step), and a critic of whole pieces (flax.linen).

Both read time as a sequence of steps (16th notes for the chorales): every step is one token
holding all tracks at that step, so harmony (the voices of one step) is in a token and
counterpoint (a voice over time) is across tokens. A short convolution gives every token its
neighbourhood and the tokens' order; self-attention then relates any two steps of the window.
A token is told its place in the bar (the pipeline's windows start on bar lines) and, with
`rotary`, attention reads every pair of steps by their distance (rotary position embeddings on
queries and keys): without it, attention cannot tell the step before from the same step a bar
earlier, and the generator places notes on any 16th. Neither needs a fixed length, so the
networks run on pieces of any number of bars.

Generator: G(z, cond) -> heads. `cond` = {"context": uint8 roll [B, bars, steps, pitches,
tracks] (0 silent, 1 held, 2 onset), "known": bool [B, bars, steps, tracks] (the given cells),
"style": int [B] (style-conditional models)}. Heads:
  logits    [B, T, V, C]  per voice: rest or a pitch of its range (models/voices.py)
  restrike  [B, T, V]     logit of "the same pitch struck again"
  poly      [B, bars, steps, pitches, tracks] pre-activations of the polyphonic tracks (tanh
            in the generator's output; 0 on voice tracks)
The latent z [B, z_size] is added to every token: the same given cells and another z give
another piece.

Critic: D(x, style) -> logits [B], x a roll in [-1, 1] (a voice's column is 2 p - 1 of its
class probabilities, see voices.soft_roll), so the critic's gradient reaches the generator's
logits through a straight-through Gumbel-softmax sample.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxgan.models import voices as voices_lib

Array = jax.Array


def _rotate(x: Array) -> Array:
  """Rotary position embedding of queries or keys [B, T, heads, dim] by their step index: the
  dot product of two rotated vectors depends on their steps' distance only."""
  t, dim = x.shape[1], x.shape[-1]
  inv_freq = 1.0 / (10_000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
  angles = jnp.arange(t, dtype=jnp.float32)[:, None] * inv_freq[None]      # [T, dim / 2]
  cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype)


def rotary_attention(query: Array, key: Array, value: Array, bias: Array | None = None,
                     mask: Array | None = None, dtype: Any = None, precision: Any = None
                     ) -> Array:
  """flax's dot-product attention with rotary position embeddings (an `attention_fn`)."""
  return nn.dot_product_attention(_rotate(query), _rotate(key), value, bias=bias, mask=mask,
                                  dtype=dtype, precision=precision)


def _time_major(x: Array) -> Array:
  """[B, bars, steps, ...] -> [B, bars * steps, ...]."""
  return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


class _Block(nn.Module):
  """Pre-norm transformer block: (a k=3 convolution over the steps,) self-attention, then a
  4x MLP."""

  features: int
  heads: int
  rotary: bool = False
  local_conv: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, h: Array) -> Array:
    if self.local_conv:
      x = nn.LayerNorm(dtype=self.dtype, name="conv_norm")(h)
      h = h + nn.Conv(self.features, (3,), padding="SAME", dtype=self.dtype, name="conv")(x)
    x = nn.LayerNorm(dtype=self.dtype)(h)
    attention_fn = rotary_attention if self.rotary else nn.dot_product_attention
    x = nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.features,
                                        attention_fn=attention_fn, dtype=self.dtype)(x, x)
    h = h + x
    x = nn.LayerNorm(dtype=self.dtype)(h)
    x = nn.gelu(nn.Dense(4 * self.features, dtype=self.dtype)(x))
    return h + nn.Dense(self.features, dtype=self.dtype)(x)


class _Trunk(nn.Module):
  """Per-step features -> contextual features: Dense, a k=3 convolution, metric position,
  transformer blocks (rotary: attention by distance)."""

  features: int
  layers: int
  heads: int
  steps_per_bar: int
  rotary: bool = False
  local_conv: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, extra: Array | None = None) -> Array:
    t = x.shape[1]
    h = nn.Dense(self.features, dtype=self.dtype, name="embed")(x.astype(self.dtype or x.dtype))
    h = h + nn.Conv(self.features, (3,), padding="SAME", dtype=self.dtype, name="local")(h)
    h = h + nn.Embed(self.steps_per_bar, self.features, name="bar_position")(
        jnp.arange(t) % self.steps_per_bar)[None].astype(h.dtype)
    if extra is not None:
      h = h + extra[:, None, :].astype(h.dtype)
    for i in range(self.layers):
      h = _Block(self.features, self.heads, self.rotary, self.local_conv, self.dtype,
                 name=f"block{i}")(h)
    return nn.LayerNorm(dtype=self.dtype, name="out_norm")(h)


class VoiceGenerator(nn.Module):
  """Fills the hidden cells of a piece; see the module docstring."""

  layout: voices_lib.VoiceLayout
  data_shape: tuple[int, int, int, int]
  features: int = 128
  layers: int = 6
  heads: int = 4
  z_size: int = 32
  num_styles: int = 0
  style_features: int = 32
  rotary: bool = False
  local_conv: bool = False
  dtype: Any = None

  @property
  def latent_size(self) -> int:
    return self.z_size

  @property
  def poly_tracks(self) -> tuple[int, ...]:
    return tuple(t for t in range(self.data_shape[3]) if t not in self.layout.tracks)

  def features_of(self, context: Array, known: Array) -> Array:
    """Per-step input features [B, T, F] of the given cells (hidden cells read as nothing)."""
    layout = self.layout
    classes, restrike = voices_lib.classes_from_roll(layout, context)
    known_t = _time_major(known).astype(jnp.float32)          # [B, T, tracks]
    kv = known_t[..., list(layout.tracks)]                     # [B, T, V]
    parts = [jax.nn.one_hot(classes, layout.num_classes) * kv[..., None],
             (restrike.astype(jnp.float32) * kv)[..., None], kv[..., None]]
    b, t = classes.shape[:2]
    x = [jnp.concatenate(parts, -1).reshape(b, t, -1)]
    for p in self.poly_tracks:
      rows = (_time_major(context[..., p]) > 0).astype(jnp.float32)   # [B, T, pitches]
      x += [rows * known_t[..., p:p + 1], known_t[..., p:p + 1]]
    return jnp.concatenate(x, -1)

  @nn.compact
  def __call__(self, z: Array, cond: dict[str, Array], *, train: bool = False
               ) -> dict[str, Array]:
    del train  # no batch statistics, no dropout
    bars, steps, pitches, tracks = self.data_shape
    layout = self.layout
    extra = nn.Dense(self.features, name="latent")(z.astype(jnp.float32))
    if self.num_styles:
      if cond.get("style") is None:
        raise ValueError("this generator is style-conditional: pass cond={'style': int[B]}")
      extra = extra + nn.Dense(self.features, name="style_proj")(
          nn.Embed(self.num_styles, self.style_features, name="style")(cond["style"]))
    h = _Trunk(self.features, self.layers, self.heads, steps, self.rotary, self.local_conv,
               self.dtype, name="trunk")(self.features_of(cond["context"], cond["known"]), extra)
    b, t = h.shape[:2]
    v, c = layout.num_voices, layout.num_classes
    logits = nn.Dense(v * c, name="classes")(h).astype(jnp.float32).reshape(b, t, v, c)
    out = {"logits": layout.mask_logits(logits),
           "restrike": nn.Dense(v, name="restrike")(h).astype(jnp.float32)}
    poly = jnp.zeros((b, bars, steps, pitches, tracks), jnp.float32)
    if self.poly_tracks:
      rows = nn.Dense(pitches * len(self.poly_tracks), name="poly")(h).astype(jnp.float32)
      rows = rows.reshape(b, bars, steps, len(self.poly_tracks), pitches)
      poly = poly.at[..., list(self.poly_tracks)].set(jnp.moveaxis(rows, 3, -1))
    out["poly"] = poly
    return out


class VoiceCritic(nn.Module):
  """Scores a piece in [-1, 1]: per step the voices' rows and the polyphonic tracks, a
  transformer over the steps, the mean over steps, one logit (a style projection when the
  model has styles)."""

  layout: voices_lib.VoiceLayout
  data_shape: tuple[int, int, int, int]
  features: int = 128
  layers: int = 4
  heads: int = 4
  num_styles: int = 0
  rotary: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x: Array, style: Array | None = None) -> Array:
    bars, steps, pitches, tracks = self.data_shape
    layout = self.layout
    x01 = (_time_major(x.astype(jnp.float32)) + 1.0) * 0.5    # [B, T, pitches, tracks]
    parts = [x01[..., lo:hi + 1, t] for t, (lo, hi) in zip(layout.tracks, layout.ranges)]
    parts += [x01[..., p] for p in range(tracks) if p not in layout.tracks]
    h = _Trunk(self.features, self.layers, self.heads, steps, self.rotary, self.dtype,
               name="trunk")(jnp.concatenate(parts, -1))
    h = h.astype(jnp.float32).mean(1)
    out = nn.Dense(1, name="logits")(h)[:, 0]
    if self.num_styles:
      if style is None:
        raise ValueError("this critic is style-conditional: pass style=int[B]")
      embed = nn.Embed(self.num_styles, h.shape[-1], embedding_init=nn.initializers.normal(0.02),
                       name="style_projection")
      out = out + jnp.sum(embed(style) * h, -1)
    return out
