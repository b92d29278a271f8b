"""The voice GAN: part music whose voices sing one note at a time, learnt by filling hidden cells.

`model.arch = "voices"` (configs/jsb_chorale.py). Each monophonic track (`data.mono_tracks`) is,
per time step, one categorical choice: rest or a pitch of that voice's range (models/voices.py);
polyphonic tracks, if any, stay per-pitch on/off cells. One generator (models/voicenet.py) serves
free generation, restoration and accompaniment: it reads a piece with some cells given and
predicts every hidden cell.

Training (`train_step`, pure): each example of a batch hides cells by one of four masks, drawn
per example (`loss.mask_shares`): random cells at a random rate (Coconet's orderless masks),
a span of bars in every voice (restoration), a subset of the voices for the whole window
(accompaniment), or everything (free generation). The generator's loss is the cross-entropy on
the hidden cells of the voices, each example's sum divided by its number of hidden cells, plus
binary cross-entropy on hidden polyphonic cells, plus, with `loss.adv_weight > 0`, the
adversarial loss of a critic (models/voicenet.VoiceCritic) that reads the given cells and the
generated ones together. The critic reads the generated classes as a straight-through
Gumbel-softmax sample whose inverse temperature rises from 1 to `loss.gumbel_beta_max` over
`loss.gumbel_anneal_steps` (`loss.critic_input="gumbel"`), or as the softmax probabilities
themselves ("softmax").

Sampling (`VoiceModel.rolls`): blocked Gibbs sampling as Coconet does it. The first round draws
every hidden cell from the prediction with all of them hidden; each later round hides again a
random share of the cells not given, falling from `model.gibbs_pmax` to `model.gibbs_pmin` over the
first `model.gibbs_anneal` of the rounds, and redraws them from the generator at
`model.temperature`. Given cells never change, so a restored or accompanied piece keeps every
note it was given. With `model.voice_leading_penalty` > 0, every draw lowers the logit of a
choice by that much per parallel fifth or octave it would make with the other voices' current
notes (models/voices.parallel_perfect_counts). With `model.metre_prior` > 0, every draw after
the first adds that weight times the log-prior of the note starts a choice makes, by step of
the bar and voice (models/voices.metre_log_prior; `model.onset_rates`, a row per voice,
measured on the training data when training starts and saved with the run): the network
follows the phase of the rhythm around a cell more than the bar's, and without the prior
samples start notes on any 16th. `model.onset_gain` (per voice, set by `jaxgan export
--calibrate` or scripts/calibrate_onset_gain.py) raises the prior's chance of a note start on
the strong steps of a voice that the low final temperature leaves sparser than the data.
For the voices marked in `model.join_short_notes`, the sampler ends with two passes that join
each one-step note in the free cells to the note before or after it, whichever pitch the model
ranks higher there (models/voices.join_one_step_notes): a two-cell move that cell-wise Gibbs
cannot make. With `model.pickup_prior`, a free piece (nothing given) opens with a pickup as
often as the training excerpts do: its length is drawn from `model.pickup_shares` (measured when
training starts), its rests are given to the network, and every voice sings for a bar from
its entry (models/voices.pickup_cells).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxgan import config as config_lib
from jaxgan import optim, runtime
from jaxgan import sharding as shard_lib
from jaxgan.gan import losses
from jaxgan.gan.engine import Trainable
from jaxgan.gan.step import Optimizers
from jaxgan.models import voicenet
from jaxgan.models.voices_config import (  # noqa: F401  (part of this module's interface)
    CRITIC_INPUTS, MASK_KINDS, check_config, is_voice_model, model_config)
from jaxgan.models import voices as voices_lib

State = dict[str, Any]


def layout_of(config, track_names: Sequence[str] = ()) -> voices_lib.VoiceLayout:
  """The voices of a run: its mono tracks and their pitch ranges (data.track_ranges)."""
  d = config.data
  mono = config_lib.mono_track_indices(config, tuple(track_names))
  top = d.lowest_pitch + d.num_pitches - 1
  ranges = config_lib.track_ranges(config) or tuple((d.lowest_pitch, top)
                                                    for _ in range(d.num_tracks))
  # A range is clipped to the piano-roll's rows: the data never holds notes outside them.
  clipped = [(max(ranges[t][0], d.lowest_pitch), min(ranges[t][1], top)) for t in mono]
  return voices_lib.VoiceLayout.from_pitches(mono, clipped, d.lowest_pitch, d.num_pitches)


def onset_rates_table(onset_rates: Sequence[float], steps_per_bar: int) -> jax.Array:
  """model.onset_rates as float [steps_per_bar] (one row for every voice) or [voices,
  steps_per_bar] (a row per voice, as runs measure them since per-voice rates existed)."""
  rates = jnp.asarray(tuple(onset_rates), jnp.float32)
  return rates if rates.shape[0] == steps_per_bar else rates.reshape(-1, steps_per_bar)


# --------------------------------------------------------------------------------------------
# Masks: which cells of a training example are given.


def draw_known(key: jax.Array, num: int, bars: int, steps: int, tracks: int,
               shares: Sequence[float]) -> jax.Array:
  """bool [num, bars * steps, tracks], True = given; one mask kind per example (MASK_KINDS)."""
  t = bars * steps
  k_kind, k_rate, k_cells, k_start, k_len, k_tracks = jax.random.split(key, 6)
  p = jnp.asarray(shares, jnp.float32)
  kind = jax.random.choice(k_kind, len(MASK_KINDS), [num], p=p / p.sum())
  # cells: each hidden with an example's own rate (uniform), so few and many both occur
  rate = jax.random.uniform(k_rate, [num, 1, 1])
  cells = jax.random.uniform(k_cells, [num, t, tracks]) >= rate
  # bars: a span of 1 .. bars // 2 bars in every track
  length = jax.random.randint(k_len, [num], 1, max(bars // 2, 1) + 1)
  start = jax.random.randint(k_start, [num], 0, bars - length + 1)
  bar_of_step = jnp.arange(t) // steps
  in_span = (bar_of_step[None] >= start[:, None]) & (bar_of_step[None] < (start + length)[:, None])
  span = jnp.broadcast_to(~in_span[..., None], (num, t, tracks))
  # voices: a random non-empty subset hidden, at least one track given when there are two
  draws = jax.random.uniform(k_tracks, [num, tracks])
  hide = draws < 0.5
  if tracks > 1:
    # None hidden: hide the lowest draw's track; all hidden: give the highest draw's.
    lowest = jax.nn.one_hot(jnp.argmin(draws, -1), tracks, dtype=bool)
    highest = jax.nn.one_hot(jnp.argmax(draws, -1), tracks, dtype=bool)
    hide = jnp.where(hide.any(-1, keepdims=True), hide, lowest)
    hide = jnp.where(hide.all(-1, keepdims=True), hide & ~highest, hide)
  else:
    hide = jnp.ones_like(hide)
  subset = jnp.broadcast_to(~hide[:, None, :], (num, t, tracks))
  none = jnp.zeros((num, t, tracks), bool)
  options = jnp.stack([cells, span, subset, none])          # [kinds, num, t, tracks]
  return jnp.take_along_axis(options, kind[None, :, None, None], 0)[0]


# --------------------------------------------------------------------------------------------
# The model: generator, critic, Gibbs sampler and likelihoods for one config on one mesh.


class VoiceModel:
  """The voices generator and critic of a config, compiled for one mesh: the Gibbs sampler,
  fills and held-out likelihoods; no optimizer and no train state (see `VoiceEngine`)."""

  def __init__(self, config, mesh: Mesh, track_names: Sequence[str] = ()):
    self.config = config
    self.mesh = mesh
    self.platform, self.compiler_options = runtime.prepare(mesh)
    self.data_shape = config_lib.data_shape(config)
    self.layout = layout_of(config, track_names)
    cc = config.conditioning
    num_styles = len(tuple(cc.styles)) if cc.style else 0
    if cc.style and not num_styles:
      raise config_lib.ConfigError("conditioning.style is on but conditioning.styles is empty")
    self.cond = {"context": True, "num_styles": num_styles}
    self.conditional = True
    m = model_config()
    m.update(dict(config.model))
    self.model_cfg = m
    dtype = jnp.bfloat16 if m.dtype == "bfloat16" else None
    self.generator = voicenet.VoiceGenerator(
        layout=self.layout, data_shape=self.data_shape, features=m.features, layers=m.layers,
        heads=m.heads, z_size=m.z_size, num_styles=num_styles, rotary=m.rotary,
        local_conv=m.local_conv, dtype=dtype)
    self.adversarial = config.loss.adv_weight > 0
    self.critic = voicenet.VoiceCritic(
        layout=self.layout, data_shape=self.data_shape, features=m.critic_features,
        layers=m.critic_layers, heads=m.heads, num_styles=num_styles, rotary=m.rotary,
        dtype=dtype)
    self.latent_size = int(m.z_size)

  def jit(self, fn: Callable, **kwargs) -> Callable:
    return jax.jit(fn, compiler_options=self.compiler_options, **kwargs)

  def abstract_generator(self) -> State:
    """Shapes of what sampling needs of a checkpoint: step and g_ema (replicated)."""
    def g_params(key):
      return self.generator.init(key, jnp.zeros([1, self.latent_size]),
                                 self.empty_condition(key, 1))["params"]
    tree = {"step": jax.ShapeDtypeStruct([], jnp.int32),
            "g_ema": jax.eval_shape(g_params, jax.random.PRNGKey(0))}
    replicated = shard_lib.replicated(self.mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        tree)

  @property
  def num_tracks(self) -> int:
    return self.data_shape[3]

  @property
  def steps(self) -> int:
    return self.data_shape[1]

  def empty_condition(self, key: jax.Array, num: int, bars: int | None = None
                      ) -> dict[str, jax.Array]:
    """Nothing given (random styles when the model has them)."""
    bars = bars or self.data_shape[0]
    _, steps, pitches, tracks = self.data_shape
    cond = {"context": jnp.zeros((num, bars, steps, pitches, tracks), jnp.uint8),
            "known": jnp.zeros((num, bars, steps, tracks), bool)}
    if self.cond["num_styles"]:
      cond["style"] = jax.random.randint(jax.random.fold_in(key, 1), [num], 0,
                                         self.cond["num_styles"])
    return cond

  def slope(self, step: jax.Array) -> jax.Array:
    """The Gumbel-softmax inverse temperature at `step`: 1 -> gumbel_beta_max, geometrically."""
    lc = self.config.loss
    frac = jnp.minimum(step / max(lc.gumbel_anneal_steps, 1), 1.0)
    return jnp.asarray(lc.gumbel_beta_max, jnp.float32) ** frac

  # ------------------------------------------------------------------------------------------
  # The step.

  def known_in_bars(self, known: jax.Array) -> jax.Array:
    """[B, T, tracks] -> [B, bars, steps, tracks]."""
    b, t, tracks = known.shape
    return known.reshape(b, t // self.steps, self.steps, tracks)

  def soft_piece(self, probs, poly_probs, roll) -> jax.Array:
    """A piece in [-1, 1] for the critic: voices from class probabilities [B, T, V, C],
    polyphonic tracks from on-probabilities (or the real cells)."""
    shape = roll.shape
    base = 2.0 * poly_probs - 1.0
    return voices_lib.soft_roll(self.layout, probs, shape, base=base)

  def _condition_parts(self, cond, num: int, bars: int):
    """(context uint8 roll, known bool [B, T, tracks], style) from a condition in any of the
    forms the callers use: None, bar-level or step-level `known`, bool/float/uint8 context."""
    _, steps, pitches, tracks = self.data_shape
    if cond is None:
      cond = self.empty_condition(jax.random.PRNGKey(0), num, bars)
    context = cond["context"]
    if context.dtype != jnp.uint8:   # bool, or floats in [-1, 1] (> 0 = sounding)
      context = (context > 0).astype(jnp.uint8)
    known = jnp.asarray(cond["known"], bool)
    if known.ndim == 3:              # [B, bars, tracks]: whole bars given or hidden
      known = jnp.broadcast_to(known[:, :, None, :], (num, bars, steps, tracks))
    return context, known.reshape(num, bars * steps, tracks), cond.get("style")

  def gibbs(self, params, z: jax.Array, key: jax.Array, cond=None, *,
            rounds: int | None = None, temperature: float | jax.Array | None = None,
            final_temperature: float | jax.Array | None = None) -> jax.Array:
    """uint8 piano-rolls (0/1/2) [B, bars, steps, pitches, tracks]: the given cells of `cond`
    kept, every other cell drawn by blocked Gibbs sampling (see the module docstring). The
    temperature moves linearly from `temperature` in the first round to `final_temperature`
    in the last (defaults: model.temperature, model.final_temperature)."""
    m = self.model_cfg
    rounds = m.gibbs_rounds if rounds is None else rounds
    temperature = m.temperature if temperature is None else temperature
    final_temperature = m.final_temperature if final_temperature is None else final_temperature
    num = z.shape[0]
    bars = (cond["context"].shape[1] if cond is not None else self.data_shape[0])
    context, known, style = self._condition_parts(cond, num, bars)
    layout = self.layout
    penalty = float(m.voice_leading_penalty)
    metre = float(m.metre_prior) if tuple(m.onset_rates) else 0.0
    rates = onset_rates_table(m.onset_rates, self.steps) if metre else None
    gains = tuple(m.get("onset_gain", ()))
    gain = jnp.asarray(gains, jnp.float32) if gains else None
    joined_voices = tuple(bool(j) for j in m.get("join_short_notes", ()))
    leap_weights = tuple(m.get("interval_weights", ()))
    leap_prior = float(m.get("interval_prior", 0.0)) if leap_weights else 0.0
    leap_table = (jnp.asarray(leap_weights, jnp.float32).reshape(layout.num_voices, -1)
                  if leap_prior else None)
    pickups = (tuple(m.get("pickup_shares", ())) if m.get("pickup_prior", False) else ())
    ornaments = (tuple(m.get("ornament_shares", ())) if m.get("ornament_prior", False) else ())
    tie_weights = tuple(m.get("syncopation_weights", ()))
    holds = tuple(m.get("hold_shares", ())) if m.get("hold_prior", False) else ()
    steps_per_beat = int(self.config.data.steps_per_beat)
    vknown = known[..., list(layout.tracks)]
    plain = None
    if ornaments:
      # Cell-wise draws scatter 16ths over three pieces in four where Bach writes them in some
      # chorales and none in others (the QN of a voice is 1 in 65 % of his excerpts): which
      # voices of a free piece may keep theirs is drawn from the training excerpts. A key of
      # its own, as the pickup's.
      plain = voices_lib.plain_voices(jax.random.fold_in(key, 1 << 21), ~vknown,
                                      jnp.asarray(ornaments, jnp.float32))
    pickup_rest = pickup_sound = None
    if pickups:
      # The network opens a free piece with a pickup less often than the data at some seeds
      # (most of a chorale's rests are its pickup), so the sampler draws the pickup's length
      # from the training excerpts' and gives the network those rests as given cells.
      # A key of its own: the draws of restored and accompanied pieces stay as they were.
      k_pickup = jax.random.fold_in(key, 1 << 20)
      pickup_rest, pickup_sound = voices_lib.pickup_cells(
          k_pickup, ~vknown, jnp.asarray(pickups, jnp.float32))
      vknown = vknown | pickup_rest
    held = tied = None
    if holds:
      # Cell-wise draws let each voice move on its own, so the four seldom hold a chord
      # together (one in 12 bars; Bach ends a phrase on one about every 4 bars, on beat 1 or
      # 3): where and how long the held chords of a free piece are is drawn from the training
      # excerpts, and each is drawn as one note per voice. A key of its own, as the pickup's.
      held, tied = voices_lib.hold_plan(
          jax.random.fold_in(key, 1 << 22), ~known[..., list(layout.tracks)],
          jnp.asarray(holds, jnp.float32), self.steps, steps_per_beat, blocked=pickup_rest)
    shape = context.shape
    given_classes, given_restrike = voices_lib.classes_from_roll(layout, context)
    if pickups:
      given_classes = jnp.where(pickup_rest, voices_lib.REST, given_classes)
      given_restrike = given_restrike & ~pickup_rest
    poly_tracks = [t for t in range(shape[-1]) if t not in layout.tracks]
    known_cells = known.reshape(num, bars, shape[2], 1, shape[-1])

    def predict(classes, restrike, poly_on, visible):
      roll = voices_lib.roll_from_classes(layout, classes, restrike, shape,
                                          base=jnp.where(poly_on, 1, 0).astype(jnp.uint8))
      vis_tracks = jnp.zeros(known.shape, bool).at[..., list(layout.tracks)].set(visible)
      for t in poly_tracks:
        vis_tracks = vis_tracks.at[..., t].set(known[..., t])
      c = {"context": roll, "known": self.known_in_bars(vis_tracks)}
      if style is not None:
        c["style"] = style
      return self.generator.apply({"params": params}, z, c)

    def scores(out, classes, restrike, first_round=False):
      """The logits a draw samples from: the network's, steered by the sampler's priors."""
      logits = out["logits"]
      if pickups:
        logits = logits.at[..., voices_lib.REST].add(jnp.where(pickup_sound, -1e9, 0.0))
      if holds:
        logits = logits.at[..., voices_lib.REST].add(jnp.where(held, -1e9, 0.0))
      if penalty:
        # The network alone leaves parallel fifths and octaves at ~10x Bach's rate: cell-wise
        # Gibbs cannot move a whole note out of one once it is laid, so choices are steered
        # away from making one while the notes are being laid.
        logits = logits - penalty * voices_lib.parallel_perfect_counts(layout, classes)
      if metre and not first_round:
        # The network follows the phase of the rhythm around a cell more than the bar's, so a
        # sample drifts into notes that start on any 16th; a prior of where notes start in
        # the bar (measured on the training data) gives the draws the bar's phase. Not in the
        # first round: the free cells around a cell hold no notes yet, only placeholders.
        logits = logits + metre * voices_lib.metre_log_prior(classes, layout.num_classes, rates,
                                                                   gain)
      if leap_prior and not first_round:
        # The network's lines leap more than Bach's (the bass by thirds where he steps):
        # log-factors per leap size, measured from samples against the data, reweigh them.
        logits = logits + leap_prior * voices_lib.interval_log_prior(
            classes, layout.num_classes, leap_table)
      if tie_weights and not first_round:
        # The metre prior sees where notes start, not how long they last: a note begun on an
        # 8th off the beat and held over the next one (Bach's soprano: 9 % of those notes, the
        # network's 36 %) pays a log-factor per voice, calibrated against the data.
        logits = logits + voices_lib.syncopation_log_prior(
            classes, restrike, layout.num_classes, steps_per_beat, jnp.asarray(tie_weights))
      return logits

    def draw(out, k, redraw, classes, restrike, poly_on, temperature, first_round=False):
      k1, k2, k3 = jax.random.split(k, 3)
      logits = scores(out, classes, restrike, first_round)
      if holds:
        logits = voices_lib.run_mean_logits(logits, tied)
      new = jax.random.categorical(k1, logits / temperature)
      classes = jnp.where(redraw, new, classes)
      strike_logit = out["restrike"]
      if metre and not first_round:
        strike_logit = strike_logit + metre * voices_lib.metre_restrike_bias(classes.shape[1],
                                                                             rates)
      strike = jax.random.bernoulli(k2, jax.nn.sigmoid(strike_logit))
      restrike = jnp.where(redraw, strike, restrike)
      if holds:
        # A held chord's later steps sing its first step's note, not struck again.
        classes = voices_lib.follow_runs(classes, tied)
        restrike = restrike & ~tied
      if poly_tracks:
        on = jax.random.bernoulli(k3, jax.nn.sigmoid(out["poly"] / temperature))
        poly_on = jnp.where(known_cells, poly_on, on)
      return classes, restrike, poly_on

    free = ~vknown
    classes = jnp.where(vknown, given_classes, voices_lib.REST)
    restrike = given_restrike & vknown
    poly_on = jnp.where(known_cells, context > 0, False)
    k0, key = jax.random.split(key)
    out = predict(classes, restrike, poly_on, vknown)
    classes, restrike, poly_on = draw(out, k0, free, classes, restrike, poly_on, temperature,
                                      first_round=True)

    def body(i, carry):
      classes, restrike, poly_on = carry
      k = jax.random.fold_in(key, i)
      t = temperature + (final_temperature - temperature) * (i + 1) / rounds
      frac = i / jnp.maximum(m.gibbs_anneal * rounds, 1.0)
      pm = jnp.maximum(m.gibbs_pmin, m.gibbs_pmax - (m.gibbs_pmax - m.gibbs_pmin) * frac)
      redraw = free & (jax.random.uniform(jax.random.fold_in(k, 1), free.shape) < pm)
      if holds:
        # A held chord is redrawn where its first step is, all of it hidden from the network.
        redraw = voices_lib.follow_runs(redraw, tied)
      out = predict(classes, restrike, poly_on, ~redraw)
      return draw(out, k, redraw, classes, restrike, poly_on, t)

    classes, restrike, poly_on = jax.lax.fori_loop(0, rounds, body, (classes, restrike, poly_on))
    if any(joined_voices) or plain is not None:
      # Cell-wise Gibbs cannot undo a one-step note whose two cells each fit their chord: a
      # join is a two-cell move. Each one-step note of these voices becomes part of a
      # neighbour, the one whose pitch the model (with the priors above) ranks higher there;
      # one pass per parity of the step, since a join reads both of its neighbours.
      which_voices = (jnp.asarray(joined_voices or (False,) * layout.num_voices, bool)
                      [None, None, :])
      if plain is not None:
        which_voices = which_voices | plain
      _, free_next = voices_lib.neighbours(free, False)
      parity = jnp.arange(free.shape[1])[None, :, None] % 2
      for p in (0, 1):
        which = (voices_lib.one_step_notes(classes, restrike) & free & free_next
                 & which_voices & (parity == p))
        out = predict(classes, restrike, poly_on, ~which)
        classes, restrike = voices_lib.join_one_step_notes(
            classes, restrike, scores(out, classes, restrike), which)
    base = jnp.where(poly_on, 1, 0).astype(jnp.uint8)
    return voices_lib.roll_from_classes(layout, classes, restrike, shape, base=base)

  def rolls(self, g_params, g_stats, z, key, *, slope=None, cond=None) -> jax.Array:
    """Boolean piano-rolls, as `gan.GanModel.rolls` gives them (see `gibbs`)."""
    del g_stats, slope
    return self.gibbs(g_params, z, key, cond) > 0

  def generate(self, g_params, g_stats, z, key, *, train: bool = False, slope=None, cond=None,
               binarize: str | None = None):
    """(piano-roll in [-1, 1], stats): the sampler's output as the MuseGAN engines give it."""
    del train, binarize
    return jnp.where(self.rolls(g_params, g_stats, z, key, cond=cond), 1.0, -1.0), g_stats

  @functools.cached_property
  def sample_ema(self) -> Callable[[State, jax.Array, int], jax.Array]:
    """(state, key, num) -> bool piano-rolls of the EMA generator, nothing given."""

    @self.jit
    def draw(state, key, cond):
      kz, kb = jax.random.split(key)
      z = jax.random.normal(kz, [cond["known"].shape[0], self.latent_size], jnp.float32)
      return self.rolls(state["g_ema"], None, z, kb, cond=cond)

    def sample(state, key, num):
      # The empty condition is an argument, not a constant: XLA would spend seconds folding
      # the sampler's first steps over a constant roll.
      return draw(state, key, self.empty_condition(key, num))

    return sample

  @functools.cached_property
  def fill_jit(self) -> Callable:
    """Jitted (params, z, key, cond, temperature) -> uint8 rolls: `gibbs` with a given
    condition (restoration, accompaniment, evaluation)."""

    @self.jit
    def fill(params, z, key, cond, temperature, final_temperature=None):
      return self.gibbs(params, z, key, cond, temperature=temperature,
                        final_temperature=(temperature if final_temperature is None
                                           else final_temperature))

    return fill

  # ------------------------------------------------------------------------------------------
  # Held-out likelihood: what the periodic evaluation and `jaxgan eval` report.

  @functools.cached_property
  def masked_nll(self) -> Callable:
    """(params, rolls uint8 [B, ...], known bool [B, T, tracks], z) -> (NLL per hidden voice
    cell, in nats, summed over the batch; number of hidden voice cells)."""

    @self.jit
    def nll(params, roll, known, z):
      layout = self.layout
      classes, _ = voices_lib.classes_from_roll(layout, roll)
      cond = {"context": roll, "known": self.known_in_bars(known)}
      out = self.generator.apply({"params": params}, z, cond)
      logp = jax.nn.log_softmax(out["logits"], -1)
      cell = -jnp.take_along_axis(logp, classes[..., None], -1)[..., 0]
      hidden = (~known[..., list(layout.tracks)]).astype(jnp.float32)
      return (cell * hidden).sum(), hidden.sum()

    return nll


