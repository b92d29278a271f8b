"""The multi-track piano-roll."""

from __future__ import annotations

import io

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from jaxgan.midi import (
  CELL_HELD, CELL_ONSET, MidiConfig, Song, Track, from_pianoroll, load_song, pianoroll_to_midi,
  song_to_midi, to_pianoroll)
from jaxgan.midi.song import DURATION, ONSET as ONSET_COL, normalize_notes

CFG = MidiConfig(steps_per_beat=4)
SMALL = MidiConfig(steps_per_beat=2, lowest_pitch=60, num_pitches=6, track_mode="parts",
                   track_names=("a", "b"), max_duration_beats=3)


def notes_of(song: Song) -> list[tuple[int, ...]]:
  return [tuple(int(x) for x in row) for row in song.notes]


def make_song(notes, config, time_signature=(4, 4), num_bars=1, tempos=None) -> Song:
  notes, _ = normalize_notes(np.array(notes, np.int32).reshape(-1, 5))
  return Song(notes=notes, num_bars=num_bars, steps_per_beat=config.steps_per_beat,
              time_signature=time_signature,
              tempos=np.full(num_bars, 120.0, np.float32) if tempos is None else tempos,
              tracks=config.tracks(), source="test")


@st.composite
def songs(draw, config=CFG):
  time_signature = draw(st.sampled_from([(4, 4), (3, 4), (6, 8), (7, 8)]))
  steps_per_bar = config.steps_per_bar(time_signature)
  num_bars = draw(st.integers(1, 4))
  steps = num_bars * steps_per_bar
  low, high = config.lowest_pitch, config.lowest_pitch + config.num_pitches
  note = st.tuples(
    st.integers(0, config.num_tracks - 1),
    st.integers(low, min(low + 3, high - 1)) | st.integers(low, high - 1),  # crowd some pitches
    st.integers(0, steps - 1),
    st.integers(1, 3) | st.integers(1, config.max_duration_beats * config.steps_per_beat),
    st.integers(1, 127))
  notes, _ = normalize_notes(np.array(draw(st.lists(note, max_size=60))).reshape(-1, 5))
  notes[:, DURATION] = np.minimum(notes[:, DURATION], steps - notes[:, ONSET_COL])
  return Song(notes=notes, num_bars=num_bars, steps_per_beat=config.steps_per_beat,
              time_signature=time_signature, tempos=np.full(num_bars, 100.0, np.float32),
              tracks=config.tracks(), source="generated")


def test_cells_of_repeated_and_adjacent_notes():
  # Track 0: E4 twice back to back, then a note ringing over the bar line. Track 1: one step.
  song = make_song([[0, 64, 0, 2, 90], [1, 60, 1, 1, 50], [0, 64, 2, 3, 90], [0, 61, 7, 3, 70]],
                   SMALL, num_bars=2)
  roll = to_pianoroll(song, SMALL)
  assert roll.shape == (2, 8, 6, 2) and roll.dtype == np.uint8
  flat = roll.reshape(16, 6, 2)
  assert flat[:, 4, 0].tolist() == [CELL_ONSET, CELL_HELD, CELL_ONSET, CELL_HELD, CELL_HELD] + [0] * 11
  assert flat[:, 1, 0].tolist() == [0] * 7 + [CELL_ONSET, CELL_HELD, CELL_HELD] + [0] * 6
  assert flat[:, 0, 1].tolist() == [0, CELL_ONSET] + [0] * 14
  assert int(np.count_nonzero(roll)) == 9
  back = from_pianoroll(roll, SMALL, velocity=64)
  assert [n[:4] for n in notes_of(back)] == [n[:4] for n in notes_of(song)]
  assert set(back.notes[:, 4].tolist()) == {64}
  # As a mere activity roll the back to back E4s become one note.
  activity = from_pianoroll(roll > 0, SMALL)
  assert [n[:4] for n in notes_of(activity)] == [(0, 64, 0, 5), (1, 60, 1, 1), (0, 61, 7, 3)]
  # 0/1 integers are read as activity too.
  assert notes_of(from_pianoroll((roll > 0).astype(np.uint8), SMALL)) == notes_of(activity)


