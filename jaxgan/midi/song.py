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


def normalize_notes(notes: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
  """Enforces the `Song.notes` invariants on an int [N, 5] note array.

  Notes sharing (track, pitch, onset) are merged into one (the longest duration, the highest
  velocity); a note running into the next onset of its track and pitch is cut to end there;
  the result is sorted by (onset, track, pitch). Returns the notes and the counts
  `notes_merged` (notes removed by merging) and `notes_truncated`.
  """
  notes = np.asarray(notes, dtype=np.int64).reshape(-1, 5)
  if notes.shape[0] == 0:
    return np.zeros((0, 5), np.int32), {"notes_merged": 0, "notes_truncated": 0}
  order = np.lexsort((notes[:, ONSET], notes[:, PITCH], notes[:, TRACK]))
  notes = notes[order]
  key = notes[:, [TRACK, PITCH, ONSET]]
  first = np.ones(len(notes), bool)
  first[1:] = np.any(key[1:] != key[:-1], axis=1)
  starts = np.flatnonzero(first)
  merged = notes[starts].copy()
  merged[:, DURATION] = np.maximum.reduceat(notes[:, DURATION], starts)
  merged[:, VELOCITY] = np.maximum.reduceat(notes[:, VELOCITY], starts)
  # Rows are now grouped by (track, pitch) with strictly increasing onsets.
  same = np.all(merged[1:, [TRACK, PITCH]] == merged[:-1, [TRACK, PITCH]], axis=1)
  end = merged[:-1, ONSET] + merged[:-1, DURATION]
  cut = same & (end > merged[1:, ONSET])
  gap = merged[1:, ONSET] - merged[:-1, ONSET]
  merged[:-1, DURATION] = np.where(cut, gap, merged[:-1, DURATION])
  merged = merged[np.lexsort((merged[:, PITCH], merged[:, TRACK], merged[:, ONSET]))]
  counts = {"notes_merged": int(len(notes) - len(merged)), "notes_truncated": int(cut.sum())}
  return merged.astype(np.int32), counts
