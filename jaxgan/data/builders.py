"""TFDS builders of the song data sets: jsb_chorales, jsb_chorales_standard, music21_styles
and midi_folder.

Every example is one song, or one constant-meter segment of a song whose meter changes
(`jaxgan.midi.quantize_segments`), stored sparse:

  notes           int32 [N, 5]  Song.notes (track, pitch, onset, duration, velocity)
  tokens          int32 [L]     the song's event tokens (jaxgan.midi.encode)
  num_bars        int32
  steps_per_bar   int32
  time_signature  int32 [2]     (numerator, denominator)
  tempo           float32       quarter notes per minute at the first bar
  style           int32         index into the data set's style names
  source          text          the key: `parent`, or `parent@barN` for a segment of it
  parent          text          corpus name or path relative to the MIDI folder
  bar_offset      int32         the bar of the parent the entry's bar 0 is (0 for whole songs)

Data-set level facts live in the TFDS metadata (metadata.json): the MidiConfig, the tracks,
the style names, the vocabulary, the build options, counts of skipped files by reason,
statistics of the train split and per-track facts (`TrackFacts`: pitch range of the train
split, whether the track is monophonic); vocab.json and skipped.json (every skipped file with
its reason) are written next to them. Splits are 80/10/10 by a hash of `parent`, so a song
keeps its split across rebuilds and caps and all segments of a song share one; a split that
receives no song is not written (jsb_chorales_standard keeps its published split instead).

Builder keyword arguments (through `tfds.builder(name, **kwargs)` or `prepare`):
max_songs (read at most this many source files), midi_overrides (MidiConfig fields),
num_workers (processes converting corpus scores), progress (a tqdm bar); music21_styles also
takes max_per_style.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxgan import paths
from jaxgan.data import corpus, standard
from jaxgan.data import match as match_lib
from jaxgan.midi import (
    MidiConfig, MidiError, Segment, Vocabulary, encode, load_midi, quantize_segments,
    song_to_midi)
from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK, Song, Track

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
VOCAB_FILE = "vocab.json"
SKIPPED_FILE = "skipped.json"
# Corpus scores are converted in worker processes only when there are at least this many:
# below it, starting the processes costs more than it saves.
MIN_POOL_PIECES = 24
DURATION_HIST_BEATS = 16   # duration histogram: one bin per grid step up to 16 beats, then one


def features() -> tfds.features.FeaturesDict:
  """The stored features of one song (the same for every builder)."""
  # Plain (varint-packed) int lists: about as small as zlib'd int32 for these small values,
  # and TFDS 4.9's decoder for encoded tensors logs a deprecation warning on every read.
  return tfds.features.FeaturesDict({
      "notes": tfds.features.Tensor(shape=(None, 5), dtype=np.int32),
      "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "num_bars": tfds.features.Scalar(dtype=np.int32),
      "steps_per_bar": tfds.features.Scalar(dtype=np.int32),
      "time_signature": tfds.features.Tensor(shape=(2,), dtype=np.int32),
      "tempo": tfds.features.Scalar(dtype=np.float32),
      "style": tfds.features.Scalar(dtype=np.int32),
      "source": tfds.features.Text(),
      "parent": tfds.features.Text(),
      "bar_offset": tfds.features.Scalar(dtype=np.int32),
  })


@dataclasses.dataclass
class LoadedSong:
  song: Song             # song.source is the stored key
  tokens: np.ndarray
  style: int
  split: str
  parent: str = ""       # the file it came from ("" = song.source)
  bar_offset: int = 0


def song_example(s: LoadedSong) -> dict[str, Any]:
  song = s.song
  return {
      "notes": np.asarray(song.notes, np.int32).reshape(-1, 5),
      "tokens": np.asarray(s.tokens, np.int32).reshape(-1),
      "num_bars": np.int32(song.num_bars),
      "steps_per_bar": np.int32(song.steps_per_bar),
      "time_signature": np.asarray(song.time_signature, np.int32),
      "tempo": np.float32(song.tempos[0] if len(song.tempos) else corpus.DEFAULT_QPM),
      "style": np.int32(s.style),
      "source": song.source,
      "parent": s.parent or song.source,
      "bar_offset": np.int32(s.bar_offset),
  }


def song_stats(songs: Sequence[Song], steps_per_beat: int) -> dict[str, Any]:
  """Statistics that evaluation compares generated music against (counts, not frequencies).

  duration_hist[d] counts notes lasting d grid steps; the last bin holds every longer note.
  """
  num_bars = sum(s.num_bars for s in songs)
  notes = (np.concatenate([s.notes for s in songs]) if songs
           else np.zeros((0, 5), np.int32)).astype(np.int64)
  max_steps = DURATION_HIST_BEATS * steps_per_beat
  num_tracks = max((len(s.tracks) for s in songs), default=0)
  meters = collections.Counter(f"{s.time_signature[0]}/{s.time_signature[1]}" for s in songs)
  return {
      "num_songs": len(songs),
      "num_bars": int(num_bars),
      "num_notes": int(len(notes)),
      "mean_notes_per_bar": float(len(notes) / num_bars) if num_bars else 0.0,
      "pitch_hist": np.bincount(notes[:, PITCH], minlength=128)[:128].tolist(),
      "pitch_class_hist": np.bincount(notes[:, PITCH] % 12, minlength=12).tolist(),
      "duration_hist": np.bincount(np.minimum(notes[:, DURATION], max_steps),
                                   minlength=max_steps + 1).tolist(),
      "duration_hist_steps_per_beat": int(steps_per_beat),
      "notes_per_track": np.bincount(notes[:, TRACK], minlength=num_tracks).tolist(),
      "meters": dict(sorted(meters.items())),
  }


@dataclasses.dataclass(frozen=True)
class TrackFacts:
  """What the data says about one track.

  low, high: its lowest and highest pitch in the train split (every split when the train
    split is empty; None: no notes).
  monophonic: no two of its notes sound at once anywhere in the data set (every split).
  polyphonic_share: of the grid steps where it sounds (every split), the share with more than
    one pitch.
  """

  name: str
  low: int | None
  high: int | None
  monophonic: bool
  polyphonic_share: float

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "TrackFacts":
    low, high = d.get("low"), d.get("high")
    return cls(name=str(d["name"]), low=None if low is None else int(low),
               high=None if high is None else int(high), monophonic=bool(d["monophonic"]),
               polyphonic_share=float(d["polyphonic_share"]))


def _sounding_counts(song: Song, num_tracks: int) -> tuple[np.ndarray, np.ndarray]:
  """Per track: grid steps where it sounds, and steps where more than one pitch does."""
  steps = max(song.num_steps, 1)
  notes = np.asarray(song.notes, np.int64).reshape(-1, 5)
  end = np.minimum(notes[:, ONSET] + notes[:, DURATION], steps)
  delta = np.zeros((num_tracks, steps + 1), np.int32)
  np.add.at(delta, (notes[:, TRACK], np.minimum(notes[:, ONSET], steps)), 1)
  np.add.at(delta, (notes[:, TRACK], end), -1)
  playing = np.cumsum(delta[:, :steps], axis=1)
  return (playing > 0).sum(1), (playing > 1).sum(1)


def track_facts(songs: Sequence[Song], train: Sequence[Song]) -> list[TrackFacts]:
  """TrackFacts of every track of `songs` (all splits); pitch ranges from `train`."""
  if not songs:
    return []
  tracks = songs[0].tracks
  sounding = np.zeros(len(tracks), np.int64)
  polyphonic = np.zeros(len(tracks), np.int64)
  for song in songs:
    s, p = _sounding_counts(song, len(tracks))
    sounding += s
    polyphonic += p
  notes = (np.concatenate([np.asarray(s.notes).reshape(-1, 5) for s in train])
           if train else np.zeros((0, 5), np.int64))
  out = []
  for t, track in enumerate(tracks):
    pitches = notes[notes[:, TRACK] == t, PITCH]
    out.append(TrackFacts(
        name=track.name, low=int(pitches.min()) if len(pitches) else None,
        high=int(pitches.max()) if len(pitches) else None,
        monophonic=bool(polyphonic[t] == 0),
        polyphonic_share=round(float(polyphonic[t] / max(sounding[t], 1)), 6)))
  return out


def _workers(requested: int | None) -> int:
  if requested is not None:
    return max(1, int(requested))
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def convert_pieces(pieces: Sequence[corpus.Piece], *, num_workers: int | None = None,
                   progress: bool = False, desc: str = "") -> Iterator[corpus.Converted]:
  """Reads/converts pieces to MIDI bytes, in the pieces' order, with a process pool.

  The pool uses "spawn" (safe next to TensorFlow and JAX threads; a script calling this needs
  the usual `if __name__ == "__main__":` guard). If the pool breaks, the rest is done here.
  """
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  workers = _workers(num_workers)
  needs_music21 = sum(1 for p in pieces if p.voices)
  bar = tqdm(total=len(pieces), desc=desc or "songs", unit="file", disable=not progress,
             dynamic_ncols=True)
  done = 0
  try:
    if workers > 1 and needs_music21 >= MIN_POOL_PIECES:
      ctx = multiprocessing.get_context("spawn")
      try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
          for result in pool.map(corpus.piece_to_midi, pieces, chunksize=4):
            done += 1
            bar.update(1)
            yield result
      except concurrent.futures.process.BrokenProcessPool as e:
        log.warning("worker processes failed (%s); converting the remaining %d pieces here",
                    e, len(pieces) - done)
    for piece in pieces[done:]:
      bar.update(1)
      yield corpus.piece_to_midi(piece)
  finally:
    bar.close()


# MidiError reasons name tracks, ticks and meters; skips are counted by these categories.
_REASON_CATEGORIES = (
    (r"^meter changes", "meter changes"),
    (r"^no segment left", "no segment left"),
    (r"^has \d+ parts, expected", "wrong number of parts"),
    (r"^truncated", "truncated file"),
    (r"^meter \S+ not in allowed meters", "meter not allowed"),
    (r"^meter \S+ is not a whole number", "meter does not fit the grid"),
    (r"^(undefined status byte|data byte above|running status|corrupt chunk|invalid variable"
     r"|corrupt MIDI data|header chunk)", "corrupt MIDI data"),
    (r"^invalid time signature", "invalid time signature"),
    (r"^no notes left", "no notes in range"),
)


def reason_category(reason: str) -> str:
  """A short, countable form of a skip reason: specifics (numbers, tracks) taken out."""
  for pattern, category in _REASON_CATEGORIES:
    if re.search(pattern, reason):
      return category
  short = re.sub(r"\s*\(.*$", "", reason).split(":")[0].strip()
  return re.sub(r"\d+", "N", short) or "unknown"


def _notes_digest(songs: Sequence[Song]) -> str:
  h = hashlib.sha1()
  for song in songs:
    h.update(np.ascontiguousarray(song.notes, np.int32).tobytes())
    h.update(repr(tuple(song.time_signature)).encode())
  return h.hexdigest()


def vocabulary_for(config: MidiConfig, meters: Iterable[tuple[int, int]]) -> Vocabulary:
  """The vocabulary of a data set: that of its MidiConfig, where the config accepts any
  meter (meters=()) extended by the meters its songs have beyond the common ones, so that
  every stored song has tokens. Its `config` then lists those meters explicitly."""
  vocab = Vocabulary(config)
  if config.meters:
    return vocab
  extra = sorted({tuple(int(x) for x in m) for m in meters} - set(vocab.meters))
  if not extra:
    return vocab
  return Vocabulary(dataclasses.replace(config, meters=tuple(vocab.meters) + tuple(extra)))


class _SongBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared build logic: pieces -> MIDI bytes -> segments -> tokens -> examples."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "1.1.0": "Songs whose meter changes are kept as constant-meter segments (features "
               "parent, bar_offset); pickup bars in MIDI files are padded to a full bar.",
  }
  DESCRIPTION = ""
  HOMEPAGE = "https://web.mit.edu/music21/"

  def __init__(self, *, max_songs: int | None = None, midi_overrides: dict | None = None,
               num_workers: int | None = None, progress: bool = False, **kwargs):
    self._max_songs = None if max_songs is None else int(max_songs)
    self._midi_overrides = dict(midi_overrides or {})
    self._num_workers = num_workers
    self._progress = progress
    super().__init__(**kwargs)

  # -- what subclasses define

  def default_midi_config(self) -> MidiConfig:
    raise NotImplementedError

  def list_pieces(self, dl_manager) -> tuple[list[corpus.Piece], tuple[str, ...]]:
    """The pieces to read, in a fixed order, and the style names."""
    raise NotImplementedError

  def extra_options(self) -> dict[str, Any]:
    return {}

  def convert(self, pieces: Sequence[corpus.Piece]) -> Iterable[corpus.Converted]:
    """The MIDI bytes of every piece, in the pieces' order."""
    return convert_pieces(pieces, num_workers=self._num_workers, progress=self._progress,
                          desc=self.name)

  def split_of(self, piece: corpus.Piece) -> str:
    return corpus.split_of(piece.name)

  def summary_extras(self) -> dict[str, Any]:
    """Entries a data set adds to its build summary."""
    return {}

  # -- options

  def midi_config(self) -> MidiConfig:
    """The default MidiConfig of the data set with the overrides applied."""
    config = self.default_midi_config()
    if not self._midi_overrides:
      return config
    known = {f.name for f in dataclasses.fields(MidiConfig)}
    unknown = sorted(set(self._midi_overrides) - known)
    if unknown:
      raise ValueError(f"midi_overrides: unknown MidiConfig fields {unknown}; "
                       f"known: {sorted(known)}")
    values = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
              if isinstance(v, list) else v for k, v in self._midi_overrides.items()}
    return dataclasses.replace(config, **values)

  def build_options(self) -> dict[str, Any]:
    """Everything the content depends on besides the code version: a stored build is
    reused only when these match."""
    return {"max_songs": self._max_songs, "midi_config": self.midi_config().to_json(),
            **self.extra_options()}

  # -- TFDS

  def _log_download_bytes(self) -> None:
    pass  # TFDS prints download sizes; nothing is downloaded here

  def _log_download_done(self) -> None:
    pass

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=features(),
        homepage=self.HOMEPAGE,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    songs, skipped = self._load_songs(dl_manager)
    out_dir = os.fspath(self.data_dir)  # the temporary folder TFDS renames when done
    paths.write_text(paths.join(out_dir, SKIPPED_FILE), json.dumps(skipped, indent=1))
    by_split = {s: [x for x in songs if x.split == s] for s in SPLITS}
    return {s: self._generate_examples(by_split[s]) for s in SPLITS if by_split[s]}

  def _generate_examples(self, songs: Sequence[LoadedSong]):
    for s in songs:
      yield s.song.source, song_example(s)

  # -- the build

  def _load_songs(self, dl_manager):
    config = self.midi_config()
    pieces, styles = self.list_pieces(dl_manager)
    if self._max_songs is not None:
      pieces = pieces[:self._max_songs]
    style_index = {s: i for i, s in enumerate(styles)}
    voice_configs: dict[tuple[int, ...], MidiConfig] = {}
    load_counts: collections.Counter = collections.Counter()
    loaded: list[tuple[corpus.Piece, list[Segment]]] = []
    segment_counts = dict.fromkeys(("whole", "split", "segments", "pickups"), 0)
    dropped: collections.Counter = collections.Counter()
    skipped: list[dict[str, str]] = []
    seen: dict[str, str] = {}

    def skip(name: str, reason: str, detail: str = "") -> None:
      skipped.append({"source": name, "reason": reason, "detail": detail})

    for piece, result in zip(pieces, self.convert(pieces)):
      if result.midi is None:
        skip(piece.name, result.reason or "unreadable", result.detail)
        continue
      try:
        segments = self._load(result, config, voice_configs, load_counts)
      except MidiError as e:
        skip(piece.name, reason_category(e.reason), e.reason)
        continue
      except Exception as e:  # pylint: disable=broad-except
        # One odd file must not end a long build; it is listed like any other skip.
        skip(piece.name, f"unexpected {type(e).__name__}", str(e)[:300])
        continue
      # Duplicates are whole files: two equal verses of one song are not.
      digest = _notes_digest([s.song for s in segments if s.song is not None])
      if digest in seen:
        skip(piece.name, "duplicate", f"same notes as {seen[digest]}")
        continue
      seen[digest] = piece.name
      loaded.append((piece, segments))
      kept = [s for s in segments if s.song is not None]
      segment_counts["whole" if len(segments) == 1 else "split"] += 1
      segment_counts["segments"] += len(kept) if len(segments) > 1 else 0
      segment_counts["pickups"] += sum(s.pickup for s in segments)
      dropped.update(reason_category(s.reason) for s in segments if s.song is None)

    vocab = vocabulary_for(
        config, [s.song.time_signature for _, segs in loaded for s in segs if s.song])
    songs: list[LoadedSong] = []
    for piece, segments in loaded:
      split = self.split_of(piece)  # one split for all segments of a song
      try:
        tokens = [encode(s.song, vocab) for s in segments if s.song is not None]
      except ValueError as e:
        skip(piece.name, "cannot encode", str(e)[:300])
        continue
      kept = [s for s in segments if s.song is not None]
      for segment, song_tokens in zip(kept, tokens):
        key = piece.name if len(segments) == 1 else f"{piece.name}@bar{segment.bar_offset}"
        song = dataclasses.replace(segment.song, source=key)
        songs.append(LoadedSong(song, song_tokens, style_index[piece.style], split,
                                piece.name, segment.bar_offset))
    if not songs:
      reasons = collections.Counter(s["reason"] for s in skipped)
      raise ValueError(f"{self.name}: none of the {len(pieces)} files gave a song "
                       f"(skipped: {dict(reasons)})")

    train = [s.song for s in songs if s.split == "train"] or [s.song for s in songs]
    skipped_counts = dict(sorted(collections.Counter(s["reason"] for s in skipped).items()))
    splits = {}
    for split in SPLITS:
      part = [s for s in songs if s.split == split]
      splits[split] = {"songs": len(part), "bars": sum(s.song.num_bars for s in part),
                       "notes": sum(s.song.num_notes for s in part),
                       "tokens": sum(len(s.tokens) for s in part)}
    style_counts = collections.Counter(styles[s.style] for s in songs)
    summary = {
        "files": len(pieces),
        # Files kept whole or split at meter changes (into kept segments, and segments
        # dropped by reason), and pickup bars padded; skipped files are under "skipped".
        "segments": {**segment_counts, "dropped": dict(sorted(dropped.items()))},
        "splits": splits,
        "styles": {s: style_counts.get(s, 0) for s in styles},
        "skipped": skipped_counts,
        "load_counts": dict(sorted(load_counts.items())),
        **self.summary_extras(),
    }
    vocab_json = vocab.to_json()
    self.info.metadata.update({
        "midi_config": config.to_json(),
        "tracks": [t.to_json() for t in config.tracks()],
        "styles": list(styles),
        "vocab": vocab_json,
        "build_options": self.build_options(),
        "build": summary,
        "stats": song_stats(train, config.steps_per_beat),
        "track_facts": [f.to_json() for f in track_facts([s.song for s in songs], train)],
    })
    vocab.save(paths.join(os.fspath(self.data_dir), VOCAB_FILE))
    return songs, skipped

  def _load(self, result: corpus.Converted, config: MidiConfig,
            voice_configs: dict[tuple[int, ...], MidiConfig],
            load_counts: collections.Counter) -> list[Segment]:
    """The constant-meter segments of the MIDI bytes (quantize_segments); corpus pieces
    missing voices get their tracks remapped."""
    voices = tuple(result.voices)
    num_tracks = len(config.tracks())
    remap = bool(voices) and voices != tuple(range(num_tracks))
    tracks = config.tracks()
    if remap:
      # "parts" mode wants one instrument per track: load the voices that are present as
      # the only tracks, then put them back in their places among all the voices.
      if voices not in voice_configs:
        voice_configs[voices] = dataclasses.replace(
            config, track_names=tuple(config.track_names[v] for v in voices))
      config = voice_configs[voices]
    midi = load_midi(result.midi, name=result.name, config=config)
    segments, counts = quantize_segments(midi, config, source=result.name)
    if remap:
      segments = [s if s.song is None else dataclasses.replace(s, song=_with_voices(
          s.song, voices, tracks)) for s in segments]
    load_counts.update({k: int(v) for k, v in counts.items()})
    return segments