# --------------------------------------------------------------------------------------------
# Training, as pure functions of the model and its optimizers (as jaxgan/gan/step.py has them).


class StepKeys(NamedTuple):
  next: jax.Array     # the state's key for the next step
  mask: jax.Array     # which cells each example gives (draw_known)
  z: jax.Array        # the generator's latents
  gumbel: jax.Array   # the critic's Gumbel-softmax sample of the fake
  gp: jax.Array       # the gradient penalty's interpolation


def step_keys(rng: jax.Array) -> StepKeys:
  return StepKeys(*jax.random.split(rng, 5))


def init_state(model: VoiceModel, txs: Optimizers, rng: jax.Array) -> State:
  """The train state before the first step; the critic and its optimizer only when the loss
  has an adversarial part."""
  g_key, d_key, rng = jax.random.split(rng, 3)
  cond = model.empty_condition(g_key, 1)
  g_params = model.generator.init(g_key, jnp.zeros([1, model.latent_size]), cond)["params"]
  state = {"step": jnp.zeros([], jnp.int32), "g": g_params, "g_stats": {},
           "g_ema": jax.tree.map(jnp.copy, g_params), "g_opt": txs.g.init(g_params),
           "rng": rng}
  if model.adversarial:
    style = jnp.zeros([1], jnp.int32) if model.cond["num_styles"] else None
    d_params = model.critic.init(d_key, jnp.zeros((1,) + model.data_shape), style)["params"]
    state.update(d=d_params, d_opt=txs.d.init(d_params))
  return state


