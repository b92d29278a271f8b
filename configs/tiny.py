"""A tiny model on synthetic chord patterns: seconds to compile, for tests and smoke runs.

The tutorial architecture at 2 tracks x 2 bars x 8 steps x 36 pitches with narrow layers: the
fewest XLA ops of any shipped model, so the test suite's many compilations stay short.
"""

from jaxgan import config as config_lib
from jaxgan import models


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.data.name = "synthetic"
  c.data.n_bars = 2
  c.data.steps_per_beat = 2           # 8 steps per 4/4 bar
  c.data.lowest_pitch = 48
  c.data.num_pitches = 36
  c.data.num_tracks = 2
  c.model = models.model_config("tutorial")
  c.model.name = "tiny"
  c.model.z_shared = 16
  c.model.g_channels = (16, 16, 8, 8, 4)
  c.model.d_channels = (4, 4, 8, 8, 16, 16, 16)
  c.train.global_batch = 8
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.ckpt_every = 10
  c.train.sample_every = 0
  c.train.ema_decay = 0.9
  c.train.compilation_cache = False
  return c
