"""The `model` section of a voices config (model.arch="voices", voicegan.py): its defaults and
the checks `config.validate` runs. Kept apart from the model so that a config loads without it."""

from __future__ import annotations

import ml_collections

from jaxgan.errors import ConfigError

MASK_KINDS = ("cells", "bars", "voices", "all")
INTERVAL_BINS = 14   # model.interval_weights: leaps of 0..12 semitones, one bin for any wider
HOLD_BEATS = (2, 3, 4)  # model.hold_shares: lengths of a held chord in beats (longer ones: 4)
CRITIC_INPUTS = ("gumbel", "softmax")


def is_voice_model(config) -> bool:
  return config.model.get("arch") == "voices"


def model_config() -> ml_collections.ConfigDict:
  """Defaults of `model` for arch="voices"; sizes as trained for the shipped chorale model."""
  m = ml_collections.ConfigDict()
  m.arch = "voices"
  m.name = "voices"
  m.features = 128              # transformer width of the generator
  m.layers = 6
  m.heads = 4
  m.rotary = True               # attention by distance between steps (rotary embeddings)
  m.local_conv = True           # a k=3 convolution over the steps in every generator block
  m.z_size = 32                 # latent added to every step: another z, another piece
  m.critic_features = 96        # the critic (used only with loss.adv_weight > 0)
  m.critic_layers = 3
  m.dtype = "float32"           # or "bfloat16" (accelerators)
  m.gibbs_rounds = 48           # sampling: refinement rounds after the first draw
  m.gibbs_pmax = 0.9            # share of free cells redrawn in the second round...
  m.gibbs_pmin = 0.1            # ...falling to this...
  m.gibbs_anneal = 0.7          # ...over this share of the rounds
  m.temperature = 1.0           # sampling temperature of the class distributions in the first
  m.final_temperature = 0.7     # round, moving linearly to this in the last
  m.voice_leading_penalty = 9.0  # logit penalty per parallel fifth/octave a draw would make
  m.metre_prior = 0.7           # weight of the log-prior of note starts by step of the bar
  m.onset_rates = ()            # that prior: note-start share per step of the bar, one row
                                # per voice one after another (or one row for all), measured
                                # from the training data when training starts
  m.onset_gain = ()             # per voice, a factor on the prior's chance of a note start
  m.interval_prior = 0.0        # weight of the log-factors below on each leap a draw makes
  m.interval_weights = ()       # per voice, a log-factor per leap size (voices.INTERVAL_BINS)
  m.join_short_notes = ()       # per voice, True: after the last round, join each of its
                                # one-step notes to the neighbour the model prefers
  m.pickup_prior = False        # free pieces open with a pickup as often and as long as
                                # the training excerpts do (voices that enter together)
  m.pickup_shares = ()          # that prior: share of excerpts opening with L steps of rest
                                # in every voice, L = 0 .. steps_per_bar - 1; measured from
                                # the training data when training starts
  m.ornament_prior = False      # free pieces give one-step notes to as many voices, and to
                                # the same sets of voices, as the training excerpts do (the
                                # others' are joined, as join_short_notes does)
  m.ornament_shares = ()        # that prior: share of excerpts whose voices with a one-step
                                # note are each subset of the voices (bit v = voice v), 2 ** V
                                # values; measured from the training data when training starts
  m.syncopation_weights = ()    # per voice, a log-factor on each note that begins off a beat
                                # and is held over the next one (jaxgan export --calibrate)
  m.hold_prior = False          # free pieces hold chords in every voice (phrase ends) where
                                # and as long as the training excerpts do
  m.hold_shares = ()            # that prior: per bar, share with no held chord starting in it,
                                # then with one starting on beat b lasting 2, 3 or 4 beats
                                # (1 + 3 * beats values); measured when training starts
  return m


# What a voices run saved before a key existed was trained or sampled with: config.json files
# that lack the key get this value, not model_config()'s.
LEGACY_DEFAULTS = {"rotary": False, "local_conv": False, "metre_prior": 0.0}


