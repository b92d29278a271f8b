"""The input pipeline: stored songs -> random piano-roll windows -> global jax.Arrays on a mesh.

Design: each process holds its songs as one sparse note table in memory and the pipeline is
*addressable by step*: the examples of step `s` are a pure function of (seed, s), computed by
`tf.random.experimental.index_shuffle` over the table of windows (an epoch-wise permutation
that never materialises) and stateless random transpositions. Resuming a run therefore needs
only the step number, and each step's piano-rolls are built from the sparse notes on the fly,
the whole batch at once (one scatter of its sounding cells), so no dense roll is ever stored.

Two ways to split data across processes (`data.split_mode`, which `jaxgan train --data_mode`
overrides):
- "shard" (default, scales to big corpora): process p of P reads a disjoint 1/P of the split
  and draws its part of every global batch from it;
- "replicate": every process loads the whole split and takes its slice of a global stream, so
  the global batches do not depend on the number of processes (bitwise-reproducible runs
  across topologies; fine for small corpora such as the chorales).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402  pylint: disable=g-import-not-at-top

import jax  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

from jaxgan import config as config_lib  # noqa: E402
from jaxgan import sharding as shard_lib  # noqa: E402
from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK  # noqa: E402

# tf.data only feeds JAX here: keep TensorFlow off any accelerator and its threads modest.
tf.config.set_visible_devices([], "GPU")

log = logging.getLogger(__name__)

@dataclasses.dataclass
class SongTable:
  """One process's songs as a sparse note table, at the training resolution."""

  notes: np.ndarray        # int32 [total_notes, 5], songs back to back
  offsets: np.ndarray      # int64 [num_songs + 1]: song i is notes[offsets[i]:offsets[i+1]]
  num_bars: np.ndarray     # int32 [num_songs]
  styles: np.ndarray       # int32 [num_songs]
  drum_tracks: tuple[int, ...]
  windows: np.ndarray      # int32 [num_windows, 2]: (song, first bar)
  sources: list[str]

  @property
  def num_songs(self) -> int:
    return len(self.num_bars)


# --------------------------------------------------------------------------------------------
# Loading songs.


