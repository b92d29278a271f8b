"""Sources of songs: the music21 corpus (rendered to MIDI bytes) and folders of MIDI files.

Every data set goes through `jaxgan.midi.load_song` on MIDI bytes, whatever the source, so
corpus pieces are validated and quantized exactly like user files. Scores are rendered with
miditoolkit rather than music21's own MIDI writer, which gives none of: the meter and tempo at
tick 0 when the score opens with a pickup, the pickup padded so that downbeats land on bar
lines, and one track per voice named after it, in voice order, whatever the parts of the score.

`piece_to_midi` is the process-pool worker: module-level, it never starts TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

VOICES = ("soprano", "alto", "tenor", "bass")
MIDI_SUFFIXES = (".mid", ".midi")
DEFAULT_STYLE = "default"
TICKS_PER_BEAT = 480      # divisible by 12 and 16: every grid the data sets use
DEFAULT_QPM = 120.0       # what music21 assumes for scores without a metronome mark
DEFAULT_VELOCITY = 80


class ScoreError(ValueError):
  """A corpus piece that cannot become a song; `reason` is short and countable."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class Piece:
  """One source of a song: a corpus work or a MIDI file.

  name: provenance stored with the song (corpus name such as "bach/bwv269", or a path
    relative to the folder root); also the key of the split hash.
  path: the file to read.
  style: style name.
  voices: for corpus pieces, how parts become the 4 voice tracks: "satb" (the 4 parts of a
    chorale, picked by name when there are more) or "fold" (any number of parts, ranked by
    pitch). "" for MIDI files.
  """

  name: str
  path: str
  style: str = DEFAULT_STYLE
  voices: str = ""


def split_of(name: str, fractions: tuple[int, int] = (80, 10)) -> str:
  """train / validation / test from a hash of the name: stable across runs and caps."""
  bucket = int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:8], 16) % 100
  if bucket < fractions[0]:
    return "train"
  if bucket < fractions[0] + fractions[1]:
    return "validation"
  return "test"


def _hash_order(names: Sequence[str]) -> list[str]:
  """A fixed pseudo-random order, so a cap takes a spread-out sample rather than A..C."""
  return sorted(names, key=lambda n: hashlib.sha1(n.encode("utf-8")).hexdigest())


# --------------------------------------------------------------------------------------------
# The music21 corpus.


def _corpus_root() -> str:
  from music21 import corpus  # pylint: disable=import-outside-toplevel
  return os.path.dirname(os.path.abspath(corpus.__file__))


def _corpus_name(path: str, root: str) -> str:
  """"bach/bwv269" for .../corpus/bach/bwv269.mxl."""
  rel = os.path.relpath(path, root)
  return os.path.splitext(rel)[0].replace(os.sep, "/")


def chorale_pieces(style: str = "bach") -> list[Piece]:
  """The Bach chorales of music21's chorale iterator, one per file, in the iterator's order.

  The iterator's 371 Riemenschneider numbers point to ~350 files (some chorales are listed
  twice); files are de-duplicated by path and by content.
  """
  from music21 import corpus  # pylint: disable=import-outside-toplevel
  root = _corpus_root()
  # corpus.getWork scans the whole work list on every call (~10 ms): index it once instead.
  by_name: dict[str, list[str]] = {}
  for p in corpus.getComposer("bach"):
    by_name.setdefault(_corpus_name(str(p), root), []).append(str(p))
  pieces, seen_paths, seen_digests = [], set(), set()
  for work in corpus.chorales.Iterator(returnType="filename"):
    paths = by_name.get(str(work))
    if not paths:  # a name music21 resolves loosely ("bwv18.5-l" is bwv18.5-lz.mxl)
      found = corpus.getWork(work)
      paths = [str(p) for p in (found if isinstance(found, list) else [found])]
    # A few chorales come as both .krn and .mxl: use the .mxl like the rest.
    path = sorted(paths, key=lambda p: (p.lower().endswith(".krn"), p))[0]
    if path in seen_paths:
      continue
    seen_paths.add(path)
    with open(path, "rb") as f:
      digest = hashlib.sha1(f.read()).hexdigest()
    if digest in seen_digests:
      continue
    seen_digests.add(digest)
    pieces.append(Piece(_corpus_name(path, root), path, style, "satb"))
  return pieces


