"""Loading, validating, quantizing and writing MIDI files.

`load_midi` reads a Standard MIDI File with its own bounded parser and builds a
`miditoolkit.MidiFile` from it, so that a hostile file can cost neither unbounded time nor
memory, and every failure is one `MidiError`. On top of what miditoolkit 1.0.1 would give,
the result is cleaned up:

* notes are sorted by (start, pitch, end) within each instrument;
* the tempo map is merged over all tracks, sorted, one tempo per tick (the last one written
  wins), consecutive repeats dropped, and it starts at tick 0 (120 qpm unless the file says);
* time signatures are merged over all tracks (music21 repeats them in every track), sorted,
  one per tick, and a restatement of the meter on one of its bar lines dropped (one off the
  grid stays: it starts a bar, so the bar before it was short);
* programs are plain ints (miditoolkit hands out np.int8, which json cannot encode);
* a note-on that never gets its note-off is closed at the end of its track instead of
  vanishing silently, and counted in `midi.load_counts["notes_unterminated"]`;
* an instrument is one (track, channel, program at note-on) in the order of its first note.

`quantize_segments` turns that into Songs on a grid of `steps_per_beat`, one per
constant-meter part of the file (a song whose meter changes is split at the changes; a pickup
bar is padded to a full bar rather than moving every bar line); `quantize` is the same for a
file in one meter.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from fractions import Fraction
from typing import Any, BinaryIO

import miditoolkit
import numpy as np

from jaxgan.midi import tracks as tracks_lib
from jaxgan.midi.song import DURATION, ONSET, TRACK, Song, Track, normalize_notes

DEFAULT_QPM = 120.0
DRUM_CHANNEL = 9
OUT_OF_RANGE_MODES = ("drop", "fold")
DENOMINATORS = (1, 2, 4, 8, 16, 32, 64)

# Every key quantize reports, so callers can sum counts over a data set without .get().
COUNT_KEYS = (
  "notes",               # notes in the file
  "notes_unterminated",  # note-ons without a note-off, closed at the end of their track
  "notes_unmapped",      # notes of instruments the track mode drops (LPD-5 sound effects)
  "notes_out_of_range",  # notes dropped for their pitch
  "notes_folded",        # notes moved by octaves into the pitch range
  "notes_clipped",       # notes shortened to max_duration_beats
  "notes_merged",        # notes merged into another with the same track, pitch and onset
  "notes_truncated",     # notes cut at the next onset of their track and pitch
  "notes_kept",          # notes in the song
  "notes_cut_at_meter_change",  # notes held into the next constant-meter segment, cut there
  "notes_other_meter",   # notes of segments dropped for their meter (not allowed, off the grid)
  "pickups",             # pickup bars padded at the front to a full bar
  # How far the bar grid moved the first segment's notes back: leading silence off the grid
  # dropped (> 0) or a pickup padded to a full bar (< 0).
  "steps_shifted",
)


class MidiError(ValueError):
  """A MIDI file that cannot be used: `path` says which, `reason` says why."""

  def __init__(self, path: Any, reason: str):
    self.path = str(path)
    self.reason = str(reason)
    super().__init__(f"{self.path}: {self.reason}")

  def __reduce__(self):
    # Data loaders pickle errors across processes; the default would call cls(message).
    return (type(self), (self.path, self.reason))


def meter_name(time_signature: tuple[int, int]) -> str:
  return f"{time_signature[0]}/{time_signature[1]}"


def meter_steps(time_signature: tuple[int, int], steps_per_beat: int) -> int | None:
  """Grid steps in one bar of a meter, or None where that is not a whole number."""
  num, den = time_signature
  steps = num * 4 * steps_per_beat
  return steps // den if steps % den == 0 else None


@dataclasses.dataclass(frozen=True)
class MidiConfig:
  """How MIDI files become songs: grid, pitch range, tracks, accepted meters and limits."""

  steps_per_beat: int = 12
  lowest_pitch: int = 24
  num_pitches: int = 84
  track_mode: str = "lpd5"
  track_names: tuple[str, ...] = ()
  out_of_range: str = "drop"
  meters: tuple[tuple[int, int], ...] = ()
  max_file_bytes: int = 16 * 2**20
  max_notes: int = 500_000
  max_bars: int = 4096
  max_duration_beats: int = 16
  # Bounds the parse of a file of, say, 16 MiB of controller data: time and memory.
  max_events: int = 2_000_000

  def __post_init__(self):
    ints = ("steps_per_beat", "lowest_pitch", "num_pitches", "max_file_bytes", "max_notes",
            "max_bars", "max_duration_beats", "max_events")
    for name in ints:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"MidiConfig.{name} must be an int, got {value!r}")
      object.__setattr__(self, name, int(value))
    if not 1 <= self.steps_per_beat <= 480:
      raise ValueError(f"MidiConfig.steps_per_beat must be in 1..480, got {self.steps_per_beat}")
    if not 0 <= self.lowest_pitch <= 127:
      raise ValueError(f"MidiConfig.lowest_pitch must be in 0..127, got {self.lowest_pitch}")
    if not 1 <= self.num_pitches <= 128 - self.lowest_pitch:
      raise ValueError(
        f"MidiConfig.num_pitches must be in 1..{128 - self.lowest_pitch} (pitches stop at 127),"
        f" got {self.num_pitches}")
    for name in ints[3:]:
      if getattr(self, name) < 1:
        raise ValueError(f"MidiConfig.{name} must be >= 1, got {getattr(self, name)}")
    if self.track_mode not in tracks_lib.TRACK_MODES:
      raise ValueError(
        f"MidiConfig.track_mode must be one of {tracks_lib.TRACK_MODES}, got {self.track_mode!r}")
    if isinstance(self.track_names, str):
      raise ValueError(
        f"MidiConfig.track_names must be a sequence of names, got {self.track_names!r}")
    object.__setattr__(self, "track_names", tuple(str(n) for n in self.track_names))
    if self.track_mode == "parts" and not self.track_names:
      raise ValueError("MidiConfig.track_names must name the parts when track_mode is 'parts'")
    if self.track_mode != "parts" and self.track_names:
      raise ValueError(
        f"MidiConfig.track_names is only used with track_mode 'parts', not {self.track_mode!r}")
    if self.out_of_range not in OUT_OF_RANGE_MODES:
      raise ValueError(
        f"MidiConfig.out_of_range must be one of {OUT_OF_RANGE_MODES}, got {self.out_of_range!r}")
    meters = []
    for meter in self.meters:
      try:
        num, den = (int(x) for x in meter)
      except (TypeError, ValueError):
        raise ValueError(
          f"MidiConfig.meters must hold (numerator, denominator) pairs, got {meter!r}")
      if not 1 <= num <= 255 or den not in DENOMINATORS:
        raise ValueError(
          f"MidiConfig.meters: {num}/{den} needs a numerator in 1..255 and a denominator in"
          f" {DENOMINATORS}")
      if meter_steps((num, den), self.steps_per_beat) is None:
        raise ValueError(
          f"MidiConfig.meters: {num}/{den} is not a whole number of steps per bar at"
          f" steps_per_beat {self.steps_per_beat}")
      meters.append((num, den))
    object.__setattr__(self, "meters", tuple(meters))

  @property
  def num_tracks(self) -> int:
    return len(self.tracks())

  def tracks(self) -> tuple[Track, ...]:
    """The fixed output tracks (in "parts" mode a song carries its file's programs instead)."""
    return tracks_lib.output_tracks(self.track_mode, self.track_names)

  def steps_per_bar(self, time_signature: tuple[int, int]) -> int:
    """Grid steps in one bar; ValueError where the meter does not fit the grid."""
    steps = meter_steps(tuple(time_signature), self.steps_per_beat)
    if steps is None:
      raise ValueError(
        f"meter {meter_name(time_signature)} is not a whole number of steps at steps_per_beat"
        f" {self.steps_per_beat}")
    return steps

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["track_names"] = list(self.track_names)
    d["meters"] = [list(m) for m in self.meters]
    return d

  @classmethod
  def from_json(cls, d: dict) -> "MidiConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"MidiConfig: unknown fields {unknown}; known fields are {sorted(names)}")
    kw = dict(d)
    if "track_names" in kw:
      kw["track_names"] = tuple(kw["track_names"])
    if "meters" in kw:
      kw["meters"] = tuple(tuple(m) for m in kw["meters"])
    return cls(**kw)


# ----------------------------------------------------------------------------------------------
# Reading


class _Corrupt(Exception):
  """Why some bytes are not a usable MIDI file (becomes a MidiError with the path)."""


def _read_source(source: Any, name: str | None, max_bytes: int) -> tuple[str, bytes]:
  too_big = f"file is larger than max_file_bytes ({max_bytes})"
  if isinstance(source, (bytes, bytearray, memoryview)):
    path = name or "<bytes>"
    if len(source) > max_bytes:
      raise MidiError(path, too_big)
    return path, bytes(source)
  if hasattr(source, "read"):
    path = name or str(getattr(source, "name", "<stream>"))
    try:
      data = source.read(max_bytes + 1)
    except (OSError, ValueError) as e:
      raise MidiError(path, f"cannot read: {e}") from None
    if not isinstance(data, (bytes, bytearray)):
      raise MidiError(path, "not a binary stream")
    if len(data) > max_bytes:
      raise MidiError(path, too_big)
    return path, bytes(data)
  try:
    fspath = os.fspath(source)
  except TypeError:
    raise TypeError(
      f"source must be a path, bytes or a binary stream, not {type(source).__name__}") from None
  path = name or os.fsdecode(fspath)
  try:
    # Size and kind first: never read a huge file, never block on a pipe or device.
    st = os.stat(fspath)
    if not stat.S_ISREG(st.st_mode):
      raise MidiError(path, "not a regular file")
    if st.st_size > max_bytes:
      raise MidiError(path, too_big)
    with open(fspath, "rb") as f:
      data = f.read(max_bytes + 1)
  except OSError as e:
    raise MidiError(path, f"cannot read: {e.strerror or e}") from None
  if len(data) > max_bytes:
    raise MidiError(path, too_big)
  return path, data


def _unwrap_rmid(data: bytes) -> bytes:
  """The Standard MIDI File inside a RIFF RMID container."""
  i = 12
  while i + 8 <= len(data):
    size = int.from_bytes(data[i + 4:i + 8], "little")
    if data[i:i + 4] == b"data":
      return data[i + 8:i + 8 + size]
    i += 8 + size + (size & 1)
  raise _Corrupt("RIFF file without MIDI data")


def _vlq(data: bytes, i: int) -> tuple[int, int]:
  value = 0
  for _ in range(4):
    b = data[i]
    i += 1
    value = (value << 7) | (b & 0x7F)
    if b < 0x80:
      return value, i
  raise _Corrupt("invalid variable-length number (more than 4 bytes)")


_MAJOR_KEYS = ("Cb", "Gb", "Db", "Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#")
_MINOR_KEYS = ("Ab", "Eb", "Bb", "F", "C", "G", "D", "A", "E", "B", "F#", "C#", "G#", "D#", "A#")
# Data bytes of the system messages a file may (wrongly, but harmlessly) contain.
_SYSTEM_LENGTHS = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0,
                   0xFE: 0}


