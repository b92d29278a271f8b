"""The standard JSB chorale split, shipped with jaxgan, and its meters recovered by matching.

Published chorale figures (Coconet, DeepBach, TonicNet, ...) are measured on the split of
Boulanger-Lewandowski et al. (ICML 2012): 229 / 76 / 77 chorales, here in the voice-separated
16th-note encoding of Coconet (provenance and citations in `jsb16/README.md`). Each chorale is
frames: a soprano, alto, tenor and bass pitch per 16th note, -1 where the voice is silent.

The encoding has no meter and no bar lines. Each chorale is matched by content
(`jaxgan.data.match`) to the music21 corpus chorale it was made from, whose time signature and
pickup then put its bar lines where Bach's are. A chorale with no same harmonisation in the
corpus takes them from a harmonisation of the same melody, and failing that gets
`DEFAULT_METER` with bar lines counted back from its end (chorales end on a full bar).
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import json
from collections.abc import Sequence

import numpy as np

from jaxgan.data import corpus
from jaxgan.data import match as match_lib
from jaxgan.midi import MidiError, load_midi

DATA_PACKAGE = "jaxgan.data"
DATA_FILE = "jsb16/Jsb16thSeparated.json.gz"
# The file's split names -> ours (the TFDS split names every builder uses).
SPLITS = {"train": "train", "valid": "validation", "test": "test"}
SPLIT_SIZES = {"train": 229, "validation": 76, "test": 77}
NUM_VOICES = 4
DEFAULT_METER = (4, 4)
SOURCE_PREFIX = "standard"


def source_name(split: str, index: int) -> str:
  """The stored `source` of standard chorale `index` of `split` (our split names)."""
  return f"{SOURCE_PREFIX}/{split}/{index:03d}"


def _parse(data: dict, where: str) -> dict[str, list[np.ndarray]]:
  if not isinstance(data, dict) or set(data) != set(SPLITS):
    keys = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{where}: expected an object with keys {sorted(SPLITS)}, got {keys}")
  out = {}
  for key, split in SPLITS.items():
    if not isinstance(data[key], list):
      raise ValueError(f"{where}: {key} is a {type(data[key]).__name__}, not a list of chorales")
    chorales = []
    for i, chorale in enumerate(data[key]):
      try:
        frames = np.asarray(chorale, np.int64)
      except (TypeError, ValueError):
        raise ValueError(f"{where}: {key}[{i}] is not a list of pitch lists") from None
      if frames.ndim != 2 or frames.shape[1] != NUM_VOICES or not len(frames):
        raise ValueError(f"{where}: {key}[{i}] has shape {frames.shape}, expected "
                         f"[steps, {NUM_VOICES}]")
      if frames.min() < -1 or frames.max() > 127:
        raise ValueError(f"{where}: {key}[{i}] has pitches outside -1..127")
      chorales.append(frames.astype(np.int16))
    out[split] = chorales
  return out


def load_chorales() -> dict[str, list[np.ndarray]]:
  """The shipped split: {"train" | "validation" | "test": [int16 [steps, 4] frames]}."""
  resource = importlib.resources.files(DATA_PACKAGE).joinpath(DATA_FILE)
  with resource.open("rb") as f, gzip.open(f, "rt", encoding="utf-8") as text:
    data = json.load(text)
  return _parse(data, f"{DATA_PACKAGE}/{DATA_FILE}")


# --------------------------------------------------------------------------------------------
# Meters.


@dataclasses.dataclass(frozen=True)
class CorpusChorale:
  """A music21 corpus chorale as the matcher sees it."""

  name: str
  frames: np.ndarray                  # int16 [steps, 4], frame 0 on a bar line
  time_signature: tuple[int, int]     # its first meter
  meter_changes: bool = False         # the meter changes later (bars follow the first one)


def corpus_chorale(converted: corpus.Converted) -> CorpusChorale | None:
  """A converted corpus chorale as the matcher sees it (None if it did not convert). Chorales
  whose meter changes are kept: their first meter gives the bars."""
  if converted.midi is None:
    return None
  try:
    midi = load_midi(converted.midi, name=converted.name)
  except MidiError:
    return None
  voices = converted.voices or tuple(range(len(midi.instruments)))
  signatures = midi.time_signature_changes
  first = ((int(signatures[0].numerator), int(signatures[0].denominator)) if signatures
           else (4, 4))
  changes = any((ts.numerator, ts.denominator) != first for ts in signatures[1:])
  return CorpusChorale(converted.name, match_lib.frames_from_midi(midi, voices), first, changes)


@dataclasses.dataclass(frozen=True)
class Meter:
  """Where a standard chorale's bar lines go, and why.

  how: "harmony" (a corpus chorale with the same harmonisation), "melody" (the same melody
    harmonised differently) or "default" (no match: DEFAULT_METER, bars counted from the end).
  pad: 16ths of silence put before the chorale so that its bar lines land on Bach's.
  bar_agreement: share of the aligned frames whose bar position agrees with that pad (below 1
    where a written-out repeat or a cut moves the bar lines of one edition against the other).
  """

  time_signature: tuple[int, int]
  pad: int
  how: str
  corpus: str = ""
  harmony: float = 0.0
  melody: float = 0.0
  transpose: int = 0
  bar_agreement: float = 0.0
  meter_changes: bool = False

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["time_signature"] = list(self.time_signature)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def bar_frames(time_signature: Sequence[int]) -> int | None:
  """16ths per bar of a meter, or None where that is not a whole number."""
  num, den = (int(x) for x in time_signature)
  return num * 16 // den if (num * 16) % den == 0 else None


def _meter_of_bar(frames_per_bar: int, like: tuple[int, int]) -> tuple[int, int] | None:
  """A time signature with `like`'s numerator and frames_per_bar 16ths, if there is one."""
  num = like[0]
  if (num * 16) % frames_per_bar:
    return None
  den = num * 16 // frames_per_bar
  return (num, den) if den in (1, 2, 4, 8, 16) else None


