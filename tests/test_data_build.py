"""Building the song data sets (TFDS) and reading them back: small, capped builds."""

import json
import os

import miditoolkit
import numpy as np
import pytest

from jaxgan.data import builders, corpus
from jaxgan.data.prepare import (
    DataWriteError, dataset_info, format_summary, prepare, read_split)
from jaxgan.midi.song import ONSET, TRACK

VOICES = ["soprano", "alto", "tenor", "bass"]


def _write_song(path: str, seed: int) -> None:
  """Four bars of 4/4: piano chords, a bass line and drums, different for every seed."""
  rng = np.random.default_rng(seed)
  midi = miditoolkit.MidiFile(ticks_per_beat=480)
  midi.time_signature_changes.append(miditoolkit.TimeSignature(4, 4, 0))
  midi.tempo_changes.append(miditoolkit.TempoChange(100.0 + seed, 0))
  piano = miditoolkit.Instrument(program=0, name="piano")
  bass = miditoolkit.Instrument(program=33, name="bass")
  drums = miditoolkit.Instrument(program=0, is_drum=True, name="drums")
  for beat in range(16):
    start, end = beat * 480, beat * 480 + 240
    for p in rng.choice(np.arange(55, 80), size=3, replace=False):
      piano.notes.append(miditoolkit.Note(80, int(p), start, end))
    bass.notes.append(miditoolkit.Note(90, int(rng.integers(36, 48)), start, end))
    drums.notes.append(miditoolkit.Note(100, 36 if beat % 2 == 0 else 38, start, start + 60))
  midi.instruments = [piano, bass, drums]
  midi.dump(path)


