"""The input pipeline: stored songs -> random piano-roll windows -> global jax.Arrays on a mesh.

Design: each process holds its songs as one sparse note table in memory and the pipeline is
*addressable by step*: the examples of step `s` are a pure function of (seed, s), computed by
`tf.random.experimental.index_shuffle` over the table of windows (an epoch-wise permutation
that never materialises) and stateless random transpositions. Resuming a run therefore needs
only the step number, and the piano-rolls are built from the sparse notes on the fly (scatter +
cumulative sum), so no dense roll is ever stored.

Two ways to split data across processes (`data_mode`):
- "shard" (default, scales to big corpora): process p of P reads a disjoint 1/P of the split
  and draws its part of every global batch from it;
- "replicate": every process loads the whole split and takes its slice of a global stream, so
  the global batches do not depend on the number of processes (bitwise-reproducible runs
  across topologies; fine for small corpora such as the chorales).
"""

from __future__ import annotations

import dataclasses
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


def load_song_table(config, split: str, *, process_index: int = 0, process_count: int = 1,
                    data_mode: str = "shard") -> SongTable:
  """Loads this process's songs of `split` at the config's resolution and meter."""
  d = config.data
  if data_mode not in ("shard", "replicate"):
    raise config_lib.ConfigError(f"data_mode={data_mode!r} is not one of ('shard', 'replicate')")
  if data_mode == "replicate":
    process_index, process_count = 0, 1
  if d.name == "synthetic":
    songs = synthetic_songs(config)[process_index::process_count]
    return _table_from_songs(songs, config, drum_tracks=())

  from jaxgan.data import prepare  # pylint: disable=import-outside-toplevel
  data_dir = d.data_dir or None
  try:
    info = prepare.dataset_info(d.name, data_dir=data_dir)
  except Exception as e:  # an unbuilt or unknown data set
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


# --------------------------------------------------------------------------------------------
# Building piano-roll windows from the sparse table (TensorFlow ops, run by tf.data).


