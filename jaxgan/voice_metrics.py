"""Measures of part music read as voices: statistics, voice leading, restoration, one report.

A four-part chorale is four monophonic lines. The MuseGAN metrics (`jaxgan.metrics`) see each
track as a set of pitches per step and cannot tell a voice singing one note at a time from one
striking clusters; everything here reads each track as a line and compares it with Bach's.

Voices. `Voices` holds, per piece, step and voice, the sounding MIDI pitch (-1 = rest) and
whether a note starts there. `from_rolls` reads piano-rolls [N, bars, steps, pitches, tracks]
(bool, or uint8 0/1/2 = silent/held/onset). Where a track sounds several pitches at once (the
output of a per-pitch model) the line keeps the highest (`pick="top"`; "bottom" keeps the
lowest), and `pitches_per_step` keeps the count, the statistic that exposes it (Bach: exactly 1
wherever a voice sounds). A note starts where the line's pitch changes (from a rest or another
pitch) or, in an onset-marked roll, where the kept pitch's cell is 2. Encodings that cannot mark
repeated notes (the standard JSB split) give onsets at pitch changes only (`from_pitches`).

Statistics, per piece and voice (the set value is the mean over pieces, NaN-free ones):
- pitches_per_step: mean number of pitches the track sounds over its sounding steps;
  poly_share: the share of those steps with more than one.
- rest_share: share of steps where the voice is silent.
- pitch_low / pitch_high / pitch_mean: lowest, highest and time-weighted mean MIDI pitch;
  pitch_span = high - low.
- notes_per_bar: note onsets per bar (rests count as bars with no note).
- UPC: pitch classes sounding per bar, over the bars where the voice sounds.
- QN: share of notes at least `metrics.qn_min_steps` long (an 8th note at 4 steps per beat).
  A note lasts until the next onset or rest; one cut by the window's end counts as cut.
- on_beat: share of notes that start on a beat (Bach's voices ~0.75 on the standard split).
- PCE: entropy in bits of the piece's pitch-class histogram of notes (each note once).
- interval: mean absolute step in semitones from each note to the next (across rests).
- TD, per pair of voices: the tonal distance of `metrics.beat_tonal_distances` (Harte et al.)
  between the two lines, over the beats where both sound.
- held_chords, per piece (all voices together): chords that every voice holds for two beats or
  more (all sound, none starts a note), per bar. Bach ends phrases on them (about one in four
  bars); lines that each move on their own seldom meet in one, and a piece without them runs
  on without breathing.

Voice leading, counted per voice-pair transition. For voices i above j, a transition is a step t
where both voices sound at t - 1 and at t and at least one of them changes pitch. Repeated notes
are not transitions: no rule can fire on them, and the standard split cannot show them. With
"moves" = changes pitch, "similar" = both move in the same direction and interval = |i - j|:
- parallel_fifths / parallel_octaves: similar motion, interval % 12 == 7 (resp. 0) before and
  after (compound intervals and octave to unison count, as music21's octave displacement);
- hidden_fifths / hidden_octaves: similar motion into interval % 12 == 7 (resp. 0) from another
  interval class (all pairs: the outer-voice restriction of textbooks is left to the reader);
- crossing: the lower voice above the upper one before or after (music21's `voiceCrossing`);
- overlap: the upper voice moves below the lower one's previous pitch, or the lower above the
  upper's previous pitch (music21's `voiceOverlap`);
- spacing: more than an octave between adjacent upper voices after the move (S-A, A-T);
- out_of_range: a note (onset) outside its voice's range, per note.
Parallels and hidden intervals are counted on all pairs, crossing and overlap on adjacent pairs,
spacing on the adjacent pairs above the lowest voice. A rate is events / transitions of the
rule's pairs. Music21's `VoiceLeadingQuartet` agrees on every transition of the chorales
tested but where spelling decides: a diminished fifth moving to a perfect fifth in similar
motion is a hidden fifth here and generic parallel motion there (a diminished 6th would be no
fifth there either). Its `parallelFifth` / `parallelOctave` also count contrary ("antiparallel")
motion, which is left out here, and it keeps unisons apart from octaves.

Restoration and accompaniment (`restoration_scores`, `accompaniment_scores`): per voice, over
the hidden cells, the share with the right pitch (a rest counts as a pitch), with the right pitch
class, and precision / recall / F1 of note onsets, an onset counting when Bach has an onset of
the same pitch at the same step and voice (onsets everywhere score a low precision, none a zero
recall), and the same F1 of onset times alone, whatever the pitch ("rhythm_f1": are notes
started where Bach starts his). Baselines: `repeat_previous_bar`, `hold_previous_note`. `masked_nll` turns the model's
log-probabilities into nats per hidden cell and per frame (the sum over the hidden voices of a
step, the unit of the published framewise figures).

`report` puts it together against a reference set: per statistic Bach's value, the model's,
their ratio and the overlapping area of the per-piece values (Yang & Lerch, `metrics.compare_sets`),
and per voice-leading rule both rates and their ratio, each with its target (`TARGETS`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from jaxgan import metrics as metrics_lib

SATB = ("soprano", "alto", "tenor", "bass")
# The usual textbook ranges (C4-G5, G3-D5, C3-G4, E2-C4), low and high MIDI pitch inclusive.
SATB_RANGES = ((60, 79), (55, 74), (48, 67), (40, 60))

STATISTICS = ("pitches_per_step", "poly_share", "rest_share", "pitch_low", "pitch_high",
              "pitch_mean", "pitch_span", "notes_per_bar", "UPC", "QN", "on_beat", "PCE",
              "interval")
# Statistics that place a voice on the pitch axis: their tolerance is in semitones (see TARGETS).
_LOCATION = ("pitch_low", "pitch_high", "pitch_mean")
PAIR_RULES = ("parallel_fifths", "parallel_octaves", "hidden_fifths", "hidden_octaves",
              "crossing", "overlap", "spacing")
VOICE_LEADING = PAIR_RULES + ("out_of_range",)
PICKS = ("top", "bottom")

# Targets for a model to count as Bach-like. A statistic is within `relative` of Bach's value;
# a location statistic within `relative` of Bach's mean pitch span of that voice (10 % of a MIDI
# number would allow a soprano to sing alto), at least `min_semitones`; a statistic whose Bach
# value is near 0 also passes within its `absolute` slack. Each overlapping area is at least
# `oa`; each voice-leading rate at most `voice_leading` x Bach's, plus `rate_slack` so that a rule
# Bach never breaks in the sample does not demand exactly zero.
TARGETS = {"relative": 0.10, "min_semitones": 1.0, "oa": 0.8, "voice_leading": 1.5,
           "rate_slack": 0.001, "absolute": {"poly_share": 0.005, "rest_share": 0.005}}


def _ratio(num, den) -> np.ndarray:
  """num / den as float64 with NaN where den is 0, without warnings."""
  num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
  out = np.full(num.shape, np.nan)
  np.divide(num, den, out=out, where=den != 0)
  return out


def _pitch_change_onsets(pitch: np.ndarray) -> np.ndarray:
  """Bool [N, T, V]: sounding and a different pitch (or a rest) the step before."""
  sounding = pitch >= 0
  changed = sounding.copy()
  changed[:, 1:] &= pitch[:, 1:] != pitch[:, :-1]
  return changed


# --- Voices -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Voices:
  """Monophonic lines: pitch int16 [N, T, V] (-1 = rest) and onset bool [N, T, V].

  T is a whole number of bars of `steps_per_bar` steps. A sounding cell whose pitch differs from
  the step before always starts a note (onsets are completed so); an onset on a rest is an
  error. `pitches_per_step` (uint [N, T, V], optional) counts the pitches the source track
  sounded, for tracks read from polyphonic rolls; None means one wherever the voice sounds.
  """

  pitch: np.ndarray
  onset: np.ndarray
  steps_per_beat: int
  steps_per_bar: int
  names: tuple[str, ...] = SATB
  pitches_per_step: np.ndarray | None = None

  def __post_init__(self) -> None:
    pitch = np.asarray(self.pitch)
    if pitch.ndim != 3:
      raise ValueError(f"pitch must be [pieces, steps, voices], got shape {pitch.shape}")
    if not np.issubdtype(pitch.dtype, np.integer):
      raise TypeError(f"pitch must be integer MIDI pitches (-1 = rest), got {pitch.dtype}")
    if pitch.size and (pitch.min() < -1 or pitch.max() > 127):
      raise ValueError(f"pitch must hold MIDI pitches 0-127 or -1 for a rest, got values "
                       f"{pitch.min()}..{pitch.max()}")
    pitch = pitch.astype(np.int16)
    onset = np.asarray(self.onset)
    if onset.shape != pitch.shape:
      raise ValueError(f"onset shape {onset.shape} differs from pitch shape {pitch.shape}")
    onset = onset.astype(bool)
    rest_onsets = onset & (pitch < 0)
    if rest_onsets.any():
      n, t, v = np.argwhere(rest_onsets)[0]
      raise ValueError(f"onset on a rest: piece {n}, step {t}, voice {v}")
    if self.steps_per_beat < 1 or self.steps_per_bar < 1:
      raise ValueError(f"steps_per_beat and steps_per_bar must be positive, got "
                       f"{self.steps_per_beat} and {self.steps_per_bar}")
    if pitch.shape[1] % self.steps_per_bar:
      raise ValueError(f"{pitch.shape[1]} steps are not whole bars of {self.steps_per_bar} steps")
    names = tuple(self.names)
    if len(names) != pitch.shape[2]:
      raise ValueError(f"{len(names)} voice names {names} for {pitch.shape[2]} voices")
    count = self.pitches_per_step
    if count is not None:
      count = np.asarray(count)
      if count.shape != pitch.shape:
        raise ValueError(f"pitches_per_step shape {count.shape} differs from {pitch.shape}")
      if ((count > 0) != (pitch >= 0)).any():
        raise ValueError("pitches_per_step must be positive exactly where a voice sounds")
    object.__setattr__(self, "pitch", pitch)
    object.__setattr__(self, "onset", onset | _pitch_change_onsets(pitch))
    object.__setattr__(self, "names", names)
    object.__setattr__(self, "pitches_per_step", count)

  def __len__(self) -> int:
    return self.pitch.shape[0]

  @property
  def num_voices(self) -> int:
    return self.pitch.shape[2]

  @property
  def num_bars(self) -> int:
    return self.pitch.shape[1] // self.steps_per_bar

  def replace(self, **changes) -> Voices:
    return dataclasses.replace(self, **changes)

  def take(self, index) -> Voices:
    """The pieces `index` selects (an array of indices, a slice or a bool mask)."""
    count = None if self.pitches_per_step is None else self.pitches_per_step[index]
    return self.replace(pitch=self.pitch[index], onset=self.onset[index], pitches_per_step=count)

  def onsets_at_changes(self) -> Voices:
    """The same lines with onsets only where the pitch changes, as the standard split has them."""
    return self.replace(onset=_pitch_change_onsets(self.pitch))


def from_pitches(pitch: np.ndarray, *, steps_per_beat: int, steps_per_bar: int,
                 names: Sequence[str] = SATB, onset: np.ndarray | None = None) -> Voices:
  """Voices from pitches [N, T, V] (or one piece [T, V]); onsets at pitch changes if None."""
  pitch = np.asarray(pitch)
  if pitch.ndim == 2:
    pitch = pitch[None]
    onset = None if onset is None else np.asarray(onset)[None]
  if onset is None:
    onset = np.zeros(pitch.shape, bool)
  return Voices(pitch, onset, steps_per_beat, steps_per_bar, tuple(names))


def from_rolls(rolls: np.ndarray, spec: metrics_lib.RollSpec, *, pick: str = "top") -> Voices:
  """Voices from piano-rolls [N, bars, steps, pitches, tracks]; see the module docstring."""
  rolls = np.asarray(rolls)
  if rolls.ndim != 5:
    raise ValueError(f"expected rolls [N, bars, steps, pitches, tracks], got shape {rolls.shape}")
  if rolls.shape[-1] != spec.num_tracks:
    raise ValueError(f"roll has {rolls.shape[-1]} tracks, spec names {spec.num_tracks}")
  if rolls.dtype != bool and not np.issubdtype(rolls.dtype, np.integer):
    raise TypeError(f"expected a bool or integer roll, got {rolls.dtype}; binarize it first")
  if spec.drum_tracks:
    raise ValueError(f"voices are pitched lines; tracks {spec.drum_tracks} are drums")
  if pick not in PICKS:
    raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
  n, bars, steps, num_pitches, tracks = rolls.shape
  flat = rolls.reshape(n, bars * steps, num_pitches, tracks)
  active = flat if flat.dtype == bool else flat > 0
  count = active.sum(2, dtype=np.uint16)
  if pick == "top":
    row = num_pitches - 1 - active[:, :, ::-1].argmax(2)
  else:
    row = active.argmax(2)
  sounding = count > 0
  pitch = np.where(sounding, spec.lowest_pitch + row, -1)
  if flat.dtype == bool:
    onset = np.zeros(pitch.shape, bool)
  else:
    onset = sounding & (np.take_along_axis(flat, row[:, :, None], 2)[:, :, 0] == 2)
  return Voices(pitch, onset, spec.steps_per_beat, steps, spec.track_names, count)


def to_rolls(voices: Voices, *, lowest_pitch: int, num_pitches: int) -> np.ndarray:
  """uint8 rolls [N, bars, steps, pitches, voices]: 2 at onsets, 1 where a note is held."""
  pitch = voices.pitch
  sounding = pitch >= 0
  row = pitch.astype(np.int64) - lowest_pitch
  outside = sounding & ((row < 0) | (row >= num_pitches))
  if outside.any():
    raise ValueError(f"pitches {sorted(set(pitch[outside].tolist()))} lie outside the roll's "
                     f"{lowest_pitch}..{lowest_pitch + num_pitches - 1}")
  n, t, v = pitch.shape
  out = np.zeros((n, t, num_pitches, v), np.uint8)
  i, s, k = np.nonzero(sounding)
  out[i, s, row[i, s, k], k] = np.where(voices.onset[i, s, k], 2, 1)
  return out.reshape(n, voices.num_bars, voices.steps_per_bar, num_pitches, v)


def windows(pieces: Sequence[np.ndarray], length: int, hop: int) -> np.ndarray:
  """Every window of `length` steps starting at multiples of `hop`: [N, length, ...], in order."""
  if length < 1 or hop < 1:
    raise ValueError(f"length and hop must be positive, got {length} and {hop}")
  pieces = [np.asarray(p) for p in pieces]
  out = [p[s:s + length] for p in pieces for s in range(0, len(p) - length + 1, hop)]
  if not out:
    trailing = pieces[0].shape[1:] if pieces else ()
    return np.zeros((0, length) + trailing, pieces[0].dtype if pieces else np.int16)
  return np.stack(out)


# --- Statistics ---------------------------------------------------------------------------------


def _pair_indices(num_voices: int) -> tuple[np.ndarray, np.ndarray]:
  return np.triu_indices(num_voices, 1)


def pair_names(voices: Voices) -> list[str]:
  """Labels of the voice pairs in `piece_statistics`' "TD" column order."""
  upper, lower = _pair_indices(voices.num_voices)
  return [f"{voices.names[i]}-{voices.names[j]}" for i, j in zip(upper, lower)]


