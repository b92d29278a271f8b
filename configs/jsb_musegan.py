"""Four-voice Bach chorales (the embedded data set): the default of `make demo`.

The tutorial MuseGAN architecture (shared then per-track transposed-conv blocks, all written as
matmuls) sized for 4 tracks (soprano, alto, tenor, bass) x 4 bars x 16 steps (16th notes) x 84
pitches; random transposition by up to 5 semitones; WGAN-GP with 5 D updates per G update
(a weaker critic, 1-2 updates, was measured to stall learning on small batches).
The hybrid model (`models.model_config("jsb")`) is the heavier alternative.
The checkpoint with the best mean overlapping area against the validation split is kept in
WORKDIR/best. Conditioning is off here: `jaxgan inpaint` / `accompany` search the unconditional
generator's latents; `--config.conditioning.infill=0.2 --config.conditioning.accompany=0.2`
trains the context in (at the demo's 1,200 steps such runs fell silent, EB 100 %, as the
unconditional config also does at some seeds: BENCHMARKS.md, H100 sweep).
`get_config("demo")` bounds the run for a laptop CPU.
"""

from jaxgan import config as config_lib
from jaxgan import models


def get_config(arg=None):
  c = config_lib.base_config()
  c.data.name = "jsb_chorales"
  c.data.n_bars = 4
  c.data.steps_per_beat = 4
  c.data.meter = (4, 4)
  c.data.lowest_pitch = 24
  c.data.num_pitches = 84
  c.data.num_tracks = 4
  c.data.transpose = 5
  c.model = models.model_config("tutorial")
  c.model.name = "jsb"
  c.loss.kind = "wgan"
  c.loss.gp_weight = 10.0
  c.loss.n_critic = 5
  c.g_optim = config_lib.optim_config(1e-3)
  c.d_optim = config_lib.optim_config(1e-3)
  c.train.global_batch = 16
  c.train.num_steps = 20_000
  c.train.log_every = 50
  c.train.ckpt_every = 500
  c.train.sample_every = 500
  c.train.eval_every = 1000
  c.train.best_metric = "eval/oa/mean"
  c.train.best_mode = "max"
  if arg == "demo":
    c.train.num_steps = 1200
    c.train.ckpt_every = 200
    c.train.sample_every = 200
    c.train.eval_every = 400
  return c