def _with_voices(song: Song, voices: tuple[int, ...], tracks) -> Song:
  notes = np.array(song.notes, np.int32, copy=True)
  notes[:, TRACK] = np.asarray(voices, np.int32)[notes[:, TRACK]]
  return dataclasses.replace(song, notes=notes, tracks=tuple(tracks))


# --------------------------------------------------------------------------------------------


class JsbChorales(_SongBuilder):
  """The 4-part Bach chorales of the music21 corpus (about 350), built offline."""

  DESCRIPTION = (
      "Bach's four-part chorales from the music21 corpus, one song per chorale file (one per "
      "constant-meter segment where the meter changes), tracks soprano, alto, tenor, bass, at "
      "12 steps per beat, every meter kept. Chorales with instruments keep their 4 vocal "
      "parts; pickups are padded so downbeats fall on bar lines.")

  def default_midi_config(self) -> MidiConfig:
    return MidiConfig(steps_per_beat=12, track_mode="parts", track_names=corpus.VOICES,
                      meters=())

  def list_pieces(self, dl_manager):
    return corpus.chorale_pieces("bach"), ("bach",)


class JsbChoralesStandard(_SongBuilder):
  """The standard JSB split (Boulanger-Lewandowski et al. 2012), with Bach's bar lines.

  The 229 / 76 / 77 chorales of the split exactly, from the Coconet encoding shipped in
  jaxgan/data/jsb16 (one pitch per voice per 16th note), tracks soprano, alto, tenor, bass at
  12 steps per beat. That encoding cannot tell a repeated note from a held one: consecutive
  equal pitches of a voice become one held note. It has no meter either: each chorale takes the
  time signature and pickup of the music21 corpus chorale it matches (`jaxgan.data.standard`),
  and `matches.json` beside the data says which, how well, and how every other corpus chorale
  relates to the split. The build summary counts the chorales whose bars come from a same
  harmonisation, a same melody, or the default (4/4 counted back from the end).

  Two builder configs: `jsb_chorales_standard` (or `.../standard`) is the split alone;
  `jsb_chorales_standard/music21_extras` adds to its train split the corpus chorales that are
  the same music as no standard chorale of any split (so no validation or test chorale leaks
  in and no train chorale is doubled), put in the same encoding; the others are listed in its
  skipped.json as "same as a standard chorale".
  """

  DESCRIPTION = (
      "The standard JSB chorale split of Boulanger-Lewandowski et al. (ICML 2012), 229/76/77 "
      "chorales, in the voice-separated 16th-note encoding of Coconet (Huang et al., ISMIR "
      "2017) made from the data of Allan & Williams (NIPS 2005); tracks soprano, alto, tenor, "
      "bass; held and repeated notes are one; meters and pickups from the matching music21 "
      "chorale.")
  HOMEPAGE = "https://github.com/czhuang/JSB-Chorales-dataset"
  MATCHES_FILE = "matches.json"
  SAME_AS_STANDARD = "same as a standard chorale"
  EXTRAS = "music21_extras"
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="standard", description="The published split."),
      tfds.core.BuilderConfig(
          name=EXTRAS, description="The published split, and in its train split the music21 "
          "chorales that are none of the split's."),
  ]

  def __init__(self, **kwargs):
    self._chorales: dict[str, list[np.ndarray]] = {}
    self._meters: dict[str, Any] = {}
    self._report: dict[str, Any] = {}
    super().__init__(**kwargs)

  @property
  def _extras(self) -> bool:
    return self.builder_config.name == self.EXTRAS

  def default_midi_config(self) -> MidiConfig:
    # The split holds notes of up to 36 beats (a held final chord): none may be clipped.
    return MidiConfig(steps_per_beat=12, track_mode="parts", track_names=corpus.VOICES,
                      meters=(), max_duration_beats=64)

  def extra_options(self):
    return {self.EXTRAS: self._extras}

  def list_pieces(self, dl_manager):
    self._chorales = standard.load_chorales()
    where = f"{standard.DATA_PACKAGE}/{standard.DATA_FILE}"
    per_split = [[corpus.Piece(standard.source_name(split, i), where, "bach")
                  for i in range(len(self._chorales[split]))] for split in SPLITS]
    # Interleaved, so that a small max_songs still reads every split.
    pieces = [p for group in _round_robin(per_split) for p in group]
    if self._extras:
      pieces += corpus.chorale_pieces("bach")
    return pieces, ("bach",)

  def split_of(self, piece):
    parts = piece.name.split("/")
    if parts[0] == standard.SOURCE_PREFIX and len(parts) == 3:
      return parts[1]
    return "train"  # corpus chorales kept as extras

  def convert(self, pieces):
    config = self.midi_config()
    if config.steps_per_beat % match_lib.FRAMES_PER_BEAT:
      raise ValueError(f"{self.name}: steps_per_beat={config.steps_per_beat} must be a multiple "
                       f"of {match_lib.FRAMES_PER_BEAT} (the data is in 16th notes)")
    corpus_pieces = corpus.chorale_pieces("bach")
    converted = list(convert_pieces(corpus_pieces, num_workers=self._num_workers,
                                    progress=self._progress, desc=f"{self.name}: music21"))
    by_name = {r.name: r for r in converted}
    chorales = [c for c in map(standard.corpus_chorale, converted) if c is not None]
    # Every standard chorale is matched, also under max_songs: extras must avoid them all.
    names = [(split, i) for split in SPLITS for i in range(len(self._chorales[split]))]
    sources = [standard.source_name(s, i) for s, i in names]
    frames = {source: self._chorales[s][i] for source, (s, i) in zip(sources, names)}
    meters, matches = standard.recover_meters(list(frames.values()), chorales)
    self._meters = dict(zip(sources, meters))
    same = standard.same_music(matches)
    excluded = {chorales[j].name: [sources[p.a] for p in pairs] for j, pairs in same.items()}
    self._report = _match_report(names, sources, meters, chorales, matches, excluded,
                                 len(corpus_pieces))
    for piece in pieces:
      if piece.name in frames:
        yield self._standard_midi(piece.name, frames[piece.name], self._meters[piece.name])
      elif piece.name in excluded:
        yield corpus.Converted(piece.name, None, self.SAME_AS_STANDARD,
                               ", ".join(excluded[piece.name]))
      else:
        yield by_name[piece.name]

  def _standard_midi(self, name: str, frames: np.ndarray, meter) -> corpus.Converted:
    """A standard chorale as MIDI bytes, so it is loaded and checked like every source."""
    spb = self.midi_config().steps_per_beat
    notes = standard.chorale_notes(frames, meter, spb)
    present = tuple(int(v) for v in np.unique(notes[:, TRACK]))
    remap = np.full(len(corpus.VOICES), -1)
    remap[list(present)] = np.arange(len(present))
    notes[:, TRACK] = remap[notes[:, TRACK]]
    num, den = meter.time_signature
    steps = (meter.pad + len(frames)) * (spb // match_lib.FRAMES_PER_BEAT)
    bar = num * 4 * spb // den
    song = Song(notes=notes, num_bars=max(1, -(-steps // bar)), steps_per_beat=spb,
                time_signature=(num, den), tempos=np.full(1, corpus.DEFAULT_QPM, np.float32),
                tracks=tuple(Track(corpus.VOICES[v]) for v in present), source=name)
    buf = io.BytesIO()
    song_to_midi(song, ticks_per_beat=corpus.TICKS_PER_BEAT).dump(file=buf)
    return corpus.Converted(name, buf.getvalue(), voices=present)

  def _load(self, result, config, voice_configs, load_counts):
    segments = super()._load(result, config, voice_configs, load_counts)
    if result.name.startswith(standard.SOURCE_PREFIX + "/"):
      return segments
    return [s if s.song is None else dataclasses.replace(s, song=self._as_16ths(s.song, load_counts))
            for s in segments]

  @staticmethod
  def _as_16ths(song: Song, load_counts: collections.Counter) -> Song:
    """A corpus extra in the split's encoding (16th notes, one pitch per voice, repeated notes
    held), so that every song of the data set looks alike."""
    frames = match_lib.frames_from_notes(song.notes, song.steps_per_beat, len(corpus.VOICES),
                                         song.num_steps)
    notes = match_lib.notes_from_frames(frames, song.steps_per_beat // match_lib.FRAMES_PER_BEAT)
    load_counts["notes_merged_in_16ths"] += song.num_notes - len(notes)  # repeats held, mostly
    return dataclasses.replace(song, notes=notes)

  def summary_extras(self):
    counts = collections.Counter(m.how for m in self._meters.values())
    return {"standard": {
        "meters_from": {k: counts.get(k, 0) for k in ("harmony", "melody", "default")},
        "meter_changes_in_match": sum(m.meter_changes for m in self._meters.values()),
        **self._report["summary"]}}

  def _split_generators(self, dl_manager):
    out = super()._split_generators(dl_manager)
    path = paths.join(os.fspath(self.data_dir), self.MATCHES_FILE)
    paths.write_text(path, json.dumps(
        {k: v for k, v in self._report.items() if k != "summary"}, indent=1))
    return out


def _match_report(names, sources, meters, chorales, matches, excluded,
                  num_corpus: int) -> dict[str, Any]:
  """matches.json: how every standard chorale got its bars and how every corpus chorale
  relates to the split; and the counts for the build summary."""
  split_of = {s: split for s, (split, _) in zip(sources, names)}
  rows = [{"source": s, **m.to_json()} for s, m in zip(sources, meters)]
  corpus_rows = []
  for j, chorale in enumerate(chorales):
    best = matches.best_for_b(j)
    corpus_rows.append({
        "name": chorale.name,
        "same_as": excluded.get(chorale.name, []),
        "best": sources[best.a] if best else "",
        "harmony": round(best.harmony, 4) if best else 0.0,
        "melody": round(best.melody, 4) if best else 0.0,
    })
  held_out = sum(1 for c in corpus_rows
                 if any(split_of[s] != "train" for s in c["same_as"]))
  return {
      "standard": rows,
      "corpus": corpus_rows,
      "summary": {
          "corpus_chorales": num_corpus,
          "corpus_compared": len(chorales),
          "corpus_same_as_standard": len(excluded),
          "corpus_same_as_held_out": held_out,
          "corpus_new": len(chorales) - len(excluded),
      },
  }


class Music21Styles(_SongBuilder):
  """Several styles from the music21 corpus, each song labelled with its style.

  Styles: bach (chorales), palestrina (masses and motets), monteverdi (madrigals), folk
  (Ryan's Mammoth Collection fiddle tunes). Every style goes to the same 4 voice tracks
  soprano, alto, tenor, bass: a score's parts are ranked by mean pitch and spread evenly
  over the voices (5 parts: S A T T B; 6: S A A T T B; a single melody: soprano), parts
  sharing a voice are merged, and voices no part reaches stay empty. Chorales keep exactly
  their 4 vocal parts as in jsb_chorales.
  """

  DESCRIPTION = (
      "Bach chorales, Palestrina, Monteverdi madrigals and folk tunes (Ryan's Mammoth "
      "Collection) from the music21 corpus, labelled by style, on 4 voice tracks (parts "
      "ranked by pitch and folded onto soprano, alto, tenor, bass).")
  DEFAULT_MAX_PER_STYLE = 300

  def __init__(self, *, max_per_style: int | None = DEFAULT_MAX_PER_STYLE, **kwargs):
    self._max_per_style = None if max_per_style is None else int(max_per_style)
    super().__init__(**kwargs)

  def default_midi_config(self) -> MidiConfig:
    return MidiConfig(steps_per_beat=12, track_mode="parts", track_names=corpus.VOICES,
                      meters=())

  def extra_options(self):
    return {"max_per_style": self._max_per_style}

  def list_pieces(self, dl_manager):
    per_style = [corpus.style_pieces(s, self._max_per_style) for s in corpus.STYLES]
    # Interleaved, so that a small max_songs still samples every style.
    pieces = [p for group in _round_robin(per_style) for p in group]
    return pieces, corpus.STYLES


def _round_robin(groups: Sequence[Sequence[Any]]) -> Iterable[list[Any]]:
  for i in range(max((len(g) for g in groups), default=0)):
    yield [g[i] for g in groups if i < len(g)]


class MidiFolder(_SongBuilder):
  """Any folder tree of .mid/.midi files (the manual dir), styles from first-level folders."""

  DESCRIPTION = (
      "Songs from a folder of MIDI files given as the manual dir, lpd5 tracks (drums, piano, "
      "guitar, bass, strings) at 12 steps per beat, any meter (a song whose meter changes is "
      "split into constant-meter segments). Each first-level subfolder is "
      "a style; files directly in the folder have style 'default'. Files that cannot be read "
      "are skipped and listed in skipped.json.")
  HOMEPAGE = ""
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put your .mid/.midi files in a folder (optionally one subfolder per style) and pass it "
      "as the manual dir: `jaxgan prepare midi_folder --manual-dir FOLDER`, or "
      "download_config=tfds.download.DownloadConfig(manual_dir=FOLDER).")

  def __init__(self, *, manual_dir: str | None = None, **kwargs):
    # Known before the build only when given here; the reuse check in `prepare` needs it.
    # The MIDI folder is local: miditoolkit reads its files.
    self._manual_dir = os.path.abspath(manual_dir) if manual_dir else None
    super().__init__(**kwargs)

  def default_midi_config(self) -> MidiConfig:
    return MidiConfig(steps_per_beat=12, track_mode="lpd5", meters=())

  def extra_options(self):
    return {"manual_dir": self._manual_dir}

  def list_pieces(self, dl_manager):
    root = os.path.abspath(os.fspath(dl_manager.manual_dir))
    self._manual_dir = root
    pieces = corpus.scan_midi_folder(root)
    styles = tuple(sorted({p.style for p in pieces})) or (corpus.DEFAULT_STYLE,)
    return pieces, styles
