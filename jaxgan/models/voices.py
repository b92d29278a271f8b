"""Monophonic voices: one categorical choice per (voice, time step), by construction.

A SATB voice sings one note at a time. A per-pitch sigmoid with a threshold cannot know that
(the demo's old samples held 2-5 pitches per voice), so a track declared monophonic
(`data.mono_tracks`) is generated as, per time step, one class out of

    0 = rest,   1 + k = the pitch `low + k` of the track's range (low..high, `data.track_ranges`),

plus a *restrike* bit: a new note of the same pitch as the step before (a repeated note).
Without it a repeated note and a held one would be the same cells; with it the round trip
notes -> classes -> notes is exact for any line whose notes never overlap.

`VoiceLayout` says which tracks are voices and which piano-roll rows each may use. Its functions
move between the three forms, all jittable:

    piano-roll  uint8 [B, bars, steps, pitches, tracks] (0 silent, 1 held, 2 onset), the data
    classes     int32 [B, T, V] and restrike bool [B, T, V]  (T = bars * steps, V = voices)
    soft roll   float [B, bars, steps, pitches, tracks] in [-1, 1] from class probabilities
                (one-hot or relaxed): what a discriminator reads, so that gradients reach the
                generator's logits through a (straight-through) Gumbel-softmax sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgan.models.voices_config import HOLD_BEATS, INTERVAL_BINS

Array = jax.Array
REST = 0


@dataclasses.dataclass(frozen=True)
class VoiceLayout:
  """The monophonic tracks of a piano-roll and the rows (pitch - lowest_pitch) they may use.

  ranges: per voice (low, high) piano-roll rows, inclusive.
  tracks: per voice, its track index in the piano-roll.
  """

  tracks: tuple[int, ...]
  ranges: tuple[tuple[int, int], ...]
  num_pitches: int

  def __post_init__(self) -> None:
    if len(self.tracks) != len(self.ranges):
      raise ValueError(f"{len(self.tracks)} voice tracks but {len(self.ranges)} ranges")
    if len(set(self.tracks)) != len(self.tracks):
      raise ValueError(f"voice tracks {self.tracks} repeat a track")
    for t, (lo, hi) in zip(self.tracks, self.ranges):
      if not 0 <= lo <= hi < self.num_pitches:
        raise ValueError(f"track {t}: rows {lo}..{hi} are not within the piano-roll's "
                         f"{self.num_pitches} pitches")

  @classmethod
  def from_pitches(cls, tracks: Sequence[int], ranges: Sequence[Sequence[int]],
                   lowest_pitch: int, num_pitches: int) -> "VoiceLayout":
    """From MIDI pitch ranges (low, high) per voice track."""
    rows = tuple((int(lo) - lowest_pitch, int(hi) - lowest_pitch) for lo, hi in ranges)
    return cls(tuple(int(t) for t in tracks), rows, int(num_pitches))

  @property
  def num_voices(self) -> int:
    return len(self.tracks)

  @property
  def num_classes(self) -> int:
    """Rest plus the widest voice's pitches: every voice shares one class axis."""
    return 1 + max((hi - lo + 1 for lo, hi in self.ranges), default=0)

  def valid_classes(self) -> np.ndarray:
    """bool [V, C]: the classes each voice may take (rest and its own pitches)."""
    sizes = np.asarray([hi - lo + 2 for lo, hi in self.ranges])
    return np.arange(self.num_classes)[None, :] < sizes[:, None]

  def mask_logits(self, logits: Array) -> Array:
    """Logits [..., V, C] with the classes outside each voice's range at a large negative
    value (not -inf: a softmax of a row stays finite, and so do its gradients)."""
    return jnp.where(jnp.asarray(self.valid_classes()), logits, -1e9)


def _voice_rows(layout: VoiceLayout, x: Array) -> list[Array]:
  """Each voice's rows of a roll [..., pitches, tracks] -> list of [..., range]."""
  return [x[..., lo:hi + 1, t] for t, (lo, hi) in zip(layout.tracks, layout.ranges)]


