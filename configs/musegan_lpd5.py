"""The AAAI-18 MuseGAN at paper size: hybrid model, 4 bars x 48 steps x 84 pitches x 5 tracks.

WGAN-GP (lambda 10), 5 D updates per G update (100 for the first 25 steps and every 500th),
Adam 2e-4 (0.5, 0.9), batch 64. Data: synthetic by default; train on real LPD-5 style data with
`jaxgan prepare midi_folder --manual-dir DIR` and `--config.data.name=midi_folder`.
"""

from jaxgan import config as config_lib
from jaxgan import models


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.data.name = "synthetic"
  c.data.n_bars = 4
  c.data.steps_per_beat = 12          # 48 steps per bar
  c.data.lowest_pitch = 24
  c.data.num_pitches = 84
  c.data.num_tracks = 5
  c.model = models.model_config("lpd5")
  c.loss.kind = "wgan"
  c.loss.gp_weight = 10.0
  c.loss.n_critic = 5
  c.loss.critic_warmup_steps = 25
  c.loss.critic_warmup_n = 100
  c.loss.critic_every_n = 500
  c.g_optim = config_lib.optim_config(2e-4)
  c.d_optim = config_lib.optim_config(2e-4)
  c.train.global_batch = 64
  c.train.num_steps = 50_000
  return c