def _is_distribution(shares: tuple, size: int) -> bool:
  """`size` numbers in [0, 1] summing to 1 (within rounding): a prior's measured shares."""
  return (len(shares) == size and all(
      isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 for s in shares)
      and abs(sum(shares) - 1) <= 1e-3)


def check_config(config) -> None:
  """Raises ConfigError for a voices config that cannot train; called by config.validate."""
  m, lc, d = config.model, config.loss, config.data
  defaults = model_config()
  unknown = sorted(set(m.keys()) - set(defaults.keys()))
  if unknown:
    raise ConfigError(f"model: unknown key(s) {unknown} for arch='voices'; known: "
                                 f"{', '.join(sorted(defaults.keys()))}")
  for key in ("features", "layers", "heads", "z_size", "critic_features", "critic_layers",
              "gibbs_rounds"):
    v = m.get(key, defaults[key])
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "gibbs_rounds" else 1):
      raise ConfigError(f"model.{key}={v!r} must be a positive integer")
  if m.get("features", 128) % m.get("heads", 4):
    raise ConfigError(f"model.features={m.features} must be a multiple of "
                                 f"model.heads={m.heads}")
  if not isinstance(m.get("rotary", True), bool):
    raise ConfigError(f"model.rotary={m.rotary!r} must be True or False")
  if m.get("rotary", True) and (m.get("features", 128) // m.get("heads", 4)) % 2:
    raise ConfigError(f"model.rotary needs an even width per head: model.features="
                      f"{m.features} / model.heads={m.heads} is odd")
  if m.get("dtype", "float32") not in ("float32", "bfloat16"):
    raise ConfigError(f"model.dtype={m.dtype!r} is not one of ('float32', 'bfloat16')")
  for key in ("gibbs_pmax", "gibbs_pmin", "gibbs_anneal"):
    v = m.get(key, defaults[key])
    if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
      raise ConfigError(f"model.{key}={v!r} must be in [0, 1]")
  penalty = m.get("voice_leading_penalty", defaults.voice_leading_penalty)
  if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not penalty >= 0:
    raise ConfigError(f"model.voice_leading_penalty={penalty!r} must be a number >= 0 "
                      "(0 turns it off)")
  metre = m.get("metre_prior", defaults.metre_prior)
  if isinstance(metre, bool) or not isinstance(metre, (int, float)) or not metre >= 0:
    raise ConfigError(f"model.metre_prior={metre!r} must be a number >= 0 (0 turns it off)")
  rates = tuple(m.get("onset_rates", ()))
  steps = config.data.meter[0] * 4 * config.data.steps_per_beat // config.data.meter[1]
  voices = len(tuple(d.mono_tracks))
  if rates and (len(rates) not in (steps, steps * voices)
                or not all(isinstance(r, (int, float)) and 0 < r < 1 for r in rates)):
    raise ConfigError(f"model.onset_rates must hold shares in (0, 1): {steps} (one per step of "
                      f"the bar, for every voice) or {steps * voices} ({steps} per voice, voice "
                      f"after voice), or be empty (measured when training starts); got {rates!r}")
  gain = tuple(m.get("onset_gain", ()))
  if gain and (len(gain) != voices or not all(isinstance(g, (int, float)) and 0 < g <= 100
                                              for g in gain)):
    raise ConfigError(f"model.onset_gain must hold {voices} factors in (0, 100], one per "
                      f"voice, or be empty (none); got {gain!r}")
  leap = m.get("interval_prior", 0.0)
  if isinstance(leap, bool) or not isinstance(leap, (int, float)) or not leap >= 0:
    raise ConfigError(f"model.interval_prior={leap!r} must be a number >= 0 (0 turns it off)")
  leap_weights = tuple(m.get("interval_weights", ()))
  bins = INTERVAL_BINS
  if leap_weights and (len(leap_weights) != voices * bins or not all(
      isinstance(w, (int, float)) and not isinstance(w, bool) and abs(w) < 1e3
      for w in leap_weights)):
    raise ConfigError(f"model.interval_weights must hold {voices * bins} log-factors ({bins} "
                      f"leap sizes per voice, voice after voice; jaxgan export --calibrate "
                      f"measures them), or be empty (none); got {len(leap_weights)} values")
  join = tuple(m.get("join_short_notes", ()))
  if join and (len(join) != voices or not all(isinstance(j, bool) for j in join)):
    raise ConfigError(f"model.join_short_notes must hold {voices} booleans, one per voice, "
                      f"or be empty (none); got {join!r}")
  if not isinstance(m.get("pickup_prior", False), bool):
    raise ConfigError(f"model.pickup_prior={m.pickup_prior!r} must be True or False")
  pickups = tuple(m.get("pickup_shares", ()))
  if pickups and not _is_distribution(pickups, steps):
    raise ConfigError(f"model.pickup_shares must hold {steps} shares in [0, 1] summing to 1 "
                      f"(one per pickup length 0 .. {steps - 1} steps), or be empty (measured "
                      f"when training starts); got {pickups!r}")
  if not isinstance(m.get("ornament_prior", False), bool):
    raise ConfigError(f"model.ornament_prior={m.ornament_prior!r} must be True or False")
  ornaments = tuple(m.get("ornament_shares", ()))
  if ornaments and not _is_distribution(ornaments, 2 ** voices):
    raise ConfigError(f"model.ornament_shares must hold {2 ** voices} shares in [0, 1] summing "
                      f"to 1 (one per set of voices, bit v = voice v), or be empty (measured "
                      f"when training starts); got {len(ornaments)} values")
  tie = tuple(m.get("syncopation_weights", ()))
  if tie and (len(tie) != voices or not all(
      isinstance(w, (int, float)) and not isinstance(w, bool) and abs(w) <= 20 for w in tie)):
    raise ConfigError(f"model.syncopation_weights must hold {voices} log-factors in [-20, 20], "
                      f"one per voice (jaxgan export --calibrate measures them), or be empty "
                      f"(none); got {tie!r}")
  if not isinstance(m.get("hold_prior", False), bool):
    raise ConfigError(f"model.hold_prior={m.hold_prior!r} must be True or False")
  holds = tuple(m.get("hold_shares", ()))
  size = 1 + (steps // int(d.steps_per_beat)) * len(HOLD_BEATS)
  if holds and not _is_distribution(holds, size):
    raise ConfigError(f"model.hold_shares must hold {size} shares in [0, 1] summing to 1 (no "
                      f"held chord in a bar, then one per beat it starts on and length "
                      f"{HOLD_BEATS} beats), or be empty (measured when training starts); got "
                      f"{len(holds)} values")
  for key in ("temperature", "final_temperature"):
    if not m.get(key, 1.0) > 0:
      raise ConfigError(f"model.{key}={m.get(key)!r} must be > 0")
  if not tuple(d.mono_tracks):
    raise ConfigError("model.arch='voices' needs data.mono_tracks: the tracks that "
                                 "sing one note at a time (e.g. (0, 1, 2, 3) for SATB)")
  shares = tuple(lc.mask_shares)
  if len(shares) != len(MASK_KINDS) or min(shares) < 0 or not sum(shares) > 0:
    raise ConfigError(f"loss.mask_shares={shares!r} must be {len(MASK_KINDS)} shares "
                                 f">= 0 ({', '.join(MASK_KINDS)}) with a positive sum")
  for key in ("recon_weight", "adv_weight"):
    if not lc[key] >= 0:
      raise ConfigError(f"loss.{key}={lc[key]!r} must be >= 0")
  if not lc.recon_weight + lc.adv_weight > 0:
    raise ConfigError("loss.recon_weight and loss.adv_weight are both 0: nothing "
                                 "to learn")
  if lc.critic_input not in CRITIC_INPUTS:
    raise ConfigError(f"loss.critic_input={lc.critic_input!r} is not one of "
                                 f"{CRITIC_INPUTS}")
  if not lc.gumbel_beta_max >= 1:
    raise ConfigError(f"loss.gumbel_beta_max={lc.gumbel_beta_max!r} must be >= 1")
  if config.conditioning.infill or config.conditioning.accompany:
    raise ConfigError("conditioning.infill / conditioning.accompany are for the "
                                 "MuseGAN models; the voices model always learns to fill "
                                 "(loss.mask_shares)")