def default_meter(num_frames: int) -> Meter:
  """DEFAULT_METER with the pickup that makes the chorale end on a bar line."""
  return Meter(DEFAULT_METER, (-num_frames) % bar_frames(DEFAULT_METER), "default")


def meter_from_match(frames: np.ndarray, chorale: CorpusChorale,
                     pair: match_lib.PairScore, how: str) -> Meter | None:
  """The meter and pickup a matched corpus chorale gives; None where its meter does not fit."""
  bar = bar_frames(chorale.time_signature)
  if bar is None:
    return None
  path = match_lib.align(frames, chorale.frames, pair)
  pad, bar_len, agreement = match_lib.bar_phase(path, bar, pair.a_repeat, pair.b_repeat)
  meter = (tuple(chorale.time_signature) if bar_len == bar
           else _meter_of_bar(bar_len, tuple(chorale.time_signature)))
  if meter is None:
    return None
  return Meter(meter, int(pad), how, chorale.name, round(pair.harmony, 4),
               round(pair.melody, 4), pair.transpose, round(agreement, 4), chorale.meter_changes)


def recover_meters(chorales: Sequence[np.ndarray], corpus_chorales: Sequence[CorpusChorale],
                   matches: match_lib.Matches | None = None) -> tuple[list[Meter],
                                                                      match_lib.Matches]:
  """The meter of every standard chorale (module docstring) and the matches it came from."""
  if matches is None:
    matches = match_lib.match(list(chorales), [c.frames for c in corpus_chorales])
  by_chorale: dict[int, list[match_lib.PairScore]] = {}
  for p in matches.pairs:
    by_chorale.setdefault(p.a, []).append(p)
  meters = []
  for i, frames in enumerate(chorales):
    found = by_chorale.get(i, [])
    same = sorted((p for p in found if p.same_harmonisation), key=lambda p: -p.harmony)
    tune = sorted((p for p in found if p.same_melody and not p.same_harmonisation),
                  key=lambda p: (-p.melody, -p.harmony))
    meter = None
    for pair, how in [(p, "harmony") for p in same] + [(p, "melody") for p in tune]:
      meter = meter_from_match(frames, corpus_chorales[pair.b], pair, how)
      if meter is not None:
        break
    meters.append(meter or default_meter(len(frames)))
  return meters, matches


def same_music(matches: match_lib.Matches) -> dict[int, list[match_lib.PairScore]]:
  """Corpus chorale index -> the pairs by which it is the same music as a standard chorale:
  the same harmonisation, or one containing the other (harmony or containment at the
  threshold). Such a corpus chorale must not be trained on beside held-out standard ones."""
  out: dict[int, list[match_lib.PairScore]] = {}
  for p in matches.pairs:
    if max(p.harmony, p.containment) >= match_lib.HARMONY_THRESHOLD:
      out.setdefault(p.b, []).append(p)
  return out


def chorale_notes(frames: np.ndarray, meter: Meter, steps_per_beat: int = 12) -> np.ndarray:
  """Song notes of a chorale: held runs of a voice are one note, after meter.pad 16ths."""
  if steps_per_beat % match_lib.FRAMES_PER_BEAT:
    raise ValueError(f"steps_per_beat={steps_per_beat} is not a multiple of 4 (16th notes)")
  return match_lib.notes_from_frames(frames, steps_per_beat // match_lib.FRAMES_PER_BEAT,
                                     pad=meter.pad)
