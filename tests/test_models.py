"""Models: fast layers against flax's convolutions, parameter counts, shapes, binarization."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxgan.models import binary, layers, musegan, presets
from jaxgan.models import PRESET_SHAPES, build, count_params, init_shapes, model_config

KEY = jax.random.PRNGKey(0)
TINY = PRESET_SHAPES["tiny"]


def _close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


# ------------------------------------------------------------------------------------- layers

# (kernel, strides, input spatial shape)
CASES = [
  ((4, 1, 1), (4, 1, 1), (1, 1, 1)),
  ((1, 4, 1), (1, 4, 1), (3, 2, 5)),
  ((1, 1, 12), (1, 1, 12), (2, 3, 2)),
  ((2, 3, 4), (2, 3, 4), (2, 2, 3)),
  ((3,), (3,), (5,)),
  ((2, 2), (2, 2), (3, 4)),
]
OVERLAP = [
  ((1, 1, 3), (1, 1, 1), (2, 3, 4)),
  ((1, 4, 3), (1, 4, 2), (2, 2, 3)),
  ((3,), (2,), (6,)),
  ((2, 3), (1, 2), (4, 5)),
]


def _perturb(v):
  # Distinct values everywhere, so a wrong kernel or bias layout shows.
  return jax.tree_util.tree_map(lambda a: a + 0.1 * jnp.arange(a.size).reshape(a.shape), v)


def _check_against_flax(ref: nn.Module, fast: nn.Module, xla: nn.Module, x: jax.Array) -> None:
  # One jit per case: eager flax would compile every primitive separately, which is slower.
  v = _perturb(jax.jit(ref.init)(KEY, x))
  assert jax.tree_util.tree_map(jnp.shape, jax.eval_shape(fast.init, KEY, x)) == (
    jax.tree_util.tree_map(jnp.shape, v))
  want, got, got_xla = jax.jit(lambda v, x: (ref.apply(v, x), fast.apply(v, x),
                                             xla.apply(v, x)))(v, x)
  _close(got, want)
  _close(got_xla, want)


@pytest.mark.parametrize("kernel,strides,spatial", CASES + OVERLAP)
def test_conv_transpose_equals_flax(kernel, strides, spatial):
  x = jax.random.normal(KEY, (2,) + spatial + (3,))
  _check_against_flax(nn.ConvTranspose(5, kernel, strides, padding="VALID"),
                      layers.ConvTranspose(5, kernel, strides),
                      layers.ConvTranspose(5, kernel, strides, impl="xla"), x)


@pytest.mark.parametrize("kernel,strides,spatial", CASES + OVERLAP)
def test_conv_equals_flax(kernel, strides, spatial):
  # `spatial` output positions per axis, plus a remainder the VALID windows must drop.
  shape = tuple((n - 1) * s + k + (1 if s > 1 else 0) for n, k, s in
                zip(spatial, kernel, strides))
  x = jax.random.normal(KEY, (2,) + shape + (3,))
  _check_against_flax(nn.Conv(5, kernel, strides, padding="VALID"),
                      layers.Conv(5, kernel, strides),
                      layers.Conv(5, kernel, strides, impl="xla"), x)


@pytest.mark.parametrize("cls,ref_cls", [(layers.Conv, nn.Conv),
                                         (layers.ConvTranspose, nn.ConvTranspose)])
@pytest.mark.parametrize("shared", [False, True])
def test_grouped_layers_equal_one_flax_layer_per_group(cls, ref_cls, shared):
  g = 3
  x = jax.random.normal(KEY, (g, 2, 2, 8, 7, 2))
  xin = x[0] if shared else x
  m = cls(4, (1, 2, 3), (1, 2, 2), groups=g)
  xla = cls(4, (1, 2, 3), (1, 2, 2), groups=g, impl="xla")
  ref = ref_cls(4, (1, 2, 3), (1, 2, 2), padding="VALID")
  v = _perturb(jax.jit(m.init)(KEY, xin))
  assert v["params"]["kernel"].shape == (g, 1, 2, 3, 2, 4)

  @jax.jit
  def run(v, xin):
    wants = []
    for i in range(g):
      p = {"params": {"kernel": v["params"]["kernel"][i], "bias": v["params"]["bias"][i]}}
      wants.append(ref.apply(p, xin if shared else xin[i]))
    return m.apply(v, xin), xla.apply(v, xin), jnp.stack(wants)

  y, y_xla, want = run(v, xin)
  _close(y, want)
  _close(y_xla, want)


def test_grouped_dense_and_fan_in():
  m = layers.Conv(6, (), groups=4)
  x = jax.random.normal(KEY, (4, 3, 5))
  v = _perturb(jax.jit(m.init)(KEY, x))
  w = v["params"]["kernel"]
  assert w.shape == (4, 5, 6)
  _close(jax.jit(m.apply)(v, x), jnp.einsum("gbi,gio->gbo", x, w) + v["params"]["bias"][:, None])
  # The group axis must not count towards fan-in: std ~ 1/sqrt(5), not 1/sqrt(20).
  big = jax.jit(layers.Conv(256, (), groups=4).init)(KEY, x)["params"]["kernel"]
  assert 0.7 / np.sqrt(5) < float(big.std()) < 1.3 / np.sqrt(5)


def test_layer_norm_statistics_per_sample_and_group():
  x = 3.0 + 2.0 * jax.random.normal(KEY, (3, 2, 4, 5, 6))
  ln = layers.LayerNorm(groups=3)
  v = jax.jit(ln.init)(KEY, x)
  assert v["params"]["scale"].shape == (3, 6)
  y = jax.jit(ln.apply)(v, x)
  _close(y.mean(axis=(2, 3, 4)), jnp.zeros((3, 2)), 1e-4)
  _close(y.std(axis=(2, 3, 4)), jnp.ones((3, 2)), 1e-3)
  # One-pass moments stay accurate when the mean is far from zero relative to the spread.
  x = 20.0 + jax.random.normal(KEY, (3, 2, 4, 5, 6))
  mean = x.mean(axis=(2, 3, 4), keepdims=True)
  ref = (x - mean) / jnp.sqrt(jnp.square(x - mean).mean(axis=(2, 3, 4), keepdims=True) + 1e-5)
  _close(jax.jit(ln.apply)(v, x), ref, 2e-3)


@pytest.mark.parametrize("groups,channels", [(0, 1), (0, 3), (4, 1), (4, 3)])
def test_batch_norm_equals_flax_including_one_channel(groups, channels):
  """The one-channel layout trick changes neither the maths nor the variables' names/shapes."""
  shape = ((groups,) if groups else ()) + (5, 2, 3, channels)
  x = 1.0 + 2.0 * jax.random.normal(KEY, shape)
  axis = (0, -1) if groups else -1
  ours, ref = layers.BatchNorm(groups=groups), nn.BatchNorm(axis=axis, momentum=0.9)
  v = ours.init(KEY, x, train=False)
  ref_v = {"params": v["params"]["bn"], "batch_stats": v["batch_stats"]["bn"]}
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(
      jnp.shape, {"params": {"bn": ref_v["params"]}, "batch_stats": {"bn": ref_v["batch_stats"]}})
  params = {"bn": {"scale": 0.5 + jnp.arange(np.prod(v["params"]["bn"]["scale"].shape),
                                             dtype=jnp.float32).reshape(
                                                 v["params"]["bn"]["scale"].shape),
                   "bias": jnp.full(v["params"]["bn"]["bias"].shape, 0.25)}}
  y, upd = ours.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                      mutable=["batch_stats"])
  y_ref, upd_ref = ref.apply({"params": params["bn"], "batch_stats": ref_v["batch_stats"]}, x,
                             use_running_average=False, mutable=["batch_stats"])
  _close(y, y_ref, 1e-5)
  _close(upd["batch_stats"]["bn"]["mean"], upd_ref["batch_stats"]["mean"], 1e-6)
  _close(upd["batch_stats"]["bn"]["var"], upd_ref["batch_stats"]["var"], 1e-5)
  # Eval mode uses the running statistics.
  stats = {"bn": {"mean": jnp.full_like(upd["batch_stats"]["bn"]["mean"], 1.0),
                  "var": jnp.full_like(upd["batch_stats"]["bn"]["var"], 4.0)}}
  y_eval = ours.apply({"params": params, "batch_stats": stats}, x, train=False)
  scale = params["bn"]["scale"].reshape(((groups,) if groups else ()) + (1,) * 3 + (channels,))
  _close(y_eval, (x - 1.0) / jnp.sqrt(4.0 + 1e-5) * scale + 0.25, 1e-5)


