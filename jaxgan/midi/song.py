"""The quantized song: the one in-memory form every representation is made from.

A `Song` is what is left of a MIDI file after validation and quantization: notes on a grid
of `steps_per_beat`, grouped into a fixed set of tracks, with a single meter. Both token
representations (the multi-track piano-roll and the REMI-like events) are lossless views of it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Columns of `Song.notes`.
TRACK, PITCH, ONSET, DURATION, VELOCITY = range(5)
NOTE_FIELDS = ("track", "pitch", "onset", "duration", "velocity")


@dataclasses.dataclass(frozen=True)
class Track:
  """One output track: a name, a General MIDI program (0-127) and whether it is drums."""

  name: str
  program: int = 0
  is_drum: bool = False

  def to_json(self) -> dict:
    # Plain ints: miditoolkit hands programs out as np.int8, which json cannot encode.
    return {"name": str(self.name), "program": int(self.program), "is_drum": bool(self.is_drum)}

  @classmethod
  def from_json(cls, d: dict) -> "Track":
    return cls(name=str(d["name"]), program=int(d["program"]), is_drum=bool(d["is_drum"]))


@dataclasses.dataclass(frozen=True)
class Song:
  """A quantized multi-track song.

  notes: int32 [N, 5] with columns TRACK, PITCH, ONSET, DURATION, VELOCITY; onsets and
    durations in grid steps; sorted by (onset, track, pitch); no two notes share
    (track, pitch, onset) and a note never overlaps the next note of its track and pitch.
  num_bars: bars covered (every onset lies before num_bars * steps_per_bar).
  steps_per_beat: grid resolution (a beat is a quarter note).
  time_signature: (numerator, denominator) of the single meter of the song.
  tempos: float32 [num_bars], quarter notes per minute at the start of each bar.
  tracks: the track definitions; notes[:, TRACK] indexes into it.
  source: where the song came from (a path or a corpus name), for error messages and provenance.
  """

  notes: np.ndarray
  num_bars: int
  steps_per_beat: int
  time_signature: tuple[int, int]
  tempos: np.ndarray
  tracks: tuple[Track, ...]
  source: str = ""

  @property
  def steps_per_bar(self) -> int:
    num, den = self.time_signature
    return num * self.steps_per_beat * 4 // den

  @property
  def num_steps(self) -> int:
    return self.num_bars * self.steps_per_bar

  @property
  def num_notes(self) -> int:
    return int(self.notes.shape[0])
