"""A tiny model on synthetic chord patterns: seconds to compile, for tests and smoke runs."""

from jaxgan import config as config_lib
from jaxgan import models


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.data.name = "synthetic"
  c.data.n_bars = 2
  c.data.steps_per_beat = 2           # 8 steps per 4/4 bar
  c.data.lowest_pitch = 48
  c.data.num_pitches = 12
  c.data.num_tracks = 2
  c.model = models.model_config("tiny")
  c.train.global_batch = 8
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.ckpt_every = 10
  c.train.sample_every = 0
  c.train.ema_decay = 0.9
  c.train.compilation_cache = False
  return c