# ------------------------------------------------------------------------ parameter counts


def test_tutorial_param_counts_exact():
  gv, dv = init_shapes(model_config("tutorial"), PRESET_SHAPES["tutorial"])
  assert count_params(gv) == 313_951
  assert count_params(dv) == 204_321
  # BatchNorm running statistics are state, not parameters.
  assert "batch_stats" in gv


def test_lpd5_and_jsb_sizes():
  cfg = model_config("lpd5")
  gv, dv = init_shapes(cfg, PRESET_SHAPES["lpd5"])
  assert 2.4e6 < count_params(gv) < 2.8e6
  assert 1.2e6 < count_params(dv) < 1.5e6
  assert presets.latent_size(cfg, PRESET_SHAPES["lpd5"]) == 32 + 32 + 5 * (32 + 32)
  gv, dv = init_shapes(model_config("jsb"), PRESET_SHAPES["jsb"])
  assert count_params(gv) > 0 and count_params(dv) > 0


def test_tiny_is_tiny():
  gv, dv = init_shapes(model_config("tiny"), TINY)
  assert 1_000 < count_params(gv) < 10_000
  assert 1_000 < count_params(dv) < 10_000


def test_params_are_float32_under_bf16():
  cfg = model_config("tiny")
  cfg.dtype = "bfloat16"
  gv, dv = init_shapes(cfg, TINY)
  for leaf in jax.tree_util.tree_leaves((gv, dv)):
    assert leaf.dtype == jnp.float32