def classes_from_roll(layout: VoiceLayout, roll: Array) -> tuple[Array, Array]:
  """(classes int32 [B, T, V], restrike bool [B, T, V]) of a piano-roll.

  A cell outside a voice's range is ignored; where a voice holds several pitches at once
  (data that breaks the layout), the highest one is its note.
  """
  b, bars, steps = roll.shape[:3]
  cls, restrike = [], []
  for rows in _voice_rows(layout, roll):
    rows = rows.reshape(b, bars * steps, rows.shape[-1])
    sounding = rows > 0
    size = rows.shape[-1]
    top = size - 1 - jnp.argmax(sounding[..., ::-1], axis=-1)
    c = jnp.where(sounding.any(-1), top + 1, REST).astype(jnp.int32)
    onset = jnp.take_along_axis(rows, top[..., None], -1)[..., 0] == 2
    prev = jnp.concatenate([jnp.full_like(c[:, :1], -1), c[:, :-1]], 1)
    cls.append(c)
    restrike.append(onset & (c == prev) & (c != REST))
  return jnp.stack(cls, -1), jnp.stack(restrike, -1)


def note_starts(classes: Array, restrike: Array) -> Array:
  """bool [B, T, V]: where a note begins (a new pitch, or the same pitch struck again)."""
  prev = jnp.concatenate([jnp.full_like(classes[:, :1], REST), classes[:, :-1]], 1)
  return (classes != REST) & ((classes != prev) | restrike)


def roll_from_classes(layout: VoiceLayout, classes: Array, restrike: Array,
                      shape: Sequence[int], base: Array | None = None) -> Array:
  """uint8 piano-roll [B, bars, steps, pitches, tracks] with the voices written in.

  `base` (uint8, same shape) supplies the other tracks (polyphonic ones); a voice's own track
  is overwritten whole.
  """
  b, bars, steps, pitches, tracks = shape
  out = jnp.zeros(shape, jnp.uint8) if base is None else base.astype(jnp.uint8)
  starts = note_starts(classes, restrike)
  for v, (t, (lo, _)) in enumerate(zip(layout.tracks, layout.ranges)):
    c = classes[..., v]
    value = jnp.where(starts[..., v], 2, 1).astype(jnp.uint8)
    row = jax.nn.one_hot(lo + c - 1, pitches, dtype=jnp.uint8) * (c != REST)[..., None]
    col = (row * value[..., None]).reshape(b, bars, steps, pitches)
    out = out.at[..., t].set(col)
  return out


def soft_roll(layout: VoiceLayout, probs: Array, shape: Sequence[int],
              base: Array | None = None) -> Array:
  """A roll in [-1, 1] whose voice columns are 2 p - 1 over the voice's rows (rest: all -1).

  probs: [B, T, V, C] class probabilities (one-hot, relaxed or straight-through). `base`
  (float in [-1, 1], same shape) supplies the other tracks; without it they are silent (-1).
  """
  b, bars, steps, pitches, tracks = shape
  out = -jnp.ones(shape, probs.dtype) if base is None else base.astype(probs.dtype)
  for v, (t, (lo, hi)) in enumerate(zip(layout.tracks, layout.ranges)):
    p = probs[..., v, 1:hi - lo + 2].reshape(b, bars, steps, hi - lo + 1)
    col = jnp.full((b, bars, steps, pitches), -1.0, probs.dtype)
    col = col.at[..., lo:hi + 1].set(2.0 * p - 1.0)
    out = out.at[..., t].set(col)
  return out


def gumbel_softmax(key: Array, logits: Array, inverse_temperature: Array | float,
                   hard: bool = True) -> Array:
  """A Gumbel-softmax sample of one class per row of `logits` [..., C].

  hard=True: the forward value is the one-hot of the sampled class, the gradient that of the
  relaxed sample softmax(beta (logits + g)) (straight-through). The sample's class is
  argmax(logits + g) whatever beta is, so annealing beta upwards only sharpens the gradient.
  """
  g = jax.random.gumbel(key, logits.shape, jnp.float32)
  z = logits.astype(jnp.float32) + g
  soft = jax.nn.softmax(inverse_temperature * z, axis=-1)
  if not hard:
    return soft
  one_hot = jax.nn.one_hot(jnp.argmax(z, -1), logits.shape[-1], dtype=soft.dtype)
  return soft + jax.lax.stop_gradient(one_hot - soft)


