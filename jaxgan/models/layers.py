"""Building blocks: (transposed) convolutions written as matmuls, and normalization.

XLA's CPU path for 3-D (transposed) convolutions is pathologically slow (about 90x slower than
the same maths as a matmul). Almost every layer of the MuseGAN family has kernel == stride, and such
a layer is exactly a Dense plus a reshape:

- transposed convolution, kernel == stride: Dense to `features * prod(k)` then unfold `k` into the
  spatial axes (no two kernel positions ever write the same output);
- convolution, kernel == stride: fold non-overlapping patches into the channel axis, then Dense.

Overlapping kernels use the same idea with strided slices (convolution: im2col) or an overlap-add
(transposed convolution), which is still matmul plus cheap data movement. `impl="xla"` keeps the
plain `lax` convolution as a reference and fallback.

Every layer computes exactly what `flax.linen.Conv` / `flax.linen.ConvTranspose` compute with
VALID padding, with the same parameter names and shapes (kernel `(*k, in, out)`, bias `(out,)`), so
weights can be swapped between the two. With `groups=G > 0` the input carries a leading group axis
(`[G, B, *spatial, C]`) and every group has its own kernel `(G, *k, in, out)`; an input without the
group axis (`[B, *spatial, C]`) feeds every group. The MuseGAN per-track ("private") layers use this
to run all tracks as one batched matmul.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

Array = jax.Array
Dtype = Any

IMPLS = ("fast", "xla")


def _cheap_key(key: Array) -> Array:
  """An 'rbg' key derived from any key: its draws compile to one RngBitGenerator op.

  Threefry draws are unrolled hash rounds that XLA compiles separately for every parameter
  (about a second each on CPU), which made initialising even a tiny model take tens of seconds.
  """
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  data = key.astype(jnp.uint32).reshape(-1)
  if data.size != 4:
    data = jnp.concatenate([data, data ^ jnp.uint32(0x9E3779B9)])[:4]
  return jax.random.wrap_key_data(data, impl="rbg")


def _kernel_init(groups: int) -> nn.initializers.Initializer:
  # LeCun normal like flax's Conv; a group axis must not count towards fan-in.
  base = nn.initializers.variance_scaling(
    1.0, "fan_in", "truncated_normal", batch_axis=(0,) if groups else ()
  )

  def init(key: Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> Array:
    return base(_cheap_key(key), shape, dtype)

  return init


def _strides(kernel: tuple[int, ...], strides: Sequence[int] | None) -> tuple[int, ...]:
  s = tuple(kernel) if strides is None else tuple(int(v) for v in strides)
  if len(s) != len(kernel):
    raise ValueError(f"strides {s} and kernel_size {kernel} differ in length")
  if any(v < 1 for v in kernel + s):
    raise ValueError(f"kernel_size {kernel} and strides {s} must be >= 1")
  return s


def _matmul(x: Array, kernel: Array, groups: int, shared: bool, precision: Any) -> Array:
  """Contract the last axis of x with kernel [(G,) in, out]; x is [(G,) B, ..., in].

  Grouped: one batched matmul with the group axis leading (XLA's CPU dot is fast that way and
  very slow with the batch axis in the middle). With `shared`, x has no group axis and feeds
  every group.
  """
  if not groups:
    return jnp.einsum("...i,io->...o", x, kernel, precision=precision)
  c, f = kernel.shape[-2:]
  if shared:
    # One GEMM against all groups' kernels side by side; its backward is two plain GEMMs, where
    # a broadcast input would need a reduction over groups (measured 2-4x slower to train).
    lead = x.shape[:-1]
    w = kernel.transpose(1, 0, 2).reshape(c, groups * f)
    y = jnp.matmul(x.reshape(-1, c), w, precision=precision).reshape(-1, groups, f)
    return y.transpose(1, 0, 2).reshape((groups,) + lead + (f,))
  lead = x.shape[1:-1]
  y = lax.dot_general(x.reshape(groups, -1, c), kernel, (((2,), (1,)), ((0,), (0,))),
                      precision=precision)
  return y.reshape((groups,) + lead + (f,))


def _check_input(x: Array, nsp: int, groups: int, what: str) -> bool:
  """Validate the input rank; True when a grouped layer gets an input shared by all groups."""
  if groups and x.ndim == 2 + nsp:
    return True
  if x.ndim != 2 + nsp + (1 if groups else 0):
    raise ValueError(f"{what} expects {nsp} spatial axes (groups={groups}), got input {x.shape}")
  if groups and x.shape[0] != groups:
    raise ValueError(f"{what}: group axis 0 has size {x.shape[0]}, expected {groups}")
  return False


def _params(module: nn.Module, in_features: int, kernel: tuple[int, ...], features: int,
            groups: int, use_bias: bool, param_dtype: Dtype) -> tuple[Array, Array | None]:
  g = (groups,) if groups else ()
  shape = g + kernel + (in_features, features)
  w = module.param("kernel", _kernel_init(groups), shape, param_dtype)
  b = None
  if use_bias:
    b = module.param("bias", nn.initializers.zeros_init(), g + (features,), param_dtype)
  return w, b


def _add_bias(y: Array, bias: Array | None, groups: int, nsp: int) -> Array:
  if bias is None:
    return y
  if groups:
    return y + bias.reshape((groups, 1) + (1,) * nsp + (-1,))
  return y + bias


def _patches(x: Array, first: int, kernel: tuple[int, ...], strides: tuple[int, ...]) -> Array:
  """Split every spatial axis n into (m, k) with m = (n - k) // s + 1 (VALID windows)."""
  for i, (k, s) in enumerate(zip(kernel, strides)):
    ax = first + 2 * i
    n = x.shape[ax]
    if n < k:
      raise ValueError(f"spatial axis of size {n} is smaller than the kernel {k}")
    m = (n - k) // s + 1
    if k == s:
      x = lax.slice_in_dim(x, 0, m * s, axis=ax)
      x = x.reshape(x.shape[:ax] + (m, k) + x.shape[ax + 1:])
    else:
      cols = [lax.slice_in_dim(x, j, j + s * (m - 1) + 1, stride=s, axis=ax) for j in range(k)]
      x = jnp.stack(cols, axis=ax + 1)
  return x


