"""The standard JSB split: shipped data, the chorale matcher, the builder, per-track facts and
transposition within each track's range."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from jaxgan import config as config_lib
from jaxgan.data import builders, corpus, pipeline, prepare, standard
from jaxgan.data import match as match_lib
from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK

RANGES = ((60, 79), (55, 72), (48, 67), (36, 60))   # S, A, T, B of the hand-made chorales


def _chorale(seed: int, chords: int = 48, soprano: np.ndarray | None = None) -> np.ndarray:
  """Hand-made four-voice frames: chords of random pitches lasting an 8th, a quarter or a half.

  With `soprano` (frames of another chorale), the melody and rhythm are that chorale's and only
  the lower voices are new: a different harmonisation of the same tune.
  """
  rng = np.random.default_rng(seed)
  if soprano is not None:
    frames = np.zeros((len(soprano), 4), np.int16)
    frames[:, 0] = soprano
    starts = np.flatnonzero(np.diff(soprano, prepend=-9))
    for begin, end in zip(starts, np.r_[starts[1:], len(soprano)]):
      frames[begin:end, 1:] = [rng.integers(lo, hi + 1) for lo, hi in RANGES[1:]]
    return frames
  rows = []
  for _ in range(chords):
    chord = [rng.integers(lo, hi + 1) for lo, hi in RANGES]
    rows += [chord] * int(rng.choice([2, 4, 4, 8]))
  return np.asarray(rows, np.int16)


def _best(a, b, **kw) -> match_lib.PairScore:
  found = match_lib.match([a], [b], **kw)
  assert found.pairs, "no candidate pair"
  return found.best_for_a(0)


# --------------------------------------------------------------------------------------------
# The shipped data.


def test_shipped_split_is_the_published_one():
  chorales = standard.load_chorales()
  assert {k: len(v) for k, v in chorales.items()} == standard.SPLIT_SIZES == {
      "train": 229, "validation": 76, "test": 77}
  every = np.concatenate([c for split in chorales.values() for c in split])
  assert every.shape[1] == 4 and every.dtype == np.int16
  assert every.min() == -1 and every[every >= 0].min() == 36 and every.max() == 81
  assert sum(len(c) for split in chorales.values() for c in split) == 92536


def test_bad_data_is_refused_with_the_reason():
  with pytest.raises(ValueError, match=r"f\.json: expected an object with keys"):
    standard._parse({"train": []}, "f.json")
  with pytest.raises(ValueError, match=r"f\.json: test\[1\] has shape \(2, 3\)"):
    standard._parse({"train": [], "valid": [], "test": [[[60] * 4], [[60] * 3] * 2]}, "f.json")
  with pytest.raises(ValueError, match=r"valid\[0\] has pitches outside"):
    standard._parse({"train": [], "valid": [[[60, 60, 60, 200]]], "test": []}, "f.json")


# --------------------------------------------------------------------------------------------
# Frames and notes.


def test_repeated_and_held_notes_give_the_same_frames():
  frames = _chorale(0, chords=12)
  held = match_lib.notes_from_frames(frames, 3)          # 12 steps per beat
  assert not (held[:, [ONSET, DURATION]] % 3).any()
  # Split every note of 2+ frames into repeated notes, as music21 chorales have them.
  repeated = []
  for track, pitch, onset, duration, velocity in held.tolist():
    cut = duration // 2 if duration >= 6 else duration
    repeated.append((track, pitch, onset, cut, velocity))
    if cut < duration:
      repeated.append((track, pitch, onset + cut, duration - cut, velocity))
  repeated = np.asarray(repeated, np.int32)
  assert len(repeated) > len(held)
  np.testing.assert_array_equal(match_lib.frames_from_notes(repeated, 12), frames)
  again = match_lib.notes_from_frames(match_lib.frames_from_notes(repeated, 12), 3)
  np.testing.assert_array_equal(again, held)   # the encoding merges them: one held note
  assert _best(frames, match_lib.frames_from_notes(repeated, 12)).harmony == pytest.approx(1.0)


def test_frames_keep_the_highest_pitch_of_a_voice_and_silence():
  notes = np.array([[0, 60, 0, 12, 80], [0, 64, 6, 6, 80],    # two pitches at once: 64 wins
                    [3, 40, 12, 3, 80]], np.int32)             # bass enters late, one 16th
  frames = match_lib.frames_from_notes(notes, 12, num_steps=24)
  assert frames.shape == (8, 4)
  np.testing.assert_array_equal(frames[:, 0], [60, 60, 64, 64, -1, -1, -1, -1])
  np.testing.assert_array_equal(frames[:, 3], [-1, -1, -1, -1, 40, -1, -1, -1])
  assert (frames[:, 1:3] == -1).all()


# --------------------------------------------------------------------------------------------
# The matcher on hand-made cases.


def test_viterbi_follows_a_written_out_repeat():
  gains = np.zeros((6, 4), np.float32)
  for r, c in enumerate([0, 1, 2, 0, 1, 2]):
    gains[r, c] = 1.0
  best, paths = match_lib.viterbi([gains], [0.5], keep_paths=True)
  assert best[0] == pytest.approx(5.5)
  np.testing.assert_array_equal(paths[0], [0, 1, 2, 0, 1, 2])
  best, paths = match_lib.viterbi([gains], [2.0], keep_paths=True)   # a jump costs more
  assert best[0] == pytest.approx(4.0)
  np.testing.assert_array_equal(paths[0], [0, 1, 2, 0, 1, 2])


def test_a_transposed_copy_matches():
  a = _chorale(1)
  b = np.where(a >= 0, a - 3, -1).astype(np.int16)
  pair = _best(a, b)
  assert pair.transpose == 3 and pair.harmony == pytest.approx(1.0)
  assert pair.same_harmonisation and pair.same_melody


def test_a_different_harmonisation_of_the_same_melody_does_not_match():
  a = _chorale(2)
  b = _chorale(3, soprano=a[:, 0])
  pair = _best(a, b)
  assert pair.melody == pytest.approx(1.0) and pair.same_melody
  assert pair.harmony < 0.5 and not pair.same_harmonisation
  other = _chorale(4)
  assert not match_lib.match([a], [other]).pairs        # not even a candidate
  forced = match_lib.score_pairs([a], [other], [(0, 0)])[0]
  assert forced.harmony < 0.5 and forced.melody < 0.5


def test_pickup_offset_rests_and_repeats_are_forgiven_and_bars_recovered():
  corpus_version = _chorale(5)
  bar = 16                                     # 4/4 in 16ths
  padded = np.concatenate([np.full((12, 4), -1, np.int16), corpus_version])  # pickup of a beat
  # The standard edition: the pickup unpadded, the first 64 frames written out twice, and a
  # rest after a "fermata" where the corpus edition holds the chord.
  standard_version = np.concatenate([corpus_version[:64], corpus_version]).copy()
  standard_version[100:104] = -1
  pair = _best(standard_version, padded)
  assert pair.same_harmonisation and pair.harmony > 0.9
  path = match_lib.align(standard_version, padded, pair)
  pad, bar_len, agreement = match_lib.bar_phase(path, bar)
  assert (pad, bar_len) == (12, 16) and agreement == pytest.approx(1.0)
  np.testing.assert_array_equal(path[64:80], np.arange(12, 28))   # the repeat found


def test_halved_note_values_still_match_and_give_the_meter():
  a = _chorale(6)
  b = np.repeat(a, 2, axis=0)                 # b writes every note twice as long
  pair = _best(a, b)
  assert (pair.a_repeat, pair.b_repeat) == (2, 1) and pair.same_harmonisation
  chorale = standard.CorpusChorale("long", np.concatenate([np.full((8, 4), -1, np.int16), b]),
                                   (4, 4))
  meter = standard.meter_from_match(a, chorale, _best(a, chorale.frames), "harmony")
  assert meter.time_signature == (4, 8) and meter.pad == 4


def test_meters_fall_back_from_harmony_to_melody_to_the_default():
  tune = _chorale(7)
  same = standard.CorpusChorale("same", np.concatenate(
      [np.full((8, 4), -1, np.int16), tune]), (3, 4))
  other_tune = _chorale(8)
  reharmonised = standard.CorpusChorale("tune", _chorale(9, soprano=other_tune[:, 0]), (4, 4))
  lone = _chorale(10)[:-3]
  meters, _ = standard.recover_meters([tune, other_tune, lone], [same, reharmonised])
  assert (meters[0].how, meters[0].corpus, meters[0].time_signature, meters[0].pad) == (
      "harmony", "same", (3, 4), 8)
  assert (meters[1].how, meters[1].corpus, meters[1].time_signature, meters[1].pad) == (
      "melody", "tune", (4, 4), 0)
  assert (meters[2].how, meters[2].time_signature) == ("default", (4, 4))
  assert (meters[2].pad + len(lone)) % 16 == 0      # the chorale ends on a bar line


# --------------------------------------------------------------------------------------------
# The matcher on the real data.

CORPUS = ("bach/bwv269", "bach/bwv244.44", "bach/bwv244.15", "bach/bwv416", "bach/bwv324")


@pytest.fixture(scope="module")
def corpus_pieces():
  pieces = {p.name: p for p in corpus.chorale_pieces()}
  return [pieces[name] for name in CORPUS]


@pytest.fixture(scope="module")
def corpus_chorales(corpus_pieces):
  return [standard.corpus_chorale(corpus.piece_to_midi(p)) for p in corpus_pieces]


def test_music21_chorales_find_their_standard_chorale(corpus_chorales):
  chorales = standard.load_chorales()
  names = [standard.source_name(s, i) for s in chorales for i in range(len(chorales[s]))]
  frames = [c for s in chorales for c in chorales[s]]
  found = match_lib.match(frames, [c.frames for c in corpus_chorales])
  same = {corpus_chorales[j].name: sorted(names[p.a] for p in pairs)
          for j, pairs in standard.same_music(found).items()}
  assert same == {
      "bach/bwv269": ["standard/validation/069"],
      "bach/bwv244.44": ["standard/train/222"],
      "bach/bwv244.15": ["standard/train/056"],       # a tone lower in the standard split
      "bach/bwv416": ["standard/train/197"],
  }  # bwv324 is the same music as no standard chorale
  # Harmonisations of one melody are told apart: the St Matthew Passion's two settings of
  # "Herzlich tut mich verlangen" share the tune, and bwv416 the tune of test/049.
  by_pair = {(names[p.a], corpus_chorales[p.b].name): p for p in found.pairs}
  for pair in (("standard/train/222", "bach/bwv244.15"), ("standard/train/056", "bach/bwv244.44"),
               ("standard/test/049", "bach/bwv416")):
    score = by_pair[pair]
    assert score.same_melody and not score.same_harmonisation, (pair, score)
  assert by_pair[("standard/train/056", "bach/bwv244.15")].transpose == 2


# --------------------------------------------------------------------------------------------
# The builder.


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus_pieces):
  """jsb_chorales_standard/music21_extras against a 5-chorale music21 corpus."""
  data_dir = str(tmp_path_factory.mktemp("standard"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(corpus, "chorale_pieces", lambda style="bach": list(corpus_pieces))
    summary = prepare.prepare("jsb_chorales_standard/music21_extras", data_dir=data_dir,
                              progress=False)
  return data_dir, summary


def _examples(name, data_dir):
  return {ex["source"].decode(): (split, ex) for split in builders.SPLITS
          for ex in prepare.read_split(name, split, data_dir=data_dir).as_numpy_iterator()}


def test_the_split_is_kept_exactly_with_recovered_bars(built):
  data_dir, summary = built
  name = "jsb_chorales_standard/music21_extras"
  assert {k: v["songs"] for k, v in summary["splits"].items()} == {
      "train": 230, "validation": 76, "test": 77}   # 229 + bwv324
  assert summary["skipped"] == {"same as a standard chorale": 4}
  skipped = {s["source"]: s["detail"] for s in summary["skipped_files"]}
  assert skipped["bach/bwv269"] == "standard/validation/069"
  counts = summary["load_counts"]
  assert counts["notes_clipped"] == 0
  # Only the extra changes in the split's encoding (its repeated notes become held ones).
  assert counts["notes_kept"] - counts["notes_merged_in_16ths"] == summary["notes"]
  assert summary["build_options"]["music21_extras"] is True
  std = summary["standard"]
  assert std["meters_from"]["harmony"] == 4 and std["corpus_same_as_held_out"] == 1
  assert std["corpus_new"] == 1 and "music21 chorales: 4 of 5" in prepare.format_summary(summary)

  chorales = standard.load_chorales()
  with open(os.path.join(summary["path"], builders.JsbChoralesStandard.MATCHES_FILE)) as f:
    meters = {m["source"]: m for m in json.load(f)["standard"]}
  examples = _examples(name, data_dir)
  for split, songs in chorales.items():
    for i, frames in enumerate(songs):
      source = standard.source_name(split, i)
      stored_split, ex = examples[source]
      meter = meters[source]
      assert stored_split == split
      assert list(ex["time_signature"]) == meter["time_signature"]
      # The stored notes are the published frames, after the pickup's silence.
      back = match_lib.frames_from_notes(ex["notes"], 12, num_steps=int(ex["num_bars"]) *
                                         int(ex["steps_per_bar"]))
      pad = meter["pad"]
      assert (back[:pad] == -1).all() and (back[pad + len(frames):] == -1).all()
      np.testing.assert_array_equal(back[pad:pad + len(frames)], frames, err_msg=source)
  # bwv269 is in 3/4 with a one-beat pickup: validation/069 gets both.
  assert meters["standard/validation/069"]["time_signature"] == [3, 4]
  assert meters["standard/validation/069"]["pad"] == 8
  assert meters["standard/test/049"]["how"] == "melody"           # bwv416's tune
  assert meters["standard/test/049"]["corpus"] == "bach/bwv416"
  # The extra is in the split's encoding: no two abutting notes of a voice share a pitch.
  notes = examples["bach/bwv324"][1]["notes"]
  assert examples["bach/bwv324"][0] == "train"
  ends = {(t, p, o + d) for t, p, o, d, _ in notes.tolist()}
  assert not any((t, p, o) in ends for t, p, o, _, _ in notes.tolist())


def test_track_facts_are_in_the_metadata(built):
  data_dir, _ = built
  info = prepare.dataset_info("jsb_chorales_standard/music21_extras", data_dir=data_dir)
  assert [f.name for f in info.track_facts] == ["soprano", "alto", "tenor", "bass"]
  assert all(f.monophonic and f.polyphonic_share == 0.0 for f in info.track_facts)
  notes = np.concatenate([ex["notes"] for _, (split, ex) in
                          _examples(info.name, data_dir).items() if split == "train"])
  for t, f in enumerate(info.track_facts):
    pitches = notes[notes[:, TRACK] == t, PITCH]
    assert (f.low, f.high) == (int(pitches.min()), int(pitches.max()))
  # The published train split alone spans these; the extra chorale can only widen them.
  every = np.concatenate(standard.load_chorales()["train"])
  for v, f in enumerate(info.track_facts):
    line = every[:, v][every[:, v] >= 0]
    assert f.low <= line.min() and line.max() <= f.high


def test_track_facts_count_polyphony(tmp_path, caplog):
  import miditoolkit  # pylint: disable=import-outside-toplevel
  folder = tmp_path / "midi"
  folder.mkdir()
  for k in range(3):
    midi = miditoolkit.MidiFile(ticks_per_beat=480)
    piano = miditoolkit.Instrument(program=0, name="piano")
    bass = miditoolkit.Instrument(program=33, name="bass")
    for beat in range(8):
      start = beat * 480
      for p in ((60, 64, 67) if beat % 2 else (62,)):    # chords on odd beats only
        piano.notes.append(miditoolkit.Note(80, p + k, start, start + 480))
      bass.notes.append(miditoolkit.Note(80, 40 + beat + k, start, start + 480))
    midi.instruments = [piano, bass]
    midi.dump(str(folder / f"s{k}.mid"))
  data_dir = str(tmp_path / "data")
  prepare.prepare("midi_folder", data_dir=data_dir, manual_dir=str(folder), progress=False)
  facts = {f.name: f for f in prepare.dataset_info("midi_folder", data_dir=data_dir).track_facts}
  assert not facts["Piano"].monophonic and facts["Piano"].polyphonic_share == pytest.approx(0.5)
  assert facts["Bass"].monophonic and facts["Bass"].polyphonic_share == 0.0
  assert facts["Guitar"].low is None and facts["Guitar"].monophonic
  # They feed the config: ranges from the data (the window for a track without notes), and
  # a declared monophonic track that is not gets a warning.
  config = config_lib.load_config("configs/tiny.py", [
      ("data.name", "midi_folder"), ("data.data_dir", data_dir), ("data.num_tracks", "5"),
      ("data.mono_tracks", "('Piano', 'Bass')")])
  with caplog.at_level("WARNING", logger="jaxgan.data.pipeline"):
    pipeline.resolve_track_facts(config)
  assert "track 'Piano' is not monophonic" in caplog.text and "'Bass'" not in caplog.text
  window = (config.data.lowest_pitch, config.data.lowest_pitch + config.data.num_pitches - 1)
  assert config.data.track_ranges[1] == (facts["Piano"].low, facts["Piano"].high)
  assert config.data.track_ranges[2] == window            # Guitar
  # An older build without the facts still reads, as None.
  info = prepare.dataset_info("midi_folder", data_dir=data_dir)
  meta_path = os.path.join(info.path, "metadata.json")
  with open(meta_path) as f:
    meta = json.load(f)
  del meta["track_facts"]
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  assert prepare.dataset_info("midi_folder", data_dir=data_dir).track_facts is None
  config.data.track_ranges = ()
  caplog.clear()
  with caplog.at_level("WARNING", logger="jaxgan.data.pipeline"):
    pipeline.resolve_track_facts(config)
  assert config.data.track_ranges == () and "no per-track facts" in caplog.text
  # Preparing it again rebuilds it rather than reusing it, and the facts are back.
  again = prepare.prepare("midi_folder", data_dir=data_dir, manual_dir=str(folder),
                          progress=False)
  assert not again["reused"]
  assert prepare.dataset_info("midi_folder", data_dir=data_dir).track_facts is not None


# --------------------------------------------------------------------------------------------
# Config keys and transposition within each track's range.


def _config(data_dir, *overrides):
  pairs = [("data.name", "jsb_chorales_standard/music21_extras"), ("data.data_dir", data_dir),
           ("data.n_bars", "2"), ("data.transpose", "6"), ("train.global_batch", "8")]
  return config_lib.load_config("configs/jsb_musegan.py", pairs + list(overrides))


@pytest.mark.parametrize("key, value, message", [
    ("data.track_ranges", "((60, 81),)", "one \\(low, high\\) per track"),
    ("data.track_ranges", "((60, 81), (50, 40), (1, 2), (3, 4))", r"track_ranges\[1\]"),
    ("data.mono_tracks", "(0, 7)", "track 7 is not in 0..3"),
    ("data.mono_tracks", "(0, 0)", "names a track twice"),
    ("data.mono_tracks", "(1.5,)", "neither a track index nor a track name"),
])
def test_bad_track_settings_name_the_key(key, value, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.load_config("configs/jsb_musegan.py", [(key, value)])


def test_ranges_and_mono_tracks_are_resolved_from_the_data_set(built):
  data_dir, _ = built
  config = _config(data_dir, ("data.mono_tracks", "('soprano', 3)"))
  assert config_lib.mono_track_indices(config, ["soprano", "alto", "tenor", "bass"]) == (0, 3)
  pipeline.resolve_track_facts(config)
  info = prepare.dataset_info(config.data.name, data_dir=data_dir)
  assert config.data.track_ranges == tuple((f.low, f.high) for f in info.track_facts)
  kept = _config(data_dir, ("data.track_ranges", "((60, 70), (50, 60), (40, 50), (30, 40))"))
  pipeline.resolve_track_facts(kept)
  assert kept.data.track_ranges == ((60, 70), (50, 60), (40, 50), (30, 40))
  wrong = _config(data_dir, ("data.mono_tracks", "('descant',)"))
  with pytest.raises(config_lib.ConfigError, match="no track named 'descant'"):
    pipeline.resolve_track_facts(wrong)


def test_transposition_keeps_each_track_in_its_own_range(built):
  data_dir, _ = built
  config = _config(data_dir)
  pipeline.resolve_track_facts(config)
  # Narrow ranges around the music, so that every track's range binds somewhere.
  table = pipeline.load_song_table(config, "train")
  ranges = tuple((int(table.notes[table.notes[:, TRACK] == t, PITCH].min()) - 1,
                  int(table.notes[table.notes[:, TRACK] == t, PITCH].max()) + 2)
                 for t in range(4))
  config.data.track_ranges = ranges
  config_lib.validate(config)
  maker = pipeline._RollMaker(table, config)
  windows = np.repeat(np.arange(0, len(table.windows), len(table.windows) // 40), 16)
  draws = np.tile(np.linspace(0, 0.999, 16), len(windows) // 16).astype(np.float32)
  rolls = maker.rolls(tf.constant(windows), tf.constant(draws))["pianoroll"].numpy()
  plain = pipeline._RollMaker(table, _config(data_dir, ("data.transpose", "0")))
  bases = plain.rolls(tf.constant(windows), tf.constant(draws))["pianoroll"].numpy()
  low = config.data.lowest_pitch
  shifts = set()
  for roll, base in zip(rolls, bases):
    k = int(np.nonzero(roll.any(axis=(0, 1, 3)))[0][0] - np.nonzero(base.any(axis=(0, 1, 3)))[0][0])
    np.testing.assert_array_equal(roll, np.roll(base, k, axis=2))
    for t, (lo, hi) in enumerate(ranges):
      rows = np.nonzero(roll[..., t].any(axis=(0, 1)))[0] + low
      assert lo <= rows.min() and rows.max() <= hi
    shifts.add(k)
  assert min(shifts) < 0 < max(shifts) and len(shifts) >= 3
  # Without ranges the same draws move windows further (the whole pitch window is free).
  free = _config(data_dir, ("data.track_ranges", "()"))
  wide = pipeline._RollMaker(table, free).rolls(tf.constant(windows), tf.constant(draws))
  assert not np.array_equal(wide["pianoroll"].numpy(), rolls)


def test_ranged_stream_is_step_addressable(built):
  data_dir, _ = built
  config = _config(data_dir, ("loss.n_critic", "2"))
  pipeline.resolve_track_facts(config)
  table = pipeline.load_song_table(config, "train")
  kw = dict(process_index=0, process_count=1, table=table)
  first = list(pipeline.make_dataset(config, start_step=0, **kw).take(4).as_numpy_iterator())
  resumed = list(pipeline.make_dataset(config, start_step=2, **kw).take(2).as_numpy_iterator())
  for a, b in zip(first[2:], resumed):
    np.testing.assert_array_equal(a["pianoroll"], b["pianoroll"])
  assert first[0]["pianoroll"].shape == (2, 8, 2, 16, 84, 4)