def masked_cross_entropy(logits: Array, targets: Array, hidden: Array) -> tuple[Array, Array]:
  """(mean over examples of the cross-entropy per hidden cell, the mean per hidden cell over
  the whole batch), in nats; logits [B, T, V, C], targets [B, T, V], hidden bool [B, T, V].

  Each example's sum is divided by its own number of hidden cells (Coconet's orderless
  weighting), so that an example with a few hidden cells counts as much as one with many.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]
  h = hidden.astype(jnp.float32)
  count = h.sum((1, 2))
  per_example = (nll * h).sum((1, 2)) / jnp.maximum(count, 1.0)
  has = (count > 0).astype(jnp.float32)
  mean = (per_example * has).sum() / jnp.maximum(has.sum(), 1.0)
  per_cell = (nll * h).sum() / jnp.maximum(h.sum(), 1.0)
  return mean, per_cell


def class_pitches(layout: VoiceLayout) -> np.ndarray:
  """int32 [V, C]: the piano-roll row of each voice's class, -1 for a rest and for classes
  beyond the voice's range."""
  c = np.arange(layout.num_classes)[None, :]
  low = np.asarray([lo for lo, _ in layout.ranges])[:, None]
  return np.where((c == REST) | ~layout.valid_classes(), -1, low + c - 1).astype(np.int32)


def neighbours(x: Array, fill: int) -> tuple[Array, Array]:
  """(the step before, the step after) of every step of x [B, T, ...], `fill` past the ends."""
  edge = jnp.full_like(x[:, :1], fill)
  return (jnp.concatenate([edge, x[:, :-1]], 1), jnp.concatenate([x[:, 1:], edge], 1))


def parallel_perfect_counts(layout: VoiceLayout, classes: Array) -> Array:
  """float [B, T, V, C]: for each cell (step t, voice v) and each class it could take, how
  many parallel fifths or octaves (unisons and compounds included) that choice would make with
  the other voices as `classes` [B, T, V] has them, over the transitions t-1 -> t and
  t -> t+1. A parallel is similar motion of both voices between two perfect intervals of the
  same kind, as `voice_metrics.transition_events` counts it."""
  pitch_of = jnp.asarray(class_pitches(layout))                     # [V, C]
  num_voices = classes.shape[-1]
  current = pitch_of[jnp.arange(num_voices), classes]               # [B, T, V]
  before, after = neighbours(current, -1)
  cand = pitch_of[None, None]                                       # [1, 1, V, C]

  def parallel(a0, a1, b0, b1):
    """Voice a a0 -> a1 against voice b b0 -> b1."""
    sound = (a0 >= 0) & (a1 >= 0) & (b0 >= 0) & (b1 >= 0)
    similar = (a0 != a1) & (b0 != b1) & (jnp.sign(a1 - a0) == jnp.sign(b1 - b0))
    first, second = jnp.abs(a0 - b0) % 12, jnp.abs(a1 - b1) % 12
    return sound & similar & (first == second) & ((first == 0) | (first == 7))

  count = jnp.zeros(classes.shape + (pitch_of.shape[-1],), jnp.float32)
  for w in range(num_voices):
    wb, wc, wa = (x[..., w, None, None] for x in (before, current, after))   # [B, T, 1, 1]
    vb, va = before[..., None], after[..., None]                             # [B, T, V, 1]
    made = parallel(vb, cand, wb, wc) | parallel(cand, va, wc, wa)
    other = (jnp.arange(num_voices) != w)[None, None, :, None]
    count = count + (made & other).astype(jnp.float32)
  return count


def onset_rates(layout: VoiceLayout, rolls: np.ndarray, steps_per_bar: int, *,
                per_voice: bool = False) -> np.ndarray:
  """float [steps_per_bar], or [voices, steps_per_bar] with `per_voice`: the share of voice
  cells at each step of the bar where a note starts (a pitch change or a restrike), over uint8
  rolls [N, bars, steps, pitches, tracks]; kept inside [0.001, 0.999] so that their logs stay
  finite. Per voice matters for chorales: Bach's soprano starts 9 % of its notes on an 8th
  off the beat, his alto and tenor 25 %."""
  classes, restrike = classes_from_roll(layout, jnp.asarray(rolls))
  before, _ = neighbours(classes, REST)
  starts = np.asarray((classes != REST) & ((classes != before) | restrike))
  position = np.arange(classes.shape[1]) % steps_per_bar
  columns = [starts[..., v] for v in range(starts.shape[-1])] if per_voice else [starts]
  rates = np.array([[col[:, position == p].mean() if (position == p).any() else 0.5
                     for p in range(steps_per_bar)] for col in columns])
  return np.clip(rates if per_voice else rates[0], 1e-3, 1 - 1e-3)


