"""The input pipeline: song tables, piano-roll windows, step-addressable streams, global arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import PartitionSpec as P

from jaxgan import config as config_lib
from jaxgan import sharding
from jaxgan.data import pipeline, prepare
from jaxgan.midi import CELL_HELD, CELL_ONSET, Song, to_pianoroll
from jaxgan.midi.song import DURATION, ONSET as ONSET_COL, PITCH

STORED_SPB = 12  # the chorales' stored resolution (steps per beat)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """A small chorale build, shared by the module: 12 train entries (9 in 4/4; bwv41.6 is
  stored as 3 constant-meter segments), 1 test song."""
  path = str(tmp_path_factory.mktemp("jsb"))
  prepare.prepare("jsb_chorales", data_dir=path, max_songs=12, progress=False)
  return path


def _config(data_dir, *overrides):
  """The chorale config at 2 bars of 4/4, no transposition, batch 8 and one D update."""
  pairs = [("data.data_dir", data_dir), ("data.n_bars", "2"), ("data.meter", "(4, 4)"),
           ("data.transpose", "0"), ("train.global_batch", "8"), ("loss.n_critic", "1")]
  return config_lib.load_config("configs/jsb_musegan.py", pairs + [(k, str(v)) for k, v in overrides])


def _config_one_bar(data_dir, *overrides):
  """One-bar windows: the pipeline never looks at the model, whose shipped presets need 2+ bars."""
  config = _config(data_dir, *overrides)
  config_lib.apply_override(config, "data.n_bars", "1")
  return config


@pytest.fixture(scope="module")
def table(data_dir):
  return pipeline.load_song_table(_config(data_dir), "train")


def _roll(maker, index, seed=(0, 0)):
  out = maker.roll(index, tf.constant(seed, tf.int64))
  return out["pianoroll"].numpy(), int(out["style"])


def _rolls(maker, indices, seeds=None):
  """maker.roll over many (window, seed) pairs as one tf.data graph: far faster than eager."""
  indices = np.asarray(indices, np.int64)
  seeds = np.zeros([len(indices), 2], np.int64) if seeds is None else np.asarray(seeds, np.int64)
  ds = tf.data.Dataset.from_tensor_slices((indices, seeds)).map(maker.roll)
  return next(ds.batch(len(indices)).as_numpy_iterator())


def _first(ds, n=1):
  return list(ds.take(n).as_numpy_iterator())


def _shift(roll, k):
  """The roll moved up k pitch rows, zero-filled (nothing may fall off in the tests)."""
  out = np.zeros_like(roll)
  if k >= 0:
    out[:, :, k:] = roll[:, :, :roll.shape[2] - k]
  else:
    out[:, :, :k] = roll[:, :, -k:]
  return out


# --------------------------------------------------------------------------------------------
# Song tables.


def test_table_holds_the_4_4_songs_at_the_training_resolution(data_dir, table):
  stored = {ex["source"].decode(): ex for ex in
            prepare.read_split("jsb_chorales", "train", data_dir=data_dir).as_numpy_iterator()}
  four_four = [s for s, ex in stored.items() if tuple(ex["time_signature"]) == (4, 4)]
  assert table.sources == four_four and len(four_four) == 9
  assert table.drum_tracks == ()
  for i, source in enumerate(table.sources):
    notes = stored[source]["notes"]
    # The chorales sit on the sixteenth grid: downsampling 12 -> 4 is an exact division.
    assert not (notes[:, [ONSET_COL, DURATION]] % 3).any()
    expected = notes.copy()
    expected[:, [ONSET_COL, DURATION]] //= 3
    np.testing.assert_array_equal(table.notes[table.offsets[i]:table.offsets[i + 1]], expected)
    assert table.num_bars[i] == stored[source]["num_bars"]
  # Every bar of a chorale has notes, so every 2-bar start is a window, in order.
  expected_windows = [(s, b) for s, bars in enumerate(table.num_bars) for b in range(bars - 1)]
  assert table.windows.tolist() == [list(w) for w in expected_windows]
  assert len(table.windows) == 100


def test_downsample_rounds_half_up_and_keeps_notes_audible():
  notes = np.array([[0, 60, 0, 12, 80],    # exact
                    [0, 61, 1, 1, 80],     # 1/3 of a step: onset 0, end 0 -> duration 1
                    [0, 62, 2, 4, 80],     # 2/3 -> onset 1, end 6/3 = 2
                    [0, 63, 7, 3, 80]],    # 7/3 -> 2, end 10/3 -> 3
                   np.int32)
  out = pipeline._downsample(notes, 3)
  np.testing.assert_array_equal(out[:, ONSET_COL], [0, 0, 1, 2])
  np.testing.assert_array_equal(out[:, DURATION], [4, 1, 1, 1])
  np.testing.assert_array_equal(out[:, [0, 1, 4]], notes[:, [0, 1, 4]])
  half = pipeline._downsample(np.array([[0, 60, 2, 2, 80]], np.int32), 4)  # 0.5 -> 1
  assert half[0, ONSET_COL] == 1 and half[0, DURATION] == 1
  assert pipeline._downsample(notes, 1) is notes


@pytest.mark.parametrize("count", [2, 4])
def test_processes_read_disjoint_songs_that_together_are_the_split(data_dir, table, count):
  config = _config(data_dir)
  parts = [pipeline.load_song_table(config, "train", process_index=p, process_count=count)
           for p in range(count)]
  sources = [s for part in parts for s in part.sources]
  assert sources == table.sources  # in order, none twice
  assert len(set(sources)) == len(sources)
  assert sum(part.num_songs > 0 for part in parts) >= 2
  assert sum(len(part.windows) for part in parts) == len(table.windows)
  # Replicate mode ignores the process: everyone loads the whole split.
  replicated = pipeline.load_song_table(config, "train", process_index=count - 1,
                                        process_count=count, data_mode="replicate")
  assert replicated.sources == table.sources


# --------------------------------------------------------------------------------------------
# Piano-roll windows.


def test_windows_equal_slices_of_the_reference_pianoroll(data_dir, table):
  info = prepare.dataset_info("jsb_chorales", data_dir=data_dir)
  assert info.midi_config.steps_per_beat == STORED_SPB
  assert (info.midi_config.lowest_pitch, info.midi_config.num_pitches) == (24, 84)
  midi_config = dataclasses.replace(info.midi_config, steps_per_beat=4)
  stored = {ex["source"].decode(): ex for ex in
            prepare.read_split("jsb_chorales", "train", data_dir=data_dir).as_numpy_iterator()}
  full = {}
  for source in table.sources:
    ex = stored[source]
    notes = ex["notes"].copy()
    notes[:, [ONSET_COL, DURATION]] //= 3
    song = Song(notes=notes, num_bars=int(ex["num_bars"]), steps_per_beat=4, time_signature=(4, 4),
                tempos=np.full(int(ex["num_bars"]), 100.0, np.float32), tracks=info.tracks,
                source=source)
    full[source] = to_pianoroll(song, midi_config)
  out = _rolls(pipeline._RollMaker(table, _config(data_dir)), range(len(table.windows)))
  assert out["pianoroll"].dtype == np.uint8
  assert out["pianoroll"].shape == (len(table.windows), 2, 16, 84, 4)
  for index, (song, bar) in enumerate(table.windows):
    roll = out["pianoroll"][index]
    np.testing.assert_array_equal(roll, full[table.sources[song]][bar:bar + 2],
                                  err_msg=f"window {index}")
    assert out["style"][index] == table.styles[song]
    assert (roll == CELL_ONSET).sum() > 0


def test_a_batch_of_windows_equals_the_windows_one_by_one(data_dir, table):
  config = _config(data_dir, ("data.transpose", "5"))
  maker = pipeline._RollMaker(table, config)
  rng = np.random.default_rng(3)
  windows = rng.integers(0, len(table.windows), 24)
  draws = rng.random(24).astype(np.float32)
  batch = maker.rolls(tf.constant(windows), tf.constant(draws))
  for i in range(24):
    one = maker.rolls(tf.constant(windows[i:i + 1]), tf.constant(draws[i:i + 1]))
    np.testing.assert_array_equal(batch["pianoroll"][i].numpy(), one["pianoroll"][0].numpy())
    assert int(batch["style"][i]) == int(one["style"][0]) == table.styles[table.windows[windows[i], 0]]
  # The draw picks the shift: the lowest draw the lowest feasible shift, the highest the highest.
  low = maker.rolls(tf.constant(windows[:1]), tf.constant([0.0]))["pianoroll"][0].numpy()
  high = maker.rolls(tf.constant(windows[:1]), tf.constant([0.999]))["pianoroll"][0].numpy()
  rows = lambda r: np.nonzero(r.any(axis=(0, 1, 3)))[0]
  assert rows(high)[0] - rows(low)[0] == 10   # -5 .. +5 (the chorales sit well inside 84 rows)


def test_batched_index_shuffle_matches_the_per_index_permutation():
  index = np.arange(40, dtype=np.int64)
  seeds = np.stack([np.full(40, 11), np.arange(40) // 7], 1).astype(np.int64)
  batched = pipeline._index_shuffle(tf.constant(index), tf.constant(seeds), 39).numpy()
  single = [int(tf.random.experimental.index_shuffle(tf.constant(i), tf.constant(s), 39))
            for i, s in zip(index, seeds)]
  np.testing.assert_array_equal(batched, single)


def test_hand_made_window_keeps_repeats_and_cuts_at_the_edges(data_dir):
  config = _config_one_bar(data_dir)
  low = config.data.lowest_pitch
  notes = np.array([[0, 60, 0, 4, 80],    # two same-pitch notes back to back
                    [0, 60, 4, 4, 80],
                    [1, 50, 14, 4, 80],   # rings over the bar line
                    [3, 24, 16, 1, 80]],  # the lowest row, one step
                   np.int32)
  song = dict(notes=notes, num_bars=2, style=3, source="hand")
  table = pipeline._table_from_songs([song], config, drum_tracks=())
  assert table.windows.tolist() == [[0, 0], [0, 1]]
  maker = pipeline._RollMaker(table, config)
  first, style = _roll(maker, 0)
  second, _ = _roll(maker, 1)
  assert style == 3
  first, second = first.reshape(16, 84, 4), second.reshape(16, 84, 4)
  np.testing.assert_array_equal(first[:, 60 - low, 0], [2, 1, 1, 1, 2, 1, 1, 1] + [0] * 8)
  np.testing.assert_array_equal(first[:, 50 - low, 1], [0] * 14 + [2, 1])
  # The second bar: the tied-over note is held without an onset, then stops.
  np.testing.assert_array_equal(second[:, 50 - low, 1], [1, 1] + [0] * 14)
  np.testing.assert_array_equal(second[:, 0, 3], [2] + [0] * 15)
  assert (first != 0).sum() == 10 and (second != 0).sum() == 3
  assert not second[:, 60 - low, 0].any() and not first[:, 0, 3].any()


# --------------------------------------------------------------------------------------------
# Transposition.


def test_transposition_moves_whole_windows_and_drops_no_note(data_dir, table):
  config = _config(data_dir)
  # A range only a few semitones wider than the music, so that the room often binds.
  config.data.lowest_pitch, config.data.num_pitches = 36, 46
  pitches = table.notes[:, PITCH]
  assert pitches.min() >= 36 and pitches.max() <= 81
  plain = pipeline._RollMaker(table, config)
  config.data.transpose = 5
  moved = pipeline._RollMaker(table, config)
  indices = np.repeat(np.arange(0, len(table.windows), 2), 8)
  seeds = np.stack([np.arange(len(indices)) % 8, indices], 1)
  bases, rolls = _rolls(plain, indices)["pianoroll"], _rolls(moved, indices, seeds)["pianoroll"]
  shifts = set()
  for base, roll in zip(bases, rolls):
    rows = np.nonzero(base.any(axis=(0, 1, 3)))[0]
    assert (roll == CELL_ONSET).sum() == (base == CELL_ONSET).sum()
    assert (roll == CELL_HELD).sum() == (base == CELL_HELD).sum()
    k = int(np.nonzero(roll.any(axis=(0, 1, 3)))[0][0] - rows[0])
    assert -5 <= k <= 5
    assert -rows[0] <= k <= 45 - rows[-1]
    np.testing.assert_array_equal(roll, _shift(base, k))
    shifts.add(k)
  assert shifts == set(range(-5, 6))


def test_transposition_uses_the_whole_feasible_range_and_spares_drums(data_dir):
  config = _config_one_bar(data_dir, ("data.transpose", "5"))
  low = config.data.lowest_pitch
  notes = np.array([[0, low + 2, 0, 4, 80],    # room for 2 down...
                    [1, low + 80, 4, 4, 80],   # ...and 3 up
                    [3, low, 8, 2, 80]],       # a drum on the lowest row: never moved
                   np.int32)
  table = pipeline._table_from_songs([dict(notes=notes, num_bars=1, style=0, source="d")],
                                     config, drum_tracks=(3,))
  maker = pipeline._RollMaker(table, config)
  rolls = _rolls(maker, np.zeros(200), np.stack([np.arange(200), np.full(200, 7)], 1))["pianoroll"]
  shifts = []
  for roll in rolls.reshape(200, 16, 84, 4):
    k = int(np.nonzero(roll[:, :, 0].any(axis=0))[0][0]) - 2
    assert roll[0, 2 + k, 0] == CELL_ONSET and roll[4, 80 + k, 1] == CELL_ONSET
    np.testing.assert_array_equal(roll[:, 0, 3], [0] * 8 + [2, 1] + [0] * 6)
    assert (roll != 0).sum() == 10
    shifts.append(k)
  assert set(shifts) == set(range(-2, 4))


# --------------------------------------------------------------------------------------------
# The training stream.


def test_stream_is_deterministic_and_resumes_at_a_step(data_dir, table):
  config = _config(data_dir, ("loss.n_critic", "2"), ("data.transpose", "5"))
  kw = dict(process_index=0, process_count=1, table=table)
  first = _first(pipeline.make_dataset(config, start_step=0, **kw), 5)
  again = _first(pipeline.make_dataset(config, start_step=0, **kw), 5)
  assert first[0]["pianoroll"].shape == (2, 8, 2, 16, 84, 4)
  assert first[0]["pianoroll"].dtype == np.uint8
  assert first[0]["style"].shape == (2, 8) and first[0]["style"].dtype == np.int32
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["pianoroll"], b["pianoroll"])
    np.testing.assert_array_equal(a["style"], b["style"])
  assert not np.array_equal(first[0]["pianoroll"], first[1]["pianoroll"])
  resumed = _first(pipeline.make_dataset(config, start_step=3, **kw), 2)
  np.testing.assert_array_equal(resumed[0]["pianoroll"], first[3]["pianoroll"])
  np.testing.assert_array_equal(resumed[1]["pianoroll"], first[4]["pianoroll"])
  other = _first(pipeline.make_dataset(_config(data_dir, ("loss.n_critic", "2"),
                                               ("data.transpose", "5"), ("train.seed", "1")),
                                       **kw))
  assert not np.array_equal(other[0]["pianoroll"], first[0]["pianoroll"])


def test_each_epoch_is_a_permutation_of_the_windows(data_dir, table):
  n = len(table.windows)
  config = _config(data_dir, ("train.global_batch", str(n)))
  maker = pipeline._RollMaker(table, config)
  windows = sorted(r.tobytes() for r in _rolls(maker, range(n))["pianoroll"])
  epochs = _first(pipeline.make_dataset(config, process_index=0, process_count=1, table=table), 2)
  for epoch in epochs:
    assert sorted(r.tobytes() for r in epoch["pianoroll"][0]) == windows
  assert not np.array_equal(epochs[0]["pianoroll"], epochs[1]["pianoroll"])


def test_shard_mode_draws_each_process_from_its_own_songs(data_dir):
  config = _config(data_dir, ("train.global_batch", "16"))
  for p in range(2):
    part = pipeline.load_song_table(config, "train", process_index=p, process_count=2)
    maker = pipeline._RollMaker(part, config)
    own = {r.tobytes() for r in _rolls(maker, range(len(part.windows)))["pianoroll"]}
    batch = _first(pipeline.make_dataset(config, process_index=p, process_count=2), 3)
    for element in batch:
      assert element["pianoroll"].shape[1] == 8
      assert all(r.tobytes() in own for r in element["pianoroll"][0])


def _replicated(config, count, steps=2):
  """The first `steps` batches of `count` replicate-mode processes, joined along the batch."""
  per_process = [_first(pipeline.make_dataset(config, process_index=p, process_count=count,
                                              data_mode="replicate"), steps)
                 for p in range(count)]
  return [{k: np.concatenate([pp[s][k] for pp in per_process], axis=1)
           for k in ("pianoroll", "style")} for s in range(steps)]


@pytest.mark.parametrize("n_critic", [1, 2, 3])
def test_replicate_mode_batches_do_not_depend_on_the_process_count(n_critic):
  config = config_lib.load_config("configs/tiny.py", [
      ("loss.n_critic", str(n_critic)), ("train.global_batch", "8"), ("data.transpose", "3")])
  single = _replicated(config, 1)
  assert single[0]["pianoroll"].shape[:2] == (n_critic, 8)
  for count in (2, 4):
    for a, b in zip(_replicated(config, count), single):
      np.testing.assert_array_equal(a["pianoroll"], b["pianoroll"])
      np.testing.assert_array_equal(a["style"], b["style"])


def test_train_iterator_yields_global_arrays_split_over_the_mesh(data_dir, table):
  config = _config(data_dir, ("loss.n_critic", "2"), ("data.transpose", "5"))
  local = _first(pipeline.make_dataset(config, process_index=0, process_count=1, table=table))[0]
  for mesh in (sharding.make_mesh(), sharding.make_mesh(mesh_fsdp=2)):
    batch = next(pipeline.train_iterator(config, mesh))
    roll = batch["pianoroll"]
    assert roll.shape == (2, 8, 2, 16, 84, 4)
    assert batch["style"].shape == (2, 8)
    for x in (roll, batch["style"]):
      assert x.sharding.spec == P(None, ("data", "fsdp"))
      assert len(x.sharding.device_set) == 8
      assert {s.data.shape[1] for s in x.addressable_shards} == {1}
    np.testing.assert_array_equal(np.asarray(roll), local["pianoroll"])
    np.testing.assert_array_equal(np.asarray(batch["style"]), local["style"])


# --------------------------------------------------------------------------------------------
# Configuration errors.


def test_bad_batch_sizes_name_the_key(data_dir):
  config = _config(data_dir, ("train.global_batch", "12"))
  with pytest.raises(config_lib.ConfigError, match=r"train\.global_batch=12 .* devices \(8\)"):
    pipeline.check_batch(config, sharding.make_mesh(), 1)
  with pytest.raises(config_lib.ConfigError, match=r"train\.global_batch=12 .* processes \(8\)"):
    pipeline.check_batch(config, None, 8)
  with pytest.raises(config_lib.ConfigError, match=r"train\.global_batch"):
    pipeline.make_dataset(config, process_index=0, process_count=5)
  pipeline.check_batch(config, None, 4)  # fine without a mesh


@pytest.mark.parametrize("overrides, key", [
    ([("data.n_bars", "10000")], r"data\.n_bars=10000"),
    ([("data.name", "nope")], r"data\.name='nope'"),
    ([("data.steps_per_beat", "5")], r"data\.steps_per_beat=5"),
])
def test_bad_data_settings_name_the_key(data_dir, overrides, key):
  config = _config(data_dir, *overrides)
  with pytest.raises(config_lib.ConfigError, match=key):
    pipeline.make_dataset(config, process_index=0, process_count=1)


def test_track_count_must_match_the_data_set(data_dir):
  config = config_lib.load_config("configs/tiny.py", [
      ("data.name", "jsb_chorales"), ("data.data_dir", data_dir)])
  assert config.data.num_tracks != 4
  with pytest.raises(config_lib.ConfigError, match=r"data\.num_tracks=.* 4 tracks"):
    pipeline.load_song_table(config, "train")


def test_unknown_data_mode_is_refused(data_dir):
  with pytest.raises(config_lib.ConfigError, match="data_mode='mirror'"):
    pipeline.load_song_table(_config(data_dir), "train", data_mode="mirror")


# --------------------------------------------------------------------------------------------
# Evaluation batches.


def test_eval_batches_visit_every_window_once_in_order(data_dir, table):
  config = _config(data_dir, ("data.transpose", "5"))
  batches = list(pipeline.eval_batches(config, "train", batch_size=16, table=table))
  n = len(table.windows)
  assert len(batches) == -(-n // 16) == 7
  assert sum(int(b["valid"].sum()) for b in batches) == n
  last = batches[-1]
  np.testing.assert_array_equal(last["valid"], [True] * (n % 16) + [False] * (16 - n % 16))
  assert not last["pianoroll"][n % 16:].any() and not last["style"][n % 16:].any()
  assert all(b["valid"].all() for b in batches[:-1])
  assert all(b["pianoroll"].shape == (16, 2, 16, 84, 4) for b in batches)
  # In window order and never transposed, whatever data.transpose says.
  rolls = np.concatenate([b["pianoroll"][b["valid"]] for b in batches])
  np.testing.assert_array_equal(rolls, _rolls(pipeline._RollMaker(table, _config(data_dir)),
                                               range(n))["pianoroll"])


def test_eval_batches_load_the_split_when_no_table_is_given(data_dir):
  batches = list(pipeline.eval_batches(_config(data_dir), "test", batch_size=8))
  # The one test chorale: 20 bars of 4/4, so 19 windows of 2 bars.
  assert sum(int(b["valid"].sum()) for b in batches) == 19
  np.testing.assert_array_equal(batches[-1]["valid"], [True] * 3 + [False] * 5)