# ------------------------------------------------------------------------ forward passes


@functools.lru_cache(maxsize=None)
def _tiny(binarize: str = "none", dtype: str = "float32"):
  cfg = model_config("tiny")
  cfg.binarize = binarize
  cfg.dtype = dtype
  gen, disc = build(cfg, TINY)
  z = jax.random.normal(KEY, (4, gen.latent_size))
  # Jitted init: eager flax compiles every primitive on its own, which is far slower.
  gv = jax.jit(functools.partial(gen.init, train=False))({"params": KEY, "binary": KEY}, z)
  dv = jax.jit(disc.init)(KEY, jnp.zeros((4,) + TINY))
  return gen, disc, gv, dv, z


def test_tiny_forward_shapes_ranges_and_batch_stats():
  gen, disc, gv, dv, z = _tiny()

  @jax.jit
  def run(gv, dv, z):
    x, upd = gen.apply(gv, z, train=True, mutable=["batch_stats"])
    return x, upd, disc.apply(dv, x), disc.apply(dv, x[:1])

  x, upd, logits, first = run(gv, dv, z)
  assert x.shape == (4,) + TINY and x.dtype == jnp.float32
  assert float(jnp.abs(x).max()) <= 1.0
  changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), upd["batch_stats"],
                                   gv["batch_stats"])
  assert any(jax.tree_util.tree_leaves(changed))
  assert logits.shape == (4,) and logits.dtype == jnp.float32
  # No batch coupling in D: a sample's logit does not depend on the rest of the batch.
  _close(first, logits[:1], 1e-5)


