"""Building a data set once (`prepare`) and reading it back (`dataset_info`, `read_split`).

The data dir may be local or on shared storage (gs://bucket/data): TFDS takes it as it is, and
the files read or listed here go through jaxgan.paths. The source MIDI (manual_dir) is local.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import time
from typing import Any

import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants as tfds_constants
from tensorflow_datasets.core.utils import tqdm_utils as tfds_tqdm

from jaxgan import paths
from jaxgan.data import builders
from jaxgan.midi import MidiConfig, Vocabulary
from jaxgan.midi.song import Track

log = logging.getLogger(__name__)

DATA_DIR_ENV = "JAXGAN_DATA_DIR"
_tf_configured = False


class DataWriteError(OSError):
  """A data set could not be built where it was asked for: `path` says where, `reason` why.

  Nothing half-built is left that a later `prepare` would take for a built data set, and a
  data set built there before stays as it was.
  """

  def __init__(self, name: str, path: str, reason: str):
    super().__init__(f"cannot build data set {name} in {path}: {reason}")
    self.name, self.path, self.reason = name, path, reason

  def __reduce__(self):
    return (type(self), (self.name, self.path, self.reason))


def default_data_dir() -> str:
  """$JAXGAN_DATA_DIR if set, else ~/tensorflow_datasets."""
  return os.environ.get(DATA_DIR_ENV) or os.path.expanduser("~/tensorflow_datasets")


def _tf():
  """TensorFlow, kept off accelerators: here it only writes and reads records for JAX."""
  global _tf_configured
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not _tf_configured:
    _tf_configured = True
    for kind in ("GPU", "TPU"):
      try:
        tf.config.set_visible_devices([], kind)
      except (RuntimeError, ValueError):  # already initialized, or no such device type
        pass
  return tf


def _builder(name: str, data_dir: str | None, **kwargs) -> builders._SongBuilder:
  return tfds.builder(name, data_dir=data_dir or default_data_dir(), **kwargs)


def _is_built(builder) -> bool:
  # Not builder.is_prepared(): that logs a warning for every folder not built yet.
  return paths.isfile(paths.join(os.fspath(builder.data_path), "dataset_info.json"))


def _as_json(value: Any) -> Any:
  return json.loads(json.dumps(value))


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
            max_songs: int | None = None, midi_overrides: dict | None = None,
            progress: bool = True, **builder_kwargs) -> dict:
  """Builds data set `name` (or reuses it when built with the same options) and summarizes it.

  name: jsb_chorales | jsb_chorales_standard[/music21_extras] | music21_styles | midi_folder
    (needs manual_dir, a folder of MIDI files).
  max_songs: read at most this many source files (quick trials).
  midi_overrides: MidiConfig fields replacing the data set's defaults.
  builder_kwargs: further builder options (num_workers; max_per_style for music21_styles).
  A stored build made with other options is rebuilt. Returns a dict: songs, bars and notes
  per split and in total, songs per style, skipped files (counts by reason and each file with
  its reason), files kept whole or split at meter changes (`segments`), whether the build
  was reused, and the seconds taken. A stored entry is a song or one constant-meter segment.
  """
  start = time.time()
  data_dir = data_dir or default_data_dir()
  kwargs = dict(max_songs=max_songs, midi_overrides=midi_overrides, progress=progress,
                **builder_kwargs)
  if manual_dir is not None:
    kwargs["manual_dir"] = manual_dir
  builder = _builder(name, data_dir, **kwargs)
  wanted = _as_json(builder.build_options())
  reuse = False
  if _is_built(builder):
    stored = dict(builder.info.metadata.get("build_options") or {})
    if "manual_dir" in wanted and wanted["manual_dir"] is None and stored.get("manual_dir"):
      # No folder given: the one the stored build was made from.
      manual_dir = kwargs["manual_dir"] = stored["manual_dir"]
      builder = _builder(name, data_dir, **kwargs)
      wanted["manual_dir"] = manual_dir
    reuse = stored == wanted
    if not reuse:
      changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
      log.warning("%s at %s was built with other options (%s): rebuilding", name,
                  builder.data_path, ", ".join(changed))
    elif builder.info.metadata.get("track_facts") is None:
      reuse = False
      log.warning("%s at %s has no per-track facts (an older build): rebuilding", name,
                  builder.data_path)
  elif "manual_dir" in wanted and wanted["manual_dir"] is None:
    raise ValueError(f"{name} needs manual_dir: a folder of .mid/.midi files")

  if not reuse:
    tf = _tf()
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if _is_built(builder)
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    # TFDS's own bars (per split, shuffling) would clutter ours, which counts files.
    bars = tfds_tqdm._active  # pylint: disable=protected-access
    tfds.display_progress_bar(False)
    # TFDS builds in a temporary folder renamed into place at the end (and removed on an
    # error); folders of a build killed midway are removed here too.
    parent = paths.dirname(os.fspath(builder.data_path))
    before = _incomplete_dirs(parent)
    try:
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir, download_mode=mode))
    except (OSError, RuntimeError, tf.errors.OpError) as e:
      for path in _incomplete_dirs(parent) - before:
        paths.rmtree(path, ignore_errors=True)
      cause = _system_error(e, tf.errors.OpError)
      if cause is None:
        raise  # not a system error: a missing MIDI folder says so itself
      raise _write_error(name, data_dir, cause) from e
    finally:
      tfds.display_progress_bar(bars)
    builder = _builder(name, data_dir, **kwargs)  # reads the finished data set back

  meta = builder.info.metadata
  build = meta["build"]
  skipped_path = paths.join(os.fspath(builder.data_path), builders.SKIPPED_FILE)
  skipped_files = json.loads(paths.read_text(skipped_path))
  splits = build["splits"]
  return {
      "name": name,
      "version": str(builder.version),
      "path": os.fspath(builder.data_path),
      "reused": reuse,
      "files": build["files"],
      "songs": sum(s["songs"] for s in splits.values()),
      "bars": sum(s["bars"] for s in splits.values()),
      "notes": sum(s["notes"] for s in splits.values()),
      "tokens": sum(s["tokens"] for s in splits.values()),
      "splits": splits,
      "styles": build["styles"],
      "segments": build["segments"],
      "skipped": build["skipped"],
      "skipped_files": skipped_files,
      "load_counts": build["load_counts"],
      "build_options": meta["build_options"],
      "standard": build.get("standard"),
      "seconds": round(time.time() - start, 2),
  }


def _incomplete_dirs(parent: str) -> set[str]:
  try:
    names = paths.listdir(parent)
  except OSError:
    return set()
  return {paths.join(parent, n) for n in names if n.startswith(tfds_constants.INCOMPLETE_PREFIX)}


def _system_error(e: BaseException, op_error: type) -> BaseException | None:
  """The OSError with an errno (or TensorFlow file error) behind e; TFDS re-raises errors
  as new ones with its own message and the original as their cause."""
  seen = 0
  while e is not None and seen < 20:
    if (isinstance(e, OSError) and e.errno is not None) or isinstance(e, op_error):
      return e
    e, seen = e.__cause__ or e.__context__, seen + 1
  return None


def _write_error(name: str, data_dir: str, e: Exception) -> DataWriteError:
  """A DataWriteError naming the file or folder that failed (or the data dir) and why."""
  if isinstance(e, OSError):
    path = e.filename or data_dir
    reason = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
      reason += " (free some space or choose another --data-dir)"
  else:  # tf.errors.OpError from TensorFlow's file writers: "PATH; REASON"
    message = str(getattr(e, "message", e))
    path, _, reason = message.rpartition("; ")
    path = path if path.startswith(os.sep) or paths.has_scheme(path) else data_dir
    if "No space left" in reason:
      reason += " (free some space or choose another --data-dir)"
  return DataWriteError(name, os.fspath(path), reason)


def format_summary(summary: dict, max_files: int = 20) -> str:
  """The summary of `prepare` as text for the command line."""
  s = summary
  how = "reused" if s["reused"] else "built"
  lines = [f"{s['name']} {s['version']} at {s['path']} ({how} in {s['seconds']:.1f} s)"]
  per_split = ", ".join(f"{k} {v['songs']}" for k, v in s["splits"].items())
  lines.append(f"  songs: {s['songs']} from {s['files']} files ({per_split})")
  seg = s["segments"]
  kept = seg["whole"] + seg["split"]
  line = f"  files kept: {kept} ({seg['whole']} whole, {seg['split']} split at meter changes"
  if seg["split"]:
    line += f" into {seg['segments']} segments"
  line += f"), skipped: {sum(s['skipped'].values())}"
  if seg["dropped"]:
    line += "; segments dropped: " + ", ".join(f"{k} {v}" for k, v in seg["dropped"].items())
  if seg["pickups"]:
    line += f"; pickups padded: {seg['pickups']}"
  lines.append(line)
  lines.append(f"  bars: {s['bars']:,}  notes: {s['notes']:,}  tokens: {s['tokens']:,}")
  if len(s["styles"]) > 1:
    lines.append("  styles: " + ", ".join(f"{k} {v}" for k, v in s["styles"].items()))
  counts = dict(s["load_counts"])
  read, kept = counts.pop("notes", 0), counts.pop("notes_kept", 0)
  changed = ", ".join(f"{k.replace('notes_', '')} {v:,}" for k, v in counts.items()
                      if v and k.startswith("notes_"))
  lines.append(f"  notes read: {read:,}, kept: {kept:,}" + (f" ({changed})" if changed else ""))
  if s.get("standard"):
    lines.extend(_standard_lines(s["standard"]))
  total = sum(s["skipped"].values())
  if total:
    lines.append(f"  skipped {total} files: "
                 + ", ".join(f"{k} {v}" for k, v in s["skipped"].items()))
    for item in s["skipped_files"][:max_files]:
      detail = f" ({item['detail']})" if item.get("detail") else ""
      lines.append(f"    {item['source']}: {item['reason']}{detail}")
    if total > max_files:
      lines.append(f"    ... {total - max_files} more in "
                   f"{paths.join(s['path'], builders.SKIPPED_FILE)}")
  else:
    lines.append("  skipped: none")
  return "\n".join(lines)


def _standard_lines(std: dict) -> list[str]:
  """jsb_chorales_standard: where the bar lines came from and how music21 relates."""
  meters = std["meters_from"]
  lines = [f"  meters: from the same harmonisation in music21 {meters['harmony']}, the same "
           f"melody {meters['melody']}, default 4/4 {meters['default']}"]
  lines.append(f"  music21 chorales: {std['corpus_same_as_standard']} of {std['corpus_compared']} "
               f"are standard chorales ({std['corpus_same_as_held_out']} of them validation or "
               f"test), {std['corpus_new']} are not")
  return lines


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a built data set says about itself; the training pipeline starts from this."""

  name: str
  path: str
  midi_config: MidiConfig
  tracks: tuple[Track, ...]
  styles: tuple[str, ...]
  vocab: Vocabulary
  stats: dict[str, Any]
  num_examples: dict[str, int]
  skipped: dict[str, int]
  # Per track, in track order: pitch range of the train split, monophonic or not. None for
  # data sets built before these were recorded (rebuild them to get the facts).
  track_facts: tuple[builders.TrackFacts, ...] | None = None


