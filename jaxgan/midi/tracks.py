"""Mapping the instruments of a MIDI file onto the fixed output tracks of a `MidiConfig`.

"lpd5" and "lpd17" follow the Lakh Pianoroll Dataset (the data MuseGAN trains on):

* lpd5: Drums (every drum instrument), Piano (programs 0-7), Guitar (24-31), Bass (32-39),
  Strings (every other program below 96, and 104-111). Synth effects (96-103), percussive
  (112-119) and sound effects (120-127) are dropped, as LPD-5 does.
* lpd17: Drums, then one track per General MIDI family of eight programs.

"parts" keeps the instruments that have notes, in file order, one track each.
"""

from __future__ import annotations

from typing import Sequence

from jaxgan.midi.song import Track

TRACK_MODES = ("lpd5", "lpd17", "parts")

LPD5_TRACKS = (
  Track("Drums", 0, True),
  Track("Piano", 0),
  Track("Guitar", 24),
  Track("Bass", 32),
  Track("Strings", 48),
)

_FAMILIES = (
  "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings", "Ensemble", "Brass",
  "Reed", "Pipe", "Synth Lead", "Synth Pad", "Synth Effects", "Ethnic", "Percussive",
  "Sound Effects",
)
LPD17_TRACKS = (Track("Drums", 0, True),) + tuple(
  Track(name, 8 * i) for i, name in enumerate(_FAMILIES))


def lpd5_track(program: int, is_drum: bool) -> int | None:
  """Index into LPD5_TRACKS of an instrument, or None where LPD-5 drops it."""
  program = int(program)
  if is_drum:
    return 0
  family = program // 8
  if family == 0:
    return 1
  if family == 3:
    return 2
  if family == 4:
    return 3
  if program < 96 or 104 <= program < 112:
    return 4
  return None


def lpd17_track(program: int, is_drum: bool) -> int:
  """Index into LPD17_TRACKS of an instrument."""
  return 0 if is_drum else 1 + int(program) // 8


def output_tracks(track_mode: str, track_names: Sequence[str] = ()) -> tuple[Track, ...]:
  """The fixed output tracks of a mode; parts get program 0 until a file says otherwise."""
  if track_mode == "lpd5":
    return LPD5_TRACKS
  if track_mode == "lpd17":
    return LPD17_TRACKS
  if track_mode == "parts":
    return tuple(Track(str(name)) for name in track_names)
  raise ValueError(f"track_mode must be one of {TRACK_MODES}, got {track_mode!r}")


def assign_tracks(
  instruments: Sequence[tuple[int, bool]], track_mode: str, track_names: Sequence[str] = ()
) -> tuple[list[int | None], tuple[Track, ...]]:
  """Maps (program, is_drum) of each non-empty instrument, in file order, to a track index.

  Returns the index per instrument (None: dropped) and the output tracks. In "parts" mode the
  caller must first check that there are exactly len(track_names) instruments; each part keeps
  its own program and drum flag.
  """
  if track_mode == "lpd5":
    return [lpd5_track(p, d) for p, d in instruments], LPD5_TRACKS
  if track_mode == "lpd17":
    return [lpd17_track(p, d) for p, d in instruments], LPD17_TRACKS
  if track_mode == "parts":
    if len(instruments) != len(track_names):
      raise ValueError(f"has {len(instruments)} parts, expected {len(track_names)}")
    tracks = tuple(
      Track(str(name), int(p), bool(d)) for name, (p, d) in zip(track_names, instruments))
    return list(range(len(instruments))), tracks
  raise ValueError(f"track_mode must be one of {TRACK_MODES}, got {track_mode!r}")