def piece_statistics(voices: Voices) -> dict[str, np.ndarray]:
  """Each of `STATISTICS` per piece and voice [N, V] (NaN where undefined), "TD" per piece
  and voice pair [N, pairs] in `pair_names` order and "held_chords" per piece [N, 1]."""
  pitch, onset = voices.pitch, voices.onset
  n, t, v = pitch.shape
  sounding = pitch >= 0
  num_sounding = sounding.sum(1)
  notes = onset.sum(1)
  out = {}
  count = sounding.astype(np.uint8) if voices.pitches_per_step is None else voices.pitches_per_step
  out["pitches_per_step"] = _ratio(count.sum(1, dtype=np.int64), num_sounding)
  out["poly_share"] = _ratio((count > 1).sum(1), num_sounding)
  out["rest_share"] = _ratio(t - num_sounding, np.full(num_sounding.shape, t))

  as_float = pitch.astype(np.float64)
  low = np.where(sounding, as_float, np.inf).min(1, initial=np.inf)
  high = np.where(sounding, as_float, -np.inf).max(1, initial=-np.inf)
  out["pitch_low"] = np.where(num_sounding > 0, low, np.nan)
  out["pitch_high"] = np.where(num_sounding > 0, high, np.nan)
  out["pitch_mean"] = _ratio(np.where(sounding, as_float, 0.0).sum(1), num_sounding)
  out["pitch_span"] = out["pitch_high"] - out["pitch_low"]
  out["notes_per_bar"] = notes / max(voices.num_bars, 1)

  # Pitch classes, with a 13th class for rests so that one one-hot serves UPC, PCE and TD.
  pc = np.where(sounding, pitch % 12, 12)
  one_hot = pc[..., None] == np.arange(12)  # [N, T, V, 12]
  bars = one_hot.reshape(n, voices.num_bars, voices.steps_per_bar, v, 12)
  upc = bars.any(2).sum(-1)  # [N, B, V]
  voiced = sounding.reshape(n, voices.num_bars, voices.steps_per_bar, v).any(2)
  out["UPC"] = _ratio(np.where(voiced, upc, 0).sum(1), voiced.sum(1))

  # QN: a note's length is the number of sounding steps sharing its onset count.
  note_id = np.cumsum(onset, 1)  # every sounding step has an onset at or before it
  key = (np.arange(n)[:, None, None] * v + np.arange(v)) * (t + 1) + note_id
  lengths = np.bincount(key[sounding], minlength=n * v * (t + 1)).reshape(n, v, t + 1)
  min_len = metrics_lib.qn_min_steps(voices.steps_per_beat)
  out["QN"] = _ratio((lengths[..., 1:] >= min_len).sum(-1), notes)
  # Metre: the share of notes that start on a beat. Bach's voices start ~3 in 4 of their notes
  # there; a sampler that lays note boundaries at random starts 1 in steps_per_beat.
  on_beat = (np.arange(t) % voices.steps_per_beat == 0)[None, :, None]
  out["on_beat"] = _ratio((onset & on_beat).sum(1), notes)

  hist = (one_hot & onset[..., None]).sum(1)  # [N, V, 12]
  prob = _ratio(hist, notes[..., None])
  with np.errstate(divide="ignore", invalid="ignore"):
    plogp = np.where(prob > 0, prob * np.log2(prob), 0.0)
  out["PCE"] = np.where(notes > 0, -plogp.sum(-1) + 0.0, np.nan)

  # interval: from each onset back to the last sounding step before it (the previous note).
  last = np.maximum.accumulate(np.where(sounding, np.arange(t)[:, None], -1), axis=1)
  prev = last[:, :-1]
  prev_pitch = np.take_along_axis(pitch, np.maximum(prev, 0), 1)
  moves = onset[:, 1:] & (prev >= 0)
  step = np.abs(pitch[:, 1:].astype(np.int32) - prev_pitch)
  out["interval"] = _ratio(np.where(moves, step, 0).sum(1), moves.sum(1))

  active = np.ascontiguousarray(bars.transpose(0, 1, 3, 2, 4))  # [N, B, V, S, 12], row = pc
  spec = metrics_lib.RollSpec(voices.steps_per_beat, 0, voices.names)
  dist, both = metrics_lib.beat_tonal_distances(active, spec)
  td = _ratio(np.where(both, dist, 0.0).sum((1, 2)), both.sum((1, 2)))  # [N, V, V]
  upper, lower = _pair_indices(v)
  out["TD"] = td[:, upper, lower]
  out["held_chords"] = (held_chord_counts(voices) / max(voices.num_bars, 1))[:, None]
  return out


