"""Keeping the best checkpoint by an eval scalar, and the data-relative default evaluation."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import jax

from jaxgan import cli, config as config_lib, evaluate, gan, sample, sharding
from tests.tiny_run import train_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def _state(k):
  return {"step": jnp.asarray(k, jnp.int32), "w": jnp.full([3], float(k))}


def test_best_keeper_keeps_the_minimum_and_survives_a_restart(tmp_path):
  keeper = evaluate.BestKeeper(str(tmp_path), "eval/gap/mean", "min")
  saved = [keeper.offer(step, _state(step), {"eval/gap/mean": v})
           for step, v in ((10, 3.0), (20, 1.0), (30, 2.0), (40, float("nan")))]
  keeper.close()
  assert saved == [True, True, False, False]
  assert json.loads((tmp_path / "best" / "best.json").read_text()) == {
      "step": 20, "metric": "eval/gap/mean", "value": 1.0}
  again = evaluate.BestKeeper(str(tmp_path), "eval/gap/mean", "min")
  assert not again.offer(50, _state(50), {"eval/gap/mean": 1.5})
  assert again.offer(60, _state(60), {"eval/gap/mean": 0.5})
  state, step = again.checkpointer.restore_latest(
      {"step": jnp.zeros([], jnp.int32), "w": jnp.zeros([3])})
  again.close()
  assert step == 60 and np.asarray(state["w"]).tolist() == [60.0] * 3
  assert sorted(os.listdir(tmp_path / "best" / "checkpoints")) == ["60"]


def test_unknown_metric_lists_the_known_ones(tmp_path):
  keeper = evaluate.BestKeeper(str(tmp_path), "eval/oops", "max")
  with pytest.raises(config_lib.ConfigError, match="eval/oa/mean"):
    keeper.offer(1, _state(1), {"eval/oa/mean": 0.5, "eval/gap/mean": 1.0})
  keeper.close()


def test_best_metric_needs_eval():
  with pytest.raises(config_lib.ConfigError, match="train.eval_every"):
    config_lib.load_config(TINY, ["--config.train.best_metric=eval/oa/mean"])
  with pytest.raises(config_lib.ConfigError, match="train.best_mode"):
    config_lib.load_config(TINY, ["--config.train.best_mode=lowest"])


def test_training_keeps_best_and_sample_reads_it(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  train_tiny(workdir, "--config.train.eval_every=2", "--config.train.eval_num=16",
             "--config.train.best_metric=eval/oa/mean", steps=4)
  best = json.loads(open(os.path.join(workdir, "best", "best.json")).read())
  assert best["step"] in (2, 4) and 0.0 <= best["value"] <= 1.0
  gen = sample.Generator.from_workdir(workdir, best=True)
  assert gen.step == best["step"]
  assert cli.main(["sample", "--workdir", workdir, "--best", "--num", "2",
                   "--out", str(tmp_path / "s")]) == 0
  assert f"checkpoint step {best['step']}" in capsys.readouterr().out
  os.rename(os.path.join(workdir, "best"), os.path.join(workdir, "best.off"))
  with pytest.raises(FileNotFoundError, match="no best checkpoint"):
    sample.Generator.from_workdir(workdir, best=True)


def test_default_eval_measures_the_distance_to_the_data(tmp_path):
  config = config_lib.load_config(TINY, ["--config.train.eval_num=32"])
  engine = gan.Engine(config, sharding.make_mesh(-1, 1))
  state = engine.init(jax.random.PRNGKey(0))
  real = evaluate.eval_windows(config)
  assert real is not None and len(real) == 32
  with_data = evaluate.sample_metrics(engine, state, evaluate.data_reference(config, real))
  alone = evaluate.sample_metrics(engine, state)
  assert "eval/gap/mean" in with_data and "eval/oa/mean" in with_data
  assert not any(k.startswith(("eval/gap", "eval/oa")) for k in alone)
  # An untrained generator is far from the data.
  assert with_data["eval/gap/mean"] > 0.1
  assert 0.0 <= with_data["eval/oa/mean"] <= 1.0


def test_training_and_eval_read_drum_tracks_with_one_spec():
  # Five synthetic tracks stand for LPD-5: track 0 is the drums, for `jaxgan eval` and in-run.
  config = config_lib.load_config(TINY, ["--config.data.num_tracks=5"])
  spec = evaluate.run_spec(config)
  assert spec.drum_tracks == (0,)
  assert spec == evaluate.roll_spec(config, sample.tracks_for(config))