class _Parser:
  """A bounded Standard MIDI File parser that builds miditoolkit objects directly."""

  def __init__(self, config: MidiConfig):
    self.config = config
    self.num_events = 0
    self.num_note_ons = 0
    self.unterminated = 0
    self.max_tick = 0
    self.tempos: list[tuple[int, int, float]] = []         # (tick, order, qpm)
    self.meters: list[tuple[int, int, int, int]] = []      # (tick, order, num, den)
    self.keys: list[tuple[int, int, str]] = []
    self.markers: list[miditoolkit.Marker] = []
    self.lyrics: list[miditoolkit.Lyric] = []
    self.instruments: dict[tuple[int, int, int], miditoolkit.Instrument] = {}

  def parse(self, data: bytes) -> miditoolkit.MidiFile:
    if len(data) == 0:
      raise _Corrupt("empty file")
    if data[:4] == b"RIFF" and data[8:12] == b"RMID":
      data = _unwrap_rmid(data)
    if data[:4] != b"MThd":
      raise _Corrupt("not a MIDI file (no MThd header)")
    if len(data) < 14:
      raise _Corrupt("truncated header")
    header_len = int.from_bytes(data[4:8], "big")
    if header_len < 6:
      raise _Corrupt(f"header chunk of {header_len} bytes is too short")
    fmt = int.from_bytes(data[8:10], "big")
    num_tracks = int.from_bytes(data[10:12], "big")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000:
      raise _Corrupt("SMPTE time division is not supported (ticks_per_beat <= 0)")
    if division == 0:
      raise _Corrupt("ticks_per_beat is 0")
    if fmt not in (0, 1, 2):
      raise _Corrupt(f"unknown MIDI format {fmt}")
    if fmt == 2:
      raise _Corrupt("format 2 (independent sequences) is not supported")
    if num_tracks == 0:
      raise _Corrupt("no tracks")
    pos = 8 + header_len
    track = 0
    while track < num_tracks:
      if pos + 8 > len(data):
        raise _Corrupt(f"truncated: found {track} of {num_tracks} tracks")
      chunk = data[pos:pos + 4]
      size = int.from_bytes(data[pos + 4:pos + 8], "big")
      start, end = pos + 8, pos + 8 + size
      pos = end
      if chunk != b"MTrk":
        if not all(0x20 <= c < 0x7F for c in chunk):
          raise _Corrupt(f"corrupt chunk header before track {track}")
        continue  # an unknown chunk type: the standard says to skip it
      clamped = end > len(data)
      complete = self._track(data, start, min(end, len(data)), track)
      if clamped and not complete:
        raise _Corrupt(f"truncated in track {track}")
      track += 1
    return self._build(division)

  def _track(self, data: bytes, i: int, end: int, track: int) -> bool:
    """Parses one track chunk; True when it ended with an end-of-track event."""
    # The hot loop: locals only, and controllers as plain tuples until the file passed.
    max_events, max_notes = self.config.max_events, self.config.max_notes
    num_events = self.num_events
    tick = 0
    status = 0
    programs = [0] * 16
    open_notes: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    controls: list[tuple[int, int, int, int, int, int]] = []  # (channel, program, kind, ...)
    pedal_down: dict[int, int] = {}
    name = ""
    created: dict[tuple[int, int, int], miditoolkit.Instrument] = {}
    complete = False
    try:
      while i < end:
        num_events += 1
        if num_events > max_events:
          raise _Corrupt(f"more than max_events ({max_events}) MIDI events")
        b = data[i]
        i += 1
        if b < 0x80:
          tick += b
        else:
          delta, i = _vlq(data, i - 1)
          tick += delta
        b = data[i]
        if b >= 0x80:
          i += 1
          if b < 0xF0:
            status = b
        elif status:
          b = status  # running status: b was the first data byte
        else:
          raise _Corrupt(f"running status without a status byte in track {track}")
        if b < 0xF0:
          kind, channel = b & 0xF0, b & 0x0F
          d1 = data[i]
          if kind == 0xC0 or kind == 0xD0:
            i += 1
            d2 = 0
          else:
            d2 = data[i + 1]
            i += 2
          if d1 > 0x7F or d2 > 0x7F:
            raise _Corrupt(f"data byte above 127 in track {track}")
          if kind == 0x90 and d2 > 0:
            self.num_note_ons += 1
            if self.num_note_ons > max_notes:
              raise _Corrupt(f"more than max_notes ({max_notes}) notes")
            program = programs[channel]
            key = (track, channel, program)
            if key not in created:
              created[key] = self.instruments[key] = miditoolkit.Instrument(
                program, channel == DRUM_CHANNEL)
            open_notes.setdefault((channel, d1), []).append((tick, d2, program))
          elif kind == 0x80 or kind == 0x90:
            pending = open_notes.get((channel, d1))
            if pending:  # a note-off without a note-on is ignored
              start, velocity, program = pending.pop(0)  # first in, first out, as miditoolkit
              created[(track, channel, program)].notes.append(
                miditoolkit.Note(velocity, d1, start, tick))
          elif kind == 0xC0:
            programs[channel] = d1
          elif kind == 0xB0:
            controls.append((channel, programs[channel], 0, d1, d2, tick))
            if d1 == 64:
              if d2 >= 64 and channel not in pedal_down:
                pedal_down[channel] = tick
              elif d2 < 64 and channel in pedal_down:
                controls.append((channel, programs[channel], 2, pedal_down.pop(channel), tick, 0))
          elif kind == 0xE0:
            controls.append((channel, programs[channel], 1, (d1 | (d2 << 7)) - 8192, tick, 0))
        elif b == 0xFF:
          meta = data[i]
          length, i = _vlq(data, i + 1)
          payload = data[i:i + length]
          i += length
          if i > end:
            break  # caught below as running past the chunk
          if meta == 0x2F:
            complete = True
            break
          self._meta(meta, payload, tick, track, num_events)
          if meta == 0x03 and not name:
            name = payload.decode("latin1")
        elif b == 0xF0 or b == 0xF7:
          length, i = _vlq(data, i)
          i += length
        elif b in _SYSTEM_LENGTHS:
          i += _SYSTEM_LENGTHS[b]
        else:
          raise _Corrupt(f"undefined status byte 0x{b:02X} in track {track}")
    except IndexError:
      raise _Corrupt(f"truncated in track {track}") from None
    self.num_events = num_events
    if i > end:
      # Past the bytes we have (a cut file) or past the declared chunk length.
      raise _Corrupt(f"truncated in track {track}" if end == len(data)
                     else f"event runs past the end of track {track}")
    self.max_tick = max(self.max_tick, tick)
    # Notes still sounding at the end of the track end there.
    for (channel, pitch), pending in open_notes.items():
      for start, velocity, program in pending:
        created[(track, channel, program)].notes.append(
          miditoolkit.Note(velocity, pitch, start, tick))
        self.unterminated += 1
    by_channel: dict[int, miditoolkit.Instrument] = {}
    for (_, channel, _), inst in created.items():
      inst.name = name
      inst.notes.sort(key=lambda n: (n.start, n.pitch, n.end))
      by_channel.setdefault(channel, inst)
    # Controllers go to the instrument of their channel and program, else of their channel.
    for channel, program, kind, x, y, z in controls:
      inst = created.get((track, channel, program)) or by_channel.get(channel)
      if inst is None:
        continue
      if kind == 0:
        inst.control_changes.append(miditoolkit.ControlChange(x, y, z))
      elif kind == 1:
        inst.pitch_bends.append(miditoolkit.PitchBend(x, y))
      else:
        inst.pedals.append(miditoolkit.Pedal(x, y))
    return complete

  def _meta(self, meta: int, payload: bytes, tick: int, track: int, order: int) -> None:
    if meta == 0x51 and len(payload) >= 3:
      us_per_beat = int.from_bytes(payload[:3], "big")
      if us_per_beat > 0:
        self.tempos.append((tick, order, 60_000_000 / us_per_beat))
    elif meta == 0x58 and len(payload) >= 2:
      num, exponent = payload[0], payload[1]
      if num == 0 or exponent >= len(DENOMINATORS):
        den = 2**exponent if exponent < 16 else f"2^{exponent}"
        raise _Corrupt(f"invalid time signature {num}/{den} in track {track}")
      self.meters.append((tick, order, num, 2**exponent))
    elif meta == 0x59 and len(payload) >= 2:
      sharps = payload[0] - 256 if payload[0] > 127 else payload[0]
      if -7 <= sharps <= 7 and payload[1] in (0, 1):
        key = _MINOR_KEYS[sharps + 7] + "m" if payload[1] else _MAJOR_KEYS[sharps + 7]
        self.keys.append((tick, order, key))
    elif meta == 0x05:
      self.lyrics.append(miditoolkit.Lyric(payload.decode("latin1"), tick))
    elif meta == 0x06:
      self.markers.append(miditoolkit.Marker(payload.decode("latin1"), tick))

  def _build(self, ticks_per_beat: int) -> miditoolkit.MidiFile:
    midi = miditoolkit.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.max_tick = self.max_tick + 1
    tempos = _last_per_tick(sorted(self.tempos))
    if not tempos or tempos[0][0] > 0:
      tempos.insert(0, (0, 0, DEFAULT_QPM))
    midi.tempo_changes = [
      miditoolkit.TempoChange(qpm, tick) for tick, _, qpm in _drop_repeats(tempos, lambda t: t[2])]
    meters = _drop_restatements(_last_per_tick(sorted(self.meters)), ticks_per_beat)
    midi.time_signature_changes = [miditoolkit.TimeSignature(n, d, t) for t, _, n, d in meters]
    keys = _drop_repeats(_last_per_tick(sorted(self.keys)), lambda k: k[2])
    midi.key_signature_changes = [miditoolkit.KeySignature(k, t) for t, _, k in keys]
    midi.markers = sorted(self.markers, key=lambda m: m.time)
    midi.lyrics = sorted(self.lyrics, key=lambda m: m.time)
    midi.instruments = [inst for inst in self.instruments.values() if inst.notes]
    midi.load_counts = {"notes_unterminated": self.unterminated}
    return midi