def held_chord_counts(voices: Voices, min_beats: int = 2) -> np.ndarray:
  """Per piece, the chords every voice holds for at least `min_beats` beats: runs of steps
  where all voices sound and none starts a note after the run's first step."""
  everyone = (voices.pitch >= 0).all(-1)  # [N, T]
  any_onset = voices.onset.any(-1)
  need = min_beats * voices.steps_per_beat
  run = np.zeros(len(voices), np.int64)
  count = np.zeros(len(voices), np.int64)
  for t in range(voices.pitch.shape[1]):
    goes_on = everyone[:, t] & ~any_onset[:, t] & (run > 0)
    count += ~goes_on & (run >= need)
    run = np.where(goes_on, run + 1, everyone[:, t].astype(np.int64))
  return count + (run >= need)


def _set_value(per_piece: np.ndarray) -> np.ndarray:
  """Mean over pieces of the defined values: [N, k] -> [k], NaN where none is defined."""
  valid = ~np.isnan(per_piece)
  return _ratio(np.where(valid, per_piece, 0.0).sum(0), valid.sum(0))


def statistics(voices: Voices) -> dict[str, np.ndarray]:
  """Set values: each statistic [V] and "TD" [pairs], means over the pieces."""
  return {name: _set_value(values) for name, values in piece_statistics(voices).items()}


