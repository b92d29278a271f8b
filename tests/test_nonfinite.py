"""train.nonfinite: the checked step on a toy function, and each mode on a tiny run with a NaN
injected at a chosen step ($JAXGAN_FAULT_NAN_STEP)."""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxgan import cli, nonfinite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
# One shape of run for every test here, so that they share compilations.
RUN = ["--quiet", "--config.train.num_steps=8", "--config.train.ckpt_every=4",
       "--config.train.log_every=2"]


def _toy_step(state, batch):
  w = state["w"] + batch["x"]
  new = {"step": state["step"] + 1, "w": w, "count": state["count"] + 1,
         "rng": state["rng"] + 1}
  return new, {"loss": jnp.sum(w), "lr": jnp.float32(0.1), "n": jnp.int32(1)}


def _run_toy(mode, xs):
  guard = nonfinite.Guard(_toy_step, mode)
  step = jax.jit(guard)
  state = {"step": jnp.int32(0), "w": jnp.zeros([3]), "count": jnp.int32(0),
           "rng": jnp.uint32(7)}
  health = nonfinite.new_health()
  for x in xs:
    state, metrics, health = step(state, {"x": jnp.asarray(x, jnp.float32)}, health)
  return guard, jax.device_get(state), jax.device_get(metrics), nonfinite.host(health)


def test_skip_drops_exactly_the_non_finite_updates():
  xs = [[1, 1, 1], [np.nan, 0, 0], [np.inf, 0, 0], [2, 2, 2]]
  guard, state, metrics, health = _run_toy("skip", xs)
  np.testing.assert_array_equal(state["w"], [3, 3, 3])   # steps 2 and 3 left no trace
  assert int(state["count"]) == 2                        # an int leaf is kept back too
  assert int(state["step"]) == 4 and int(state["rng"]) == 11   # counter and key go on
  assert int(health["skips"]) == 2 and int(health["run"]) == 0
  assert int(health["max_run"]) == 2
  assert int(metrics["nonfinite_skips"]) == 2
  assert guard.describe(health) == "step 2: loss = nan"


def test_stop_and_rollback_steps_keep_the_first_non_finite_step():
  xs = [[1, 1, 1], [1, 1, 1], [np.inf, 0, 0], [np.nan, 0, 0]]
  for mode in ("stop", "rollback"):
    guard, state, metrics, health = _run_toy(mode, xs)
    assert np.isnan(state["w"][0])                      # no update is held back
    assert guard.describe(health) == "step 3: loss = inf"
    assert "nonfinite_skips" not in metrics
    shown, carried = nonfinite.split_metrics(metrics)
    assert set(shown) == {"loss", "lr", "n"} and int(carried["first_step"]) == 3
  _, _, _, health = _run_toy("stop", xs[:2])
  assert int(health["first_step"]) == -1


def test_weights_that_turn_non_finite_are_named():
  def step_fn(state, batch):
    del batch
    new = dict(state, step=state["step"] + 1, g=state["g"] * 1e30)
    return new, {"loss": jnp.float32(0.0)}

  guard = nonfinite.Guard(step_fn, "stop")
  state = {"step": jnp.int32(0), "g": jnp.ones([2]) * 1e20}
  _, _, health = jax.jit(guard)(state, {}, nonfinite.new_health())
  assert guard.describe(nonfinite.host(health)) == (
      "step 1: the 'g' weights are not finite")


def _checkpoints(workdir):
  """{step: True if every floating value of that checkpoint is finite}."""
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  out = {}
  for step in manager.all_steps():
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    leaves = [np.asarray(x) for x in jax.tree.leaves(state["state"])]
    out[step] = all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.inexact))
  manager.close()
  return out


def test_stop_names_the_step_and_keeps_the_finite_checkpoints(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(nonfinite.FAULT_ENV, "6")
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN,
                   "--config.train.keep_ckpts=1"])
  err = capsys.readouterr().err.strip()
  assert code == 1
  assert len(err.splitlines()) == 1, err
  assert "non-finite values at step 6: g_loss = nan; stopped (train.nonfinite=stop)" in err
  assert f"step 4 in {tmp_path / 'checkpoints'}" in err
  # Found at step 8 (a checkpoint step) and not saved: with keep_ckpts=1 step 4 stays.
  assert _checkpoints(tmp_path) == {4: True}
  assert not (tmp_path / "train.lock").exists()