def _composer_pieces(composer: str, suffixes: tuple[str, ...], style: str) -> list[Piece]:
  from music21 import corpus  # pylint: disable=import-outside-toplevel
  root = _corpus_root()
  paths = sorted({str(p) for p in corpus.getComposer(composer)
                  if str(p).lower().endswith(suffixes)})
  return [Piece(_corpus_name(p, root), p, style, "fold") for p in paths]


def _folder_pieces(folder: str, suffixes: tuple[str, ...], style: str) -> list[Piece]:
  root = _corpus_root()
  base = os.path.join(root, folder)
  paths = sorted(os.path.join(base, f) for f in os.listdir(base) if f.lower().endswith(suffixes))
  return [Piece(_corpus_name(p, root), p, style, "fold") for p in paths]


# Style name -> how to list its pieces. Voices of every style go to the same 4 tracks.
STYLES = ("bach", "palestrina", "monteverdi", "folk")


def style_pieces(style: str, cap: int | None = None) -> list[Piece]:
  """The pieces of one music21_styles style; with a cap, a fixed hash-ordered sample."""
  if style == "bach":
    pieces = chorale_pieces("bach")
  elif style == "palestrina":
    pieces = _composer_pieces("palestrina", (".krn",), style)
  elif style == "monteverdi":
    # The .rntxt files next to the madrigals are harmonic analyses, not music.
    pieces = _composer_pieces("monteverdi", (".mxl", ".xml", ".krn"), style)
  elif style == "folk":
    pieces = _folder_pieces("ryansMammoth", (".abc",), style)
  else:
    raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
  if cap is not None and len(pieces) > cap:
    keep = set(_hash_order([p.name for p in pieces])[:cap])
    pieces = [p for p in pieces if p.name in keep]
  return pieces


def _mean_pitch(notes: list[tuple[float, float, int, int]]) -> float:
  return sum(n[2] for n in notes) / len(notes)


def _part_notes(part) -> list[tuple[float, float, int, int]]:
  """(offset, quarter length, midi pitch, velocity) of the sounding notes of a part."""
  from music21 import harmony  # pylint: disable=import-outside-toplevel
  out = []
  for n in part.stripTies(inPlace=False).flatten().notes:
    # Chord symbols ("Am" above a folk tune) are annotations, not sounding notes.
    if isinstance(n, harmony.Harmony) or not hasattr(n, "pitches"):
      continue
    ql = float(n.duration.quarterLength)
    if ql <= 0:  # grace notes
      continue
    velocity = n.volume.velocity
    velocity = DEFAULT_VELOCITY if velocity is None else int(min(127, max(1, velocity)))
    for p in n.pitches:
      out.append((float(n.offset), ql, int(p.midi), velocity))
  return out


def _select_satb(parts) -> list:
  """The 4 vocal parts of a chorale: all of them when there are 4, else picked by name.

  Chorales with instruments (trumpets, continuo, a doubled soprano) name their voices
  "Soprano", "Alto 2 Oboe", ...: the first part whose name starts with each voice is taken.
  """
  if len(parts) == 4:
    return list(parts)
  names = [(p.partName or "").strip().lower() for p in parts]
  chosen = []
  for voice in VOICES:
    match = [p for p, n in zip(parts, names) if n.split(" ")[0] == voice]
    if not match:
      raise ScoreError("not 4 voices", f"{len(parts)} parts ({', '.join(names)})")
    chosen.append(match[0])
  return chosen


def fold_voice(rank: int, num_parts: int) -> int:
  """The voice (0 = soprano .. 3 = bass) of the part ranked `rank` (0 = highest) of n.

  Parts are spread evenly over the 4 voices: 1 part -> soprano; 2 -> soprano, bass;
  3 -> soprano, tenor, bass; 5 -> S, A, T, T, B; 6 -> S, A, A, T, T, B.
  """
  if num_parts <= 1:
    return 0
  return int(math.floor(rank * (len(VOICES) - 1) / (num_parts - 1) + 0.5))


