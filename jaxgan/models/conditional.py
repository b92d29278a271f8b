"""Conditional generation: infilling, accompaniment and style, around any jaxgan generator.

A `ConditionalGenerator` wraps an unconditional generator whose latent was built wider: the
condition vector (an encoding of the given piano-roll cells, and a style embedding) is spliced
into the inter-track, time-independent ("shared") part of its latent, so every layer of every
architecture sees it. The given cells are then copied into the output, so they reach D (and the
user) exactly as given and the generator only has to make the rest fit:

    out = where(known, context, G(z ++ encode(context, known) ++ embed(style)))

`cond` is a dict with any of
  context  float [B, bars, steps, pitches, tracks] in [-1, 1] (values at unknown cells ignored),
  known    bool  [B, bars, tracks]: the (bar, track) cells given (all False = unconditional),
  style    int   [B] (required when the model has styles).
The style half is the generator side of a projection discriminator (see musegan._logits).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Array = jax.Array


class ContextEncoder(nn.Module):
  """Given cells -> one feature vector: per step over (pitches x tracks), per bar over steps,
  then over bars; all dense layers (matmuls), as cheap as the generator's first blocks."""

  features: int
  dtype: Any = None

  @nn.compact
  def __call__(self, context: Array, known: Array) -> Array:
    b, bars, steps, pitches, tracks = context.shape
    mask = known[:, :, None, None, :].astype(jnp.float32)
    # Sounding cells as 1 and everything else as 0: sparse like the music (a +-1 encoding
    # feeds the encoder a wall of -1 silence); the mask channel tells silent from unknown.
    sounding = (context > 0).astype(jnp.float32) * mask
    x = jnp.concatenate([sounding, jnp.broadcast_to(mask, context.shape)], -1)
    x = x.reshape(b, bars, steps, pitches * 2 * tracks).astype(self.dtype or jnp.float32)
    x = nn.relu(nn.Dense(64, dtype=self.dtype, name="step")(x))
    x = nn.relu(nn.Dense(128, dtype=self.dtype, name="bar")(x.reshape(b, bars, steps * 64)))
    x = nn.Dense(self.features, dtype=self.dtype, name="piece")(x.reshape(b, bars * 128))
    return nn.LayerNorm(name="norm")(x.astype(jnp.float32))


def empty_condition(data_shape: tuple[int, int, int, int], num: int,
                    style: Array | None = None) -> dict[str, Array]:
  """Nothing given: the unconditional case of a conditional model."""
  bars, _, _, tracks = data_shape
  cond = {"context": jnp.zeros((num,) + tuple(data_shape), jnp.float32),
          "known": jnp.zeros([num, bars, tracks], bool)}
  if style is not None:
    cond["style"] = jnp.asarray(style, jnp.int32)
  return cond


class ConditionalGenerator(nn.Module):
  """`base` (built with latent size noise_size + condition features) under conditioning."""

  base: nn.Module
  data_shape: tuple[int, int, int, int]
  noise_size: int
  insert_at: int                  # where the shared part of base's latent ends
  context: bool = True
  num_styles: int = 0
  context_features: int = 128
  style_features: int = 32
  dtype: Any = None

  @property
  def latent_size(self) -> int:
    return self.noise_size

  @nn.compact
  def __call__(self, z: Array, *, train: bool, slope: float | Array = 1.0,
               rng: Array | None = None, binarize: str | None = None,
               cond: dict[str, Array] | None = None) -> Array:
    cond = dict(cond or {})
    num = z.shape[0]
    parts = [z[:, :self.insert_at]]
    known = context = None
    if self.context:
      if "context" not in cond or "known" not in cond:
        cond.update(empty_condition(self.data_shape, num))
      context = cond["context"].astype(jnp.float32)
      known = cond["known"].astype(bool)
      parts.append(ContextEncoder(self.context_features, self.dtype, name="context")(
          context, known))
    if self.num_styles:
      if cond.get("style") is None:
        raise ValueError("this generator is style-conditional: pass cond={'style': int[B]}")
      parts.append(nn.Embed(self.num_styles, self.style_features, name="style")(cond["style"]))
    parts.append(z[:, self.insert_at:])
    out = self.base(jnp.concatenate(parts, -1), train=train, slope=slope, rng=rng,
                    binarize=binarize)
    if known is not None:
      out = jnp.where(known[:, :, None, None, :], jnp.where(context > 0, 1.0, -1.0), out)
    return out


def training_condition(key: Array, real: Array, style: Array | None, *, infill: float,
                       accompany: float) -> dict[str, Array]:
  """A random condition per example of a real batch [B, bars, steps, pitches, tracks]:
  with probability `infill` a random span of 1..bars-1 bars is hidden (the rest given), with
  probability `accompany` a random non-empty proper subset of tracks is given, else nothing."""
  b, bars, _, _, tracks = real.shape
  k_kind, k_len, k_start, k_tracks, k_count = jax.random.split(key, 5)
  u = jax.random.uniform(k_kind, [b])
  is_infill = u < infill
  is_accompany = (u >= infill) & (u < infill + accompany)
  # Infilling: hide bars [start, start + length).
  length = jax.random.randint(k_len, [b], 1, max(bars, 2))
  start = jnp.floor(jax.random.uniform(k_start, [b]) * (bars - length + 1)).astype(jnp.int32)
  idx = jnp.arange(bars)
  hidden = (idx >= start[:, None]) & (idx < (start + length)[:, None])
  known_infill = jnp.broadcast_to(~hidden[:, :, None], (b, bars, tracks))
  # Accompaniment: give the `count` tracks of lowest random rank.
  count = jax.random.randint(k_count, [b], 1, max(tracks, 2))
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_tracks, [b, tracks]), -1), -1)
  known_acc = jnp.broadcast_to((rank < count[:, None])[:, None, :], (b, bars, tracks))
  known = jnp.where(is_infill[:, None, None], known_infill,
                    jnp.where(is_accompany[:, None, None], known_acc, False))
  cond = {"context": real, "known": known}
  if style is not None:
    cond["style"] = style
  return cond