@pytest.fixture(scope="module")
def midi_folder(tmp_path_factory):
  """10 good files (2 styles in subfolders, 2 in the root) and 3 bad ones."""
  root = tmp_path_factory.mktemp("midi")
  good = ["a.mid", "b.MIDI", "rock/r1.mid", "rock/r2.mid", "rock/r3.mid", "rock/deep/r4.mid",
          "jazz/j1.mid", "jazz/j2.midi", "jazz/j3.mid", "jazz/j4.mid"]
  for i, rel in enumerate(good):
    os.makedirs(os.path.dirname(root / rel), exist_ok=True)
    _write_song(str(root / rel), seed=i)
  whole = (root / "a.mid").read_bytes()
  (root / "rock" / "truncated.mid").write_bytes(whole[:len(whole) // 2])
  (root / "jazz" / "noise.mid").write_bytes(np.random.default_rng(0).bytes(3000))
  empty = miditoolkit.MidiFile(ticks_per_beat=480)
  empty.instruments = [miditoolkit.Instrument(program=0, name="silent")]
  empty.dump(str(root / "no_notes.mid"))
  (root / "notes.txt").write_text("not a MIDI file name: ignored")
  return str(root)


@pytest.fixture(scope="module")
def jsb(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("jsb"))
  summary = prepare("jsb_chorales", data_dir=data_dir, max_songs=12, progress=False)
  return data_dir, summary


def _all_examples(name, data_dir):
  out = {}
  for split in builders.SPLITS:
    for ex in read_split(name, split, data_dir=data_dir).as_numpy_iterator():
      out[ex["source"].decode()] = (split, ex)
  return out


def test_midi_folder_skips_bad_files(midi_folder, tmp_path):
  data_dir = str(tmp_path)
  summary = prepare("midi_folder", data_dir=data_dir, manual_dir=midi_folder, progress=False)
  assert summary["songs"] == 10 and summary["files"] == 13
  assert sum(s["songs"] for s in summary["splits"].values()) == 10
  skipped = {s["source"]: s["reason"] for s in summary["skipped_files"]}
  assert set(skipped) == {"rock/truncated.mid", "jazz/noise.mid", "no_notes.mid"}
  assert skipped["no_notes.mid"] == "no notes"
  assert skipped["rock/truncated.mid"] == "truncated file"
  assert sum(summary["skipped"].values()) == 3
  with open(os.path.join(summary["path"], builders.SKIPPED_FILE)) as f:
    assert sorted(s["source"] for s in json.load(f)) == sorted(skipped)
  assert "skipped 3 files" in format_summary(summary)

  info = dataset_info("midi_folder", data_dir=data_dir)
  assert info.styles == ("default", "jazz", "rock")
  assert [t.name for t in info.tracks] == ["Drums", "Piano", "Guitar", "Bass", "Strings"]
  assert info.midi_config.track_mode == "lpd5" and info.midi_config.steps_per_beat == 12
  assert sum(info.num_examples.values()) == 10
  assert len(info.stats["pitch_hist"]) == 128 and len(info.stats["pitch_class_hist"]) == 12
  assert os.path.isfile(os.path.join(info.path, builders.VOCAB_FILE))
  examples = _all_examples("midi_folder", data_dir)
  assert len(examples) == 10
  for source, (split, ex) in examples.items():
    style = source.split("/")[0] if "/" in source else "default"
    assert info.styles[ex["style"]] == style
    assert split == corpus.split_of(source)
    assert ex["notes"].dtype == np.int32 and ex["notes"].shape == (16 * 5, 5)
    assert tuple(ex["time_signature"]) == (4, 4) and ex["steps_per_bar"] == 48
    assert ex["num_bars"] == 4


def test_midi_overrides_rebuild(midi_folder, tmp_path):
  data_dir = str(tmp_path)
  first = prepare("midi_folder", data_dir=data_dir, manual_dir=midi_folder, progress=False,
                  midi_overrides={"steps_per_beat": 4}, max_songs=4)
  assert first["build_options"]["midi_config"]["steps_per_beat"] == 4
  info = dataset_info("midi_folder", data_dir=data_dir)
  assert info.midi_config.steps_per_beat == 4 and info.vocab.config.steps_per_beat == 4
  # Other options: the stored build is replaced, not reused.
  second = prepare("midi_folder", data_dir=data_dir, manual_dir=midi_folder, progress=False,
                   max_songs=4)
  assert not second["reused"]
  assert dataset_info("midi_folder", data_dir=data_dir).midi_config.steps_per_beat == 12
  # Without a manual dir, the folder of the stored build is used (rebuilt here: no cap).
  third = prepare("midi_folder", data_dir=data_dir, progress=False)
  assert not third["reused"] and third["songs"] == 10
  assert prepare("midi_folder", data_dir=data_dir, progress=False)["reused"]
  with pytest.raises(ValueError, match="unknown MidiConfig fields"):
    prepare("midi_folder", data_dir=str(tmp_path / "x"), manual_dir=midi_folder,
            progress=False, midi_overrides={"steps_per_bar": 4})


def test_jsb_chorales(jsb):
  data_dir, summary = jsb
  assert summary["files"] == 12
  seg = summary["segments"]
  # bwv41.6 goes 4/4 -> 3/4 -> 4/4: three segments; the rest are kept whole.
  assert seg["whole"] + seg["split"] + sum(summary["skipped"].values()) == 12
  assert seg["split"] == 1 and seg["segments"] == 3 and seg["dropped"] == {}
  assert summary["songs"] == seg["whole"] + seg["segments"] >= 12
  info = dataset_info("jsb_chorales", data_dir=data_dir)
  assert [t.name for t in info.tracks] == VOICES
  assert info.midi_config.track_mode == "parts" and info.midi_config.meters == ()
  assert info.styles == ("bach",)
  first, end = info.vocab.ranges["Pitch"]
  examples = _all_examples("jsb_chorales", data_dir)
  assert len(examples) == summary["songs"]
  for source, (split, ex) in examples.items():
    assert split == corpus.split_of(ex["parent"].decode())
    notes, tokens = ex["notes"], ex["tokens"]
    assert notes.dtype == np.int32 and tokens.dtype == np.int32
    assert ((tokens >= first) & (tokens < end)).sum() == len(notes)
    assert set(np.unique(notes[:, TRACK])) == {0, 1, 2, 3}
    assert ex["steps_per_bar"] == ex["time_signature"][0] * 48 // ex["time_signature"][1]
    assert notes[:, ONSET].max() < ex["num_bars"] * ex["steps_per_bar"]
  assert info.stats["num_songs"] == summary["splits"]["train"]["songs"]
  for source, (split, ex) in examples.items():
    assert ex["parent"].decode() == source.split("@")[0]

  # Its 3/4 and its last 4/4 sections open with a one-beat upbeat measure: each is padded
  # as a pickup, on the last beat of the segment's bar 0.
  parts = {k: ex for k, (_, ex) in examples.items() if k.startswith("bach/bwv41.6")}
  assert sorted(parts) == ["bach/bwv41.6@bar0", "bach/bwv41.6@bar15", "bach/bwv41.6@bar32"]
  assert [tuple(parts[k]["time_signature"]) for k in sorted(parts)] == [(4, 4), (3, 4), (4, 4)]
  assert [int(parts[k]["bar_offset"]) for k in sorted(parts)] == [0, 15, 32]
  assert [int(parts[k]["num_bars"]) for k in sorted(parts)] == [15, 17, 5]
  for key, beat in (("bach/bwv41.6@bar15", 24), ("bach/bwv41.6@bar32", 36)):
    onsets = np.unique(parts[key]["notes"][:, ONSET])
    assert onsets[0] == beat and int(parts[key]["steps_per_bar"]) in onsets
  assert info.stats["mean_notes_per_bar"] > 4

  # bwv269 is in 3/4 and opens with a one-beat pickup: padded to beat 3 of bar 0, so the
  # first downbeat is the bar line at step 36.
  _, ex = examples["bach/bwv269"]
  assert tuple(ex["time_signature"]) == (3, 4)
  onsets = np.unique(ex["notes"][:, ONSET])
  assert onsets[0] == 24 and onsets[1] == 36


def test_jsb_split_is_deterministic(jsb, tmp_path):
  data_dir, summary = jsb
  again = prepare("jsb_chorales", data_dir=str(tmp_path), max_songs=12, progress=False)
  assert again["splits"] == summary["splits"] and not again["reused"]
  a = _all_examples("jsb_chorales", data_dir)
  b = _all_examples("jsb_chorales", str(tmp_path))
  assert a.keys() == b.keys()
  for source in a:
    assert a[source][0] == b[source][0]
    np.testing.assert_array_equal(a[source][1]["tokens"], b[source][1]["tokens"])


def test_prepare_reuses_a_built_data_set(jsb):
  data_dir, summary = jsb
  again = prepare("jsb_chorales", data_dir=data_dir, max_songs=12, progress=False)
  assert again["reused"] and again["seconds"] < 5
  for key in ("songs", "bars", "notes", "splits", "skipped", "skipped_files"):
    assert again[key] == summary[key]


@pytest.mark.parametrize("count", [2, 4, 16])  # 16: more processes than songs
def test_read_split_shards_are_disjoint(jsb, count):
  data_dir, _ = jsb
  whole = [ex["source"] for ex in read_split("jsb_chorales", "train", data_dir=data_dir)
           .as_numpy_iterator()]
  shards = [[ex["source"] for ex in read_split(
      "jsb_chorales", "train", data_dir=data_dir, process_index=p, process_count=count)
      .as_numpy_iterator()] for p in range(count)]
  flat = [s for shard in shards for s in shard]
  assert len(flat) == len(set(flat)) == len(whole)
  assert set(flat) == set(whole)
  again = [ex["source"] for ex in read_split(
      "jsb_chorales", "train", data_dir=data_dir, process_index=1, process_count=count)
      .as_numpy_iterator()]
  assert again == shards[1]


def test_fold_voices():
  assert [corpus.fold_voice(r, 1) for r in range(1)] == [0]
  assert [corpus.fold_voice(r, 2) for r in range(2)] == [0, 3]
  assert [corpus.fold_voice(r, 4) for r in range(4)] == [0, 1, 2, 3]
  assert [corpus.fold_voice(r, 5) for r in range(5)] == [0, 1, 2, 2, 3]
  assert [corpus.fold_voice(r, 6) for r in range(6)] == [0, 1, 1, 2, 2, 3]


def test_music21_styles(tmp_path):
  data_dir = str(tmp_path)
  summary = prepare("music21_styles", data_dir=data_dir, max_songs=4, max_per_style=2,
                    progress=False)
  assert summary["files"] == 4
  assert summary["styles"] == {s: 1 for s in corpus.STYLES}
  info = dataset_info("music21_styles", data_dir=data_dir)
  assert info.styles == corpus.STYLES and [t.name for t in info.tracks] == VOICES
  for _, (_, ex) in _all_examples("music21_styles", data_dir).items():
    tracks = set(np.unique(ex["notes"][:, TRACK]).tolist())
    if info.styles[ex["style"]] == "folk":
      assert tracks == {0}  # a single melody: soprano only
    else:
      assert tracks == {0, 1, 2, 3}


def test_conversion_pool_keeps_order(monkeypatch):
  pieces = corpus.chorale_pieces()[:6]
  monkeypatch.setattr(builders, "MIN_POOL_PIECES", 1)
  pooled = list(builders.convert_pieces(pieces, num_workers=2))
  assert [r.name for r in pooled] == [p.name for p in pieces]
  assert pooled[0].midi == corpus.piece_to_midi(pieces[0]).midi


# ---------------------------------------------------------------------------------------------
# Meter changes and pickups, through `jaxgan prepare midi_folder`.

TPB = 480


def _meter_file(path, meters, notes, pitch_base=60) -> None:
  """A piano part: `meters` = [(tick, num, den)], `notes` = [(start, end, pitch offset)]."""
  midi = miditoolkit.MidiFile(ticks_per_beat=TPB)
  midi.time_signature_changes = [miditoolkit.TimeSignature(n, d, t) for t, n, d in meters]
  midi.tempo_changes = [miditoolkit.TempoChange(90.0, 0)]
  piano = miditoolkit.Instrument(program=0, name="piano")
  piano.notes = [miditoolkit.Note(70, pitch_base + p, s, e) for s, e, p in notes]
  midi.instruments = [piano]
  midi.dump(str(path))


def _steps(ticks: int) -> int:
  return ticks * 12 // TPB  # every test tick is a multiple of 40, one step at 12 per beat


@pytest.fixture(scope="module")
def meter_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("meters")
  beat = TPB
  # 4 bars of 2/4, then 4 bars of 1/4; one note per beat, and one held over the change.
  _meter_file(root / "two_one.mid", [(0, 2, 4), (8 * beat, 1, 4)],
              [(i * beat, i * beat + 240, i) for i in range(12)] + [(7 * beat, 9 * beat, 20)])
  # 3 bars of 3/4, then 2 bars of 4/4.
  _meter_file(root / "three_four.mid", [(0, 3, 4), (9 * beat, 4, 4)],
              [(i * beat, (i + 1) * beat, i % 12) for i in range(17)])
  # One pickup, written three ways: a 1/4 bar before the 4/4; a 4/4 bar with three beats of
  # silence; a note before the first signature (a 4/4 at the pickup's end).
  pickup = [(0, beat, 0)] + [(beat + i * beat, 2 * beat + i * beat, 1 + i) for i in range(8)]
  _meter_file(root / "pickup_bar.mid", [(0, 1, 4), (beat, 4, 4)], pickup, 60)
  _meter_file(root / "pickup_silence.mid", [(0, 4, 4)],
              [(s + 3 * beat, e + 3 * beat, p) for s, e, p in pickup], 62)
  _meter_file(root / "pickup_unsigned.mid", [(beat, 4, 4)], pickup, 64)
  # 2 bars of 4/4, then 3/32, whose bar is 4.5 steps at 12 per beat: that part is dropped.
  _meter_file(root / "off_grid.mid", [(0, 4, 4), (8 * beat, 3, 32)],
              [(i * beat, i * beat + 120, i) for i in range(8)] + [(8 * beat + 180 * i,
               8 * beat + 180 * i + 90, 12) for i in range(4)])
  _meter_file(root / "plain.mid", [(0, 4, 4)], [(i * beat, (i + 1) * beat, 5) for i in range(8)])
  return root


def test_prepare_keeps_segments_and_pickups(meter_folder, tmp_path, capsys):
  from jaxgan import cli  # pylint: disable=import-outside-toplevel
  data_dir = str(tmp_path)
  assert cli.main(["prepare", "midi_folder", "--manual-dir", str(meter_folder),
                   "--data-dir", data_dir, "--quiet"]) == 0
  out = capsys.readouterr().out
  assert ("files kept: 7 (4 whole, 3 split at meter changes into 5 segments), skipped: 0;"
          " segments dropped: meter does not fit the grid 1; pickups padded: 2") in out
  examples = _all_examples("midi_folder", data_dir)
  assert sorted(examples) == [
      "off_grid.mid@bar0", "pickup_bar.mid", "pickup_silence.mid", "pickup_unsigned.mid",
      "plain.mid", "three_four.mid@bar0", "three_four.mid@bar3", "two_one.mid@bar0",
      "two_one.mid@bar4"]
  for source, (split, ex) in examples.items():
    parent = source.split("@")[0]
    assert ex["parent"].decode() == parent and split == corpus.split_of(parent)
    assert ex["bar_offset"] == (int(source.split("@bar")[1]) if "@" in source else 0)
  info = dataset_info("midi_folder", data_dir=data_dir)
  assert info.midi_config.meters == ()
  assert {tuple(m) for m in info.vocab.meters} >= {(2, 4), (1, 4), (3, 4), (4, 4)}

  def notes(source):
    return [tuple(int(x) for x in row) for row in examples[source][1]["notes"]]

  def meter(source):
    ex = examples[source][1]
    return tuple(int(x) for x in ex["time_signature"]), int(ex["num_bars"])

  piano = 1  # lpd5: Drums, Piano, ...
  # Each segment's notes are the file's, exactly, counted from its own bar 0; the note held
  # over the 2/4 -> 1/4 change is cut at it.
  assert meter("two_one.mid@bar0") == ((2, 4), 4)
  assert notes("two_one.mid@bar0") == sorted(
      [(piano, 60 + i, 12 * i, 6, 70) for i in range(8)] + [(piano, 80, 12 * 7, 12, 70)],
      key=lambda n: (n[2], n[0], n[1]))
  assert meter("two_one.mid@bar4") == ((1, 4), 4)
  assert notes("two_one.mid@bar4") == [(piano, 68 + i, 12 * i, 6, 70) for i in range(4)]
  assert meter("three_four.mid@bar0") == ((3, 4), 3)
  assert notes("three_four.mid@bar0") == [(piano, 60 + i, 12 * i, 12, 70) for i in range(9)]
  assert meter("three_four.mid@bar3") == ((4, 4), 2)
  assert notes("three_four.mid@bar3") == [
      (piano, 60 + (9 + i) % 12, 12 * i, 12, 70) for i in range(8)]
  assert meter("off_grid.mid@bar0") == ((4, 4), 2)
  assert len(notes("off_grid.mid@bar0")) == 8
  # The three pickups give the same song: the upbeat on beat 4 of bar 0, downbeat at 48.
  expected = [(piano, 1, 36, 12, 70)] + [(piano, 2 + i, 48 + 12 * i, 12, 70) for i in range(8)]
  for source, base in (("pickup_bar.mid", 60), ("pickup_silence.mid", 62),
                       ("pickup_unsigned.mid", 64)):
    assert meter(source) == ((4, 4), 3)
    assert [(t, p - base + 1, o, d, v) for t, p, o, d, v in notes(source)] == expected
  summary = prepare("midi_folder", data_dir=data_dir, manual_dir=str(meter_folder),
                    progress=False)
  assert summary["reused"] and summary["segments"] == {
      "whole": 4, "split": 3, "segments": 5, "pickups": 2,
      "dropped": {"meter does not fit the grid": 1}}
  assert summary["load_counts"]["notes_cut_at_meter_change"] == 1
  assert summary["load_counts"]["notes_other_meter"] == 4


# ---------------------------------------------------------------------------------------------
# Builds that cannot be written.


def _leftovers(data_dir: str, name: str) -> list[str]:
  folder = os.path.join(data_dir, name)
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_prepare_on_a_full_disk_leaves_nothing_half_built(midi_folder, tmp_path, monkeypatch):
  import errno  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import file_adapters  # pylint: disable=import-outside-toplevel
  adapter = file_adapters.TfRecordFileAdapter
  real = adapter.write_examples.__func__

  def write_then_fail(cls, path, iterator):
    # A record or two reach the disk, then it is full.
    real(cls, path, list(iterator)[:1])
    raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))

  data_dir = str(tmp_path)
  monkeypatch.setattr(adapter, "write_examples", classmethod(write_then_fail))
  with pytest.raises(DataWriteError) as info:
    prepare("midi_folder", data_dir=data_dir, manual_dir=midi_folder, progress=False)
  e = info.value
  assert e.reason.startswith("No space left on device") and "--data-dir" in e.reason
  assert "midi_folder" in e.path and e.path.startswith(data_dir)
  assert str(e).startswith(f"cannot build data set midi_folder in {e.path}: No space left")
  assert _leftovers(data_dir, "midi_folder") == []  # no version folder, no temporary one
  with pytest.raises(FileNotFoundError, match="jaxgan prepare midi_folder"):
    dataset_info("midi_folder", data_dir=data_dir)
  # Once there is space, the next run builds it whole.
  monkeypatch.undo()
  summary = prepare("midi_folder", data_dir=data_dir, manual_dir=midi_folder, progress=False,
                    max_songs=4)
  assert not summary["reused"] and summary["songs"] == 4