def train_step(model: VoiceModel, txs: Optimizers, state: State, batch: dict[str, jax.Array]
               ) -> tuple[State, dict[str, jax.Array]]:
  """One step: the generator's update on the hidden cells of the batch's first real batch
  (and, with an adversarial loss, the critic's update). `batch["pianoroll"]` is
  [1, B, bars, steps, pitches, tracks] (uint8), `batch["style"]` [1, B]."""
  lc = model.config.loss
  layout = model.layout
  roll = batch["pianoroll"][0]
  style = batch["style"][0].astype(jnp.int32)
  b, bars, steps, _, tracks = roll.shape
  keys = step_keys(state["rng"])
  known = draw_known(keys.mask, b, bars, steps, tracks, tuple(lc.mask_shares))
  vtracks = list(layout.tracks)
  vknown = known[..., vtracks]
  classes, restrike = voices_lib.classes_from_roll(layout, roll)
  # A restrike is a question only where a voice keeps the pitch of the step before.
  prev, _ = voices_lib.neighbours(classes, -1)
  held = (classes == prev) & (classes != voices_lib.REST)
  cond = {"context": roll, "known": model.known_in_bars(known)}
  if model.cond["num_styles"]:
    cond["style"] = style
  z = jax.random.normal(keys.z, [b, model.latent_size], jnp.float32)
  real_on = (roll > 0).astype(jnp.float32)
  known_cells = known.reshape(b, bars, steps, 1, tracks)
  poly_tracks = [t for t in range(tracks) if t not in layout.tracks]
  beta = model.slope(state["step"])
  d_style = style if model.cond["num_styles"] else None

  def fake_piece(out):
    if lc.critic_input == "softmax":   # the WGAN-GP language-model recipe
      probs = jax.nn.softmax(out["logits"], -1)
    else:                              # a straight-through Gumbel-softmax sample
      probs = voices_lib.gumbel_softmax(keys.gumbel, out["logits"], beta)
    probs = jnp.where(vknown[..., None], jax.nn.one_hot(classes, layout.num_classes), probs)
    poly = jnp.where(known_cells, real_on, jax.nn.sigmoid(out["poly"]))
    return model.soft_piece(probs, poly, roll)

  def g_loss_fn(g):
    out = model.generator.apply({"params": g}, z, cond)
    ce, ce_cell = voices_lib.masked_cross_entropy(out["logits"], classes, ~vknown)
    hidden_held = (~vknown & held).astype(jnp.float32)
    restrike_bce = (optax.sigmoid_binary_cross_entropy(out["restrike"],
                                                       restrike.astype(jnp.float32))
                    * hidden_held).sum() / jnp.maximum(hidden_held.sum(), 1.0)
    loss = lc.recon_weight * (ce + restrike_bce)
    aux = dict(ce=ce, ce_cell=ce_cell, restrike_bce=restrike_bce)
    if poly_tracks:
      hidden_poly = jnp.broadcast_to(~known_cells, roll.shape)[..., poly_tracks]
      bce = optax.sigmoid_binary_cross_entropy(out["poly"][..., poly_tracks],
                                               real_on[..., poly_tracks])
      h = hidden_poly.astype(jnp.float32)
      poly_bce = (bce * h).sum() / jnp.maximum(h.sum(), 1.0)
      loss = loss + lc.recon_weight * poly_bce
      aux["poly_bce"] = poly_bce
    # How the model's most likely fill sounds: rest share of its argmax on hidden cells.
    hidden = (~vknown).astype(jnp.float32)
    rest = (jnp.argmax(out["logits"], -1) == voices_lib.REST).astype(jnp.float32)
    aux["pred_rest_share"] = (rest * hidden).sum() / jnp.maximum(hidden.sum(), 1.0)
    aux["true_rest_share"] = ((classes == voices_lib.REST) * hidden).sum() / jnp.maximum(
        hidden.sum(), 1.0)
    fake = None
    if model.adversarial:
      fake = fake_piece(out)
      g_adv = losses.g_loss(lc.kind, model.critic.apply({"params": state["d"]}, fake, d_style))
      loss = loss + lc.adv_weight * g_adv
      aux["g_adv"] = g_adv
    return loss, (aux, fake)

  (g_loss, (metrics, fake)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state["g"])
  updates, g_opt = txs.g.update(g_grads, state["g_opt"], state["g"])
  g_params = optax.apply_updates(state["g"], updates)
  new_state = dict(step=state["step"] + 1, g=g_params, g_stats={},
                   g_ema=optim.ema_update(state["g_ema"], g_params,
                                          model.config.train.ema_decay),
                   g_opt=g_opt, rng=keys.next)
  if model.adversarial:
    # The critic judges the given cells and the generated ones together; real pieces are
    # the data's one-hot voices.
    real = model.soft_piece(jax.nn.one_hot(classes, layout.num_classes), real_on, roll)
    fake = jax.lax.stop_gradient(fake)

    def d_loss_fn(d):
      d_fn = lambda x: model.critic.apply({"params": d}, x, d_style)  # noqa: E731
      return losses.critic_loss(lc, d_fn, real, fake, keys.gp)

    d_grads, d_metrics = jax.grad(d_loss_fn, has_aux=True)(state["d"])
    d_updates, d_opt = txs.d.update(d_grads, state["d_opt"], state["d"])
    new_state.update(d=optax.apply_updates(state["d"], d_updates), d_opt=d_opt)
    metrics.update(d_metrics, d_grad_norm=optax.tree_utils.tree_norm(d_grads),
                   lr_d=txs.d_lr(state["step"]))
  metrics.update(g_loss=g_loss, g_grad_norm=optax.tree_utils.tree_norm(g_grads),
                 slope=beta, lr_g=txs.g_lr(state["step"]))
  return new_state, metrics