def _last_per_tick(events: list[tuple]) -> list[tuple]:
  """Of events sorted by (tick, order), the last one at each tick."""
  out: list[tuple] = []
  for event in events:
    if out and out[-1][0] == event[0]:
      out[-1] = event
    else:
      out.append(event)
  return out


def _drop_repeats(events: list[tuple], value) -> list[tuple]:
  out: list[tuple] = []
  for event in events:
    if not out or value(out[-1]) != value(event):
      out.append(event)
  return out


def _drop_restatements(events: list[tuple], tpb: int) -> list[tuple]:
  """Of (tick, order, num, den) sorted by tick, those that change the meter or its bar lines."""
  out: list[tuple] = []
  for event in events:
    if out and event[2:] == out[-1][2:]:
      num, den = event[2:]
      if ((event[0] - out[-1][0]) * den) % (tpb * 4 * num) == 0:
        continue  # on a bar line of the same meter: changes nothing
    out.append(event)
  return out


def _bars_before(tick: int, ticks_per_beat: int, meters: list[tuple[int, int, int]]) -> float:
  """How many bars the ticks before `tick` make under a meter map of (tick, num, den)."""
  bars, pos, num, den = 0.0, 0, 4, 4
  for t, n, d in meters:
    if t >= tick:
      break
    bars += (t - pos) * den / (ticks_per_beat * 4 * num)
    pos, num, den = t, n, d
  return bars + (tick - pos) * den / (ticks_per_beat * 4 * num)