def test_prepare_into_an_unusable_folder(midi_folder, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a folder")
  with pytest.raises(DataWriteError) as info:
    prepare("midi_folder", data_dir=str(blocker / "data"), manual_dir=midi_folder,
            progress=False, max_songs=2)
  assert info.value.reason == "Not a directory" and str(blocker) in info.value.path
  assert blocker.read_text() == "not a folder"


@pytest.fixture
def tiny_tmpfs(tmp_path):
  """A 16 KiB tmpfs, where the test may mount one (root on Linux); skipped elsewhere."""
  import subprocess  # pylint: disable=import-outside-toplevel
  mount = tmp_path / "tiny"
  mount.mkdir()
  try:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
                          capture_output=True, timeout=20, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    pytest.skip(f"cannot mount a tmpfs: {e}")
  if done.returncode:
    pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
  try:
    yield str(mount)
  finally:
    subprocess.run(["umount", str(mount)], capture_output=True, timeout=20, check=False)


def test_prepare_on_a_real_full_filesystem(midi_folder, tiny_tmpfs):
  with pytest.raises(DataWriteError) as info:
    prepare("midi_folder", data_dir=tiny_tmpfs, manual_dir=midi_folder, progress=False)
  assert "No space left on device" in info.value.reason, info.value
  assert info.value.path.startswith(tiny_tmpfs)
  assert _leftovers(tiny_tmpfs, "midi_folder") == []