class _RollMaker:
  """Turns (song, first bar, transposition) into a uint8 piano-roll window: 0/1/2 = off/held/onset."""

  def __init__(self, table: SongTable, config):
    d = config.data
    self.steps = d.n_bars * config_lib.steps_per_bar(config)
    self.spb = config_lib.steps_per_bar(config)
    self.n_bars, self.lowest, self.num_pitches, self.num_tracks = (
        d.n_bars, d.lowest_pitch, d.num_pitches, d.num_tracks)
    self.notes = tf.constant(table.notes)
    self.offsets = tf.constant(table.offsets)
    self.windows = tf.constant(table.windows)
    self.styles = tf.constant(table.styles)
    drum = np.zeros([max(d.num_tracks, 1)], bool)
    drum[list(table.drum_tracks)] = True
    self.is_drum = tf.constant(drum)
    self.max_transpose = d.transpose

  def window_notes(self, window_index):
    song, first_bar = self.windows[window_index][0], self.windows[window_index][1]
    notes = self.notes[self.offsets[song]:self.offsets[song + 1]]
    start = first_bar * self.spb
    onset = notes[:, ONSET] - start
    end = onset + notes[:, DURATION]
    keep = (end > 0) & (onset < self.steps)
    notes = tf.boolean_mask(notes, keep)
    return notes, tf.boolean_mask(onset, keep), tf.boolean_mask(end, keep), song

  def transposition(self, notes, seed):
    """A uniform shift in [-max, max] that keeps every pitched note inside the range."""
    if self.max_transpose == 0:
      return tf.constant(0, tf.int32)
    pitched = tf.boolean_mask(notes[:, PITCH], ~tf.gather(self.is_drum, notes[:, TRACK]))
    big = tf.constant(1 << 20, tf.int32)
    lo_room = tf.reduce_min(tf.concat([pitched, [big]], 0)) - self.lowest
    hi_room = self.lowest + self.num_pitches - 1 - tf.reduce_max(tf.concat([pitched, [-big]], 0))
    low = tf.maximum(-self.max_transpose, -tf.maximum(lo_room, 0))
    high = tf.minimum(self.max_transpose, tf.maximum(hi_room, 0))
    high = tf.maximum(high, low)
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high + 1, dtype=tf.int32)

  def roll(self, window_index, seed):
    notes, onset, end, song = self.window_notes(window_index)
    shift = self.transposition(notes, seed)
    is_drum = tf.gather(self.is_drum, notes[:, TRACK])
    pitch = notes[:, PITCH] + tf.where(is_drum, 0, shift) - self.lowest
    inside = (pitch >= 0) & (pitch < self.num_pitches)
    pitch, track = tf.boolean_mask(pitch, inside), tf.boolean_mask(notes[:, TRACK], inside)
    onset, end = tf.boolean_mask(onset, inside), tf.boolean_mask(end, inside)
    t0 = tf.clip_by_value(onset, 0, self.steps)
    t1 = tf.clip_by_value(end, 0, self.steps)
    shape = [self.steps + 1, self.num_pitches, self.num_tracks]
    # Sounding = a running count of (starts - ends) > 0: overlaps and merges come out right.
    delta = tf.scatter_nd(
        tf.concat([tf.stack([t0, pitch, track], 1), tf.stack([t1, pitch, track], 1)], 0),
        tf.concat([tf.ones_like(t0), -tf.ones_like(t1)], 0), shape)
    sounding = tf.cumsum(delta, axis=0)[:-1] > 0
    struck = (onset >= 0) & (onset < self.steps)
    onsets = tf.scatter_nd(
        tf.stack([tf.boolean_mask(onset, struck), tf.boolean_mask(pitch, struck),
                  tf.boolean_mask(track, struck)], 1),
        tf.ones_like(tf.boolean_mask(onset, struck)),
        [self.steps, self.num_pitches, self.num_tracks]) > 0
    roll = tf.where(onsets, tf.constant(2, tf.uint8),
                    tf.where(sounding, tf.constant(1, tf.uint8), tf.constant(0, tf.uint8)))
    roll = tf.reshape(roll, [self.n_bars, self.spb, self.num_pitches, self.num_tracks])
    return {"pianoroll": roll, "style": self.styles[song]}


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
                 process_count: int | None = None, data_mode: str = "shard",
                 table: SongTable | None = None) -> tf.data.Dataset:
  """The per-process tf.data pipeline: element s is the local batch of step start_step + s.

  Each element is {"pianoroll": uint8 [n_critic, local_batch, bars, steps, pitches, tracks],
  "style": int32 [n_critic, local_batch]}.
  """
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  check_batch(config, None, pc)
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

  def example(index):
    epoch = index // num_windows
    position = index % num_windows
    window = tf.random.experimental.index_shuffle(
        position, seed=tf.stack([tf.constant(seed * 1_000_003 + layout.key, tf.int64), epoch]),
        max_index=num_windows - 1)
    aug_seed = tf.stack([tf.cast(seed, tf.int64) * 7919 + layout.key, index])
    return maker.roll(window, aug_seed)

  def step_indices(step):
    base = step * layout.stride + layout.offset
    rows = (tf.range(n_critic, dtype=tf.int64)[:, None] * layout.row
            + tf.range(local, dtype=tf.int64)[None, :])
    return tf.data.Dataset.from_tensor_slices(tf.reshape(base + rows, [-1]))

  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = max(2, os.cpu_count() or 2)
  ds = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max // max(layout.stride, 1) - 1)
  ds = ds.flat_map(step_indices)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(layout.per_step, drop_remainder=True)
  ds = ds.map(lambda b: {k: tf.reshape(v, [n_critic, local] + v.shape[1:].as_list())
                         for k, v in b.items()})
  return ds.prefetch(config.data.prefetch).with_options(options)


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Process-local [n_critic, local_batch, ...] arrays -> global [n_critic, global_batch, ...]."""
  sharding = shard_lib.batch(mesh, leading=1)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def train_iterator(config, mesh: Mesh, *, start_step: int = 0,
                   data_mode: str = "shard") -> Iterator[dict[str, jax.Array]]:
  """Global batches for steps start_step, start_step + 1, ...; resuming needs only the step."""
  check_batch(config, mesh, jax.process_count())
  ds = make_dataset(config, start_step=start_step, data_mode=data_mode)
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

  def example(i):
    return maker.roll(i, tf.stack([tf.constant(0, tf.int64), i]))

  ds = tf.data.Dataset.range(n).map(example, num_parallel_calls=tf.data.AUTOTUNE,
                                    deterministic=True).batch(batch_size)
  for batch in ds.as_numpy_iterator():
    rows = len(batch["style"])
    valid = np.ones([batch_size], bool)
    if rows < batch_size:
      valid[rows:] = False
      batch = {k: np.concatenate([v, np.zeros((batch_size - rows,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    batch["valid"] = valid
    yield batch