# --- Voice leading ------------------------------------------------------------------------------


def _rule_pairs(rule: str, num_voices: int) -> list[tuple[int, int]]:
  if rule in ("crossing", "overlap"):
    return [(i, i + 1) for i in range(num_voices - 1)]
  if rule == "spacing":
    return [(i, i + 1) for i in range(num_voices - 2)]
  return list(zip(*(x.tolist() for x in _pair_indices(num_voices))))


def transition_events(voices: Voices) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Transitions bool [N, T - 1, pairs] (step t + 1 against t, pairs in `pair_names` order) and
  each pair rule's events there, same shape (True only on transitions)."""
  upper, lower = _pair_indices(voices.num_voices)
  hi = voices.pitch[:, :, upper].astype(np.int32)
  lo = voices.pitch[:, :, lower].astype(np.int32)
  hi0, hi1, lo0, lo1 = hi[:, :-1], hi[:, 1:], lo[:, :-1], lo[:, 1:]
  sound = (hi0 >= 0) & (hi1 >= 0) & (lo0 >= 0) & (lo1 >= 0)
  hi_moves, lo_moves = hi1 != hi0, lo1 != lo0
  transition = sound & (hi_moves | lo_moves)
  similar = transition & hi_moves & lo_moves & (np.sign(hi1 - hi0) == np.sign(lo1 - lo0))
  before, after = np.abs(hi0 - lo0) % 12, np.abs(hi1 - lo1) % 12
  events = {
      "parallel_fifths": similar & (before == 7) & (after == 7),
      "parallel_octaves": similar & (before == 0) & (after == 0),
      "hidden_fifths": similar & (before != 7) & (after == 7),
      "hidden_octaves": similar & (before != 0) & (after == 0),
      "crossing": transition & ((hi0 < lo0) | (hi1 < lo1)),
      "overlap": transition & ((hi1 < lo0) | (lo1 > hi0)),
      "spacing": transition & (hi1 - lo1 > 12),
  }
  return transition, events


def voice_leading_counts(voices: Voices, ranges: Sequence[tuple[int, int]] | None = SATB_RANGES
                         ) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
  """Per rule: events [N, K], opportunities [N, K] and the K labels (voice pairs, or voices for
  out_of_range, whose opportunities are notes). Out of range is left out if `ranges` is None."""
  transition, events = transition_events(voices)
  all_pairs = list(zip(*(x.tolist() for x in _pair_indices(voices.num_voices))))
  labels = pair_names(voices)
  out = {}
  for rule in PAIR_RULES:
    cols = [all_pairs.index(p) for p in _rule_pairs(rule, voices.num_voices)]
    out[rule] = (events[rule][:, :, cols].sum(1), transition[:, :, cols].sum(1),
                 [labels[c] for c in cols])
  if ranges is not None:
    ranges = np.asarray(ranges)
    if ranges.shape != (voices.num_voices, 2):
      raise ValueError(f"ranges must be one (low, high) per voice, {voices.num_voices} voices; "
                       f"got shape {ranges.shape}")
    pitch = voices.pitch
    outside = voices.onset & ((pitch < ranges[:, 0]) | (pitch > ranges[:, 1]))
    out["out_of_range"] = (outside.sum(1), voices.onset.sum(1), list(voices.names))
  return out


