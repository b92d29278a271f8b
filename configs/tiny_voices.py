"""A tiny voices model (model.arch="voices") on synthetic chord patterns, for tests.

Two monophonic tracks x 2 bars x 8 steps x 36 pitches, a one-block transformer: seconds to
compile. The synthetic patterns are chords; read as voices, each track keeps its highest pitch.
"""

from jaxgan import config as config_lib
from jaxgan import voicegan


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.data.name = "synthetic"
  c.data.n_bars = 2
  c.data.steps_per_beat = 2           # 8 steps per 4/4 bar
  c.data.lowest_pitch = 48
  c.data.num_pitches = 36
  c.data.num_tracks = 2
  c.data.mono_tracks = (0, 1)
  c.model = voicegan.model_config()
  c.model.name = "tiny_voices"
  c.model.features = 32
  c.model.layers = 1
  c.model.heads = 2
  c.model.z_size = 8
  c.model.critic_features = 16
  c.model.critic_layers = 1
  c.model.gibbs_rounds = 4
  c.g_optim = config_lib.optim_config(3e-3)
  c.g_optim.b1, c.g_optim.b2 = 0.9, 0.98
  c.train.global_batch = 8
  c.train.num_steps = 20
  c.train.log_every = 5
  c.train.ckpt_every = 10
  c.train.sample_every = 0
  c.train.ema_decay = 0.9
  c.train.compilation_cache = False
  return c
