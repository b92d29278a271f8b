"""Config loading: overrides are typed, and bad keys or values fail before any compilation."""

import os

import pytest

from jaxgan import cli
from jaxgan import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")


def test_overrides_are_typed():
  c = config_lib.load_config(TINY, ["--config.train.global_batch=32", "--config.loss.gp_weight=5",
                                    "--config.data.transpose=3", "--config.loss.kind", "hinge"])
  assert c.train.global_batch == 32
  assert c.loss.gp_weight == 5.0 and isinstance(c.loss.gp_weight, float)
  assert c.data.transpose == 3
  base = config_lib.base_config()
  config_lib.apply_override(base, "data.meter", "(3, 4)")
  assert tuple(base.data.meter) == (3, 4)
  assert c.loss.kind == "hinge"


@pytest.mark.parametrize("override, message", [
    ("--config.train.global_bach=8", "unknown config key 'train.global_bach'; did you mean train.global_batch"),
    ("--config.loss.kind=wasserstein", "loss.kind='wasserstein' is not one of"),
    ("--config.train.global_batch=0", "train.global_batch=0 must be a positive integer"),
    ("--config.train.global_batch=abc", "expected a int"),
    ("--config.train.ema_decay=1.5", "train.ema_decay=1.5 must be in [0, 1)"),
    ("--config.g_optim.name=adagrad", "g_optim"),
    ("--config.data.meter=(7, 16)", "data.steps_per_beat"),
    ("--config.data.num_pitches=200", "data.num_pitches=200"),
])
def test_bad_values_name_the_key(override, message):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.load_config(TINY, [override])
  assert message in str(e.value)


def test_model_values_are_checked():
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.load_config(TINY, ["--config.model.binarize=sometimes"])
  assert "binarize" in str(e.value)


def test_every_shipped_config_loads():
  for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
    if name.endswith(".py") and not name.startswith("_"):
      c = config_lib.load_config(os.path.join(ROOT, "configs", name))
      assert config_lib.data_shape(c)[3] == c.data.num_tracks


def test_split_mode_is_a_key_of_the_run_that_the_cli_flag_sets():
  config = config_lib.load_config(TINY)
  assert config.data.split_mode == "shard"
  with pytest.raises(config_lib.ConfigError, match="data.split_mode='mirror'"):
    config_lib.load_config(TINY, ["--config.data.split_mode=mirror"])
  assert cli._with_split_mode(config, None).data.split_mode == "shard"  # pylint: disable=protected-access
  assert cli._with_split_mode(config, "replicate").data.split_mode == "replicate"  # pylint: disable=protected-access


def test_run_config_round_trips_through_the_workdir(tmp_path):
  config = config_lib.load_config(TINY, ["--config.data.split_mode=replicate"])
  config_lib.save_run_config(config, str(tmp_path))
  again = config_lib.load_run_config(str(tmp_path))
  assert again.data.split_mode == "replicate"
  assert again.to_json_best_effort() == config.to_json_best_effort()