def voice_leading(voices: Voices, ranges: Sequence[tuple[int, int]] | None = SATB_RANGES
                  ) -> dict[str, dict[str, Any]]:
  """Per rule: "rate" (events / opportunities over the set), "events", "opportunities" and
  "per" (label -> rate). NaN rate where there is no opportunity."""
  out = {}
  for rule, (events, chances, labels) in voice_leading_counts(voices, ranges).items():
    e, c = events.sum(0), chances.sum(0)
    out[rule] = {"rate": float(_ratio(e.sum(), c.sum())), "events": int(e.sum()),
                 "opportunities": int(c.sum()),
                 "per": {label: float(r) for label, r in zip(labels, _ratio(e, c))}}
  return out


# --- Restoration and accompaniment --------------------------------------------------------------


def _check_same_grid(truth: Voices, other: Voices, hidden: np.ndarray | None = None) -> None:
  if truth.pitch.shape != other.pitch.shape:
    raise ValueError(f"voices differ in shape: {truth.pitch.shape} vs {other.pitch.shape}")
  if hidden is not None and np.shape(hidden) != truth.pitch.shape:
    raise ValueError(f"hidden mask shape {np.shape(hidden)} differs from the voices' "
                     f"{truth.pitch.shape} ([pieces, steps, voices])")


def restoration_scores(truth: Voices, filled: Voices, hidden: np.ndarray) -> dict[str, Any]:
  """Scores of `filled` against `truth` over the `hidden` cells (bool [N, T, V]).

  Per voice name and "all": "cells" (hidden cells), "cell_accuracy" (same pitch, a rest being a
  pitch), "pitch_class_accuracy" (same pitch class, rest with rest), "onset_precision",
  "onset_recall", "onset_f1" (an onset counts when truth has an onset of the same pitch at the
  same hidden cell), "onsets" (truth's onsets in the hidden cells). NaN where undefined.
  Compare onsets on one footing: `onsets_at_changes()` on both when either side cannot mark
  repeated notes.
  """
  _check_same_grid(truth, filled, hidden)
  hidden = np.asarray(hidden, bool)
  same = filled.pitch == truth.pitch
  same_pc = np.where(truth.pitch < 0, filled.pitch < 0,
                     (filled.pitch >= 0) & (filled.pitch % 12 == truth.pitch % 12))
  true_on, got_on = truth.onset & hidden, filled.onset & hidden
  hit = true_on & got_on & same
  axes = (0, 1)
  counts = {"cells": hidden.sum(axes), "right": (same & hidden).sum(axes),
            "right_pc": (same_pc & hidden).sum(axes), "onsets": true_on.sum(axes),
            "predicted": got_on.sum(axes), "hits": hit.sum(axes),
            "time_hits": (true_on & got_on).sum(axes)}

  def f1_of(hits, predicted, onsets) -> tuple[float, float, float]:
    precision, recall = float(_ratio(hits, predicted)), float(_ratio(hits, onsets))
    if hits:
      return precision, recall, 2 * precision * recall / (precision + recall)
    # 0 when there was an onset to find or one claimed, undefined when neither
    return precision, recall, 0.0 if onsets or predicted else math.nan

  def scores(c: dict[str, np.ndarray]) -> dict[str, Any]:
    precision, recall, f1 = f1_of(c["hits"], c["predicted"], c["onsets"])
    return {"cells": int(c["cells"]), "onsets": int(c["onsets"]),
            "cell_accuracy": float(_ratio(c["right"], c["cells"])),
            "pitch_class_accuracy": float(_ratio(c["right_pc"], c["cells"])),
            "onset_precision": precision, "onset_recall": recall, "onset_f1": f1,
            "rhythm_f1": f1_of(c["time_hits"], c["predicted"], c["onsets"])[2]}

  out = {name: scores({k: c[i] for k, c in counts.items()}) for i, name in enumerate(truth.names)}
  out["all"] = scores({k: c.sum() for k, c in counts.items()})
  return out


def repeat_previous_bar(voices: Voices, hidden: np.ndarray) -> Voices:
  """Baseline: every hidden cell copies the cell one bar earlier, filled left to right, so a gap
  repeats the bar before it; hidden cells in the first bar copy the bar after them."""
  _check_same_grid(voices, voices, hidden)
  hidden = np.asarray(hidden, bool)
  pitch, onset = voices.pitch.copy(), voices.onset.copy()
  bar, num_steps = voices.steps_per_bar, pitch.shape[1]
  todo = hidden.copy()  # hidden and not yet filled: never a source, so no hidden note leaks

  def fill(t: int, source: int) -> None:
    cells = todo[:, t] & ~todo[:, source]
    pitch[:, t][cells], onset[:, t][cells] = pitch[:, source][cells], onset[:, source][cells]
    todo[:, t] &= ~cells

  for t in range(bar, num_steps):
    fill(t, t - bar)
  for t in range(num_steps - bar - 1, -1, -1):  # what has no bar before it: the bar after
    fill(t, t + bar)
  pitch[todo], onset[todo] = -1, False  # nothing to copy from: a rest
  return voices.replace(pitch=pitch, onset=onset & (pitch >= 0), pitches_per_step=None)


def hold_previous_note(voices: Voices, hidden: np.ndarray) -> Voices:
  """Baseline: every hidden cell holds the last given note of its voice before it (no new onset),
  or, with none before, the first given note after it."""
  _check_same_grid(voices, voices, hidden)
  hidden = np.asarray(hidden, bool)
  pitch = voices.pitch
  t = pitch.shape[1]
  given = ~hidden & (pitch >= 0)
  steps = np.arange(t)[:, None]
  before = np.maximum.accumulate(np.where(given, steps, -1), axis=1)
  after = np.minimum.accumulate(np.where(given, steps, t)[:, ::-1], axis=1)[:, ::-1]
  source = np.where(before >= 0, before, np.minimum(after, t - 1))
  held = np.take_along_axis(pitch, source, 1)
  held = np.where((before >= 0) | (after < t), held, -1)
  filled = np.where(hidden, held, pitch)
  # Onsets inside the gap only where the pitch changes (Voices adds those).
  return voices.replace(pitch=filled, onset=voices.onset & ~hidden & (filled >= 0),
                        pitches_per_step=None)


