"""MIDI in and out: loading with validation, quantization, piano-rolls and event tokens."""

from jaxgan.midi.events import Vocabulary, decode, decode_midi, encode
from jaxgan.midi.io import (
  COUNT_KEYS,
  MidiConfig,
  MidiError,
  Segment,
  load_midi,
  load_song,
  quantize,
  quantize_segments,
  song_to_midi,
  write_midi,
)
from jaxgan.midi.pianoroll import (
  CELL_HELD, CELL_ONSET, from_pianoroll, pianoroll_to_midi, to_pianoroll)
from jaxgan.midi.song import NOTE_FIELDS, Song, Track, normalize_notes

__all__ = [
  "CELL_HELD", "CELL_ONSET", "COUNT_KEYS", "NOTE_FIELDS", "MidiConfig", "MidiError", "Segment",
  "Song",
  "Track", "Vocabulary", "decode", "decode_midi", "encode", "from_pianoroll", "load_midi",
  "load_song", "normalize_notes", "pianoroll_to_midi", "quantize", "quantize_segments",
  "song_to_midi", "to_pianoroll", "write_midi",
]