def pickup_shares(layout: VoiceLayout, rolls: np.ndarray, steps_per_bar: int) -> np.ndarray:
  """float [steps_per_bar]: the share of the pieces (uint8 rolls [N, bars, steps, pitches,
  tracks]) whose voices all rest for exactly their first L steps, L = 0 .. steps_per_bar - 1:
  how often an excerpt opens with a pickup, and how long it is. Pieces that open with a
  whole bar or more of silence are not counted."""
  classes, _ = classes_from_roll(layout, jnp.asarray(rolls))
  sounding = np.asarray(classes != REST).any(-1)                     # [N, T]
  lead = np.where(sounding.any(1), sounding.argmax(1), sounding.shape[1])
  counts = np.bincount(lead[lead < steps_per_bar], minlength=steps_per_bar)
  if not counts.sum():
    raise ValueError("no piece sounds within its first bar: nothing to measure pickups on")
  return counts / counts.sum()


def systematic_choice(key: Array, num: int, shares: Array) -> Array:
  """int32 [num]: an index into `shares` for each of `num` draws, by systematic sampling: each
  draw has the shares' distribution, and the batch holds as many of each index as the shares
  say (within one), not a multinomial count (one chorale excerpt in eleven opens with a
  pickup, so 256 independent draws would move the rest share of a batch by +-20 %)."""
  k_offset, k_order = jax.random.split(key)
  points = (jnp.arange(num) + jax.random.uniform(k_offset)) / num
  points = jax.random.permutation(k_order, points)
  cumulative = jnp.cumsum(shares) / jnp.sum(shares)
  return jnp.minimum(jnp.searchsorted(cumulative, points, side="right"),
                     shares.shape[0] - 1).astype(jnp.int32)


def pickup_cells(key: Array, free: Array, shares: Array) -> tuple[Array, Array]:
  """(rest, sound), bool [B, T, V] each: for every piece with no given voice cell (`free`
  [B, T, V] all True: free generation), a pickup length L drawn from `shares` [steps_per_bar]
  (`pickup_shares`); its voices rest on the steps before L (`rest`) and sing for a bar from L
  (`sound`: Bach's voices enter together and hardly rest in their first bar, 0.2 % of those
  cells in the JSB training excerpts; a network given the rests of a pickup tends to rest
  again on the next downbeat). Other pieces get neither: a restored or accompanied piece may
  be an excerpt from anywhere in a chorale, and its given cells tell the network where."""
  num, steps, _ = free.shape
  bar = shares.shape[0]
  eligible = free.all((1, 2))[:, None, None]
  length = jnp.minimum(systematic_choice(key, num, shares), bar - 1)[:, None, None]
  step = jnp.arange(steps)[None, :, None]
  rest = jnp.broadcast_to(eligible & (step < length), free.shape)
  sound = jnp.broadcast_to(eligible & (step >= length) & (step < length + bar), free.shape)
  return rest, sound


def ornament_shares(layout: VoiceLayout, rolls: np.ndarray) -> np.ndarray:
  """float [2 ** V]: the share of the pieces (uint8 rolls [N, bars, steps, pitches, tracks])
  whose voices that sing a one-step note (`one_step_notes`) are each subset of the voices,
  bit v of the index = voice v. Bach writes 16ths in some chorales and none in others: of the
  JSB training excerpts 42 % have none in any voice, and an alto that has them makes the
  tenor twice as likely to."""
  classes, restrike = classes_from_roll(layout, jnp.asarray(rolls))
  has = np.asarray(one_step_notes(classes, restrike)).any(1)                # [N, V]
  pattern = (has * (1 << np.arange(has.shape[-1]))).sum(-1)
  return np.bincount(pattern, minlength=1 << has.shape[-1]) / max(len(pattern), 1)