def accompaniment_scores(truth: Voices, generated: Voices, given: Sequence[int] = (0,),
                         ranges: Sequence[tuple[int, int]] | None = SATB_RANGES
                         ) -> dict[str, Any]:
  """Scores of voices generated around the `given` ones (indices, soprano = 0) against Bach's.

  "bass_pc_in_chord": over the steps where Bach's lowest voice sounds, the share where a
  generated (not given) voice sounds its pitch class (a given voice doubling it does not count);
  "bass_pc_equal": the share where the generated lowest voice has it; "restoration": the
  restoration scores with every cell of the generated voices hidden; "voice_leading": the rates
  of the whole generated piece.
  """
  _check_same_grid(truth, generated)
  v = truth.num_voices
  given = sorted(set(int(g) for g in given))
  if any(not 0 <= g < v for g in given) or len(given) == v:
    raise ValueError(f"given voices {given} must be some, not all, of 0..{v - 1}")
  free = [k for k in range(v) if k not in given]
  bass = truth.pitch[..., -1]
  steps = bass >= 0
  gen = generated.pitch[..., free]
  in_chord = ((gen >= 0) & (gen % 12 == (bass % 12)[..., None])).any(-1)
  gen_bass = generated.pitch[..., -1]
  bass_equal = (gen_bass >= 0) & (gen_bass % 12 == bass % 12)
  hidden = np.zeros(truth.pitch.shape, bool)
  hidden[..., free] = True
  return {"given": [truth.names[g] for g in given],
          "bass_pc_in_chord": float(_ratio((in_chord & steps).sum(), steps.sum())),
          "bass_pc_equal": float(_ratio((bass_equal & steps).sum(), steps.sum())),
          "restoration": restoration_scores(truth, generated, hidden),
          "voice_leading": {rule: r["rate"]
                            for rule, r in voice_leading(generated, ranges).items()}}


def bar_span_mask(num_pieces: int, num_bars: int, steps_per_bar: int, num_voices: int, *,
                  span: int = 2, seed: int = 0, first: int = 1) -> np.ndarray:
  """Hidden cells bool [N, bars * steps_per_bar, V]: `span` consecutive bars of all voices at a
  random start per piece, drawn from bars first..num_bars - span (`first` = 1 leaves a bar before
  the gap for the repeat-the-previous-bar baseline)."""
  if not 0 <= first <= num_bars - span:
    raise ValueError(f"cannot hide {span} bars from bar {first} on in {num_bars} bars")
  start = np.random.default_rng(seed).integers(first, num_bars - span + 1, num_pieces)
  bars = np.arange(num_bars)
  hidden_bars = (bars >= start[:, None]) & (bars < start[:, None] + span)  # [N, bars]
  cells = np.repeat(hidden_bars, steps_per_bar, axis=1)
  return np.broadcast_to(cells[:, :, None], cells.shape + (num_voices,)).copy()


RESTORATION_SCORES = ("cell_accuracy", "pitch_class_accuracy", "onset_precision",
                      "onset_recall", "onset_f1", "rhythm_f1")
BASELINES = {"repeat previous bar": repeat_previous_bar, "hold previous note": hold_previous_note}


def restoration_report(truth: Voices, filled: dict[str, Voices], hidden: np.ndarray, *,
                       baselines: bool = True, onsets_at_changes: bool = False
                       ) -> dict[str, Any]:
  """`restoration_scores` of each filled version (name -> Voices) and, with `baselines`, of
  `BASELINES`, plus "table": one line per method and voice. JSON-serialisable.

  `onsets_at_changes` compares onsets at pitch changes only (see `restoration_scores`).
  """
  methods = dict(filled)
  if baselines:
    methods.update({name: fill(truth, hidden) for name, fill in BASELINES.items()})
  if onsets_at_changes:
    truth = truth.onsets_at_changes()
    methods = {name: v.onsets_at_changes() for name, v in methods.items()}
  scores = _clean({name: restoration_scores(truth, v, hidden) for name, v in methods.items()})
  header = ["method", "voice", "cells", "onsets"] + list(RESTORATION_SCORES)
  lines = [[name, voice, str(s["cells"]), str(s["onsets"])] + [_fmt(s[k]) for k in
                                                               RESTORATION_SCORES]
           for name, by_voice in scores.items() for voice, s in by_voice.items()]
  widths = [max(len(c) for c in column) for column in zip(header, *lines)]
  table = "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(cells, widths)))
                    for cells in [header] + lines)
  return {"methods": scores, "table": table}


def masked_nll(log_probs: np.ndarray, targets: np.ndarray, hidden: np.ndarray,
               names: Sequence[str] | None = None) -> dict[str, Any]:
  """Cross-entropy of the true classes over the hidden cells, in nats.

  `log_probs` float [N, T, V, K] (log-softmax output), `targets` int [N, T, V] (the model's class
  indices of the truth), `hidden` bool [N, T, V]. Returns "nats_per_cell" (mean over hidden
  cells), "nats_per_frame" (mean over steps with a hidden cell of the sum over their hidden
  voices: the unit of the published framewise figures when all voices are hidden), "cells",
  "frames" and "per_voice" (nats per hidden cell of each voice).
  """
  log_probs = np.asarray(log_probs, np.float64)
  targets, hidden = np.asarray(targets), np.asarray(hidden, bool)
  if log_probs.shape[:-1] != targets.shape or targets.shape != hidden.shape or targets.ndim != 3:
    raise ValueError(f"expected log_probs [N, T, V, K], targets and hidden [N, T, V]; got "
                     f"{log_probs.shape}, {targets.shape}, {hidden.shape}")
  num_classes = log_probs.shape[-1]
  if ((targets < 0) | (targets >= num_classes)).any():
    raise ValueError(f"targets must be class indices 0..{num_classes - 1}")
  chosen = log_probs[hidden]
  total = np.logaddexp.reduce(chosen, axis=-1) if chosen.size else np.zeros(0)
  if not np.allclose(total, 0.0, atol=1e-3):
    raise ValueError("log_probs do not sum to 1 over their last axis: pass log-softmax output, "
                     f"not logits (log-sum-exp ranges {total.min():.3g}..{total.max():.3g})")
  nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
  nll = np.where(hidden, nll, 0.0)
  frames = hidden.any(-1)
  names = list(names) if names is not None else [str(k) for k in range(hidden.shape[-1])]
  per_voice = _ratio(nll.sum((0, 1)), hidden.sum((0, 1)))
  return {"nats_per_cell": float(_ratio(nll.sum(), hidden.sum())),
          "nats_per_frame": float(_ratio(nll.sum(-1)[frames].sum(), frames.sum())),
          "cells": int(hidden.sum()), "frames": int(frames.sum()),
          "per_voice": {name: float(x) for name, x in zip(names, per_voice)}}


