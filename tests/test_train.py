"""The engine: sharding invariance, determinism, exact resume, checkpoints across topologies."""

import os

import jax
import numpy as np
import pytest

from jaxgan import checkpoint as ckpt_lib
from jaxgan import config as config_lib
from jaxgan import gan, runtime, sharding, train
from jaxgan.gan import step as step_lib
from jaxgan.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def tiny(**overrides):
  return config_lib.load_config(TINY, [(k, str(v)) for k, v in overrides.items()])


def _local_batches(config, n, start=0):
  ds = pipeline.make_dataset(config, start_step=start, process_index=0, process_count=1)
  return [b for _, b in zip(range(n), ds.as_numpy_iterator())]


def _run(engine, batches, seed=0):
  state = engine.init(jax.random.PRNGKey(seed))
  place = sharding.batch(engine.mesh, leading=1)
  metrics = None
  for b in batches:
    state, metrics = engine.step(state, {k: jax.device_put(v, place) for k, v in b.items()})
  return jax.device_get(state), jax.device_get(metrics)


def _leaves(tree):
  return jax.tree.leaves(tree)


# Adam turns the rounding noise of a (mathematically) zero gradient, e.g. of a bias followed by
# a norm layer, into full-size steps; SGD keeps the comparison about the maths of sharding.
SGD = {"g_optim.name": "sgd", "d_optim.name": "sgd"}


def test_one_device_equals_eight_devices():
  config = tiny(**SGD)
  batches = _local_batches(config, 3)
  one = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  eight = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:8]))
  s1, m1 = _run(one, batches)
  s8, m8 = _run(eight, batches)
  for a, b in zip(_leaves(s1["g"]) + _leaves(s1["d"]), _leaves(s8["g"]) + _leaves(s8["d"])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(m1["d_loss"], m8["d_loss"], rtol=1e-4, atol=1e-5)


def test_fsdp_matches_data_parallel():
  config = tiny(**{"train.fsdp_min_size": 1}, **SGD)
  batches = _local_batches(config, 2)
  dp = gan.Engine(config, sharding.make_mesh(8, 1))
  fsdp = gan.Engine(config, sharding.make_mesh(2, 4))
  # Some weight really is split over the fsdp axis.
  specs = [s.spec for s in jax.tree.leaves(fsdp.state_sharding["g"])]
  assert any("fsdp" in tuple(spec) for spec in specs)
  s_dp, _ = _run(dp, batches)
  s_fsdp, _ = _run(fsdp, batches)
  for a, b in zip(_leaves(s_dp["g"]), _leaves(s_fsdp["g"])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_same_seed_same_parameters_bitwise():
  config = tiny()
  batches = _local_batches(config, 20)
  engine = gan.Engine(config, sharding.make_mesh())
  a, _ = _run(engine, batches)
  b, _ = _run(engine, batches)
  for x, y in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(x, y)
  c, _ = _run(engine, batches, seed=1)
  assert not all(np.array_equal(x, y) for x, y in zip(_leaves(a["g"]), _leaves(c["g"])))


def test_critic_loop_runs_n_critic_updates():
  config = tiny(**{"loss.n_critic": 3})
  engine = gan.Engine(config, sharding.make_mesh())
  batches = _local_batches(config, 1)
  assert batches[0]["pianoroll"].shape[:2] == (3, 8)
  state, metrics = _run(engine, batches)
  assert int(metrics["n_critic"]) == 3
  # Adam's step count in the D optimizer state counts every D update.
  counts = [x for x in _leaves(state["d_opt"]) if np.asarray(x).dtype == np.int32]
  assert counts and all(int(c) == 3 for c in counts)


def test_resume_equals_uninterrupted_run(tmp_path):
  config10 = tiny(**{"train.num_steps": 10, "train.ckpt_every": 5})
  config20 = tiny(**{"train.num_steps": 20, "train.ckpt_every": 5})
  train.train_and_evaluate(config10, str(tmp_path / "resumed"), progress=False)
  resumed = train.train_and_evaluate(config20, str(tmp_path / "resumed"), progress=False)
  straight = train.train_and_evaluate(config20, str(tmp_path / "straight"), progress=False)
  assert int(resumed["step"]) == int(straight["step"]) == 20
  for x, y in zip(_leaves(jax.device_get(resumed)), _leaves(jax.device_get(straight))):
    np.testing.assert_array_equal(x, y)


def test_checkpoint_restores_on_another_device_count_and_skips_corrupt(tmp_path):
  config = tiny(**{"train.num_steps": 10, "train.ckpt_every": 5})
  final = jax.device_get(train.train_and_evaluate(config, str(tmp_path), progress=False))
  one = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), every=5, keep=3)
  assert ckpt.steps() == [5, 10]
  state, step = ckpt.restore_latest(one.abstract_with_shardings())
  assert step == 10
  assert state["g"] and all(len(x.sharding.device_set) == 1 for x in _leaves(state))
  for x, y in zip(_leaves(jax.device_get(state)), _leaves(final)):
    np.testing.assert_array_equal(x, y)
  ckpt.close()
  # Garble every file of step 10: it is refused (set aside) and step 5 is used instead.
  for root, _, files in os.walk(tmp_path / "checkpoints" / "10"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), every=5, keep=3)
  state, step = ckpt.restore_latest(one.abstract_with_shardings())
  assert step == 5
  assert os.path.isdir(tmp_path / "checkpoints" / "10.corrupt")
  assert int(jax.device_get(state["step"])) == 5
  ckpt.close()


