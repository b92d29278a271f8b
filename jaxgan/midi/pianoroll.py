"""The multi-track piano-roll: uint8 [num_bars, steps_per_bar, num_pitches, num_tracks].

A cell is 0 (silent), CELL_HELD (sounding, begun earlier) or CELL_ONSET (a note begins at this
step). (`song.ONSET` is the onset column of a note table.)
Marking onsets keeps repeated notes of one pitch apart, so a song survives the round trip
note for note (velocity aside). Rows are pitches from `config.lowest_pitch` up.
"""

from __future__ import annotations

from typing import Any, Sequence

import miditoolkit
import numpy as np

from jaxgan.midi.io import MidiConfig, song_to_midi
from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK, Song, Track, normalize_notes

CELL_HELD, CELL_ONSET = 1, 2


def to_pianoroll(song: Song, config: MidiConfig) -> np.ndarray:
  """The piano-roll of a song; notes ringing past the last bar are cut at its end."""
  if song.steps_per_beat != config.steps_per_beat:
    raise ValueError(
      f"song has steps_per_beat {song.steps_per_beat}, config {config.steps_per_beat}")
  num_tracks = config.num_tracks
  if len(song.tracks) != num_tracks:
    raise ValueError(f"song has {len(song.tracks)} tracks, config {num_tracks}")
  steps = song.num_steps
  roll = np.zeros((song.num_bars, song.steps_per_bar, config.num_pitches, num_tracks), np.uint8)
  notes = np.asarray(song.notes, np.int64).reshape(-1, 5)
  if len(notes) == 0:
    return roll
  row = notes[:, PITCH] - config.lowest_pitch
  track, onset = notes[:, TRACK], notes[:, ONSET]
  if row.min() < 0 or row.max() >= config.num_pitches:
    raise ValueError(f"{song.source}: pitches outside the config's range")
  if track.min() < 0 or track.max() >= num_tracks:
    raise ValueError(f"{song.source}: track index outside 0..{num_tracks - 1}")
  if onset.min() < 0 or onset.max() >= steps:
    raise ValueError(f"{song.source}: onsets outside the song's {song.num_bars} bars")
  end = np.minimum(onset + np.maximum(notes[:, DURATION], 1), steps)
  flat = roll.reshape(steps, config.num_pitches, num_tracks)
  length = end - onset
  which = np.repeat(np.arange(len(notes)), length)
  offset = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
  flat[onset[which] + offset, row[which], track[which]] = CELL_HELD
  flat[onset, row, track] = CELL_ONSET
  return roll


def _runs(onsets: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, ...]:
  """Notes of a [rows, steps] activity grid: (row, start, length) per note.

  A note starts at an onset cell or where activity begins, and lasts until activity stops or
  the next onset.
  """
  rows, steps = active.shape
  prev = np.zeros_like(active)
  prev[:, 1:] = active[:, :-1]
  start = active & (onsets | ~prev)
  stop = ~active | start  # cells a sounding note cannot run into
  sr, st = np.nonzero(start)
  br, bt = np.nonzero(stop)
  # Every row also stops at `steps`; flat keys keep (row, step) order.
  keys = np.sort(np.concatenate([br * (steps + 1) + bt, np.arange(rows) * (steps + 1) + steps]))
  start_keys = sr * (steps + 1) + st
  ends = keys[np.searchsorted(keys, start_keys, side="right")] - sr * (steps + 1)
  return sr, st, ends - st


def from_pianoroll(
  roll: np.ndarray,
  config: MidiConfig,
  *,
  time_signature: tuple[int, int] = (4, 4),
  tempo: float | Sequence[float] = 120.0,
  velocity: int = 80,
  tracks: Sequence[Track] | None = None,
  source: str = "",
) -> Song:
  """A song from a piano-roll.

  A roll holding CELL_ONSET cells is read onset-exact (as to_pianoroll writes it); a bool or 0/1
  roll is read as activity, each run of active steps one note. Notes longer than
  max_duration_beats are split. `tempo` is one value or one per bar.
  """
  roll = np.asarray(roll)
  if roll.ndim != 4:
    raise ValueError(f"piano-roll must be [bars, steps, pitches, tracks], got shape {roll.shape}")
  tracks = tuple(tracks) if tracks is not None else config.tracks()
  steps_per_bar = config.steps_per_bar(tuple(time_signature))
  bars, steps, pitches, num_tracks = roll.shape
  if (steps, pitches, num_tracks) != (steps_per_bar, config.num_pitches, len(tracks)):
    raise ValueError(
      f"piano-roll shape {roll.shape} does not fit (bars, {steps_per_bar},"
      f" {config.num_pitches}, {len(tracks)})")
  if roll.dtype == bool:
    active, onsets = roll, np.zeros_like(roll)
  else:
    if not np.isin(roll, (0, CELL_HELD, CELL_ONSET)).all():
      raise ValueError("piano-roll values must be 0, 1 (held) or 2 (onset); threshold it first")
    active, onsets = roll != 0, roll == CELL_ONSET
  # [tracks, pitches, time] so that each row is one track and pitch over time.
  shape = (num_tracks * pitches, bars * steps)
  active = active.reshape(-1, pitches, num_tracks).transpose(2, 1, 0).reshape(shape)
  onsets = onsets.reshape(-1, pitches, num_tracks).transpose(2, 1, 0).reshape(shape)
  row, start, length = _runs(onsets, active)
  max_steps = config.max_duration_beats * config.steps_per_beat
  pieces = -(-length // max_steps)
  which = np.repeat(np.arange(len(row)), pieces)
  part = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
  start = start[which] + part * max_steps
  length = np.minimum(length[which] - part * max_steps, max_steps)
  row = row[which]
  notes = np.stack([
    row // pitches, row % pitches + config.lowest_pitch, start, length,
    np.full(len(row), int(np.clip(velocity, 1, 127)))], axis=1)
  notes, _ = normalize_notes(notes)
  tempos = np.broadcast_to(np.asarray(tempo, np.float32), (bars,)).copy()
  return Song(notes=notes, num_bars=bars, steps_per_beat=config.steps_per_beat,
              time_signature=tuple(int(x) for x in time_signature), tempos=tempos,
              tracks=tracks, source=source)


def pianoroll_to_midi(roll: np.ndarray, config: MidiConfig, **kw: Any) -> miditoolkit.MidiFile:
  """from_pianoroll then song_to_midi (`ticks_per_beat` goes to the latter)."""
  ticks_per_beat = kw.pop("ticks_per_beat", 480)
  return song_to_midi(from_pianoroll(roll, config, **kw), ticks_per_beat=ticks_per_beat)