def _meters(stream_) -> list[tuple[float, int, int]]:
  """(offset, numerator, denominator) of each meter change, read from the measures.

  Read per measure because offsets of flattened time signatures are unreliable for some
  ABC files. Repeats of the current meter and sub-beat bars (music21's ABC reader makes 1/32
  bars out of grace-note fragments) are not meter changes. A measure that brings a new meter
  but is shorter than its bar is the upbeat of the new section (bwv304 goes to 3/4 with a
  one-beat measure): it gets a signature of its own length and the new meter begins at the
  next measure, where its first full bar is; the MIDI loader pads such a bar as a pickup.
  """
  out: list[tuple[float, int, int]] = []
  measures = list(stream_.getElementsByClass("Measure"))
  if measures:
    found = [(k, float(m.offset), m.timeSignature) for k, m in enumerate(measures)
             if m.timeSignature is not None]
  else:
    found = [(0, 0.0, ts) for ts in stream_.getElementsByClass("TimeSignature")][:1]
  for k, offset, ts in found:
    num, den = int(ts.numerator), int(ts.denominator)
    if out and (num * 4.0 / den < 1 or (num, den) == out[-1][1:]):
      continue
    if out and k + 1 < len(measures):
      length = float(measures[k + 1].offset) - offset
      upbeat = _meter_of_length(length, den)
      if 0 < length < num * 4.0 / den and upbeat is not None:
        out.append((offset, *upbeat))
        offset = float(measures[k + 1].offset)
    out.append((offset, num, den))
  return out


def _meter_of_length(quarters: float, den: int) -> tuple[int, int] | None:
  """A meter whose bar lasts `quarters`, on the denominator `den` or a finer one."""
  for d in (den, 8, 16, 32, 64):
    num = quarters * d / 4
    if d >= den and abs(num - round(num)) < 1e-9 and 1 <= round(num) <= 255:
      return int(round(num)), d
  return None


def _pickup_shift(part, bar_ql: float) -> float:
  """Quarter notes to prepend so that a pickup bar becomes the end of a full bar."""
  measures = list(part.getElementsByClass("Measure"))
  if len(measures) < 2:
    return 0.0
  first_ql = float(measures[1].offset - measures[0].offset)
  if 0 < first_ql < bar_ql:
    return bar_ql - first_ql
  return 0.0