def test_bf16_compute_gives_float32_outputs():
  gen, disc, gv, dv, z = _tiny(dtype="bfloat16")
  x, logits = jax.jit(lambda gv, dv, z: (lambda x: (x, disc.apply(dv, x)))(
    gen.apply(gv, z, train=False)))(gv, dv, z)
  assert x.dtype == jnp.float32 and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_hybrid_latent_parts_reach_the_right_tracks():
  gen, _, gv, _, z = _tiny()
  parts = musegan.hybrid_latent_parts(2, gen.z_shared, gen.z_temporal, gen.z_private,
                                      gen.z_private_temporal)
  assert parts["private_temporal"][1] == gen.latent_size
  f = jax.jit(lambda z: gen.apply(gv, z, train=False))
  base = f(z)
  # Track 0's private latents only move track 0 (eval mode: no batch statistics coupling).
  for name, width in (("private", gen.z_private), ("private_temporal", gen.z_private_temporal)):
    s = parts[name][0]
    out = f(z.at[:, s:s + width].add(3.0))
    assert float(jnp.abs(out[..., 0] - base[..., 0]).max()) > 0
    _close(out[..., 1], base[..., 1], 0)
  # Inter-track latents move every track.
  for name in ("shared", "temporal"):
    s, e = parts[name]
    out = f(z.at[:, s:e].add(3.0))
    for t in range(2):
      assert float(jnp.abs(out[..., t] - base[..., t]).max()) > 0


def test_tutorial_arch_runs_on_other_shapes():
  cfg = model_config("tutorial")
  cfg.g_channels = (8, 8, 8, 8, 4)
  cfg.d_channels = (4, 4, 8, 8, 8, 8, 8)
  cfg.z_shared = 16
  shape = (2, 8, 36, 3)
  gen, disc = build(cfg, shape)
  z = jax.random.normal(KEY, (2, 16))

  @jax.jit
  def run(z):
    gv = gen.init(KEY, z, train=False)
    x, _ = gen.apply(gv, z, train=True, mutable=["batch_stats"])
    dv = disc.init(KEY, x)
    return x, disc.apply(dv, x)

  x, logits = run(z)
  assert x.shape == (2,) + shape
  assert logits.shape == (2,)


def test_binarize_modes_in_generator():
  gen, _, gv, _, z = _tiny("threshold")
  k1 = jax.random.PRNGKey(1)

  @jax.jit
  def run(gv, z):
    return (gen.apply(gv, z, train=False), gen.apply(gv, z, train=False, binarize="none"),
            gen.apply(gv, z, train=False, binarize="bernoulli", rng=k1),
            gen.apply(gv, z, train=False, binarize="bernoulli", rngs={"binary": k1}))

  x, soft, a, b = run(gv, z)
  assert set(np.unique(np.asarray(x)).tolist()) <= {-1.0, 1.0}
  _close(x, jnp.where(soft > 0, 1.0, -1.0), 0)
  # Stochastic modes take a key, as an argument or through rngs={"binary": key}.
  assert set(np.unique(np.asarray(a)).tolist()) <= {-1.0, 1.0}
  assert a.shape == b.shape
  with pytest.raises(Exception):
    jax.eval_shape(lambda gv, z: gen.apply(gv, z, train=False, binarize="stochastic"), gv, z)


def test_binary_neurons_pass_gradients_to_generator():
  gen, _, gv, _, z = _tiny("deterministic")

  def loss(params):
    x, _ = gen.apply({**gv, "params": params}, z, train=True, slope=2.0,
                     mutable=["batch_stats"])
    return x.sum(), x

  grads, x = jax.jit(jax.grad(loss, has_aux=True))(gv["params"])
  assert set(np.unique(np.asarray(x)).tolist()) <= {-1.0, 1.0}
  total = sum(float(jnp.abs(g).sum()) for g in jax.tree_util.tree_leaves(grads))
  assert np.isfinite(total) and total > 0


# ------------------------------------------------------------------------ binary neurons


@pytest.mark.parametrize("slope", [0.5, 1.0, 3.0])
def test_deterministic_binary_neuron_forward_and_st_gradient(slope):
  a = jnp.linspace(-3.0, 3.0, 13)
  y = binary.deterministic_binary(a, slope)
  _close(y, jnp.where(a > 0, 1.0, -1.0), 0)
  g = jax.grad(lambda v: binary.deterministic_binary(v, slope).sum())(a)
  p = jax.nn.sigmoid(slope * a)
  _close(g, 2.0 * slope * p * (1.0 - p), 1e-6)