def load_midi(
  source: str | os.PathLike | bytes | BinaryIO,
  *,
  name: str | None = None,
  config: MidiConfig = MidiConfig(),
) -> miditoolkit.MidiFile:
  """Reads and validates a MIDI file (path, bytes or binary stream); MidiError if unusable.

  `name` stands for the source in error messages. The result also has `load_counts`.
  """
  path, data = _read_source(source, name, config.max_file_bytes)
  try:
    midi = _Parser(config).parse(data)
  except _Corrupt as e:
    raise MidiError(path, str(e)) from None
  except (MemoryError, RecursionError):
    raise
  except Exception as e:  # noqa: BLE001 -- the boundary: nothing raw escapes a bad file
    raise MidiError(path, f"corrupt MIDI data ({type(e).__name__}: {e})") from None
  if not any(inst.notes for inst in midi.instruments):
    raise MidiError(path, "no notes")
  meters = [(ts.time, ts.numerator, ts.denominator) for ts in midi.time_signature_changes]
  if _bars_before(midi.max_tick - 1, midi.ticks_per_beat, meters) > config.max_bars:
    raise MidiError(path, f"song is longer than max_bars ({config.max_bars} bars)")
  return midi


# ----------------------------------------------------------------------------------------------
# Quantizing


@dataclasses.dataclass(frozen=True)
class _Span:
  """Where the notes of one constant-meter part of a file start, and its bar lines."""

  start: int                # first tick of its notes (a pickup's start, before `anchor`)
  anchor: int               # tick of a bar line: the signature that begins the meter
  meter: tuple[int, int]
  pickup: bool