def _overlap_add(y: Array, ax: int, k: int, s: int) -> Array:
  """Merge axes (n, k) at ax, ax+1 into (n - 1) * s + k, summing where windows overlap (k >= s)."""
  n = y.shape[ax]
  if k == s:
    return y.reshape(y.shape[:ax] + (n * k,) + y.shape[ax + 2:])
  chunks = -(-k // s)
  pad = [(0, 0)] * y.ndim
  pad[ax + 1] = (0, chunks * s - k)
  y = jnp.pad(y, pad)
  y = y.reshape(y.shape[:ax + 1] + (chunks, s) + y.shape[ax + 2:])
  out = None
  for c in range(chunks):
    part = lax.index_in_dim(y, c, axis=ax + 1, keepdims=False)
    part = part.reshape(part.shape[:ax] + (n * s,) + part.shape[ax + 2:])
    pad = [(0, 0)] * part.ndim
    pad[ax] = (c * s, (chunks - 1 - c) * s)
    part = jnp.pad(part, pad)
    out = part if out is None else out + part
  return lax.slice_in_dim(out, 0, (n - 1) * s + k, axis=ax)


class Conv(nn.Module):
  """VALID N-d convolution, channels last, as im2col + matmul (`impl="fast"`).

  x: [B, *spatial, C], or with groups=G [G, B, *spatial, C] -> [(G,) B, *out_spatial, features].
  strides default to kernel_size. An empty kernel_size makes this a (grouped) Dense.

  With `prepatched=True` the caller has already cut the input into its non-overlapping patches:
  x is [(G,) B, *positions, prod(kernel_size) * C] with each patch flattened in (k1, ..., kn, C)
  order, and the layer is one matmul against the same kernel `(*k, C, features)`. A model picks
  the order of its position axes freely then, so that cutting patches is a plain reshape instead
  of a transpose (transposes of big activations, and theirs in the backward pass, are what make
  XLA's CPU code slow). Any number of position axes; `strides` must equal the kernel size; with
  groups the input must carry its group axis.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  groups: int = 0
  use_bias: bool = True
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: Any = None
  prepatched: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = tuple(int(v) for v in self.kernel_size)
    s = _strides(k, self.strides)
    nsp, g = len(k), self.groups
    if self.prepatched:
      return self._prepatched(x, k, s)
    shared = _check_input(x, nsp, g, "Conv")
    kernel, bias = _params(self, x.shape[-1], k, self.features, g, self.use_bias, self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    first = 2 if g and not shared else 1
    if self.impl == "xla":
      y = _xla_conv(x, kernel, s, g, shared, self.precision)
    elif self.impl == "fast":
      p = _patches(x, first, k, s)
      # [(G), B, m1, k1, m2, k2, ..., C] -> [(G), B, m1, m2, ..., k1, k2, ..., C]
      lead = list(range(first))
      order = lead + [first + 2 * i for i in range(nsp)] + [first + 2 * i + 1 for i in range(nsp)]
      p = p.transpose(order + [p.ndim - 1])
      p = p.reshape(p.shape[:first + nsp] + (-1,))
      w = kernel.reshape(((g,) if g else ()) + (-1, self.features))
      y = _matmul(p, w, g, shared, self.precision)
    else:
      raise ValueError(f"impl={self.impl!r} not in {IMPLS}")
    return _add_bias(y, bias, g, nsp)

  def _prepatched(self, x: Array, k: tuple[int, ...], s: tuple[int, ...]) -> Array:
    g = self.groups
    if s != k:
      raise ValueError(f"prepatched Conv needs strides == kernel_size, got {s} and {k}")
    size = int(np.prod(k, dtype=np.int64))
    if x.shape[-1] % size:
      raise ValueError(f"prepatched Conv: last axis {x.shape[-1]} is not a multiple of the "
                       f"kernel size {k}")
    if g and (x.ndim < 3 or x.shape[0] != g):
      raise ValueError(f"prepatched Conv with groups={g} needs the group axis first, got input "
                       f"{x.shape}")
    kernel, bias = _params(self, x.shape[-1] // size, k, self.features, g, self.use_bias,
                           self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    w = kernel.reshape(((g,) if g else ()) + (-1, self.features))
    y = _matmul(x, w, g, False, self.precision)
    return _add_bias(y, bias, g, y.ndim - (3 if g else 2))


class ConvTranspose(nn.Module):
  """VALID N-d transposed convolution as matmul + unfold (`impl="fast"`).

  Same maths as `flax.linen.ConvTranspose(padding="VALID")` (transpose_kernel=False): with
  kernel >= stride the output length is (n - 1) * s + k. x as for `Conv`.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  groups: int = 0
  use_bias: bool = True
  impl: str = "fast"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = tuple(int(v) for v in self.kernel_size)
    s = _strides(k, self.strides)
    nsp, g = len(k), self.groups
    shared = _check_input(x, nsp, g, "ConvTranspose")
    kernel, bias = _params(self, x.shape[-1], k, self.features, g, self.use_bias, self.param_dtype)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    first = 2 if g else 1
    impl = self.impl
    if impl == "fast" and any(kk < ss for kk, ss in zip(k, s)):
      # A stride above the kernel leaves gaps whose size lax pads differently; rare, keep lax.
      impl = "xla"
    if impl == "xla":
      y = _xla_conv_transpose(x, kernel, s, g, shared, self.precision)
    elif impl == "fast":
      # lax.conv_transpose (transpose_kernel=False) writes x[i] * K[k - 1 - r] to output s*i + r.
      sp = tuple(range(1 if g else 0, (1 if g else 0) + nsp))
      w = jnp.flip(kernel, axis=sp) if nsp else kernel
      c = x.shape[-1]
      # [(G), k1..kn, C, F] -> [(G), C, k1..kn, F] -> [(G), C, prod(k) * F]
      gl = [0] if g else []
      w = w.transpose(gl + [len(gl) + nsp] + [len(gl) + i for i in range(nsp)] + [w.ndim - 1])
      w = w.reshape(((g,) if g else ()) + (c, -1))
      y = _matmul(x, w, g, shared, self.precision)
      y = y.reshape(y.shape[:-1] + k + (self.features,))
      # [(G), B, n1..nn, k1..kn, F] -> [(G), B, n1, k1, n2, k2, ..., F]
      order = list(range(first))
      for i in range(nsp):
        order += [first + i, first + nsp + i]
      y = y.transpose(order + [y.ndim - 1])
      for i in range(nsp):
        y = _overlap_add(y, first + i, k[i], s[i])
    else:
      raise ValueError(f"impl={self.impl!r} not in {IMPLS}")
    return _add_bias(y, bias, g, nsp)


def _dimension_numbers(nsp: int) -> lax.ConvDimensionNumbers:
  sp = "DHW"[-nsp:] if nsp <= 3 else None
  if sp is None:
    raise ValueError("impl='xla' supports up to 3 spatial axes")
  return lax.conv_dimension_numbers(
    (1,) * (nsp + 2), (1,) * (nsp + 2), ("N" + sp + "C", sp + "IO", "N" + sp + "C")
  )


def _per_group(fn, x: Array, kernel: Array, groups: int, shared: bool) -> Array:
  if not groups:
    return fn(x, kernel)
  return jnp.stack([fn(x if shared else x[i], kernel[i]) for i in range(groups)], axis=0)


def _xla_conv(x: Array, kernel: Array, s: tuple[int, ...], groups: int, shared: bool,
              precision: Any) -> Array:
  nsp = len(s)
  if nsp == 0:
    return _matmul(x, kernel, groups, shared, precision)

  def conv(xi, ki):
    return lax.conv_general_dilated(xi, ki, s, "VALID", dimension_numbers=_dimension_numbers(nsp),
                                    precision=precision)

  return _per_group(conv, x, kernel, groups, shared)


def _xla_conv_transpose(x: Array, kernel: Array, s: tuple[int, ...], groups: int, shared: bool,
                        precision: Any) -> Array:
  nsp = len(s)
  if nsp == 0:
    return _matmul(x, kernel, groups, shared, precision)

  def convt(xi, ki):
    return lax.conv_transpose(xi, ki, s, "VALID", dimension_numbers=_dimension_numbers(nsp),
                              precision=precision)

  return _per_group(convt, x, kernel, groups, shared)


class BatchNorm(nn.Module):
  """BatchNorm over batch and spatial axes; per-group statistics and affine with groups > 0."""

  groups: int = 0
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool) -> Array:
    axis = (0, -1) if self.groups else -1
    one_channel = x.shape[-1] == 1
    if one_channel:
      # A size-1 channel axis last makes XLA's CPU reductions walk a stride of one element: the
      # statistics and their gradient took 2.8 ms instead of 0.13 on a tutorial generator's
      # output. Moving that axis next to the group axis is free (a bitcast), and the variables
      # keep their shapes ((G, 1) or (1,)).
      lead = 1 if self.groups else 0
      x = x.reshape(x.shape[:lead] + (1,) + x.shape[lead:-1])
      axis = (0, 1) if self.groups else 0
    y = nn.BatchNorm(
      use_running_average=not train, axis=axis, momentum=self.momentum, epsilon=self.epsilon,
      dtype=self.dtype, param_dtype=self.param_dtype, name="bn",
    )(x)
    if one_channel:
      y = y.reshape(y.shape[:lead] + y.shape[lead + 1:] + (1,))
    return y