# --- Report -------------------------------------------------------------------------------------


def _as_voices(x, spec: metrics_lib.RollSpec | None, pick: str) -> Voices:
  if isinstance(x, Voices):
    return x
  if spec is None:
    raise ValueError("rolls need a RollSpec (spec=...) to be read as voices")
  return from_rolls(x, spec, pick=pick)


def _features(voices: Voices, per_piece: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = {}
  for name in STATISTICS:
    for k, voice in enumerate(voices.names):
      out[f"{name}/{voice}"] = per_piece[name][:, k]
  for k, pair in enumerate(pair_names(voices)):
    out[f"TD/{pair}"] = per_piece["TD"][:, k]
  out["held_chords/all"] = per_piece["held_chords"][:, 0]
  return out


def _clean(x):
  """JSON-ready: NaN and inf -> None, numpy scalars -> Python."""
  if isinstance(x, dict):
    return {k: _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.bool_):
    return bool(x)
  return x


def report(generated, reference, *, spec: metrics_lib.RollSpec | None = None,
           ranges: Sequence[tuple[int, int]] | None = SATB_RANGES, pick: str = "top",
           onsets_at_changes: bool = False, with_oa: bool = True, seed: int = 0
           ) -> dict[str, Any]:
  """Generated music against a reference set (Bach), figure by figure, with targets.

  `generated` and `reference` are `Voices` or piano-rolls (then `spec` says how to read them).
  `onsets_at_changes` reads both with notes starting at pitch changes only: set it when one
  side cannot mark repeated notes (the standard split), so that notes are counted alike.
  Returns a JSON-serialisable dict: "rows" (one per statistic and voice, TD pair, held_chords
  and voice-leading rule: "statistic", "voice", "bach", "model", "ratio", "oa", "target", "ok" and
  "tolerance": the largest |model - bach| within target, for a voice-leading rate the largest
  model - bach),
  "passed" / "total" (rows within target), "voice_leading" (both sets' full rule figures),
  "num_generated", "num_reference", "targets" and "table" (`format_table`). A row whose figure is
  undefined (NaN) is not within target. `with_oa=False` skips the overlapping areas.
  """
  gen, ref = _as_voices(generated, spec, pick), _as_voices(reference, spec, pick)
  if onsets_at_changes:
    gen, ref = gen.onsets_at_changes(), ref.onsets_at_changes()
  if gen.names != ref.names:
    raise ValueError(f"generated voices {gen.names} differ from the reference's {ref.names}")
  gen_pieces, ref_pieces = piece_statistics(gen), piece_statistics(ref)
  gen_stats = {k: _set_value(v) for k, v in gen_pieces.items()}
  ref_stats = {k: _set_value(v) for k, v in ref_pieces.items()}
  oa = {}
  if with_oa and len(gen) and len(ref):
    compared = metrics_lib.compare_sets(_features(gen, gen_pieces), _features(ref, ref_pieces),
                                        seed=seed)
    oa = {name: r["OA"] for name, r in compared.items()}
  rel, min_oa = TARGETS["relative"], TARGETS["oa"]
  oa_target = f", OA≥{min_oa}" if with_oa else ""
  rows = []

  def add_stat(name: str, label: str, bach: float, model: float, tolerance: float,
               target: str) -> None:
    oa_value = oa.get(f"{name}/{label}", math.nan)
    value_ok = bool(abs(model - bach) <= tolerance)  # False for NaN
    oa_ok = (not with_oa) or bool(oa_value >= min_oa)
    rows.append({"statistic": name, "voice": label, "bach": bach, "model": model,
                 "ratio": float(_ratio(model, bach)), "oa": oa_value, "tolerance": tolerance,
                 "target": target + oa_target, "ok": value_ok and oa_ok})

  for name in STATISTICS:
    for k, voice in enumerate(gen.names):
      bach, model = float(ref_stats[name][k]), float(gen_stats[name][k])
      if name in _LOCATION:
        tolerance = max(TARGETS["min_semitones"], rel * float(ref_stats["pitch_span"][k]))
        target = f"±{tolerance:.1f} st"
      else:
        slack = TARGETS["absolute"].get(name, 0.0)
        tolerance = rel * abs(bach) + slack
        target = f"±{rel:.0%}" + (f" (≥{slack:g})" if slack else "")
      add_stat(name, voice, bach, model, tolerance, target)
  for k, pair in enumerate(pair_names(gen)):
    bach, model = float(ref_stats["TD"][k]), float(gen_stats["TD"][k])
    add_stat("TD", pair, bach, model, rel * abs(bach), f"±{rel:.0%}")
  bach, model = float(ref_stats["held_chords"][0]), float(gen_stats["held_chords"][0])
  add_stat("held_chords", "all", bach, model, rel * abs(bach), f"±{rel:.0%}")

  gen_vl, ref_vl = voice_leading(gen, ranges), voice_leading(ref, ranges)
  factor, slack = TARGETS["voice_leading"], TARGETS["rate_slack"]
  for rule in gen_vl:
    bach, model = ref_vl[rule]["rate"], gen_vl[rule]["rate"]
    excess = (factor - 1) * bach + slack
    rows.append({"statistic": rule, "voice": "all", "bach": bach, "model": model,
                 "ratio": float(_ratio(model, bach)), "oa": math.nan, "tolerance": excess,
                 "target": f"≤{factor:g}x Bach", "ok": bool(model - bach <= excess)})
  passed = sum(r["ok"] for r in rows)
  out = {"rows": rows, "passed": passed, "total": len(rows),
         "voice_leading": {"bach": ref_vl, "model": gen_vl},
         "num_generated": len(gen), "num_reference": len(ref), "targets": TARGETS}
  out = _clean(out)
  out["table"] = format_table(out)
  return out


def _fmt(x) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "-"
  if abs(x) >= 100:
    return f"{x:.1f}"
  return f"{x:.4f}" if abs(x) < 0.1 and x != 0 else f"{x:.3f}"


def format_table(result: dict[str, Any]) -> str:
  """The rows of `report` as text: statistic | voice | Bach | model | ratio | OA | target | ok."""
  header = ("statistic", "voice", "Bach", "model", "ratio", "OA", "target", "ok")
  lines = [[r["statistic"], r["voice"], _fmt(r["bach"]), _fmt(r["model"]), _fmt(r["ratio"]),
            _fmt(r["oa"]), r["target"], "yes" if r["ok"] else "NO"] for r in result["rows"]]
  widths = [max(len(str(c)) for c in col) for col in zip(header, *lines)]
  fmt = lambda cells: "  ".join(  # noqa: E731
      f"{c:<{w}}" if i in (0, 1, 6) else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths)))
  out = [fmt(header)] + [fmt(line) for line in lines]
  out.append(f"{result['passed']} of {result['total']} figures within target "
             f"({result['num_generated']} generated vs {result['num_reference']} reference pieces)")
  return "\n".join(out)