class VoiceEngine(VoiceModel, Trainable):
  """What training compiles for a voices config on one mesh: the model (`VoiceModel`), its
  optimizers, the state's shapes and shardings, and the jitted `init` and `step`; the members
  `gan.Engine` has (`gan.engine.Trainable`)."""

  def __init__(self, config, mesh: Mesh, track_names: Sequence[str] = ()):
    super().__init__(config, mesh, track_names)
    self._set_up_training(config, mesh)

  def _init(self, rng: jax.Array) -> State:
    return init_state(self, self.txs, rng)

  @functools.cached_property
  def train_step(self) -> Callable[[State, dict[str, jax.Array]], tuple[State, dict]]:
    """(state, batch) -> (state, metrics), not jitted: `train_step` of this engine."""
    return functools.partial(train_step, self, self.txs)


def heldout_nll(engine: VoiceEngine, params, windows: np.ndarray, *, batch: int = 32,
                seed: int = 0) -> dict[str, float]:
  """NLL per hidden voice cell (nats) of real windows under each mask kind alone, with fixed
  masks (seeded), the same for every checkpoint: eval/nll/<kind> and their mean eval/nll."""
  windows = np.asarray(windows)
  n = len(windows) - len(windows) % batch or len(windows)
  b, bars, steps, _, tracks = windows[:n].shape
  out = {}
  for i, kind in enumerate(MASK_KINDS):
    shares = [0.0] * len(MASK_KINDS)
    shares[i] = 1.0
    total, count = 0.0, 0.0
    for start in range(0, n, batch):
      roll = jnp.asarray(windows[start:start + batch])
      k = jax.random.fold_in(jax.random.PRNGKey(seed), start * 10 + i)
      known = draw_known(k, roll.shape[0], bars, steps, tracks, shares)
      z = jax.random.normal(jax.random.fold_in(k, 1), [roll.shape[0], engine.latent_size])
      s, c = engine.masked_nll(params, roll, known, z)
      total, count = total + float(s), count + float(c)
    out[f"eval/nll/{kind}"] = total / max(count, 1.0)
  out["eval/nll"] = float(np.mean([out[f"eval/nll/{k}"] for k in MASK_KINDS]))
  return out