def _open(name: str, data_dir: str | None) -> builders._SongBuilder:
  builder = _builder(name, data_dir)
  if not _is_built(builder):
    raise FileNotFoundError(
        f"data set {name!r} is not built in {data_dir or default_data_dir()}: "
        f"run `jaxgan prepare {name}" + (f" --data-dir {data_dir}" if data_dir else "")
        + "` first")
  return builder


def dataset_info(name: str, data_dir: str | None = None) -> DataInfo:
  """Reads the metadata of a built data set (raises FileNotFoundError if it is not built)."""
  builder = _open(name, data_dir)
  meta = builder.info.metadata
  path = os.fspath(builder.data_path)
  vocab = Vocabulary.load(paths.join(path, builders.VOCAB_FILE))
  return DataInfo(
      name=name,
      path=path,
      midi_config=MidiConfig.from_json(meta["midi_config"]),
      tracks=tuple(Track.from_json(t) for t in meta["tracks"]),
      styles=tuple(meta["styles"]),
      vocab=vocab,
      stats=dict(meta["stats"]),
      num_examples={s: (builder.info.splits[s].num_examples if s in builder.info.splits else 0)
                    for s in builders.SPLITS},
      skipped=dict(meta["build"]["skipped"]),
      track_facts=(tuple(builders.TrackFacts.from_json(t) for t in meta["track_facts"])
                   if meta.get("track_facts") is not None else None),
  )