def plain_voices(key: Array, free: Array, shares: Array) -> Array:
  """bool [B, 1, V]: for every piece with no given voice cell (`free` [B, T, V] all True), the
  voices that sing no one-step note in it, from a subset drawn from `shares` [2 ** V]
  (`ornament_shares`, systematic draws); False for every other piece."""
  num, _, num_voices = free.shape
  eligible = free.all((1, 2))[:, None]
  pattern = systematic_choice(key, num, shares)
  ornamented = (pattern[:, None] >> jnp.arange(num_voices)[None, :]) & 1
  return (eligible & (ornamented == 0))[:, None, :]


def hold_shares(layout: VoiceLayout, rolls: np.ndarray, steps_per_bar: int,
                steps_per_beat: int) -> np.ndarray:
  """float [1 + beats_per_bar * len(HOLD_BEATS)]: per bar of the pieces (uint8 rolls [N, bars,
  steps, pitches, tracks]), the share with no held chord starting in it (index 0) and with one
  starting on beat b that lasts HOLD_BEATS[l] beats (index 1 + b * len(HOLD_BEATS) + l). A held
  chord: every voice sounds and none starts a note for two beats or more. Bach ends his
  phrases on them. Chords that start off a beat are left out (the JSB training excerpts have
  none)."""
  classes, restrike = classes_from_roll(layout, jnp.asarray(rolls))
  everyone = np.asarray(classes != REST).all(-1)                     # [N, T]
  any_start = np.asarray(note_starts(classes, restrike)).any(-1)
  num, steps = everyone.shape
  beats, lengths = steps_per_bar // steps_per_beat, len(HOLD_BEATS)
  counts = np.zeros(1 + beats * lengths)
  run, start = np.zeros(num, np.int64), np.zeros(num, np.int64)
  for t in range(steps + 1):
    goes_on = (everyone[:, t] & ~any_start[:, t] & (run > 0)) if t < steps else np.zeros(num, bool)
    ended = ~goes_on & (run >= HOLD_BEATS[0] * steps_per_beat) & (start % steps_per_beat == 0)
    beat = (start % steps_per_bar) // steps_per_beat
    length = np.clip(run // steps_per_beat, HOLD_BEATS[0], HOLD_BEATS[-1]) - HOLD_BEATS[0]
    np.add.at(counts, 1 + beat[ended] * lengths + length[ended], 1)
    if t < steps:
      start = np.where(goes_on, start, t)
      run = np.where(goes_on, run + 1, everyone[:, t].astype(np.int64))
  bars = num * (steps // steps_per_bar)
  counts[0] = bars - counts[1:].sum()
  return counts / max(bars, 1)


def hold_plan(key: Array, free: Array, shares: Array, steps_per_bar: int,
              steps_per_beat: int, blocked: Array | None = None) -> tuple[Array, Array]:
  """(held, tied), bool [B, T, 1] each: for every piece with no given voice cell (`free` [B, T,
  V] all True), held chords drawn bar by bar from `shares` (`hold_shares`, systematic draws
  over the batch's bars): `held` marks their steps, `tied` the steps after each one's first,
  where every voice goes on with the note it sings at the first. A chord that would begin
  inside the one before, or cover a step of `blocked` [B, T, V] (a pickup's rests), is
  dropped. Other pieces get none."""
  num, steps, _ = free.shape
  blocked_steps = (jnp.zeros((num, steps), bool) if blocked is None
                   else jnp.broadcast_to(blocked, free.shape).any(-1))
  bars, lengths = steps // steps_per_bar, len(HOLD_BEATS)
  choice = systematic_choice(key, num * bars, shares).reshape(num, bars) - 1
  eligible = free.all((1, 2))
  t = jnp.arange(steps)[None, :]
  held = tied = jnp.zeros((num, steps), bool)
  previous_end = jnp.zeros(num, jnp.int32)
  for bar in range(bars):
    k = choice[:, bar]
    start = bar * steps_per_bar + (k // lengths) * steps_per_beat
    end = jnp.minimum(start + jnp.asarray(HOLD_BEATS)[k % lengths] * steps_per_beat, steps)
    span = (t >= start[:, None]) & (t < end[:, None])
    ok = eligible & (k >= 0) & (start >= previous_end) & ~(span & blocked_steps).any(1)
    span = span & ok[:, None]
    held, tied = held | span, tied | (span & (t > start[:, None]))
    previous_end = jnp.where(ok, end, previous_end)
  return held[..., None], tied[..., None]


def run_starts(tied: Array) -> Array:
  """int32, `tied`'s shape [B, T, ...]: for each step the first step of its run, a run being
  a step that is not tied and the tied steps after it."""
  step = jnp.arange(tied.shape[1]).reshape((1, -1) + (1,) * (tied.ndim - 2))
  return jax.lax.cummax(jnp.where(tied, 0, step).astype(jnp.int32), axis=1)


def follow_runs(x: Array, tied: Array) -> Array:
  """x [B, T, V, ...] with every tied step (`tied` [B, T, V] or [B, T, 1]) set to its run's
  first step's value."""
  start = jnp.broadcast_to(run_starts(tied), x.shape[:3])
  start = start.reshape(start.shape + (1,) * (x.ndim - 3))
  return jnp.take_along_axis(x, start, axis=1)


def run_mean_logits(logits: Array, tied: Array) -> Array:
  """logits [B, T, V, C] with each run's first step holding the mean of the run's logits: one
  draw there chooses the pitch the whole run sings, as every step of it would have it (a
  geometric mean of the steps' distributions: the network's neighbouring cells are not
  independent evidence). Steps outside runs keep their logits bit for bit. Summed by segment,
  not by a running sum: masked classes (-1e9) would swamp a difference of running sums."""
  b, t, v, c = logits.shape
  start = jnp.broadcast_to(run_starts(tied), (b, t, v))
  ids = ((jnp.arange(b)[:, None, None] * t + start) * v + jnp.arange(v)).reshape(-1)
  sums = jax.ops.segment_sum(logits.reshape(-1, c), ids, num_segments=b * t * v)
  counts = jax.ops.segment_sum(jnp.ones(ids.shape, logits.dtype), ids, num_segments=b * t * v)
  mean = (sums / jnp.maximum(counts, 1)[:, None]).reshape(logits.shape)
  run_first = (~jnp.broadcast_to(tied, (b, t, v))) & (counts.reshape(b, t, v) > 1)
  return jnp.where(run_first[..., None], mean, logits)


def _by_step(rates: Array, num_steps: int) -> Array:
  """[T, 1] or [T, V]: rates [P] (shared) or [V, P] (per voice) at each of `num_steps` steps
  counted from a bar line."""
  table = rates[:, None] if rates.ndim == 1 else rates.T
  return table[jnp.arange(num_steps) % table.shape[0]]


def metre_log_prior(classes: Array, num_classes: int, rates: Array,
                    gain: Array | None = None) -> Array:
  """float [B, T, V, C]: for each cell (step t, voice v) and each class it could take, the
  log-probability of the events that choice makes with the voice as `classes` [B, T, V] has
  it: at t (a class other than the step before's) and at t+1 (the next step's class other than
  the choice). An event is a note start or a rest start: Bach's rests begin where notes would,
  so a rest is no cheap way out of an off-beat start. `rates` [steps_per_bar], shared by the
  voices, or [voices, steps_per_bar] is the chance that a note starts at each step of the bar
  (`onset_rates`), standing in for both; steps are counted from a bar line (windows start on
  one).

  Relative to a bar without metre (every step at the voice's mean rate): the network already
  knows how many notes a voice sings, so the prior moves note starts within the bar without
  thinning them. `gain` [voices] multiplies the chance of an event of a voice at a step by
  gain ** (the step's rate / the bar's highest rate): > 1 where the sampler leaves a voice
  sparser than the data (`model.onset_gain`)."""
  t = classes.shape[1]
  rates = jnp.asarray(rates)
  mean = jnp.mean(rates, axis=-1, keepdims=True)
  # [1, T+1, V or 1, 1]: step t's terms, and the step after's for the event a choice makes there
  log_start = _by_step(jnp.log(rates) - jnp.log(mean), t + 1)[None, :, :, None]
  if gain is not None:
    # On the bar's strong steps nearly the whole gain, where notes seldom start hardly any:
    # the notes a sparse voice lacks are those a held note sings over on a beat.
    strength = _by_step(rates / jnp.max(rates, axis=-1, keepdims=True), t + 1)
    log_gain = jnp.log(jnp.asarray(gain, jnp.float32))[None, :]
    log_start = log_start + (strength * log_gain)[None, :, :, None]
  log_hold = _by_step(jnp.log1p(-rates) - jnp.log1p(-mean), t + 1)[None, :, :, None]
  cand = jnp.arange(num_classes)[None, None, None, :]              # [1, 1, 1, C]
  before, after = (x[..., None] for x in neighbours(classes, REST))
  prior = jnp.where(cand != before, log_start[:, :t], log_hold[:, :t])
  has_next = (jnp.arange(t) < t - 1)[None, :, None, None]
  next_term = jnp.where(after != cand, log_start[:, 1:], log_hold[:, 1:])
  return prior + jnp.where(has_next, next_term, 0.0)


def metre_restrike_bias(num_steps: int, rates: Array) -> Array:
  """float [1, T, 1] ([1, T, V] for per-voice `rates`): the log-odds of a note start at each
  of `num_steps` steps, added to the logit of striking a held pitch again (a note start too).
  Unlike `metre_log_prior` it is not taken relative to the mean rate, so it also lowers
  restrikes overall."""
  rates = jnp.asarray(rates)
  return _by_step(jnp.log(rates) - jnp.log1p(-rates), num_steps)[None]


def one_step_notes(classes: Array, restrike: Array) -> Array:
  """bool [B, T, V]: the notes that last one step, by the step they sound on: a note start
  followed by another note start or a rest. A note on the last step is not counted (the piece
  may go on past it)."""
  starts = note_starts(classes, restrike)
  _, next_start = neighbours(starts, True)
  _, next_class = neighbours(classes, REST)
  last = jnp.arange(classes.shape[1])[None, :, None] == classes.shape[1] - 1
  return starts & (next_start | (next_class == REST)) & ~last


def join_one_step_notes(classes: Array, restrike: Array, logits: Array, which: Array
                        ) -> tuple[Array, Array]:
  """(classes, restrike) with each one-step note at a cell of `which` (bool [B, T, V])
  joined to the note before it or the note after it, whichever of the two pitches `logits`
  [B, T, V, C] ranks higher at that cell; to the only pitched neighbour where the other is a
  rest; left alone between two rests. Joining to the note after also clears that note's
  restrike at t+1, so the caller must own cell t+1 too. Notes only lengthen, so a join never
  makes a new one-step note; two one-step notes side by side need two calls (one per parity
  of t), since each join reads both neighbours."""
  before, after = neighbours(classes, REST)
  score_before = jnp.take_along_axis(logits, before[..., None], -1)[..., 0]
  score_after = jnp.take_along_axis(logits, after[..., None], -1)[..., 0]
  can_before, can_after = before != REST, after != REST
  to_before = which & can_before & (~can_after | (score_before >= score_after))
  to_after = which & can_after & ~to_before
  new_classes = jnp.where(to_before, before, jnp.where(to_after, after, classes))
  # The start that stays: at t when joining forward (a restrike if the pitch before is the
  # same), at t+1 when joining back (a restrike if the note after has the pitch before's).
  new_restrike = jnp.where(to_before, False, jnp.where(to_after, after == before, restrike))
  back_before, _ = neighbours(to_before, False)
  forward_before, _ = neighbours(to_after, False)
  new_restrike = jnp.where(forward_before, False, new_restrike)
  joined_before, _ = neighbours(new_classes, REST)
  new_restrike = jnp.where(back_before, (classes == joined_before) | restrike, new_restrike)
  return new_classes, new_restrike


def _shifted(x: Array, d: int, fill) -> Array:
  """x [B, T, ...] with step t holding x[t - d] (d < 0: x[t + |d|]), `fill` past the ends."""
  t = x.shape[1]
  if d == 0:
    return x
  if abs(d) >= t:
    return jnp.full_like(x, fill)
  edge = jnp.full_like(x[:, :abs(d)], fill)
  return (jnp.concatenate([edge, x[:, :t - d]], 1) if d > 0
          else jnp.concatenate([x[:, -d:], edge], 1))


def _tied_over_beat(window: list, strikes: list) -> Array:
  """Whether the note sounding just before a beat is held over it having begun after the
  beat before: `window` holds the classes of the steps from the beat before (index 0) to the
  beat (index -1), `strikes` their restrike bits."""
  last = window[-2]
  held = (window[-1] == last) & (last != REST) & ~strikes[-1]
  from_beat_before = window[0] == last
  for k in range(1, len(window) - 1):
    from_beat_before = from_beat_before & (window[k] == last) & ~strikes[k]
  return held & ~from_beat_before


def syncopations(classes: Array, restrike: Array, steps_per_beat: int) -> Array:
  """bool [B, T, V]: the beats (steps counted from a bar line) over which a voice holds a note
  that began off a beat, each such note counted once, at the first beat it is held over."""
  spb = steps_per_beat
  window = [_shifted(classes, spb - k, -1) for k in range(spb + 1)]
  strikes = [_shifted(restrike, spb - k, False) for k in range(spb + 1)]
  beat = (jnp.arange(classes.shape[1]) % spb == 0)[None, :, None]
  return beat & _tied_over_beat(window, strikes)


def syncopation_log_prior(classes: Array, restrike: Array, num_classes: int,
                          steps_per_beat: int, log_weights: Array) -> Array:
  """float [B, T, V, C]: for each cell and each class it could take, `log_weights` [V] times
  the number of `syncopations` the voice has, with the choice, at the beats whose notes the
  cell can change (the beat at the cell, if any, and the next one)."""
  spb, num_steps = steps_per_beat, classes.shape[1]
  cand = jnp.arange(num_classes)[None, None, None, :]
  step = jnp.arange(num_steps)
  total = jnp.zeros(classes.shape + (num_classes,), jnp.float32)
  for j in range(spb + 1):
    # The beat j steps after the cell; the cell is index spb - j of that beat's window.
    at_beat = (((step + j) % spb == 0) & (step + j < num_steps))[None, :, None, None]
    window = [cand if k == spb - j else _shifted(classes, spb - k - j, -1)[..., None]
              for k in range(spb + 1)]
    strikes = [_shifted(restrike, spb - k - j, False)[..., None] for k in range(spb + 1)]
    total = total + jnp.where(at_beat & _tied_over_beat(window, strikes), 1.0, 0.0)
  return total * jnp.asarray(log_weights, jnp.float32)[None, None, :, None]


def interval_counts(layout: VoiceLayout, rolls: np.ndarray) -> np.ndarray:
  """float [V, INTERVAL_BINS]: per voice, how many times its line moves by each leap size
  (semitones up or down, 13 and over in the last bin) from one note to the next with no rest
  between, over uint8 rolls [N, bars, steps, pitches, tracks]. A held pitch is one note."""
  classes, _ = classes_from_roll(layout, jnp.asarray(rolls))
  before, _ = neighbours(classes, REST)
  classes, before = np.asarray(classes), np.asarray(before)
  moves = (classes != before) & (classes != REST) & (before != REST)
  leaps = np.minimum(np.abs(classes - before), INTERVAL_BINS - 1)
  return np.stack([np.bincount(leaps[..., v][moves[..., v]], minlength=INTERVAL_BINS)
                   for v in range(classes.shape[-1])]).astype(np.float64)


def interval_log_prior(classes: Array, num_classes: int, log_weights: Array) -> Array:
  """float [B, T, V, C]: for each cell and each class it could take, the sum of
  `log_weights` [V, INTERVAL_BINS] over the leaps that choice makes: from the step before's
  pitch (if it differs and neither is a rest) and to the step after's. Classes of one voice
  are its pitches in order, so a leap is a difference of classes."""
  cand = jnp.arange(num_classes)[None, None, None, :]               # [1, 1, 1, C]
  before, after = (x[..., None] for x in neighbours(classes, REST))
  table = jnp.asarray(log_weights)                                  # [V, BINS]
  voice = jnp.arange(table.shape[0])[:, None]                       # [V, 1]

  def term(other):
    moves = (other != cand) & (other != REST) & (cand != REST)
    leap = jnp.minimum(jnp.abs(other - cand), INTERVAL_BINS - 1)    # [B, T, V, C]
    return jnp.where(moves, table[voice, leap], 0.0)

  return term(before) + term(after)
