"""TFDS builders of the song data sets: jsb_chorales, music21_styles and midi_folder.

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
the style names, the vocabulary, the build options, counts of skipped files by reason and
statistics of the train split; vocab.json and skipped.json (every skipped file with its
reason) are written next to them. Splits are 80/10/10 by a hash of `parent`, so a song keeps
its split across rebuilds and caps and all segments of a song share one; a split that
receives no song is not written.

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
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxgan.data import corpus
from jaxgan.midi import (
    MidiConfig, MidiError, Segment, Vocabulary, encode, load_midi, quantize_segments)
from jaxgan.midi.song import DURATION, PITCH, TRACK, Song

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
    with open(os.path.join(out_dir, SKIPPED_FILE), "w", encoding="utf-8") as f:
      json.dump(skipped, f, indent=1)
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

    results = convert_pieces(pieces, num_workers=self._num_workers, progress=self._progress,
                             desc=self.name)
    for piece, result in zip(pieces, results):
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
      split = corpus.split_of(piece.name)  # one split for all segments of a song
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
    })
    vocab.save(os.path.join(os.fspath(self.data_dir), VOCAB_FILE))
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