def test_skip_drops_the_step_and_finishes(tmp_path, monkeypatch, caplog):
  monkeypatch.setenv(nonfinite.FAULT_ENV, "6")
  with caplog.at_level(logging.WARNING, logger="jaxgan"):
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN,
                     "--config.train.nonfinite=skip"]) == 0
  assert "skipped 1 non-finite step(s) so far, the first at step 6: g_loss = nan" in caplog.text
  assert _checkpoints(tmp_path) == {4: True, 8: True}


def test_skip_stops_after_max_skips_in_a_row(tmp_path, capsys):
  # A learning rate of 1e12 gives NaN gradients from the first step on: every step skipped.
  code = cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN,
                   "--config.train.nonfinite=skip", "--config.train.nonfinite_max_skips=3",
                   "--config.g_optim.learning_rate=1e12", "--config.d_optim.learning_rate=1e12"])
  err = capsys.readouterr().err.strip()
  assert code == 1
  assert "non-finite steps in a row" in err and "train.nonfinite_max_skips=3" in err
  assert "the first at step 1:" in err and "No checkpoint was written." in err
  assert _checkpoints(tmp_path) == {}


def test_rollback_restores_the_last_checkpoint_at_lower_learning_rates(tmp_path, monkeypatch,
                                                                      caplog):
  monkeypatch.setenv(nonfinite.FAULT_ENV, "6")
  with caplog.at_level(logging.INFO, logger="jaxgan"):
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN,
                     "--config.train.nonfinite=rollback"]) == 0
  assert ("non-finite values at step 6: g_loss = nan: rolling back to the checkpoint of step 4 "
          "with learning rates x0.5 (g 0.0005, d 0.0005)") in caplog.text
  assert f"resumed from {tmp_path / 'checkpoints'} at step 4" in caplog.text
  assert _checkpoints(tmp_path) == {4: True, 8: True}
  record = json.loads((tmp_path / "rollbacks.json").read_text())
  assert record["lr_factor"] == 0.5
  assert [(e["at"], e["restored_step"]) for e in record["events"]] == [
      ("step 6: g_loss = nan", 4)]
  # Resuming later keeps the lowered learning rates.
  monkeypatch.delenv(nonfinite.FAULT_ENV)
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="jaxgan"):
    assert cli.main(["train", "--config", TINY, "--workdir", str(tmp_path), *RUN[:1],
                     "--config.train.num_steps=10", *RUN[2:],
                     "--config.train.nonfinite=rollback"]) == 0
  assert "learning rates x0.5 after earlier rollbacks" in caplog.text
  assert max(_checkpoints(tmp_path)) == 10


def test_fault_step_must_be_a_number(monkeypatch):
  monkeypatch.setenv(nonfinite.FAULT_ENV, "six")
  with pytest.raises(ValueError, match="must be a step number"):
    nonfinite.fault_step()
  monkeypatch.setenv(nonfinite.FAULT_ENV, " 6 ")
  assert nonfinite.fault_step() == 6


def test_the_voices_engine_gets_the_same_check():
  from jaxgan import config as config_lib, sharding, voicegan  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config(TINY)
  config.model = voicegan.model_config()
  config.model.update(features=16, layers=1, heads=2, z_size=4, critic_features=8,
                      critic_layers=1)
  config.data.mono_tracks = (0, 1)
  config.loss.adv_weight = 0.5   # with the critic, so that "d" is in the state too
  config_lib.validate(config)
  engine = voicegan.VoiceEngine(config, sharding.make_mesh(devices=jax.devices()[:1]))
  step = engine.jit(nonfinite.Guard(engine.train_step, "skip"))
  rng = np.random.default_rng(0)
  shape = (1, config.train.global_batch) + config_lib.data_shape(config)
  batch = {"pianoroll": jnp.asarray((rng.random(shape) < 0.05).astype(np.uint8)),
           "style": jnp.zeros(shape[:2], jnp.int32)}
  before = jax.device_get(engine.init(jax.random.PRNGKey(0)))
  state, metrics, health = step(jax.tree.map(jnp.asarray, before), batch,
                                nonfinite.new_health(poison_at=1))
  after = jax.device_get(state)
  assert int(after["step"]) == 1 and int(metrics["nonfinite_skips"]) == 1
  for key in ("g", "d", "g_opt", "d_opt", "g_ema"):
    for a, b in zip(jax.tree.leaves(before[key]), jax.tree.leaves(after[key])):
      np.testing.assert_array_equal(a, b)
  state, metrics, health = step(state, batch, health)   # step 2 is not poisoned
  assert int(metrics["nonfinite_skips"]) == 1 and int(health["run"]) == 0
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before["g"]), jax.tree.leaves(jax.device_get(state["g"]))))