def test_stochastic_binary_neuron_mean_and_st_gradient():
  a = jnp.array([-1.0, 0.0, 0.5, 2.0])
  slope = 1.5
  keys = jax.random.split(KEY, 4000)
  ys = jax.vmap(lambda k: binary.stochastic_binary(a, k, slope))(keys)
  assert set(np.unique(np.asarray(ys)).tolist()) <= {-1.0, 1.0}
  p = jax.nn.sigmoid(slope * a)
  _close(ys.mean(0), 2.0 * p - 1.0, 0.06)
  g = jax.grad(lambda v: binary.stochastic_binary(v, KEY, slope).sum())(a)
  _close(g, 2.0 * slope * p * (1.0 - p), 1e-6)


def test_hard_modes_have_no_gradient_and_bernoulli_mean():
  a = jnp.array([-1.0, 0.3, 2.0])
  assert float(jnp.abs(jax.grad(lambda v: binary.threshold(v).sum())(a)).sum()) == 0
  keys = jax.random.split(KEY, 4000)
  ys = jax.vmap(lambda k: binary.activate(a, "bernoulli", rng=k))(keys)
  _close(ys.mean(0), jnp.tanh(a), 0.06)
  _close(binary.binarize_output(jnp.tanh(a), "threshold"), jnp.array([-1.0, 1.0, 1.0]), 0)


# ------------------------------------------------------------------------ validation


@pytest.mark.parametrize("key,value,match", [
  ("binarize", "foo", r"model.binarize='foo' not in \('none', 'threshold'"),
  ("arch", "bar", r"model.arch='bar' not in"),
  ("dtype", "float16", r"model.dtype='float16' not in"),
  ("conv_impl", "cudnn", r"model.conv_impl='cudnn' not in"),
  ("d_norm", "batch", r"model.d_norm='batch' not in"),
  ("g_channels", (4, 4), r"model.g_channels=.* must be 5 ints"),
  ("z_private", -1, r"model.z_private=-1 must be an int >= 0"),
  ("num_styles", 3, r"model.num_styles=3"),
])
def test_config_validation_names_the_key(key, value, match):
  cfg = model_config("tiny")
  cfg[key] = value
  with pytest.raises(ValueError, match=match):
    build(cfg, TINY)


def test_unknown_key_and_bad_shapes():
  cfg = model_config("tiny").to_dict()
  cfg["latnet"] = 3
  with pytest.raises(ValueError, match="unknown model config keys"):
    build(cfg, TINY)
  with pytest.raises(ValueError, match="steps divisible by 4"):
    build(model_config("tutorial"), (4, 18, 72, 5))
  with pytest.raises(ValueError, match="multiple of 12"):
    build(model_config("lpd5"), (4, 48, 80, 5))
  with pytest.raises(ValueError, match="time_strides"):
    cfg = model_config("lpd5")
    cfg.time_strides = (4, 4, 4)
    build(cfg, (4, 48, 84, 5))
  with pytest.raises(ValueError, match="beat_steps"):
    cfg = model_config("lpd5")
    cfg.beat_steps = 5
    build(cfg, (4, 48, 84, 5))
  with pytest.raises(ValueError, match="data_shape"):
    build(model_config("tiny"), (2, 8, 12))
  with pytest.raises(ValueError, match="model preset"):
    model_config("huge")


def test_plans():
  assert musegan.time_plan(48) == (4, 4, 3)
  assert musegan.time_plan(16) == (2, 4, 2)
  assert musegan.pitch_plan(84) == (3, 3, 2)
  assert musegan.pitch_plan(72) == (3, 2, 2)
  assert musegan.pitch_plan(12) == (1, 1, 1)
  for p in (12, 24, 36, 72, 84, 96):
    p0, k, s = musegan.pitch_plan(p)
    assert (p0 - 1) * s + k == p // 12
