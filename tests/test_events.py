"""REMI-like event tokens."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from jaxgan.midi import MidiConfig, Song, Track, Vocabulary, decode, decode_midi, encode, load_song
from jaxgan.midi.events import bin_tempo, bin_velocity, tempo_bin, velocity_bin
from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK, VELOCITY, normalize_notes

CFG = MidiConfig(steps_per_beat=4)
WALTZ = MidiConfig(steps_per_beat=2, lowest_pitch=48, num_pitches=24, track_mode="parts",
                   track_names=("melody", "bass"), meters=((3, 4), (6, 8)), max_duration_beats=4)


def notes_of(song: Song) -> list[tuple[int, ...]]:
  return [tuple(int(x) for x in row) for row in song.notes]


@st.composite
def songs(draw, config=CFG, meters=((4, 4), (3, 4), (6, 8), (12, 8), (5, 4))):
  time_signature = draw(st.sampled_from(config.meters or meters))
  steps_per_bar = config.steps_per_bar(time_signature)
  num_bars = draw(st.integers(0, 5))
  steps = num_bars * steps_per_bar
  low, high = config.lowest_pitch, config.lowest_pitch + config.num_pitches
  notes = np.zeros((0, 5), np.int64)
  if steps:
    note = st.tuples(
      st.integers(0, config.num_tracks - 1),
      st.integers(low, min(low + 3, high - 1)) | st.integers(low, high - 1),
      st.integers(0, steps - 1),
      st.integers(1, config.max_duration_beats * config.steps_per_beat),
      st.integers(1, 127))
    notes = np.array(draw(st.lists(note, max_size=50)), np.int64).reshape(-1, 5)
  notes, _ = normalize_notes(notes)  # tails may ring past the last bar: tokens keep them
  tempos = draw(st.lists(st.floats(10.0, 400.0, width=32) | st.sampled_from([120.0, 60.0]),
                         min_size=num_bars, max_size=num_bars))
  return Song(notes=notes, num_bars=num_bars, steps_per_beat=config.steps_per_beat,
              time_signature=time_signature, tempos=np.array(tempos, np.float32),
              tracks=config.tracks(), source="generated")


def assert_same(back: Song, song: Song):
  assert [n[:4] for n in notes_of(back)] == [n[:4] for n in notes_of(song)]
  assert [velocity_bin(v) for v in back.notes[:, VELOCITY]] == [
    velocity_bin(v) for v in song.notes[:, VELOCITY]]
  assert back.num_bars == song.num_bars and back.time_signature == song.time_signature
  assert [tempo_bin(t) for t in back.tempos] == [tempo_bin(t) for t in song.tempos]
  assert back.steps_per_beat == song.steps_per_beat


def test_vocabulary_layout():
  vocab = Vocabulary(CFG)
  assert (vocab.pad, vocab.bos, vocab.eos, vocab.mask) == (0, 1, 2, 3)
  assert vocab.token_name(0) == "PAD" and vocab.token_name(vocab.bar) == "Bar"
  names = [vocab.token_name(i) for i in range(vocab.size)]
  assert len(set(names)) == vocab.size == len(vocab)
  sizes = {k: b - a for k, (a, b) in vocab.ranges.items()}
  # 7/4 is the longest common meter: 28 steps at 4 per beat; 16 beats of duration.
  assert sizes == {"Bar": 1, "Position": 28, "Track": 5, "Pitch": 84, "Duration": 64,
                   "Velocity": 32, "Tempo": 37, "TimeSig": 14}
  assert vocab.size == 4 + sum(sizes.values())
  assert vocab.token_name(vocab.pitch(60)) == "Pitch_60"
  assert vocab.token_name(vocab.duration(1)) == "Duration_1"
  assert vocab.token_name(vocab.tempo(120)) == "Tempo_120.00"
  assert vocab.token_name(vocab.meter((6, 8))) == "TimeSig_6/8"
  assert vocab.token_name(vocab.size) == f"<invalid {vocab.size}>"
  assert vocab.token_id("Velocity_82") == vocab.velocity(80)
  # Meters that do not fit the grid are left out; allowed meters are all there is.
  assert (7, 8) not in Vocabulary(MidiConfig(steps_per_beat=1)).meters
  assert Vocabulary(WALTZ).meters == ((3, 4), (6, 8))
  assert Vocabulary(WALTZ).ranges["Position"] == (5, 11)


def test_bins():
  assert [velocity_bin(v) for v in (1, 3, 4, 127)] == [0, 0, 1, 31]
  assert all(velocity_bin(bin_velocity(velocity_bin(v))) == velocity_bin(v) for v in range(1, 128))
  assert [bin_tempo(tempo_bin(t)) for t in (120, 60, 30, 240, 10, 1000)] == [
    120.0, 60.0, 30.0, 240.0, 30.0, 240.0]
  assert all(tempo_bin(bin_tempo(b)) == b for b in range(37))
  assert tempo_bin(float("nan")) == tempo_bin(120)


def test_save_and_load(tmp_path):
  vocab = Vocabulary(WALTZ)
  vocab.save(tmp_path / "vocab.json")
  saved = json.loads((tmp_path / "vocab.json").read_text())
  assert saved["version"] == Vocabulary.VERSION
  assert MidiConfig.from_json(saved["config"]) == WALTZ
  assert saved["tokens"][:5] == ["PAD", "BOS", "EOS", "MASK", "Bar"]
  loaded = Vocabulary.load(tmp_path / "vocab.json")
  assert loaded == vocab and loaded.size == vocab.size and loaded.config == WALTZ
  assert loaded != Vocabulary(CFG)
  saved["version"] = 99
  (tmp_path / "old.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="version 99"):
    Vocabulary.load(tmp_path / "old.json")
  saved["version"] = Vocabulary.VERSION
  saved["tokens"][7] = "Position_99"
  (tmp_path / "bad.json").write_text(json.dumps(saved))
  with pytest.raises(ValueError, match="corrupt"):
    Vocabulary.load(tmp_path / "bad.json")


def test_encode_exact_tokens():
  vocab = Vocabulary(WALTZ)
  notes = [[0, 60, 0, 2, 90], [1, 48, 0, 6, 40], [0, 62, 2, 1, 90], [0, 64, 2, 1, 90],
           [1, 50, 8, 2, 64]]
  song = Song(notes=np.array(notes, np.int32), num_bars=3, steps_per_beat=2,
              time_signature=(3, 4), tempos=np.array([100, 100, 61], np.float32),
              tracks=WALTZ.tracks())
  tokens = encode(song, vocab)
  assert tokens.dtype == np.int32
  assert [vocab.token_name(t) for t in tokens] == [
    "BOS", "TimeSig_3/4",
    "Bar", "Tempo_100.91",
    "Position_0", "Track_0", "Pitch_60", "Duration_2", "Velocity_90",
    "Track_1", "Pitch_48", "Duration_6", "Velocity_42",
    "Position_2", "Track_0", "Pitch_62", "Duration_1", "Velocity_90",
    "Pitch_64", "Duration_1", "Velocity_90",
    "Bar",
    "Position_2", "Track_1", "Pitch_50", "Duration_2", "Velocity_66",
    "Bar", "Tempo_60.00",
    "EOS"]
  back = decode(tokens, vocab)
  assert_same(back, song)
  assert back.notes[:, VELOCITY].tolist() == [90, 42, 90, 90, 66]
  np.testing.assert_allclose(back.tempos, [100.91, 100.91, 60], atol=0.01)


@settings(max_examples=100, deadline=None)
@given(songs())
def test_round_trip(song):
  vocab = Vocabulary(CFG)
  tokens = encode(song, vocab)
  assert tokens[0] == vocab.bos and tokens[-1] == vocab.eos
  assert int((tokens == vocab.bar).sum()) == song.num_bars
  assert 0 < tokens.min() and tokens.max() < vocab.size
  back = decode(tokens, vocab, source="x")
  assert_same(back, song)
  assert back.tracks == song.tracks and back.source == "x"
  # Decoding is a fixed point from there on, velocities and tempos included.
  again = decode(encode(back, vocab), vocab)
  assert notes_of(again) == notes_of(back) and again.tempos.tolist() == back.tempos.tolist()
  # Padding after EOS (as in a batch) and anything past it changes nothing.
  padded = np.concatenate([tokens, [vocab.pad] * 5, tokens[1:]])
  assert notes_of(decode(padded, vocab)) == notes_of(back)


@settings(max_examples=30, deadline=None)
@given(songs(WALTZ))
def test_round_trip_parts_and_allowed_meters(song):
  vocab = Vocabulary(WALTZ)
  tracks = (Track("melody", 73), Track("bass", 32))
  back = decode(encode(song, vocab), vocab, tracks=tracks)
  assert_same(back, song)
  assert back.tracks == tracks


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(-3, 600) | st.integers(4, 40), max_size=300))
def test_decoding_junk_never_raises(ids):
  vocab = Vocabulary(CFG)
  song = decode(np.array(ids, np.int64), vocab)
  n = song.notes
  assert n.dtype == np.int32 and n.shape[1] == 5
  assert song.tempos.shape == (song.num_bars,)
  assert song.time_signature in vocab.meters
  if len(n):
    assert (n[:, ONSET] < song.num_steps).all() and (n[:, ONSET] >= 0).all()
    assert (n[:, DURATION] >= 1).all() and (n[:, DURATION] <= 64).all()
    assert (n[:, TRACK] < 5).all()
    assert ((n[:, PITCH] >= 24) & (n[:, PITCH] < 108)).all()
    key = n[:, ONSET].astype(np.int64) * 10**6 + n[:, TRACK] * 1000 + n[:, PITCH]
    assert (np.diff(key) > 0).all()  # sorted, no duplicates
  again = decode(encode(song, vocab), vocab)
  assert notes_of(again) == notes_of(song)


def test_decoding_skips_what_makes_no_sense():
  vocab = Vocabulary(WALTZ)
  v = vocab.token_id
  seq = [
    v("Pitch_60"), v("Duration_1"), v("Velocity_66"),               # before any bar
    v("TimeSig_6/8"), v("Tempo_60.00"), v("Bar"),
    v("Position_3"), v("Track_1"), v("Pitch_50"), v("Duration_2"), v("Velocity_66"),
    v("Pitch_51"), v("Velocity_66"),                                 # no duration: dropped
    v("MASK"), v("Pitch_52"), v("Duration_1"), v("Duration_3"), v("Velocity_66"),  # two durations
    v("Position_5"), v("Pitch_53"), v("Duration_8"), v("Velocity_2"),  # track carries over
    v("TimeSig_3/4"),                                                # too late: ignored
    v("Bar"), v("Pitch_54"), v("Duration_1"), v("Velocity_66"),     # no position yet
    v("Position_2"), v("Track_0"), v("Pitch_55"), v("BOS"), v("Duration_1"), v("Velocity_66"),
    9999, -1,
    v("EOS"), v("Bar"), v("Position_0"), v("Pitch_56"), v("Duration_1"), v("Velocity_66"),
  ]
  song = decode(np.array(seq), vocab)
  assert song.time_signature == (6, 8) and song.num_bars == 2
  assert notes_of(song) == [(1, 50, 3, 2, 66), (1, 53, 5, 8, 2), (0, 55, 8, 1, 66)]
  assert song.tempos.tolist() == [60.0, 60.0]
  empty = decode(np.zeros(0, np.int32), vocab)
  assert empty.num_bars == 0 and empty.num_notes == 0 and empty.time_signature == (3, 4)
  with pytest.raises(ValueError, match="one sequence"):
    decode(np.zeros((2, 3), np.int32), vocab)


def test_max_bars_bounds_decoding():
  vocab = Vocabulary(MidiConfig(steps_per_beat=4, max_bars=3))
  assert decode(np.full(1000, vocab.bar), vocab).num_bars == 3


def test_encode_rejects_what_the_vocabulary_cannot_hold():
  vocab = Vocabulary(WALTZ)
  base = dict(num_bars=1, steps_per_beat=2, tempos=np.array([120], np.float32),
              tracks=WALTZ.tracks())
  with pytest.raises(ValueError, match="meter 4/4 not in the vocabulary"):
    encode(Song(notes=np.zeros((0, 5), np.int32), time_signature=(4, 4), **base), vocab)
  with pytest.raises(ValueError, match="duration"):
    encode(Song(notes=np.array([[0, 60, 0, 9, 80]], np.int32), time_signature=(3, 4), **base),
           vocab)
  with pytest.raises(ValueError, match="pitch"):
    encode(Song(notes=np.array([[0, 30, 0, 1, 80]], np.int32), time_signature=(3, 4), **base),
           vocab)


def test_real_file_to_tokens_and_midi():
  music21 = pytest.importorskip("music21")
  import io
  score = music21.corpus.parse("bach/bwv66.6")
  buf = io.BytesIO()
  mf = music21.midi.translate.music21ObjectToMidiFile(score)
  buf.write(mf.writestr())
  config = MidiConfig(track_mode="parts", track_names=("s", "a", "t", "b"))
  song, _ = load_song(buf.getvalue(), config=config)
  vocab = Vocabulary(config)
  tokens = encode(song, vocab)
  back = decode(tokens, vocab, tracks=song.tracks)
  assert_same(back, song)
  midi = decode_midi(tokens, vocab)
  assert sum(len(i.notes) for i in midi.instruments) == song.num_notes
  assert midi.time_signature_changes[0].numerator == 4