def _bar_ticks(meter: tuple[int, int], tpb: int) -> Fraction:
  return Fraction(tpb * 4 * meter[0], meter[1])


def _meter_spans(
  midi: miditoolkit.MidiFile, first_tick: int, last_onset: int, end_tick: int, path: str,
  max_bars: int,
) -> list[_Span]:
  """The constant-meter parts of the notes from first_tick, with pickups merged in.

  A time signature begins a bar of its meter (the MIDI convention), and these rules hold:
  * the last signature at or before the first note rules the start (what came before holds
    no notes); restatements of the current meter on its bar lines and signatures after the
    last onset are ignored (a held final chord does not make a change); a restatement off
    the grid starts a new part (its bar lines moved);
  * without a signature at or before the first note, the file is in 4/4 from tick 0 (the
    standard's default) until its first signature;
  * pickup: a part of at most one bar of its own meter that is shorter than a bar of the next
    meter (a 1/4 bar before 4/4, or 480 ticks before the first signature) is the upbeat of
    the next part: it joins it, padded at the front so that it ends on its first bar line;
  * a last part of at most one bar, in a meter with shorter bars than the one before (a 1/4
    bar closing a 2/4 song), is that part's last bar.
  """
  events = sorted((int(ts.time), k, int(ts.numerator), int(ts.denominator))
                  for k, ts in enumerate(midi.time_signature_changes))
  tpb = int(midi.ticks_per_beat)
  for _, _, num, den in events:
    if num < 1 or den not in DENOMINATORS:
      raise MidiError(path, f"invalid time signature {meter_name((num, den))}")
  events = _last_per_tick(events)
  if not events or events[0][0] > first_tick:
    events.insert(0, (0, -1, 4, 4))  # nothing rules the first note: the standard's default
  events = _drop_restatements(events, tpb)
  ruling = [e for e in events if e[0] <= first_tick][-1]
  parts = [(ruling[0], (ruling[2], ruling[3]))]
  for tick, _, num, den in events:
    if tick <= first_tick or tick > last_onset:
      continue
    parts.append((tick, (num, den)))
    # Every part begins a bar: more parts than max_bars is a song too long.
    if len(parts) > max_bars + 1:
      raise MidiError(path, f"song is longer than max_bars ({max_bars} bars)")
  spans: list[_Span] = []
  pickup_start = None
  for i, (tick, meter) in enumerate(parts):
    last = i == len(parts) - 1
    length = (end_tick if last else parts[i + 1][0]) - tick
    bar = _bar_ticks(meter, tpb)
    if (not last and pickup_start is None and length <= bar
        and length < _bar_ticks(parts[i + 1][1], tpb)):
      pickup_start = tick
      continue
    if (last and spans and pickup_start is None and length <= bar
        and bar < _bar_ticks(spans[-1].meter, tpb)):
      break  # a short closing bar: the notes stay with the part before
    spans.append(_Span(tick if pickup_start is None else pickup_start, tick, meter,
                       pickup_start is not None))
    pickup_start = None
  return spans