# --- Degenerate music: what the measures must tell from Bach ------------------------------------

DEGENERATE_KINDS = ("noise", "chord", "silence", "cluster", "random_lines")


def degenerate_rolls(kind: str, num: int, *, bars: int, steps_per_bar: int, steps_per_beat: int,
                     lowest_pitch: int, num_pitches: int,
                     ranges: Sequence[tuple[int, int]] = SATB_RANGES, seed: int = 0
                     ) -> np.ndarray:
  """uint8 rolls [num, bars, steps_per_bar, num_pitches, voices] of one kind of bad music.

  "noise": every cell of a voice's range sounds with probability 1/4 (runs are notes);
  "chord": one triad, each voice on a chord tone near the middle of its range, struck on every
  beat; "silence": nothing; "cluster": each voice holds 3 random pitches of its range per beat;
  "random_lines": one pitch per voice, notes of 1, 2 or 4 steps on random pitches of the range.
  """
  if kind not in DEGENERATE_KINDS:
    raise ValueError(f"kind must be one of {DEGENERATE_KINDS}, got {kind!r}")
  rng = np.random.default_rng(seed)
  ranges = np.asarray(ranges)
  v, t = len(ranges), bars * steps_per_bar
  if ranges.min() < lowest_pitch or ranges.max() >= lowest_pitch + num_pitches:
    raise ValueError(f"ranges {ranges.tolist()} exceed the roll's pitches {lowest_pitch}.."
                     f"{lowest_pitch + num_pitches - 1}")
  active = np.zeros((num, t, num_pitches, v), bool)
  onset = np.zeros_like(active)
  beat_starts = np.arange(0, t, steps_per_beat)
  if kind == "noise":
    for k, (lo, hi) in enumerate(ranges):
      rows = slice(lo - lowest_pitch, hi - lowest_pitch + 1)
      active[:, :, rows, k] = rng.random((num, t, hi - lo + 1)) < 0.25
  elif kind == "chord":
    for i in range(num):
      root = rng.integers(12)
      tones = (root + np.array([0, 4, 7])) % 12
      for k, (lo, hi) in enumerate(ranges):
        candidates = np.array([p for p in range(lo, hi + 1) if p % 12 in tones])
        pitch = candidates[np.argmin(np.abs(candidates - (lo + hi) / 2))]
        active[i, :, pitch - lowest_pitch, k] = True
        onset[i, beat_starts, pitch - lowest_pitch, k] = True
  elif kind == "cluster":
    for i in range(num):
      for k, (lo, hi) in enumerate(ranges):
        for start in beat_starts:
          rows = rng.choice(np.arange(lo, hi + 1), 3, replace=False) - lowest_pitch
          active[i, start:start + steps_per_beat, rows, k] = True
          onset[i, start, rows, k] = True
  elif kind == "random_lines":
    for i in range(num):
      for k, (lo, hi) in enumerate(ranges):
        start = 0
        while start < t:
          length = int(rng.choice([1, 2, 4]))
          row = rng.integers(lo, hi + 1) - lowest_pitch
          active[i, start:start + length, row, k] = True
          onset[i, start, row, k] = True
          start += length
  # Runs start notes too (noise), and a struck cell is an onset.
  onset[:, 0] |= active[:, 0]
  onset[:, 1:] |= active[:, 1:] & ~active[:, :-1]
  rolls = np.where(onset, 2, np.where(active, 1, 0)).astype(np.uint8)
  return rolls.reshape(num, bars, steps_per_bar, num_pitches, v)


CORRUPTIONS = ("transposed", "doubled", "fifths")


def corrupt(voices: Voices, kind: str) -> Voices:
  """Real lines with one defect: "transposed" (every voice a fifth up: the wrong register),
  "doubled" (the second voice doubles the first an octave below: parallel octaves), "fifths"
  (the third voice a twelfth above the last: parallel fifths). Rests stay rests."""
  if kind not in CORRUPTIONS:
    raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
  if voices.num_voices < 3:
    raise ValueError(f"corrupt needs at least 3 voices, got {voices.num_voices}")
  pitch, onset = voices.pitch.astype(np.int32), voices.onset.copy()
  if kind == "transposed":
    pitch = np.where(pitch >= 0, pitch + 7, -1)
  else:
    source, target, shift = (0, 1, -12) if kind == "doubled" else (-1, 2, 19)
    pitch[..., target] = np.where(pitch[..., source] >= 0, pitch[..., source] + shift, -1)
    onset[..., target] = onset[..., source]
  return voices.replace(pitch=np.clip(pitch, -1, 127), onset=onset & (pitch >= 0),
                        pitches_per_step=None)
