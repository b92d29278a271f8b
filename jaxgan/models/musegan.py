"""MuseGAN-family generators and discriminators (flax.linen).

Layout: piano-rolls are float `[B, bars, steps, pitches, tracks]` in [-1, 1]; the 3-D
convolutions run over (bars, steps, pitches) with channels last. Per-track ("private") layers carry
a leading track axis (`[T, B, ...]`) and run all tracks as one grouped matmul (see layers.py).

Every generator takes one flat latent `z: [B, latent_size]` and is called as
`G.apply(variables, z, train=..., slope=1.0, rng=None, binarize=None)` -> float32 `[B, bars, steps,
pitches, tracks]` in [-1, 1]; with `train=True` pass `mutable=["batch_stats"]`. `binarize` overrides
the module's output mode (e.g. "threshold" when sampling a model trained with "none"); the
stochastic modes draw from `rng` or, when it is None, from the "binary" RNG stream
(`rngs={"binary": key}`, also needed by `init` for such a module). `slope` scales the
pre-activation of the binary neurons (slope annealing). Every discriminator is
`D.apply(variables, x, style=None) -> float32 logits [B]`; a discriminator built with
`num_styles > 0` adds a projection term and needs `style: int[B]`. Conditional generators wrap
these ones (see conditional.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxgan.models import binary
from jaxgan.models.layers import BatchNorm, Conv, ConvTranspose, LayerNorm

Array = jax.Array
Dtype = Any
DataShape = tuple[int, int, int, int]  # (bars, steps, pitches, tracks)


# ----------------------------------------------------------------------------------- shape plans


def tutorial_plan(data_shape: DataShape) -> dict[str, int]:
  """Kernel sizes of the tutorial architecture for a data shape (4, 16, 72, T in the original).

  Steps split as (steps // 4 shared) x (4 per track); pitches as ((q - 2) shared, + 2 by a
  kernel-3 layer) x (12 per track) with q = pitches // 12.
  """
  bars, steps, pitches, tracks = data_shape
  if bars < 2:
    raise ValueError(f"arch 'tutorial' needs bars >= 2, got data shape {data_shape}")
  if steps % 4:
    raise ValueError(f"arch 'tutorial' needs steps divisible by 4, got steps={steps}")
  if pitches % 12 or pitches < 36:
    raise ValueError(
      f"arch 'tutorial' needs pitches a multiple of 12 and >= 36, got pitches={pitches}"
    )
  if tracks < 1:
    raise ValueError(f"need at least one track, got data shape {data_shape}")
  return {"bars": bars, "steps_shared": steps // 4, "steps_track": 4,
          "pitch_shared": pitches // 12 - 2, "q": pitches // 12}


def time_plan(steps: int, strides: Sequence[int] = ()) -> tuple[int, int, int]:
  """Factor steps per bar into (t2, t3, tp): two shared upsamplings and one per-track one.

  An explicit `strides` must multiply to `steps`. Otherwise tp = 3 (or 2, 1), then t3 = 4 (or 2, 1),
  t2 = the rest: 48 -> (4, 4, 3) as in the later MuseGAN code, 16 -> (2, 4, 2), 8 -> (1, 4, 2).
  """
  if strides:
    st = tuple(int(v) for v in strides)
    if len(st) != 3 or any(v < 1 for v in st) or st[0] * st[1] * st[2] != steps:
      raise ValueError(
        f"model.time_strides={st} must be 3 positive ints multiplying to steps={steps}"
      )
    return st  # type: ignore[return-value]
  tp = 3 if steps % 3 == 0 else (2 if steps % 2 == 0 else 1)
  r = steps // tp
  t3 = 4 if r % 4 == 0 else (2 if r % 2 == 0 else 1)
  return r // t3, t3, tp


def pitch_plan(pitches: int) -> tuple[int, int, int]:
  """(p0, kernel, stride) of the shared pitch path: p0 positions, then (k, s) to q = pitches // 12.

  The per-track layers then unfold each of the q positions into 12 semitones. 84 -> (3, 3, 2)
  as in the later MuseGAN code; 72 -> (3, 2, 2); 12 -> (1, 1, 1).
  """
  if pitches % 12 or pitches < 12:
    raise ValueError(f"arch 'hybrid' needs pitches a positive multiple of 12, got {pitches}")
  q = pitches // 12
  if q == 1:
    return 1, 1, 1
  if q % 2 == 0:
    return q // 2, 2, 2
  return (q - 1) // 2, 3, 2


def beat_plan(steps: int, beat_steps: int) -> int:
  """Steps per beat for the chroma stream (0 = steps // 4 when that divides, else the bar)."""
  if beat_steps <= 0:
    beat_steps = steps // 4 if steps % 4 == 0 else steps
  if steps % beat_steps:
    raise ValueError(f"model.beat_steps={beat_steps} does not divide steps={steps}")
  return beat_steps


# ---------------------------------------------------------------------------------- shared parts


def _output(module: nn.Module, a: Array, mode: str, slope: float | Array,
            rng: Array | None) -> Array:
  """Final activation of a generator on pre-activations a [T, B, bars, steps, pitches, 1]."""
  binary.check_mode(mode, "binarize")
  if mode in binary.STOCHASTIC_MODES and rng is None:
    rng = module.make_rng("binary")
  a = jnp.moveaxis(a[..., 0], 0, -1).astype(jnp.float32)
  return binary.activate(a, mode, slope=slope, rng=rng)


def _tracks_first(x: Array) -> Array:
  """[B, bars, steps, pitches, T] -> [T, B, bars, steps, pitches, 1] for the per-track layers."""
  return jnp.moveaxis(x, -1, 0)[..., None]


def _merge_tracks(h: Array) -> Array:
  """[T, B, *spatial, C] -> [B, *spatial, T * C] (track-major channels, as torch.cat(dim=1))."""
  h = jnp.moveaxis(h, 0, -2)
  return h.reshape(h.shape[:-2] + (-1,))


class _GBlock(nn.Module):
  """Transposed convolution + BatchNorm (optional) + ReLU (optional)."""

  features: int
  kernel: Sequence[int]
  strides: Sequence[int] | None = None
  groups: int = 0
  norm: bool = True
  act: bool = True
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    h = ConvTranspose(self.features, self.kernel, self.strides, groups=self.groups, impl=self.impl,
                      dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    if self.norm:
      h = BatchNorm(groups=self.groups, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="norm")(h, train=train)
    return nn.relu(h) if self.act else h


class _DBlock(nn.Module):
  """Convolution + layer norm (optional) + LeakyReLU."""

  features: int
  kernel: Sequence[int]
  strides: Sequence[int] | None = None
  groups: int = 0
  norm: bool = True
  leak: float = 0.2
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  prepatched: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = Conv(self.features, self.kernel, self.strides, groups=self.groups, impl=self.impl,
             dtype=self.dtype, param_dtype=self.param_dtype, prepatched=self.prepatched,
             name="conv")(x)
    if self.norm:
      h = LayerNorm(groups=self.groups, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="norm")(h)
    return nn.leaky_relu(h, self.leak)


def _logits(module: nn.Module, h: Array, dtype: Dtype | None, param_dtype: Dtype,
            style: Array | None = None) -> Array:
  """Final Dense to one logit; with styles, plus the projection term <embed(style), h>
  (Miyato & Koyama 2018), which lets D judge 'real *and* of this style'."""
  h = h.reshape(h.shape[0], -1)
  out = Conv(1, (), dtype=dtype, param_dtype=param_dtype, name="logits")(h)[:, 0]
  out = out.astype(jnp.float32)
  if module.num_styles:
    if style is None:
      raise ValueError("this discriminator is style-conditional: pass style=int[B]")
    embed = nn.Embed(module.num_styles, h.shape[-1], param_dtype=param_dtype,
                     embedding_init=nn.initializers.normal(0.02), name="style_projection")
    out = out + jnp.sum(embed(style).astype(jnp.float32) * h.astype(jnp.float32), -1)
  return out


# ----------------------------------------------------------------------------- ISMIR 2019 tutorial


class TutorialGenerator(nn.Module):
  """Generator of the ISMIR 2019 MuseGAN tutorial (313,951 params at 5 x 4 x 16 x 72, latent 128).

  Shared transposed-conv blocks, then two per-track blocks, each with BatchNorm and ReLU. The
  original ends with BatchNorm + ReLU on the last block; here the last block keeps its BatchNorm
  (same parameters) and feeds the selected output activation (tanh by default) instead.
  """

  data_shape: DataShape
  latent: int = 128
  channels: Sequence[int] = (256, 128, 64, 32, 16)
  binarize: str = "none"
  norm: bool = True
  num_styles: int = 0
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @property
  def latent_size(self) -> int:
    return self.latent

  @nn.compact
  def __call__(self, z: Array, *, train: bool, slope: float | Array = 1.0,
               rng: Array | None = None, binarize: str | None = None) -> Array:
    plan = tutorial_plan(self.data_shape)
    tracks = self.data_shape[3]
    c = self.channels
    kw = dict(norm=self.norm, impl=self.impl, dtype=self.dtype, param_dtype=self.param_dtype)
    h = z.reshape(z.shape[0], 1, 1, 1, -1)
    h = _GBlock(c[0], (plan["bars"], 1, 1), name="shared0", **kw)(h, train=train)
    h = _GBlock(c[1], (1, plan["steps_shared"], 1), name="shared1", **kw)(h, train=train)
    h = _GBlock(c[2], (1, 1, plan["pitch_shared"]), name="shared2", **kw)(h, train=train)
    h = _GBlock(c[3], (1, 1, 3), (1, 1, 1), name="shared3", **kw)(h, train=train)
    # The first per-track block reads the shared tensor directly: one matmul for all tracks.
    h = _GBlock(c[4], (1, plan["steps_track"], 1), groups=tracks, name="track0", **kw)(
      h, train=train)
    a = _GBlock(1, (1, 1, 12), groups=tracks, act=False, name="track1", **kw)(h, train=train)
    return _output(self, a, binarize or self.binarize, slope, rng)


class TutorialDiscriminator(nn.Module):
  """Discriminator of the ISMIR 2019 tutorial (204,321 params at 5 x 4 x 16 x 72).

  Per-track conv blocks, then shared ones; every block is conv + layer norm (over all non-batch
  axes, per-channel affine) + LeakyReLU (slope 0.01, torch's default); a final Dense to one logit.
  """

  data_shape: DataShape
  channels: Sequence[int] = (16, 16, 64, 64, 128, 128, 256)
  norm: bool = True
  leak: float = 0.01
  num_styles: int = 0
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, style: Array | None = None) -> Array:
    plan = tutorial_plan(self.data_shape)
    tracks = self.data_shape[3]
    c = self.channels
    kw = dict(norm=self.norm, leak=self.leak, impl=self.impl, dtype=self.dtype,
              param_dtype=self.param_dtype)
    x = x.astype(self.dtype or jnp.float32)
    if self.impl == "fast":
      h = self._tracks(x, plan, tracks, kw)
    else:
      h = _tracks_first(x)
      h = _DBlock(c[0], (1, 1, 12), groups=tracks, name="track0", **kw)(h)
      h = _DBlock(c[1], (1, plan["steps_track"], 1), groups=tracks, name="track1", **kw)(h)
      h = _merge_tracks(h)
    h = _DBlock(c[2], (1, 1, 3), (1, 1, 1), name="shared0", **kw)(h)
    h = _DBlock(c[3], (1, 1, plan["pitch_shared"]), name="shared1", **kw)(h)
    h = _DBlock(c[4], (1, plan["steps_shared"], 1), name="shared2", **kw)(h)
    h = _DBlock(c[5], (2, 1, 1), (1, 1, 1), name="shared3", **kw)(h)
    h = _DBlock(c[6], (plan["bars"] - 1, 1, 1), name="shared4", **kw)(h)
    return _logits(self, h, self.dtype, self.param_dtype, style)

  def _tracks(self, x: Array, plan: dict[str, int], tracks: int, kw: dict[str, Any]) -> Array:
    """The per-track blocks with every patch cut by a reshape: [B, bars, steps, pitches, T] ->
    [B, bars, steps // 4, q, T * c[1]], the same as the generic layers compute.

    Positions are kept in (bar, pitch group, step) order inside the per-track blocks: one
    transpose of the input puts each track's 12-semitone pitch patches last, and the 4-step time
    patches of the second block are then adjacent to the channels. The generic layout (bar, step,
    pitch) needs a transpose of the biggest activation there, forward and backward.
    """
    b, bars, steps, pitches, _ = x.shape
    q, st = pitches // 12, plan["steps_track"]
    c = self.channels
    h = x.reshape(b, bars, steps, q, 12, tracks).transpose(5, 0, 1, 3, 2, 4)
    h = _DBlock(c[0], (1, 1, 12), groups=tracks, prepatched=True, name="track0", **kw)(h)
    h = h.reshape(h.shape[:4] + (steps // st, st * c[0]))
    h = _DBlock(c[1], (1, st, 1), groups=tracks, prepatched=True, name="track1", **kw)(h)
    # [T, B, bars, q, steps // 4, C] -> [B, bars, steps // 4, q, T * C]
    h = h.transpose(1, 2, 4, 3, 0, 5)
    return h.reshape(h.shape[:4] + (-1,))


# ------------------------------------------------------------------------------- AAAI-18 hybrid


class _Temporal(nn.Module):
  """Temporal network: a noise vector -> one latent per bar (two Dense + BatchNorm + ReLU).

  With groups=T it runs one private network per track on z [T, B, dim].
  """

  features: int
  bars: int
  hidden: int
  groups: int = 0
  norm: bool = True
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array, *, train: bool) -> Array:
    kw = dict(groups=self.groups, impl=self.impl, dtype=self.dtype, param_dtype=self.param_dtype)
    h = z
    for i, f in enumerate((self.hidden, self.bars * self.features)):
      h = Conv(f, (), name=f"dense{i}", **kw)(h)
      if self.norm:
        h = BatchNorm(groups=self.groups, dtype=self.dtype, param_dtype=self.param_dtype,
                      name=f"norm{i}")(h, train=train)
      h = nn.relu(h)
    return h.reshape(h.shape[:-1] + (self.bars, self.features))


def hybrid_latent_parts(tracks: int, z_shared: int, z_temporal: int, z_private: int,
                        z_private_temporal: int) -> dict[str, tuple[int, int]]:
  """(start, stop) of each part of the hybrid generator's flat latent, in order."""
  sizes = [("shared", z_shared), ("temporal", z_temporal), ("private", tracks * z_private),
           ("private_temporal", tracks * z_private_temporal)]
  parts, start = {}, 0
  for name, n in sizes:
    parts[name] = (start, start + n)
    start += n
  return parts


class HybridGenerator(nn.Module):
  """Hybrid MuseGAN generator (AAAI 2018) with the bar generator of the later MuseGAN code.

  The flat latent is split (see `hybrid_latent_parts`) into:
    shared            inter-track, time-independent (same for every bar and track);
    temporal          inter-track, time-dependent: a temporal network maps it to one vector per bar;
    private           intra-track, time-independent: one vector per track;
    private_temporal  intra-track, time-dependent: per-track temporal networks, one vector per bar.
  Per bar, the inter-track vectors drive a shared network (Dense, then two transposed convs over
  steps x pitches); its output, with each track's private vectors appended as channels, feeds the
  per-track (private) bar generators: a pitch-time and a time-pitch branch merged by a 1x1 layer.
  Sizes at 4 x 48 x 84 x 5 match the later code's generator (~2.6M params).
  """

  data_shape: DataShape
  z_shared: int = 32
  z_temporal: int = 32
  z_private: int = 32
  z_private_temporal: int = 32
  temporal_hidden: int = 128
  channels: Sequence[int] = (512, 256, 128, 32, 16)
  time_strides: Sequence[int] = ()
  binarize: str = "none"
  norm: bool = True
  num_styles: int = 0
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @property
  def latent_size(self) -> int:
    tracks = self.data_shape[3]
    return self.z_shared + self.z_temporal + tracks * (self.z_private + self.z_private_temporal)

  @nn.compact
  def __call__(self, z: Array, *, train: bool, slope: float | Array = 1.0,
               rng: Array | None = None, binarize: str | None = None) -> Array:
    bars, steps, pitches, tracks = self.data_shape
    t2, t3, tp = time_plan(steps, self.time_strides)
    p0, pk, ps = pitch_plan(pitches)
    if z.shape[-1] != self.latent_size:
      raise ValueError(f"latent has size {z.shape[-1]}, the generator expects {self.latent_size}")
    b = z.shape[0]
    z = z.astype(self.dtype or jnp.float32)
    parts = hybrid_latent_parts(tracks, self.z_shared, self.z_temporal, self.z_private,
                                self.z_private_temporal)
    part = {k: z[:, s:e] for k, (s, e) in parts.items()}
    kw = dict(norm=self.norm, impl=self.impl, dtype=self.dtype, param_dtype=self.param_dtype)
    tkw = dict(bars=bars, hidden=self.temporal_hidden, **kw)

    # Inter-track vector per bar: [B, bars, z_shared + z_temporal].
    inter = []
    if self.z_shared:
      inter.append(jnp.broadcast_to(part["shared"][:, None], (b, bars, self.z_shared)))
    if self.z_temporal:
      inter.append(_Temporal(self.z_temporal, name="temporal", **tkw)(part["temporal"],
                                                                       train=train))
    h = jnp.concatenate(inter, -1)[:, :, None, None, :]

    c = self.channels
    h = _GBlock(c[0], (1, 1, 1), name="shared0", **kw)(h, train=train)
    h = _GBlock(c[1], (1, t2, p0), name="shared1", **kw)(h, train=train)
    h = _GBlock(c[2], (1, t3, pk), (1, t3, ps), name="shared2", **kw)(h, train=train)

    # Intra-track vector per (track, bar): [T, B, bars, z_private + z_private_temporal].
    intra = []
    if self.z_private:
      zp = part["private"].reshape(b, tracks, self.z_private).transpose(1, 0, 2)[:, :, None]
      intra.append(jnp.broadcast_to(zp, (tracks, b, bars, self.z_private)))
    if self.z_private_temporal:
      zpt = part["private_temporal"].reshape(b, tracks, self.z_private_temporal)
      intra.append(_Temporal(self.z_private_temporal, groups=tracks, name="private_temporal",
                             **tkw)(zpt.transpose(1, 0, 2), train=train))
    if intra:
      u = jnp.concatenate(intra, -1)
      grid = h.shape[2:4]
      u = jnp.broadcast_to(u[:, :, :, None, None, :], u.shape[:3] + grid + u.shape[-1:])
      h = jnp.concatenate([jnp.broadcast_to(h[None], (tracks,) + h.shape), u], -1)

    g = dict(groups=tracks, **kw)
    pt = _GBlock(c[3], (1, 1, 12), name="pitch_time0", **g)(h, train=train)
    pt = _GBlock(c[4], (1, tp, 1), name="pitch_time1", **g)(pt, train=train)
    tpp = _GBlock(c[3], (1, tp, 1), name="time_pitch0", **g)(h, train=train)
    tpp = _GBlock(c[4], (1, 1, 12), name="time_pitch1", **g)(tpp, train=train)
    h = jnp.concatenate([pt, tpp], -1)
    a = _GBlock(1, (1, 1, 1), act=False, name="merged", **g)(h, train=train)
    return _output(self, a, binarize or self.binarize, slope, rng)


class HybridDiscriminator(nn.Module):
  """MuseGAN discriminator of the later code (~1.4M params at 4 x 48 x 84 x 5), layer norm.

  Per-track pitch-time and time-pitch branches merged by a 1x1 conv, then shared convs down to one
  vector per bar; optional streams on the chroma (per beat, pitch % 12) and on the onsets/offsets
  (per step, summed over pitches; onsets and offsets as two channels per track) join before a conv
  over pairs of bars and a final Dense. Streams read the piano-roll mapped to [0, 1].
  """

  data_shape: DataShape
  channels: Sequence[int] = (16, 32, 64, 128, 256, 512)
  chroma: bool = True
  onset: bool = True
  chroma_channels: Sequence[int] = (32, 64)
  onset_channels: Sequence[int] = (16, 32, 64)
  beat_steps: int = 0
  time_strides: Sequence[int] = ()
  norm: bool = True
  leak: float = 0.2
  num_styles: int = 0
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, style: Array | None = None) -> Array:
    bars, steps, pitches, tracks = self.data_shape
    t2, t3, tp = time_plan(steps, self.time_strides)
    p0, pk, ps = pitch_plan(pitches)
    x = x.astype(self.dtype or jnp.float32)
    b = x.shape[0]
    kw = dict(norm=self.norm, leak=self.leak, impl=self.impl, dtype=self.dtype,
              param_dtype=self.param_dtype)
    g = dict(groups=tracks, **kw)
    c = self.channels

    xt = _tracks_first(x)
    pt = _DBlock(c[0], (1, 1, 12), name="pitch_time0", **g)(xt)
    pt = _DBlock(c[1], (1, tp, 1), name="pitch_time1", **g)(pt)
    tpp = _DBlock(c[0], (1, tp, 1), name="time_pitch0", **g)(xt)
    tpp = _DBlock(c[1], (1, 1, 12), name="time_pitch1", **g)(tpp)
    h = _DBlock(c[2], (1, 1, 1), name="merged_private", **g)(jnp.concatenate([pt, tpp], -1))
    h = _merge_tracks(h)
    h = _DBlock(c[3], (1, t3, pk), (1, t3, ps), name="shared0", **kw)(h)
    h = _DBlock(c[4], (1, t2, p0), name="shared1", **kw)(h)
    streams = [h]

    x01 = (x + 1.0) * 0.5  # silent 0, sounding 1
    if self.chroma:
      beat = beat_plan(steps, self.beat_steps)
      beats = steps // beat
      ch = x01.reshape(b, bars, beats, beat, pitches, tracks).mean(axis=3)
      ch = ch.reshape(b, bars, beats, pitches // 12, 12, tracks).sum(axis=3)
      cc = self.chroma_channels
      ch = _DBlock(cc[0], (1, 1, 12), name="chroma0", **kw)(ch)
      ch = _DBlock(cc[1], (1, beats, 1), name="chroma1", **kw)(ch)
      streams.append(ch)
    if self.onset:
      prev = jnp.pad(x01[:, :, :-1], ((0, 0), (0, 0), (1, 0), (0, 0), (0, 0)))
      diff = x01 - prev
      on = nn.relu(diff).sum(axis=3, keepdims=True)
      off = nn.relu(-diff).sum(axis=3, keepdims=True)
      o = jnp.concatenate([on, off], -1)  # [B, bars, steps, 1, 2T]
      oc = self.onset_channels
      o = _DBlock(oc[0], (1, tp, 1), name="onset0", **kw)(o)
      o = _DBlock(oc[1], (1, t3, 1), name="onset1", **kw)(o)
      o = _DBlock(oc[2], (1, t2, 1), name="onset2", **kw)(o)
      streams.append(o)

    h = jnp.concatenate(streams, -1) if len(streams) > 1 else h
    h = _DBlock(c[5], (min(2, bars), 1, 1), (1, 1, 1), name="merged", **kw)(h)
    return _logits(self, h, self.dtype, self.param_dtype, style)