def read_split(name: str, split: str, *, data_dir: str | None = None, process_index: int = 0,
               process_count: int = 1):
  """The stored songs of `split` as a tf.data.Dataset, in a fixed order.

  Process p of P reads a disjoint 1/P of the split (together they read all of it). A split
  the build left empty reads as an empty data set.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, {process_count})")
  _tf()
  builder = _open(name, data_dir)
  base = split.split("[")[0]
  read_config = tfds.ReadConfig(try_autocache=False)
  if base not in builder.info.splits:
    if base not in builders.SPLITS:
      raise ValueError(f"{name} has no split {split!r}; splits: {', '.join(builders.SPLITS)}")
    any_split = next(iter(builder.info.splits.keys()))
    return builder.as_dataset(split=any_split, shuffle_files=False,
                              read_config=read_config).take(0)
  if process_count == 1:
    return builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
  if split == base:
    # Contiguous slices, the first n % P one song longer: disjoint, together the split.
    n = builder.info.splits[split].num_examples
    start = process_index * n // process_count
    end = (process_index + 1) * n // process_count
    if start == end:  # more processes than songs; TFDS refuses to read an empty slice
      return builder.as_dataset(split=split, shuffle_files=False,
                                read_config=read_config).take(0)
    sub = f"{split}[{start}:{end}]"
  else:
    sub = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]
  return builder.as_dataset(split=sub, shuffle_files=False, read_config=read_config)