def _downsample(notes: np.ndarray, factor: int) -> np.ndarray:
  """Requantizes notes from a fine grid to one `factor` times coarser (rounding half up)."""
  if factor == 1:
    return notes
  out = notes.copy()
  onset = (notes[:, ONSET] + factor // 2) // factor
  end = (notes[:, ONSET] + notes[:, DURATION] + factor // 2) // factor
  out[:, ONSET] = onset
  out[:, DURATION] = np.maximum(end - onset, 1)
  return out


def _window_table(num_bars: np.ndarray, note_bars: list[np.ndarray], config) -> np.ndarray:
  d = config.data
  rows = []
  for s, bars in enumerate(num_bars):
    counts = note_bars[s]
    for start in range(0, int(bars) - d.n_bars + 1, d.hop_bars):
      if counts[start:start + d.n_bars].sum() >= d.min_notes:
        rows.append((s, start))
  return np.asarray(rows, np.int32).reshape(-1, 2)


def _table_from_songs(songs: list[dict], config, drum_tracks: tuple[int, ...]) -> SongTable:
  """songs: dicts with notes (at the training resolution), num_bars, style, source."""
  spb = config_lib.steps_per_bar(config)
  note_bars = []
  for song in songs:
    bars = np.bincount(song["notes"][:, ONSET] // spb, minlength=song["num_bars"])
    note_bars.append(bars[:song["num_bars"]])
  num_bars = np.asarray([s["num_bars"] for s in songs], np.int32)
  windows = _window_table(num_bars, note_bars, config)
  lengths = [len(s["notes"]) for s in songs]
  return SongTable(
      notes=(np.concatenate([s["notes"] for s in songs]).astype(np.int32)
             if songs else np.zeros((0, 5), np.int32)),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      num_bars=num_bars,
      styles=np.asarray([s["style"] for s in songs], np.int32),
      drum_tracks=drum_tracks,
      windows=windows,
      sources=[s["source"] for s in songs])


def synthetic_songs(config, num_songs: int = 64) -> list[dict]:
  """A tiny stand-in corpus: a few fixed chord patterns (one per song), fully deterministic.

  Each pattern gives every track one pitch, struck on every beat and held for the beat, so a
  generator that learned the data reproduces a known note density and pitch-class histogram.
  """
  d = config.data
  spb = config_lib.steps_per_bar(config)
  beat = d.steps_per_beat
  rng = np.random.default_rng(1234)
  patterns = []
  for _ in range(d.synthetic_patterns):
    root = int(rng.integers(0, 12))
    chord = [root, root + 4, root + 7, root + 12]  # major triad with octave
    pitches = [min(d.num_pitches - 1, 12 + chord[t % 4] + 12 * (t // 4))
               for t in range(d.num_tracks)]
    patterns.append(pitches)
  songs = []
  for i in range(num_songs):
    pitches = patterns[i % len(patterns)]
    bars = d.n_bars * 2
    notes = []
    for step in range(0, bars * spb, beat):
      for t, p in enumerate(pitches):
        notes.append((t, d.lowest_pitch + p, step, beat, 80))
    # Each chord pattern is a "style", so style conditioning can be tested on this data.
    songs.append(dict(notes=np.asarray(notes, np.int32), num_bars=bars,
                      style=i % len(patterns), source=f"synthetic/{i}"))
  return songs


def synthetic_style_names(config) -> tuple[str, ...]:
  return tuple(f"pattern{k}" for k in range(config.data.synthetic_patterns))


def split_mode(config, data_mode: str | None = None) -> str:
  """How processes split the training data: `data_mode` if given, else data.split_mode."""
  mode = data_mode or config.data.get("split_mode", "shard")
  if mode not in config_lib.SPLIT_MODES:
    raise config_lib.ConfigError(f"data_mode={mode!r} is not one of {config_lib.SPLIT_MODES}")
  return mode


def load_song_table(config, split: str, *, process_index: int = 0, process_count: int = 1,
                    data_mode: str | None = None) -> SongTable:
  """Loads this process's songs of `split` at the config's resolution and meter
  (`data_mode` overrides data.split_mode)."""
  d = config.data
  data_mode = split_mode(config, data_mode)
  if data_mode == "replicate":
    process_index, process_count = 0, 1
  if d.name == "synthetic":
    songs = synthetic_songs(config)[process_index::process_count]
    return _table_from_songs(songs, config, drum_tracks=())

  from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
  data_dir = d.data_dir or None
  try:
    info = prepare.dataset_info(d.name, data_dir=data_dir)
  except FileNotFoundError:  # not built: its message says what to run
    raise
  except Exception as e:  # an unknown data set
    raise config_lib.ConfigError(
        f"data.name={d.name!r}: cannot open the data set ({e}); build it with "
        f"`jaxgan prepare {d.name}` or pick one of the jaxgan.data builders") from None
  if len(info.tracks) != d.num_tracks:
    raise config_lib.ConfigError(
        f"data.num_tracks={d.num_tracks} but data set {d.name!r} has {len(info.tracks)} tracks "
        f"({', '.join(t.name for t in info.tracks)})")
  stored_spb = info.midi_config.steps_per_beat
  if stored_spb % d.steps_per_beat:
    raise config_lib.ConfigError(
        f"data.steps_per_beat={d.steps_per_beat} must divide the stored resolution "
        f"{stored_spb} of {d.name!r}")
  factor = stored_spb // d.steps_per_beat
  meter = tuple(d.meter)
  songs = []
  ds = prepare.read_split(d.name, split, data_dir=data_dir, process_index=process_index,
                          process_count=process_count)
  for ex in ds.as_numpy_iterator():
    if tuple(int(x) for x in ex["time_signature"]) != meter:
      continue
    songs.append(dict(notes=_downsample(ex["notes"], factor), num_bars=int(ex["num_bars"]),
                      style=int(ex["style"]), source=ex["source"].decode()))
  drums = tuple(i for i, t in enumerate(info.tracks) if t.is_drum)
  return _table_from_songs(songs, config, drum_tracks=drums)


def resolve_styles(config) -> None:
  """With conditioning.style on and no names given, takes the data set's style names."""
  cc = config.conditioning
  if not cc.style or tuple(cc.styles):
    return
  d = config.data
  if d.name == "synthetic":
    names = synthetic_style_names(config)
  else:
    from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
    names = prepare.dataset_info(d.name, data_dir=d.data_dir or None).styles
  if not names:
    raise config_lib.ConfigError(f"conditioning.style: data set {d.name!r} has no styles")
  cc.styles = tuple(names)


def resolve_track_facts(config) -> None:
  """Fills data.track_ranges from the data set (when empty) and checks data.mono_tracks
  against its tracks, before a run saves its config (like `resolve_styles`)."""
  d = config.data
  if d.name == "synthetic" or (tuple(d.track_ranges) and not tuple(d.mono_tracks)):
    return
  from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
  try:
    info = prepare.dataset_info(d.name, data_dir=d.data_dir or None)
  except FileNotFoundError:  # not built: its message says what to run
    raise
  except Exception as e:  # an unknown data set
    raise config_lib.ConfigError(
        f"data.name={d.name!r}: cannot open the data set ({e}); build it with "
        f"`jaxgan prepare {d.name}` or pick one of the jaxgan.data builders") from None
  if len(info.tracks) != d.num_tracks:
    return  # load_song_table refuses the data set with the reason
  names = [t.name for t in info.tracks]
  mono = config_lib.mono_track_indices(config, names)
  if tuple(d.mono_tracks):
    d.mono_tracks = mono  # indices from here on: the saved config needs no data set to read
  facts = info.track_facts
  if facts is None:
    if not tuple(d.track_ranges):
      log.warning("data set %r has no per-track facts (built by an older jaxgan): "
                  "transposition keeps notes in the pitch window only; rebuild it with "
                  "`jaxgan prepare %s` for per-track ranges", d.name, d.name)
    return
  for t in mono:
    if not facts[t].monophonic:
      log.warning("data.mono_tracks: track %r is not monophonic in %r (%.2f%% of its sounding "
                  "steps hold more than one pitch)", names[t], d.name,
                  100 * facts[t].polyphonic_share)
  if not tuple(d.track_ranges):
    top = d.lowest_pitch + d.num_pitches - 1
    d.track_ranges = tuple(
        (f.low, f.high) if f.low is not None else (d.lowest_pitch, top) for f in facts)


# --------------------------------------------------------------------------------------------
# Building piano-roll windows from the sparse table (TensorFlow ops, run by tf.data).


class _RollMaker:
  """Turns (window, random draw) pairs into uint8 piano-roll windows: 0/1/2 = off/held/onset.

  Whole batches at once: every op works on all the batch's notes together (a ragged gather of
  the songs' notes, then one scatter of every sounding cell), so the pipeline costs a few dozen
  TensorFlow ops per batch instead of per example. One example at a time, with a scatter and a
  cumulative sum over each dense roll, took ~0.9 ms of CPU per example: a fifth of a 2-core
  machine beside the chorale config's train step (80 examples per step), 10x what it takes now.
  """

  def __init__(self, table: SongTable, config):
    d = config.data
    self.steps = d.n_bars * config_lib.steps_per_bar(config)
    self.spb = config_lib.steps_per_bar(config)
    self.n_bars, self.lowest, self.num_pitches, self.num_tracks = (
        d.n_bars, d.lowest_pitch, d.num_pitches, d.num_tracks)
    self.notes = tf.constant(table.notes)
    self.offsets = tf.constant(table.offsets)
    self.windows = tf.constant(table.windows.astype(np.int64))
    self.styles = tf.constant(table.styles)
    drum = np.zeros([max(d.num_tracks, 1)], bool)
    drum[list(table.drum_tracks)] = True
    self.is_drum = tf.constant(drum)
    self.max_transpose = d.transpose
    # Each track's notes stay within its range (data.track_ranges) and the pitch window.
    top = d.lowest_pitch + d.num_pitches - 1
    ranges = config_lib.track_ranges(config) or ((d.lowest_pitch, top),) * d.num_tracks
    self.track_low = tf.constant([max(lo, d.lowest_pitch) for lo, _ in ranges] or [0], tf.int32)
    self.track_high = tf.constant([min(hi, top) for _, hi in ranges] or [0], tf.int32)

  def _shifts(self, pitch, track, pitched, row, n, draw):
    """Per window, a uniform shift in [-max, max] that keeps every pitched note inside its
    track's range; `draw` is one uniform [0, 1) number per window."""
    if self.max_transpose == 0:
      return tf.zeros([n], tf.int32)
    big = tf.constant(1 << 20, tf.int32)
    # How far each note may move down and up; a window's shifts are bounded by its tightest
    # note. A window without pitched notes gets the full range (empty segments give the
    # dtype's extremes).
    down = tf.where(pitched, pitch - tf.gather(self.track_low, track), big)
    up = tf.where(pitched, tf.gather(self.track_high, track) - pitch, big)
    room_down = tf.minimum(tf.math.unsorted_segment_min(down, row, n), big)
    room_up = tf.minimum(tf.math.unsorted_segment_min(up, row, n), big)
    low = tf.maximum(-self.max_transpose, -tf.maximum(room_down, 0))
    high = tf.minimum(self.max_transpose, tf.maximum(room_up, 0))
    high = tf.maximum(high, low)
    span = tf.cast(high - low + 1, tf.float32)
    pick = tf.cast(tf.floor(tf.cast(draw, tf.float32) * span), tf.int32)
    return low + tf.minimum(pick, high - low)

  def rolls(self, window_index, draw):
    """window_index: int [N]; draw: float [N] uniform in [0, 1) (the transposition's).

    Returns {"pianoroll": uint8 [N, bars, steps per bar, pitches, tracks], "style": int32 [N]}.
    """
    window_index = tf.cast(window_index, tf.int64)
    n = tf.shape(window_index, out_type=tf.int64)[0]
    window = tf.gather(self.windows, window_index)
    song, first_bar = window[:, 0], window[:, 1]
    note_ids = tf.ragged.range(tf.gather(self.offsets, song), tf.gather(self.offsets, song + 1))
    row = note_ids.value_rowids()
    notes = tf.gather(self.notes, note_ids.flat_values)
    onset = notes[:, ONSET] - tf.cast(tf.gather(first_bar, row), tf.int32) * self.spb
    end = onset + notes[:, DURATION]
    keep = (end > 0) & (onset < self.steps)
    is_drum = tf.gather(self.is_drum, notes[:, TRACK])
    shift = self._shifts(notes[:, PITCH], notes[:, TRACK], keep & ~is_drum, row, n, draw)
    pitch = notes[:, PITCH] + tf.where(is_drum, 0, tf.gather(shift, row)) - self.lowest
    keep &= (pitch >= 0) & (pitch < self.num_pitches)
    row32, track = tf.cast(row, tf.int32), notes[:, TRACK]
    pitch = tf.clip_by_value(pitch, 0, self.num_pitches - 1)
    t0 = tf.clip_by_value(onset, 0, self.steps)
    t1 = tf.where(keep, tf.clip_by_value(end, 0, self.steps), t0)   # dropped: no cell
    # Every sounding cell written as 1 and every onset as 2, max-combined: overlapping and
    # repeated notes come out right, and the dense roll is written once (TensorFlow's cumsum
    # over a roll-sized tensor cost more than all the rest).
    cells = tf.ragged.range(t0, t1)
    note = cells.value_rowids()
    sounding = tf.stack([tf.gather(row32, note), cells.flat_values, tf.gather(pitch, note),
                         tf.gather(track, note)], 1)
    struck = keep & (onset >= 0) & (onset < self.steps)
    onsets = tf.stack([row32, tf.minimum(t0, self.steps - 1), pitch, track], 1)
    roll = tf.tensor_scatter_nd_max(
        tf.zeros(tf.stack([tf.cast(n, tf.int32), self.steps, self.num_pitches,
                           self.num_tracks]), tf.uint8),
        tf.concat([sounding, onsets], 0),
        tf.concat([tf.ones_like(note, tf.uint8), 2 * tf.cast(struck, tf.uint8)], 0))
    roll = tf.reshape(roll, [-1, self.n_bars, self.spb, self.num_pitches, self.num_tracks])
    return {"pianoroll": roll, "style": tf.gather(self.styles, song)}

  def roll(self, window_index, seed):
    """One window, its transposition drawn from `seed` (int [2]): `rolls` for a batch of one."""
    draw = tf.random.stateless_uniform([1], tf.cast(seed, tf.int64))
    out = self.rolls(tf.reshape(window_index, [1]), draw)
    return {k: v[0] for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# The training iterator.


@dataclasses.dataclass(frozen=True)
class StreamLayout:
  """Where this process's examples sit in the stream: example j of step s is stream index
  s * stride + offset + j, drawn from a permutation keyed by (seed, epoch, key)."""

  per_step: int    # examples this process makes per step (n_critic rows of its batch slice)
  stride: int      # stream indices per step
  offset: int      # where this process's slice starts within each row
  row: int         # stream indices between critic rows
  key: int


def stream_layout(config, *, process_index: int, process_count: int, data_mode: str) -> StreamLayout:
  global_batch, n_critic = config.train.global_batch, config.loss.n_critic
  local = global_batch // process_count
  if data_mode == "replicate":
    # Row c of step s is the global slice [c * B, (c + 1) * B): each process takes its part of
    # every row, so the global batch is the same for any number of processes.
    return StreamLayout(local * n_critic, global_batch * n_critic, process_index * local,
                        global_batch, 0)
  return StreamLayout(local * n_critic, local * n_critic, 0, local, process_index)


# Kept in config.py (no TensorFlow there), so code that needs no pipeline can check too.
check_batch = config_lib.check_batch


def make_dataset(config, *, start_step: int = 0, process_index: int | None = None,
                 process_count: int | None = None, data_mode: str | None = None,
                 table: SongTable | None = None) -> tf.data.Dataset:
  """The per-process tf.data pipeline: element s is the local batch of step start_step + s.

  Each element is {"pianoroll": uint8 [n_critic, local_batch, bars, steps, pitches, tracks],
  "style": int32 [n_critic, local_batch]}. `data_mode` overrides data.split_mode.
  """
  pc = jax.process_count() if process_count is None else process_count
  check_batch(config, None, pc)
  return _make_dataset(config, start_step=start_step, process_index=process_index,
                       process_count=pc, data_mode=data_mode, table=table)


def _make_dataset(config, *, start_step: int, process_index: int | None, process_count: int,
                  data_mode: str | None, table: SongTable | None) -> tf.data.Dataset:
  """`make_dataset` without the batch check (its callers have made it)."""
  pi = jax.process_index() if process_index is None else process_index
  pc = process_count
  data_mode = split_mode(config, data_mode)
  if table is None:
    table = load_song_table(config, config.data.split, process_index=pi, process_count=pc,
                            data_mode=data_mode)
  num_windows = len(table.windows)
  if num_windows == 0:
    raise config_lib.ConfigError(
        f"data.n_bars={config.data.n_bars}: no song of {config.data.name!r} "
        f"({config.data.split}, meter {tuple(config.data.meter)}) has a window that long "
        f"with at least data.min_notes={config.data.min_notes} notes")
  layout = stream_layout(config, process_index=pi, process_count=pc, data_mode=data_mode)
  maker = _RollMaker(table, config)
  seed = int(config.train.seed)
  n_critic, local = config.loss.n_critic, layout.per_step // config.loss.n_critic
  # Stream offsets of this process's examples within a step, critic row by row.
  rows = tf.reshape(tf.range(n_critic, dtype=tf.int64)[:, None] * layout.row
                    + tf.range(local, dtype=tf.int64)[None, :] + layout.offset, [-1])
  window_key = tf.fill([layout.per_step], tf.constant(seed * 1_000_003 + layout.key, tf.int64))

  def step_batch(step):
    index = step * layout.stride + rows
    epoch, position = index // num_windows, index % num_windows
    window = _index_shuffle(position, tf.stack([window_key, epoch], 1), num_windows - 1)
    # One draw per stream index of the whole critic rows, of which this process takes its
    # slice: in replicate mode every process sees the same global batch.
    draws = tf.random.stateless_uniform(
        [n_critic, layout.row], tf.stack([tf.constant(seed * 7919 + layout.key, tf.int64), step]))
    draw = tf.reshape(draws[:, layout.offset:layout.offset + local], [-1])
    batch = maker.rolls(window, draw)
    return {k: tf.reshape(v, tf.concat([[n_critic, local], tf.shape(v)[1:]], 0))
            for k, v in batch.items()}

  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = max(2, os.cpu_count() or 2)
  ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max // max(layout.stride, 1) - 1)
  ds = ds.map(step_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(config.data.prefetch).with_options(options)


def _index_shuffle(index, seed, max_index):
  """`tf.random.experimental.index_shuffle` with one [2] seed per index: the same permutation
  positions as calling it index by index (its wrapper pads a batch of seeds along the wrong
  axis, so the raw op gets the padded [n, 3] seeds here)."""
  pad = tf.fill([tf.shape(seed)[0], 1], tf.constant(498247692, tf.int64))
  return tf.raw_ops.RandomIndexShuffle(
      index=index, seed=tf.concat([pad, seed], 1),
      max_index=tf.fill(tf.shape(index), tf.constant(max_index, tf.int64)), rounds=4)


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local [n_critic, local_batch, ...] arrays -> global [n_critic, global_batch, ...]."""
  sharding = shard_lib.batch(mesh, leading=1)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def train_iterator(config, mesh: Mesh, *, start_step: int = 0, data_mode: str | None = None,
                   checked: bool = False) -> Iterator[dict[str, jax.Array]]:
  """Global batches for steps start_step, start_step + 1, ...; resuming needs only the step.

  checked: the caller has run `check_batch` with this mesh (the trainer does, before it
  compiles), so it is not run again."""
  if not checked:
    check_batch(config, mesh, jax.process_count())
  ds = _make_dataset(config, start_step=start_step, process_index=None,
                     process_count=jax.process_count(), data_mode=data_mode, table=None)
  for local in ds.as_numpy_iterator():
    yield to_global(local, mesh)


def eval_batches(config, split: str | None = None, *, batch_size: int | None = None,
                 process_index: int = 0, process_count: int = 1,
                 table: SongTable | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Every window of `split` exactly once, in order, without augmentation (host numpy).

  The last batch is padded; its "valid" mask says which rows are real.
  """
  split = split or config.data.eval_split
  if table is None:
    table = load_song_table(config, split, process_index=process_index,
                            process_count=process_count)
  batch_size = batch_size or config.train.global_batch
  eval_config = config.copy_and_resolve_references()
  eval_config.data.transpose = 0
  maker = _RollMaker(table, eval_config)
  n = len(table.windows)

  ds = tf.data.Dataset.range(n).batch(batch_size).map(
      lambda i: maker.rolls(i, tf.zeros(tf.shape(i), tf.float32)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for batch in ds.as_numpy_iterator():
    rows = len(batch["style"])
    valid = np.ones([batch_size], bool)
    if rows < batch_size:
      valid[rows:] = False
      batch = {k: np.concatenate([v, np.zeros((batch_size - rows,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    batch["valid"] = valid
    yield batch