@settings(max_examples=80, deadline=None)
@given(songs())
def test_round_trip(song):
  roll = to_pianoroll(song, CFG)
  assert roll.shape == (song.num_bars, song.steps_per_bar, CFG.num_pitches, CFG.num_tracks)
  assert int((roll == CELL_ONSET).sum()) == song.num_notes
  assert int((roll > 0).sum()) == int(song.notes[:, DURATION].sum())
  back = from_pianoroll(roll, CFG, time_signature=song.time_signature, tempo=100.0, velocity=7)
  assert [n[:4] for n in notes_of(back)] == [n[:4] for n in notes_of(song)]
  assert back.num_bars == song.num_bars and back.time_signature == song.time_signature
  assert back.tracks == song.tracks and back.tempos.tolist() == [100.0] * song.num_bars


@settings(max_examples=30, deadline=None)
@given(songs(SMALL))
def test_round_trip_small_config(song):
  roll = to_pianoroll(song, SMALL)
  back = from_pianoroll(roll, SMALL, time_signature=song.time_signature)
  assert [n[:4] for n in notes_of(back)] == [n[:4] for n in notes_of(song)]


def test_long_activity_runs_are_split():
  roll = np.zeros((3, 8, 6, 2), bool)  # 24 steps; notes at most 6 steps in SMALL
  roll[0, 1:, 2, 1] = True
  roll[1, :, 2, 1] = True
  roll[2, :4, 2, 1] = True  # one run of 7 + 8 + 4 = 19 steps from step 1
  song = from_pianoroll(roll, SMALL)
  assert [n[:4] for n in notes_of(song)] == [
    (1, 62, 1, 6), (1, 62, 7, 6), (1, 62, 13, 6), (1, 62, 19, 1)]


def test_notes_past_the_end_are_cut():
  song = make_song([[0, 60, 6, 4, 80]], SMALL)
  roll = to_pianoroll(song, SMALL)
  assert roll[0, 6:, 0, 0].tolist() == [CELL_ONSET, CELL_HELD]
  assert notes_of(from_pianoroll(roll, SMALL)) == [(0, 60, 6, 2, 80)]


def test_tempo_per_bar_and_tracks_pass_through():
  roll = np.zeros((2, 6, 6, 2), np.uint8)  # 6/8 is six steps at two steps per beat
  roll[1, 0, 0, 0] = CELL_ONSET
  tracks = (Track("violin", 40), Track("cello", 42))
  song = from_pianoroll(roll, SMALL, time_signature=(6, 8), tempo=[90, 60], tracks=tracks,
                        source="gen")
  assert song.time_signature == (6, 8) and song.steps_per_bar == 6
  assert song.tempos.tolist() == [90.0, 60.0] and song.source == "gen"
  assert song.tracks == tracks and notes_of(song) == [(0, 60, 6, 1, 80)]


def test_bad_rolls():
  with pytest.raises(ValueError, match="values must be 0, 1"):
    from_pianoroll(np.full((1, 8, 6, 2), 0.5), SMALL)
  with pytest.raises(ValueError, match="does not fit"):
    from_pianoroll(np.zeros((1, 8, 6, 2), bool), SMALL, time_signature=(3, 4))
  with pytest.raises(ValueError, match="bars, steps, pitches, tracks"):
    from_pianoroll(np.zeros((8, 6, 2), bool), SMALL)
  with pytest.raises(ValueError, match="pitches outside"):
    to_pianoroll(make_song([[0, 59, 0, 1, 80]], SMALL), SMALL)
  with pytest.raises(ValueError, match="steps_per_beat"):
    to_pianoroll(make_song([], CFG), SMALL)


def test_pianoroll_to_midi_and_back():
  song = make_song([[0, 36, 0, 4, 80], [1, 48, 0, 2, 80], [1, 48, 2, 2, 80], [4, 72, 10, 6, 80]],
                   CFG, time_signature=(3, 4), num_bars=2)
  midi = pianoroll_to_midi(to_pianoroll(song, CFG), CFG, time_signature=(3, 4), tempo=90.0)
  assert midi.instruments[0].is_drum and [i.program for i in midi.instruments] == [0, 0, 24, 32, 48]
  buf = io.BytesIO()
  midi.dump(file=buf)
  back, _ = load_song(buf.getvalue(), config=CFG)
  assert notes_of(back) == notes_of(song)
  assert back.time_signature == (3, 4)
  np.testing.assert_allclose(back.tempos, [90.0, 90.0], rtol=1e-5)
  # The same through song_to_midi directly.
  assert len(song_to_midi(song).instruments[1].notes) == 2