class LayerNorm(nn.Module):
  """Layer norm over all axes but batch (and group) with a per-channel (per-group) scale and bias.

  This is the normalization of the ISMIR 2019 tutorial discriminator: statistics over the whole
  feature map of one sample, affine parameters per channel. Statistics are computed in float32.
  """

  groups: int = 0
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    g = (self.groups,) if self.groups else ()
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones_init(), g + (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros_init(), g + (c,), self.param_dtype)
    # Statistics over all axes but batch (and group), in x's own shape: reshaping to one row per
    # sample and back puts bitcasts between shapes inside XLA's fusions, which the CPU emitter
    # turns into slow scalar code (measured 3-4x slower forward + backward).
    axes = tuple(range(2 if self.groups else 1, x.ndim))
    xf = x.astype(jnp.float32)
    # One pass for both moments, var = E[x^2] - E[x]^2 (flax's use_fast_variance): XLA reads x
    # once for the two sums, forward and backward (-6 % on a tutorial train step on CPU).
    mean = xf.mean(axis=axes, keepdims=True)
    var = jnp.maximum(jnp.square(xf).mean(axis=axes, keepdims=True) - jnp.square(mean), 0.0)
    y = (xf - mean) * lax.rsqrt(var + self.epsilon)
    shape = g + (1,) * (x.ndim - 1 - len(g)) + (c,)
    y = y * scale.reshape(shape).astype(jnp.float32) + bias.reshape(shape).astype(jnp.float32)
    return y.astype(self.dtype or x.dtype)