def test_warm_start_takes_weights_with_fresh_optimizer(tmp_path):
  config = tiny(**{"train.num_steps": 5, "train.ckpt_every": 5})
  source = jax.device_get(train.train_and_evaluate(config, str(tmp_path / "a"), progress=False))
  warm = tiny(**{"train.num_steps": 5, "train.init_from": str(tmp_path / "a")})
  engine = gan.Engine(warm, sharding.make_mesh())
  state = engine.init(jax.random.PRNGKey(3))
  state = jax.device_get(engine.warm_start(state, str(tmp_path / "a")))
  for x, y in zip(_leaves(state["g"]), _leaves(source["g"])):
    np.testing.assert_array_equal(x, y)
  assert int(state["step"]) == 0
  counts = [x for x in _leaves(state["g_opt"]) if np.asarray(x).dtype == np.int32]
  assert all(int(c) == 0 for c in counts)


def test_bad_batch_for_devices_fails_before_compiling(tmp_path):
  config = tiny(**{"train.global_batch": 12})
  with pytest.raises(config_lib.ConfigError, match="train.global_batch=12 is not divisible"):
    train.train_and_evaluate(config, str(tmp_path), progress=False)


def test_checkpoint_from_one_device_restores_on_eight(tmp_path):
  config = tiny(**{"train.fsdp_min_size": 1})
  one = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  state = one.init(jax.random.PRNGKey(5))
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), every=1, keep=2)
  ckpt.save(1, state, force=True)
  ckpt.close()
  eight = gan.Engine(config, sharding.make_mesh(2, 4))  # FSDP-sharded on the way back in
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), every=1, keep=2)
  restored, step = ckpt.restore_latest(eight.abstract_with_shardings())
  ckpt.close()
  assert step == 1
  assert any(len(x.sharding.device_set) == 8 and "fsdp" in tuple(x.sharding.spec)
             for x in _leaves(restored["g"]))
  for x, y in zip(_leaves(jax.device_get(restored)), _leaves(jax.device_get(state))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n_critic", [1, 3])
def test_reuse_fake_updates_g_on_the_last_critic_fakes(n_critic):
  """loss.reuse_fake: the G update is the gradient of the G loss, under the D just updated, at
  the fakes (same latents, same batch statistics) of the last critic update, as in the tutorial."""
  config = tiny(**{"loss.reuse_fake": True, "loss.n_critic": n_critic}, **SGD)
  engine = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  batch = _local_batches(config, 1)[0]
  state = engine.init(jax.random.PRNGKey(3))
  new, metrics = engine.step(state, batch)
  new = jax.device_get(new)
  assert int(metrics["n_critic"]) == n_critic
  counts = [x for x in _leaves(new["d_opt"]) if np.asarray(x).dtype == np.int32]
  assert counts and all(int(c) == n_critic for c in counts)

  # The same step by hand: the critic updates, then G's gradient at the last update's fakes.
  state = jax.device_get(engine.init(jax.random.PRNGKey(3)))
  real = np.where(batch["pianoroll"] > 0, 1.0, -1.0).astype(np.float32)
  style = batch["style"].astype(np.int32)
  d_rng = step_lib.step_keys(state["rng"]).critic
  slope = engine.slope(state["step"])
  d, d_opt = state["d"], state["d_opt"]
  critic_update = jax.jit(engine.critic_update)
  for i in range(n_critic):
    key = jax.random.fold_in(d_rng, i)
    d, d_opt, _ = critic_update(state["g"], state["g_stats"], d, d_opt, real[i], style[i], key,
                                slope)

  def g_loss(g):
    fake, stats = step_lib.critic_fakes(engine, g, state["g_stats"], real[-1], style[-1], key,
                                        slope)
    return -engine.discriminate(d, fake, style[-1]).mean(), stats

  (loss, stats), grads = jax.jit(jax.value_and_grad(g_loss, has_aux=True))(state["g"])
  lr = config.g_optim.learning_rate
  for got, p, g in zip(_leaves(new["g"]), _leaves(state["g"]), _leaves(grads)):
    np.testing.assert_allclose(got, p - lr * g, rtol=1e-4, atol=1e-6)
  for got, want in zip(_leaves(new["d"]), _leaves(d)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  for got, want in zip(_leaves(new["g_stats"]), _leaves(stats)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["g_loss"], loss, rtol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"conditioning.infill": 0.5}])
