"""The ISMIR-2019 tutorial MuseGAN, exactly: the speed peer.

5 tracks x 4 bars x 16 steps x 72 pitches (from MIDI 24), latent 128, G 313,951 / D 204,321
parameters, WGAN-GP (lambda 10), one D update per G update on the same fake batch, Adam 1e-3
(0.5, 0.9), batch 16.

Data: synthetic by default (the tutorial's LPD-5 is not shipped). For real multi-track data run
`jaxgan prepare midi_folder --manual-dir DIR` and train with `--config.data.name=midi_folder`.
"""

from jaxgan import config as config_lib
from jaxgan import models


def get_config(arg=None):
  del arg
  c = config_lib.base_config()
  c.data.name = "synthetic"
  c.data.n_bars = 4
  c.data.steps_per_beat = 4           # 16 steps per bar
  c.data.lowest_pitch = 24
  c.data.num_pitches = 72
  c.data.num_tracks = 5
  c.model = models.model_config("tutorial")
  c.loss.kind = "wgan"
  c.loss.gp_weight = 10.0
  c.loss.n_critic = 1
  c.loss.reuse_fake = True            # the tutorial's G update reuses the critic's fake batch
  c.g_optim = config_lib.optim_config(1e-3)
  c.d_optim = config_lib.optim_config(1e-3)
  c.train.global_batch = 16
  c.train.num_steps = 20_000
  c.train.ema_decay = 0.999
  return c