def _fold(pitch: np.ndarray, low: int, high: int) -> np.ndarray:
  """Moves pitches by whole octaves into [low, high) where that is possible."""
  up = np.maximum(0, -((pitch - low) // 12))          # octaves up to reach low
  down = np.maximum(0, (pitch - high) // 12 + 1)     # octaves down to get below high
  return pitch + 12 * up - 12 * down


@dataclasses.dataclass(frozen=True)
class Segment:
  """A constant-meter part of a song.

  song: the part as a Song (its bar 0 starts at its own first bar line), or None when it is
    dropped, with `reason` saying why (a meter the config does not accept, no notes left).
  bar_offset: the bar of the parent its bar 0 is, counting bars from 0 along the file's
    meter map (a partial bar counts as one, a pickup's bar is the bar it sounds in).
  pickup: whether bar 0 is a pickup padded at the front to a full bar.
  tick: the tick of the signature that begins its meter (its first full bar line).
  """

  song: Song | None
  bar_offset: int
  pickup: bool
  tick: int
  time_signature: tuple[int, int]
  reason: str = ""


def _round_steps(ticks, spb: int, tpb: int):
  """Ticks to the nearest grid step, halves up (ints or int64 arrays)."""
  return (2 * ticks * spb + tpb) // (2 * tpb)


def quantize_segments(
  midi: miditoolkit.MidiFile, config: MidiConfig, *, source: str = ""
) -> tuple[list[Segment], dict[str, int]]:
  """Puts the notes of a MIDI file on the grid and onto the config's tracks, one Song per
  constant-meter part (see `_meter_spans` for the rules on changes and pickups).

  Onsets and ends are rounded to the nearest step (halves up); a duration is at least one
  step and at most max_duration_beats; a note belongs to the part it starts in and is cut
  where the next part begins. Parts in meters the config does not accept are returned
  dropped. Returns the segments in order and counts (see COUNT_KEYS); MidiError when the file
  gives no song at all.
  """
  path = source or "<midi>"
  counts = dict.fromkeys(COUNT_KEYS, 0)
  counts.update({k: int(v) for k, v in getattr(midi, "load_counts", {}).items() if k in counts})
  tpb = int(midi.ticks_per_beat)
  if tpb <= 0:
    raise MidiError(path, f"ticks_per_beat is {tpb}")
  instruments = [inst for inst in midi.instruments if inst.notes]
  if not instruments:
    raise MidiError(path, "no notes")
  total = sum(len(inst.notes) for inst in instruments)
  counts["notes"] = total
  if total > config.max_notes:
    raise MidiError(path, f"more than max_notes ({config.max_notes}) notes")
  if config.track_mode == "parts" and len(instruments) != len(config.track_names):
    raise MidiError(path, f"has {len(instruments)} parts, expected {len(config.track_names)}")
  index, out_tracks = tracks_lib.assign_tracks(
    [(int(inst.program), bool(inst.is_drum)) for inst in instruments],
    config.track_mode, config.track_names)

  starts = np.array([int(n.start) for inst in instruments for n in inst.notes], np.int64)
  ends = np.array([int(n.end) for inst in instruments for n in inst.notes], np.int64)
  first_tick, last_onset = int(starts.min()), int(starts.max())
  end_tick = max(int(ends.max()), last_onset + 1)
  if first_tick < 0:
    raise MidiError(path, "negative note time")
  spans = _meter_spans(midi, first_tick, last_onset, end_tick, path, config.max_bars)
  # Before any array: hand-built files may hold absurd ticks.
  bars_in_file = _bars_before(end_tick, tpb, [(s.anchor, *s.meter) for s in spans])
  if bars_in_file > config.max_bars + len(spans):
    raise MidiError(path, f"song is longer than max_bars ({config.max_bars} bars)")

  spb = config.steps_per_beat
  track = np.array([t if t is not None else -1
                    for t, inst in zip(index, instruments) for _ in inst.notes], np.int64)
  pitch = np.array([int(n.pitch) for inst in instruments for n in inst.notes], np.int64)
  velocity = np.array([int(n.velocity) for inst in instruments for n in inst.notes], np.int64)
  keep = track >= 0
  counts["notes_unmapped"] = int((~keep).sum())
  low, high = config.lowest_pitch, config.lowest_pitch + config.num_pitches
  outside = (pitch < low) | (pitch >= high)
  if config.out_of_range == "fold":
    folded = _fold(pitch, low, high)
    fits = (folded >= low) & (folded < high)
    counts["notes_folded"] = int((keep & outside & fits).sum())
    pitch = np.where(fits, folded, pitch)
    outside = ~fits
  counts["notes_out_of_range"] = int((keep & outside).sum())
  keep &= ~outside
  if not keep.any():
    raise MidiError(
      path, f"no notes left ({counts['notes_out_of_range']} out of pitch range,"
      f" {counts['notes_unmapped']} of dropped instruments)")
  onset = _round_steps(starts, spb, tpb)
  end = _round_steps(ends, spb, tpb)
  velocity = np.clip(velocity, 1, 127)
  max_steps = config.max_duration_beats * spb
  # Notes belong to the part they start in; the first part takes any note before it.
  bounds = np.array([_round_steps(s.start, spb, tpb) for s in spans[1:]], np.int64)
  part_of = np.searchsorted(bounds, onset, side="right")
  # The notes of part k are by_part[edges[k]:edges[k + 1]] (one sort, not a mask per part).
  by_part = np.argsort(part_of, kind="stable")
  edges = np.searchsorted(part_of[by_part], np.arange(len(spans) + 1))

  segments: list[Segment] = []
  origin_tick = Fraction(0)  # where the previous segment's bar 0 begins, in ticks
  bar_offset = 0
  for k, span in enumerate(spans):
    bar = _bar_ticks(span.meter, tpb)
    # Bar 0 is the bar line at or before the first note, or the first one at or after tick 0
    # when the song opens with silence (whole silent bars stay, silence off the grid goes).
    if k == 0:
      origin = span.anchor - bar * math.floor(span.anchor / bar)
      first = min(first_tick, span.start)
      if first < origin:
        origin -= bar * math.ceil((origin - first) / bar)
    else:
      origin = span.anchor - bar * math.ceil(max(0, span.anchor - span.start) / bar)
      prev_bar = _bar_ticks(spans[k - 1].meter, tpb)
      bar_offset += math.ceil((span.start - origin_tick) / prev_bar)
    origin_tick = origin
    counts["pickups"] += int(span.pickup)
    mine = by_part[edges[k]:edges[k + 1]]
    drop = _segment_error(span.meter, config)
    if drop:
      counts["notes_other_meter"] += int(keep[mine].sum())
      segments.append(Segment(None, bar_offset, span.pickup, span.anchor, span.meter, drop))
      continue
    steps_per_bar = meter_steps(span.meter, spb)
    anchor_step = _round_steps(span.anchor, spb, tpb)
    shift = anchor_step - steps_per_bar * ((span.anchor - origin) / bar)
    shift = int(shift)
    if k == 0:
      counts["steps_shifted"] = shift
    seg_onset = onset[mine] - shift
    seg_end = end[mine] - shift
    if k + 1 < len(spans):
      limit = int(bounds[k]) - shift
      cut = seg_end > limit
      counts["notes_cut_at_meter_change"] += int((cut & keep[mine]).sum())
      seg_end = np.minimum(seg_end, limit)
    duration = np.maximum(seg_end - seg_onset, 1)
    sel = keep[mine]
    counts["notes_clipped"] += int((sel & (duration > max_steps)).sum())
    duration = np.minimum(duration, max_steps)
    notes = np.stack([track[mine], pitch[mine], seg_onset, duration, velocity[mine]],
                     axis=1)[sel]
    if len(notes) == 0:
      segments.append(Segment(None, bar_offset, span.pickup, span.anchor, span.meter,
                              "no notes left"))
      continue
    notes, merged = normalize_notes(notes)
    for key, value in merged.items():
      counts[key] += value
    counts["notes_kept"] += int(len(notes))
    num_bars = max(1, -(-int((notes[:, ONSET] + notes[:, DURATION]).max()) // steps_per_bar))
    if num_bars > config.max_bars:
      raise MidiError(path, f"song is longer than max_bars ({config.max_bars} bars)")
    tempos = _bar_tempos(midi, tpb, spb, steps_per_bar, num_bars, shift)
    song = Song(notes=notes, num_bars=num_bars, steps_per_beat=spb, time_signature=span.meter,
                tempos=tempos, tracks=tuple(out_tracks), source=str(source))
    segments.append(Segment(song, bar_offset, span.pickup, span.anchor, span.meter))
  if not any(s.song is not None for s in segments):
    if len(segments) == 1:
      raise MidiError(path, segments[0].reason)
    why = "; ".join(f"bar {s.bar_offset}: {s.reason}" for s in segments)
    raise MidiError(path, f"no segment left ({why})")
  return segments, counts


def _segment_error(meter: tuple[int, int], config: MidiConfig) -> str:
  """Why a part in this meter cannot be kept ("" if it can)."""
  if config.meters and meter not in config.meters:
    allowed = ", ".join(meter_name(m) for m in config.meters)
    return f"meter {meter_name(meter)} not in allowed meters ({allowed})"
  if meter_steps(meter, config.steps_per_beat) is None:
    return (f"meter {meter_name(meter)} is not a whole number of steps per bar at"
            f" steps_per_beat {config.steps_per_beat}")
  return ""


def quantize(
  midi: miditoolkit.MidiFile, config: MidiConfig, *, source: str = ""
) -> tuple[Song, dict[str, int]]:
  """A MIDI file in one meter (a pickup may open it) as one Song: `quantize_segments` with a
  MidiError where the meter changes.

  `counts["steps_shifted"]` is how far the bar grid moved the notes back: leading silence
  off the grid dropped (> 0) or a pickup padded to a full bar (< 0).
  """
  segments, counts = quantize_segments(midi, config, source=source)
  if len(segments) > 1:
    a, b = (meter_name(s.time_signature) for s in segments[:2])
    tick = segments[1].tick
    raise MidiError(source or "<midi>", f"meter changes from {a} to {b} at tick {tick}" if a != b
                    else f"bar lines of {a} move at tick {tick} (a short bar before it)")
  return segments[0].song, counts


def _bar_tempos(
  midi: miditoolkit.MidiFile, tpb: int, spb: int, steps_per_bar: int, num_bars: int, shift: int
) -> np.ndarray:
  """Quarter notes per minute in force at the (quantized) start of each bar."""
  changes = _last_per_tick(sorted(
    (int(t.time), k, float(t.tempo)) for k, t in enumerate(midi.tempo_changes)
    if math.isfinite(float(t.tempo)) and float(t.tempo) > 0))
  tempos = np.full(num_bars, DEFAULT_QPM, np.float32)
  if changes:
    # Changes after the song are irrelevant; capping keeps absurd ticks out of int64.
    cap = num_bars * steps_per_bar + 1
    steps = np.array([min((2 * t * spb + tpb) // (2 * tpb) - shift, cap) for t, _, _ in changes],
                     np.int64)
    qpm = np.array([c[2] for c in changes], np.float64)
    which = np.searchsorted(steps, np.arange(num_bars) * steps_per_bar, side="right") - 1
    tempos = np.where(which >= 0, qpm[np.maximum(which, 0)], DEFAULT_QPM).astype(np.float32)
  return tempos


def load_song(
  source: str | os.PathLike | bytes | BinaryIO,
  *,
  config: MidiConfig = MidiConfig(),
  name: str | None = None,
) -> tuple[Song, dict[str, int]]:
  """load_midi followed by quantize."""
  path = name
  if path is None:
    if isinstance(source, (bytes, bytearray, memoryview)):
      path = "<bytes>"
    elif hasattr(source, "read"):
      path = str(getattr(source, "name", "<stream>"))
    else:
      path = os.fsdecode(os.fspath(source))
  midi = load_midi(source, name=path, config=config)
  return quantize(midi, config, source=path)


# ----------------------------------------------------------------------------------------------
# Writing


def song_to_midi(song: Song, *, ticks_per_beat: int = 480) -> miditoolkit.MidiFile:
  """A MIDI file of a song: one instrument per track (empty ones too), its meter and tempos."""
  spb = int(song.steps_per_beat)
  if ticks_per_beat < spb:
    raise ValueError(f"ticks_per_beat ({ticks_per_beat}) must be >= steps_per_beat ({spb})")

  def ticks(steps: int) -> int:
    # Round to nearest; with ticks_per_beat >= steps_per_beat quantizing gives the steps back.
    return (2 * int(steps) * ticks_per_beat + spb) // (2 * spb)

  midi = miditoolkit.MidiFile(ticks_per_beat=ticks_per_beat)
  num, den = (int(x) for x in song.time_signature)
  midi.time_signature_changes = [miditoolkit.TimeSignature(num, den, 0)]
  tempos = np.asarray(song.tempos, np.float64).reshape(-1)
  changes = [miditoolkit.TempoChange(float(tempos[0]) if len(tempos) else DEFAULT_QPM, 0)]
  for bar in range(1, len(tempos)):
    if tempos[bar] != tempos[bar - 1]:
      changes.append(miditoolkit.TempoChange(float(tempos[bar]), ticks(bar * song.steps_per_bar)))
  midi.tempo_changes = changes
  notes = np.asarray(song.notes).reshape(-1, 5)
  for k, track in enumerate(song.tracks):
    inst = miditoolkit.Instrument(int(track.program), bool(track.is_drum), str(track.name))
    for _, pitch, onset, duration, velocity in notes[notes[:, TRACK] == k].tolist():
      inst.notes.append(miditoolkit.Note(
        int(np.clip(velocity, 1, 127)), pitch, ticks(onset), ticks(onset + duration)))
    midi.instruments.append(inst)
  last = int((notes[:, ONSET] + notes[:, DURATION]).max()) if len(notes) else 0
  midi.max_tick = ticks(max(last, song.num_steps)) + 1
  return midi


def write_midi(song: Song, path: str | os.PathLike) -> None:
  """Writes a song as a Standard MIDI File."""
  song_to_midi(song).dump(os.fspath(path))