def test_cpu_sampler_pieces_compute_what_one_batch_does(overrides):
  config = tiny(**overrides)
  one = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  eight = gan.Engine(config, sharding.make_mesh(devices=jax.devices()[:8]))
  assert [one.sample_chunks(n) for n in (256, 4096, 96, 64, 40, 8)] == [8, 8, 2, 2, 1, 1]
  assert eight.sample_chunks(256) == 1   # a multi-device mesh keeps the batch whole
  key = jax.random.PRNGKey(3)
  pieces = np.asarray(one.sample_ema(one.init(jax.random.PRNGKey(0)), key, 64))
  whole = np.asarray(eight.sample_ema(eight.init(jax.random.PRNGKey(0)), key, 64))
  assert pieces.shape == whole.shape == (64,) + one.data_shape and pieces.dtype == bool
  assert 0.001 < whole.mean() < 0.999
  # Same maths; different matmul blocking may flip a cell sitting exactly on the threshold.
  assert np.mean(pieces != whole) < 1e-4


def test_cpu_kernels_compile_at_llvm_o1_unless_xla_flags_choose():
  level = {"xla_backend_optimization_level": 1}
  assert runtime.compiler_options("cpu", "") == level
  assert runtime.compiler_options("cpu", "--xla_force_host_platform_device_count=8") == level
  assert runtime.compiler_options("cpu", "--xla_backend_optimization_level=3") is None
  assert runtime.compiler_options("gpu", "") is None and runtime.compiler_options("tpu", "") is None
  engine = gan.Engine(tiny(), sharding.make_mesh(devices=jax.devices()[:1]))
  assert engine.compiler_options == runtime.compiler_options("cpu")
  # The option reaches XLA: an unknown name would be refused when the step compiles.
  bad = jax.jit(lambda x: x + 1, compiler_options={"xla_no_such_option": 1})
  with pytest.raises(Exception, match="xla_no_such_option"):
    bad.lower(np.ones(3, np.float32)).compile()
  np.testing.assert_array_equal(engine.jit(lambda x: x + 1)(np.ones(3, np.float32)), 2.0)
