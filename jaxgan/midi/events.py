"""REMI-like event tokens.

A song reads as

  BOS TimeSig_n/d
  then per bar:   Bar [Tempo]
  then per note:  [Position] [Track] Pitch Duration Velocity
  and at last:    EOS

Every bar has a Bar token, empty bars too. A Tempo token follows the Bar of the first bar and of
every bar whose tempo bin differs from the bar before. Within a bar, notes come in
(onset, track, pitch) order; Position is written when the onset changes, Track when the track
changes or after a Position. Durations are in grid steps; velocities in 32 bins of 4; tempos in
bins of a semitone's ratio (2**(1/12)) from 30 to 240 qpm, so 30, 60, 120 and 240 are exact.

PAD is id 0. The vocabulary is versioned and saved with the MidiConfig it was built from.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import miditoolkit
import numpy as np

from jaxgan import paths
from jaxgan.midi.io import MidiConfig, meter_name, meter_steps, song_to_midi
from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK, Song, Track, normalize_notes

# Meters offered when the config allows any: the usual ones (those that fit the grid).
COMMON_METERS = ((4, 4), (3, 4), (2, 4), (2, 2), (3, 2), (5, 4), (6, 4), (7, 4), (3, 8), (5, 8),
                 (6, 8), (7, 8), (9, 8), (12, 8))
NUM_VELOCITY_BINS = 32
TEMPO_BINS_PER_OCTAVE = 12
TEMPO_REFERENCE = 120.0
TEMPO_LOW, TEMPO_HIGH = -24, 12  # bins relative to 120 qpm: 30 to 240 qpm

# Token kinds, as numbered in Vocabulary.kinds.
(SPECIAL, BAR, POSITION, TRACK_KIND, PITCH_KIND, DURATION_KIND, VELOCITY_KIND, TEMPO,
 METER) = range(9)


def velocity_bin(velocity: int) -> int:
  return int(np.clip(velocity, 0, 127)) * NUM_VELOCITY_BINS // 128


def bin_velocity(b: int) -> int:
  """The velocity a bin decodes to: the middle of the bin."""
  width = 128 // NUM_VELOCITY_BINS
  return int(np.clip(b * width + width // 2, 1, 127))


def tempo_bin(qpm: float) -> int:
  """Index of the tempo bin (0 for 30 qpm and below)."""
  qpm = float(qpm)
  if not np.isfinite(qpm) or qpm <= 0:
    qpm = TEMPO_REFERENCE
  k = int(np.round(TEMPO_BINS_PER_OCTAVE * np.log2(qpm / TEMPO_REFERENCE)))
  return int(np.clip(k, TEMPO_LOW, TEMPO_HIGH)) - TEMPO_LOW


def bin_tempo(b: int) -> float:
  return float(np.float32(TEMPO_REFERENCE * 2.0 ** ((b + TEMPO_LOW) / TEMPO_BINS_PER_OCTAVE)))


class Vocabulary:
  """The token ids of a MidiConfig: specials, Bar, Position, Track, Pitch, Duration, Velocity,
  Tempo and TimeSig, in that order. `ranges[name]` gives (first id, end id) of each kind."""

  VERSION = 1

  def __init__(self, config: MidiConfig):
    self.config = config
    spb = config.steps_per_beat
    self.meters = config.meters or tuple(m for m in COMMON_METERS if meter_steps(m, spb))
    self.max_steps_per_bar = max(meter_steps(m, spb) for m in self.meters)
    self.max_duration = config.max_duration_beats * spb
    self.tracks = config.tracks()
    self.pad, self.bos, self.eos, self.mask = 0, 1, 2, 3
    names = ["PAD", "BOS", "EOS", "MASK"]
    kinds = [SPECIAL] * 4
    values = [0] * 4
    self.ranges: dict[str, tuple[int, int]] = {}

    def add(kind_name: str, kind: int, items: Sequence[tuple[str, int]]) -> int:
      first = len(names)
      for name, value in items:
        names.append(name)
        kinds.append(kind)
        values.append(value)
      self.ranges[kind_name] = (first, len(names))
      return first

    self.bar = add("Bar", BAR, [("Bar", 0)])
    add("Position", POSITION, [(f"Position_{p}", p) for p in range(self.max_steps_per_bar)])
    add("Track", TRACK_KIND, [(f"Track_{t}", t) for t in range(len(self.tracks))])
    low = config.lowest_pitch
    add("Pitch", PITCH_KIND, [(f"Pitch_{p}", p) for p in range(low, low + config.num_pitches)])
    add("Duration", DURATION_KIND,
        [(f"Duration_{d}", d) for d in range(1, self.max_duration + 1)])
    add("Velocity", VELOCITY_KIND,
        [(f"Velocity_{bin_velocity(b)}", b) for b in range(NUM_VELOCITY_BINS)])
    num_tempos = TEMPO_HIGH - TEMPO_LOW + 1
    add("Tempo", TEMPO, [(f"Tempo_{bin_tempo(b):.2f}", b) for b in range(num_tempos)])
    add("TimeSig", METER, [(f"TimeSig_{meter_name(m)}", i) for i, m in enumerate(self.meters)])
    self._names = tuple(names)
    self.kinds = np.array(kinds, np.int8)
    self.values = np.array(values, np.int64)
    self.size = len(names)

  def __len__(self) -> int:
    return self.size

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Vocabulary) and self.to_json() == other.to_json()

  def __hash__(self) -> int:
    return hash((self.VERSION, self.config))

  def __repr__(self) -> str:
    return f"Vocabulary(version={self.VERSION}, size={self.size})"

  def token_name(self, id: int) -> str:
    id = int(id)
    return self._names[id] if 0 <= id < self.size else f"<invalid {id}>"

  def token_id(self, name: str) -> int:
    return self._names.index(name)

  def position(self, step: int) -> int:
    return self.ranges["Position"][0] + int(step)

  def track(self, index: int) -> int:
    return self.ranges["Track"][0] + int(index)

  def pitch(self, pitch: int) -> int:
    return self.ranges["Pitch"][0] + int(pitch) - self.config.lowest_pitch

  def duration(self, steps: int) -> int:
    return self.ranges["Duration"][0] + int(steps) - 1

  def velocity(self, velocity: int) -> int:
    return self.ranges["Velocity"][0] + velocity_bin(velocity)

  def tempo(self, qpm: float) -> int:
    return self.ranges["Tempo"][0] + tempo_bin(qpm)

  def meter(self, time_signature: tuple[int, int]) -> int:
    return self.ranges["TimeSig"][0] + self.meters.index(tuple(time_signature))

  def to_json(self) -> dict:
    return {"version": self.VERSION, "config": self.config.to_json(), "tokens": list(self._names)}

  @classmethod
  def from_json(cls, d: dict) -> "Vocabulary":
    if d.get("version") != cls.VERSION:
      raise ValueError(f"vocabulary version {d.get('version')!r}, this code reads {cls.VERSION}")
    vocab = cls(MidiConfig.from_json(d["config"]))
    if list(vocab._names) != list(d.get("tokens", [])):
      raise ValueError("saved tokens differ from those of its config: the vocabulary is corrupt")
    return vocab

  def save(self, path: str | os.PathLike) -> None:
    """Writes the vocabulary (local or gs://: it lives in the data dir)."""
    paths.write_text(os.fspath(path), json.dumps(self.to_json(), indent=1))

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Vocabulary":
    return cls.from_json(json.loads(paths.read_text(os.fspath(path))))


def encode(song: Song, vocab: Vocabulary) -> np.ndarray:
  """int32 [L]: BOS, the time signature, the bars, EOS. ValueError if the song does not fit."""
  config = vocab.config
  meter = tuple(int(x) for x in song.time_signature)
  if song.steps_per_beat != config.steps_per_beat:
    raise ValueError(
      f"{song.source}: steps_per_beat {song.steps_per_beat}, vocabulary {config.steps_per_beat}")
  if meter not in vocab.meters:
    allowed = ", ".join(meter_name(m) for m in vocab.meters)
    raise ValueError(f"{song.source}: meter {meter_name(meter)} not in the vocabulary ({allowed})")
  if len(song.tracks) != len(vocab.tracks):
    raise ValueError(f"{song.source}: {len(song.tracks)} tracks, vocabulary {len(vocab.tracks)}")
  notes = np.asarray(song.notes, np.int64).reshape(-1, 5)
  steps_per_bar = song.steps_per_bar
  if len(notes):
    notes = notes[np.lexsort((notes[:, PITCH], notes[:, TRACK], notes[:, ONSET]))]
    low = config.lowest_pitch
    checks = (
      (notes[:, TRACK], 0, len(vocab.tracks), "track"),
      (notes[:, PITCH], low, low + config.num_pitches, "pitch"),
      (notes[:, ONSET], 0, song.num_steps, "onset"),
      (notes[:, DURATION], 1, vocab.max_duration + 1, "duration"),
    )
    for column, lo, hi, what in checks:
      if column.min() < lo or column.max() >= hi:
        raise ValueError(f"{song.source}: a note {what} is outside {lo}..{hi - 1}")
  tempos = np.asarray(song.tempos, np.float64).reshape(-1)
  tokens = [vocab.bos, vocab.meter(meter)]
  bar_of = notes[:, ONSET] // steps_per_bar
  bounds = np.searchsorted(bar_of, np.arange(song.num_bars + 1))
  last_tempo = None
  for bar in range(song.num_bars):
    tokens.append(vocab.bar)
    qpm = tempos[bar] if bar < len(tempos) else (tempos[-1] if len(tempos) else TEMPO_REFERENCE)
    tempo = vocab.tempo(qpm)
    if tempo != last_tempo:
      tokens.append(tempo)
      last_tempo = tempo
    position = track = None
    for t, p, onset, d, v in notes[bounds[bar]:bounds[bar + 1]].tolist():
      if onset != position:
        position, track = onset, None
        tokens.append(vocab.position(onset - bar * steps_per_bar))
      if t != track:
        track = t
        tokens.append(vocab.track(t))
      tokens += (vocab.pitch(p), vocab.duration(d), vocab.velocity(v))
  tokens.append(vocab.eos)
  return np.asarray(tokens, np.int32)


def decode(
  tokens: np.ndarray, vocab: Vocabulary, *, source: str = "",
  tracks: Sequence[Track] | None = None,
) -> Song:
  """A song from tokens; never raises on a model's output.

  PAD, BOS and MASK are skipped and decoding stops at EOS. Tokens that make no sense where
  they stand are skipped: a note needs a Bar, a Position inside the bar, a Track, then Pitch,
  Duration and Velocity in that order (an incomplete note is dropped). A TimeSig counts only
  before the first Bar; bars past max_bars are dropped. Notes are then merged and cut as a
  Song requires. `tracks` defaults to the config's (token streams carry no programs).
  """
  config = vocab.config
  tokens = np.asarray(tokens)
  if tokens.ndim > 1:
    raise ValueError(f"decode takes one sequence, got shape {tokens.shape}")
  ids = tokens.astype(np.int64, copy=False).reshape(-1) if tokens.size else np.zeros(0, np.int64)
  valid = (ids >= 0) & (ids < vocab.size)
  kinds = np.where(valid, vocab.kinds[np.where(valid, ids, 0)], -1).tolist()
  values = np.where(valid, vocab.values[np.where(valid, ids, 0)], 0).tolist()
  meter = (4, 4) if (4, 4) in vocab.meters else vocab.meters[0]
  steps_per_bar = 0
  bar = -1
  position = track = None
  pending: list[int] = []
  tempo_at: dict[int, int] = {}
  notes: list[tuple[int, int, int, int, int]] = []
  for id_, kind, value in zip(ids.tolist(), kinds, values):
    if kind == SPECIAL:
      if id_ == vocab.eos:
        break
      continue
    if kind == BAR:
      if bar + 1 >= config.max_bars:
        break
      bar += 1
      if bar == 0:
        steps_per_bar = meter_steps(meter, config.steps_per_beat)
      position, pending = None, []
    elif kind == METER:
      if bar < 0:
        meter = vocab.meters[value]
    elif kind == TEMPO:
      tempo_at[max(bar, 0)] = value
    elif kind == POSITION:
      position = value if bar >= 0 and value < steps_per_bar else None
      pending = []
    elif kind == TRACK_KIND:
      track, pending = value, []
    elif kind == PITCH_KIND:
      pending = [value] if bar >= 0 and position is not None and track is not None else []
    elif kind == DURATION_KIND:
      pending = pending + [value] if len(pending) == 1 else []
    elif kind == VELOCITY_KIND:
      if len(pending) == 2:
        onset = bar * steps_per_bar + position
        notes.append((track, pending[0], onset, pending[1], bin_velocity(value)))
      pending = []
  num_bars = bar + 1
  tempos = np.full(num_bars, bin_tempo(tempo_bin(TEMPO_REFERENCE)), np.float32)
  for b in sorted(tempo_at):
    if b < num_bars:
      tempos[b:] = bin_tempo(tempo_at[b])
  note_array, _ = normalize_notes(np.asarray(notes, np.int64).reshape(-1, 5))
  return Song(notes=note_array, num_bars=num_bars, steps_per_beat=config.steps_per_beat,
              time_signature=meter, tempos=tempos,
              tracks=tuple(tracks) if tracks is not None else vocab.tracks, source=source)


def decode_midi(tokens: np.ndarray, vocab: Vocabulary, **kw) -> miditoolkit.MidiFile:
  """decode then song_to_midi."""
  return song_to_midi(decode(tokens, vocab, **kw))