def score_to_midi(score, voices: str) -> tuple[bytes, tuple[int, ...]]:
  """Renders a music21 score as a MIDI file with one track per voice that has notes.

  voices: "satb" (a chorale: exactly its 4 vocal parts) or "fold" (any parts, ranked by mean
  pitch and spread over the 4 voices by `fold_voice`, so some voices may stay empty).
  Returns the MIDI bytes and the voices (0 = soprano .. 3 = bass) of its tracks, in file order;
  tracks are named after their voice. Raises ScoreError when the score has no usable parts.
  """
  import miditoolkit  # pylint: disable=import-outside-toplevel
  from music21 import stream  # pylint: disable=import-outside-toplevel

  if isinstance(score, stream.Opus):
    if not score.scores:
      raise ScoreError("no music", "empty opus")
    score = score.scores[0]
  parts = list(score.parts) if score.parts else [score]
  if voices == "satb":
    parts = _select_satb(parts)
    voiced = [(i, _part_notes(p)) for i, p in enumerate(parts)]
  else:
    with_notes = [n for n in (_part_notes(p) for p in parts) if n]
    ranked = sorted(with_notes, key=_mean_pitch, reverse=True)
    voiced = [(fold_voice(r, len(ranked)), n) for r, n in enumerate(ranked)]
  if not any(n for _, n in voiced):
    raise ScoreError("no notes")

  meters = _meters(parts[0]) or _meters(score.flatten())
  first_bar_ql = meters[0][1] * 4.0 / meters[0][2] if meters else 4.0
  shift = _pickup_shift(parts[0], first_bar_ql)

  def tick(offset_ql: float) -> int:
    return int(round((offset_ql + shift) * TICKS_PER_BEAT))

  midi = miditoolkit.MidiFile(ticks_per_beat=TICKS_PER_BEAT)
  # The first meter and tempo go at tick 0, before the (shifted) pickup.
  for i, (offset, num, den) in enumerate(meters or [(0.0, 4, 4)]):
    midi.time_signature_changes.append(
        miditoolkit.TimeSignature(num, den, 0 if i == 0 else tick(offset)))
  for i, (start, _, mark) in enumerate(score.metronomeMarkBoundaries()):
    qpm = mark.getQuarterBPM() or DEFAULT_QPM
    midi.tempo_changes.append(miditoolkit.TempoChange(float(qpm), 0 if i == 0 else tick(start)))

  tracks = [miditoolkit.Instrument(program=0, is_drum=False, name=v) for v in VOICES]
  for voice, notes in voiced:
    for offset, ql, pitch, velocity in notes:
      start = tick(offset)
      end = max(start + 1, tick(offset + ql))
      tracks[voice].notes.append(miditoolkit.Note(velocity, pitch, start, end))
  for t in tracks:
    t.notes.sort(key=lambda n: (n.start, n.pitch))
  # MIDI readers drop instruments without notes, so empty voices are left out here and
  # their absence is returned instead.
  present = tuple(v for v, t in enumerate(tracks) if t.notes)
  midi.instruments = [tracks[v] for v in present]
  midi.max_tick = max((n.end for t in tracks for n in t.notes), default=0)
  buf = io.BytesIO()
  midi.dump(file=buf)
  return buf.getvalue(), present


class Converted(NamedTuple):
  """What a pool worker sends back for one piece."""

  name: str
  midi: bytes | None        # None when the piece is skipped
  reason: str | None = None
  detail: str = ""
  voices: tuple[int, ...] = ()  # corpus pieces: the voice of each MIDI track, in file order


def piece_to_midi(piece: Piece) -> Converted:
  """Pool worker: a piece as MIDI bytes, or the reason it is skipped. Never raises."""
  try:
    if not piece.voices:  # a MIDI file: nothing to convert
      with open(piece.path, "rb") as f:
        return Converted(piece.name, f.read())
    from music21 import converter  # pylint: disable=import-outside-toplevel
    # forceSource: neither read nor write music21's shared pickle cache, which other
    # processes may be writing at the same time.
    score = converter.parse(piece.path, forceSource=True)
    midi, voices = score_to_midi(score, piece.voices)
    return Converted(piece.name, midi, voices=voices)
  except ScoreError as e:
    return Converted(piece.name, None, e.reason, e.detail)
  except OSError as e:
    return Converted(piece.name, None, "unreadable file", f"{type(e).__name__}: {e}")
  except Exception as e:  # pylint: disable=broad-except
    # music21's parsers raise anything from their own exceptions to IndexError.
    return Converted(piece.name, None, "music21 cannot parse", f"{type(e).__name__}: {e}"[:300])


# --------------------------------------------------------------------------------------------
# Folders of MIDI files.


def scan_midi_folder(root: str, *, styles_from_subfolders: bool = True) -> list[Piece]:
  """All .mid/.midi files under root, sorted by relative path.

  Style: the first-level subfolder a file is in ("default" for files directly in root).
  Hidden files and folders are ignored.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(f"MIDI folder {root!r} does not exist")
  pieces = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for f in filenames:
      if f.startswith(".") or not f.lower().endswith(MIDI_SUFFIXES):
        continue
      path = os.path.join(dirpath, f)
      rel = os.path.relpath(path, root).replace(os.sep, "/")
      style = rel.split("/")[0] if styles_from_subfolders and "/" in rel else DEFAULT_STYLE
      pieces.append(Piece(rel, path, style, ""))
  pieces.sort(key=lambda p: p.name)
  return pieces
