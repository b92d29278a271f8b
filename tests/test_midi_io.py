"""Loading, validating, quantizing and writing MIDI files."""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import time
import tracemalloc

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from jaxgan.midi import (
  MidiConfig, MidiError, Song, Track, load_midi, load_song, quantize, song_to_midi, write_midi)
from jaxgan.midi.io import COUNT_KEYS, quantize_segments
from jaxgan.midi.song import DURATION, ONSET, normalize_notes
from jaxgan.midi.tracks import LPD5_TRACKS, LPD17_TRACKS

# ---------------------------------------------------------------------------------------------
# A tiny Standard MIDI File writer, so that every byte of a test file is deliberate.


def vlq(n: int) -> bytes:
  out = [n & 0x7F]
  n >>= 7
  while n:
    out.append(0x80 | (n & 0x7F))
    n >>= 7
  return bytes(reversed(out))


def on(delta, pitch, velocity=100, channel=0):
  return vlq(delta) + bytes([0x90 | channel, pitch, velocity])


def off(delta, pitch, channel=0):
  return vlq(delta) + bytes([0x80 | channel, pitch, 0])


def program(delta, prog, channel=0):
  return vlq(delta) + bytes([0xC0 | channel, prog])


def meta(delta, kind, payload=b""):
  return vlq(delta) + bytes([0xFF, kind]) + vlq(len(payload)) + payload


def tempo(delta, qpm):
  return meta(delta, 0x51, round(60_000_000 / qpm).to_bytes(3, "big"))


def meter(delta, num, den):
  return meta(delta, 0x58, bytes([num, den.bit_length() - 1, 24, 8]))


def eot(delta=0):
  return meta(delta, 0x2F)


def mtrk(*events: bytes, end=True) -> bytes:
  body = b"".join(events) + (eot() if end else b"")
  return b"MTrk" + len(body).to_bytes(4, "big") + body


def smf(*tracks: bytes, tpb=480, fmt=1, num_tracks=None) -> bytes:
  n = len(tracks) if num_tracks is None else num_tracks
  header = b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big") + n.to_bytes(2, "big")
  return header + tpb.to_bytes(2, "big") + b"".join(tracks)


def notes_of(song: Song) -> list[tuple[int, ...]]:
  return [tuple(int(x) for x in row) for row in song.notes]


SIMPLE = smf(mtrk(tempo(0, 120), meter(0, 4, 4)),
             mtrk(on(0, 60), off(480, 60), on(0, 64), off(480, 64)))
CFG4 = MidiConfig(steps_per_beat=4)

# ---------------------------------------------------------------------------------------------
# Config


def test_config_json_round_trip():
  cfg = MidiConfig(steps_per_beat=4, track_mode="parts", track_names=["s", "a"],
                   meters=[[4, 4], [3, 4]], out_of_range="fold")
  assert cfg.track_names == ("s", "a") and cfg.meters == ((4, 4), (3, 4))
  d = json.loads(json.dumps(cfg.to_json()))
  assert MidiConfig.from_json(d) == cfg
  assert MidiConfig.from_json({}) == MidiConfig()
  assert cfg.num_tracks == 2 and MidiConfig().num_tracks == 5
  assert MidiConfig(track_mode="lpd17").tracks() == LPD17_TRACKS
  assert MidiConfig().tracks() == LPD5_TRACKS
  assert [t.program for t in LPD5_TRACKS] == [0, 0, 24, 32, 48]
  assert LPD5_TRACKS[0].is_drum and [t.name for t in LPD5_TRACKS] == [
    "Drums", "Piano", "Guitar", "Bass", "Strings"]


@pytest.mark.parametrize("kw, field", [
  ({"steps_per_beat": 0}, "steps_per_beat"),
  ({"steps_per_beat": 2.5}, "steps_per_beat"),
  ({"lowest_pitch": 128}, "lowest_pitch"),
  ({"lowest_pitch": 100, "num_pitches": 40}, "num_pitches"),
  ({"track_mode": "lpd4"}, "track_mode"),
  ({"track_mode": "parts"}, "track_names"),
  ({"track_names": ("a",)}, "track_names"),
  ({"out_of_range": "clip"}, "out_of_range"),
  ({"meters": ((3, 5),)}, "meters"),
  ({"meters": ((7, 16),), "steps_per_beat": 1}, "meters"),
  ({"max_notes": 0}, "max_notes"),
  ({"max_bars": -1}, "max_bars"),
])
def test_config_validation_names_the_field(kw, field):
  with pytest.raises(ValueError, match=field):
    MidiConfig(**kw)


def test_config_from_json_rejects_unknown_fields():
  with pytest.raises(ValueError, match="steps_per_bit"):
    MidiConfig.from_json({"steps_per_bit": 4})


# ---------------------------------------------------------------------------------------------
# Malformed and hostile files: always one MidiError with a reason, fast.


def reason(source, **kw) -> str:
  with pytest.raises(MidiError) as info:
    load_song(source, **kw)
  err = info.value
  assert str(err) == f"{err.path}: {err.reason}"
  return err.reason


def test_error_carries_path_and_pickles(tmp_path):
  path = tmp_path / "bad.mid"
  path.write_bytes(b"hello")
  with pytest.raises(MidiError) as info:
    load_midi(path)
  err = info.value
  assert err.path == str(path) and err.reason == "not a MIDI file (no MThd header)"
  assert isinstance(err, ValueError)
  again = pickle.loads(pickle.dumps(err))
  assert (again.path, again.reason, str(again)) == (err.path, err.reason, str(err))
  with pytest.raises(MidiError, match="^song.mid: not a MIDI"):
    load_midi(b"hello", name="song.mid")


def test_empty_and_random_bytes(tmp_path):
  assert reason(b"") == "empty file"
  (tmp_path / "zero.mid").write_bytes(b"")
  assert reason(tmp_path / "zero.mid") == "empty file"
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, 4000, np.uint8).tobytes()
  assert reason(noise) == "not a MIDI file (no MThd header)"
  assert reason(b"MThd\x00\x00") == "truncated header"


def test_truncated_file():
  assert "truncated in track 1" == reason(SIMPLE[:-7])
  assert reason(SIMPLE[:30]).startswith("truncated")
  # A header that promises more tracks than there are.
  assert reason(smf(mtrk(on(0, 60), off(10, 60)), num_tracks=3)) == "truncated: found 1 of 3 tracks"


def test_division():
  assert reason(smf(mtrk(on(0, 60), off(10, 60)), tpb=0)) == "ticks_per_beat is 0"
  smpte = smf(mtrk(on(0, 60), off(10, 60)), tpb=0xE728)  # -25 fps, 40 ticks per frame
  assert "SMPTE" in reason(smpte)
  # quantize guards hand-built files too.
  midi = load_midi(SIMPLE)
  midi.ticks_per_beat = -5
  with pytest.raises(MidiError, match="ticks_per_beat is -5"):
    quantize(midi, MidiConfig(), source="x")


def test_no_notes():
  assert reason(smf(mtrk(tempo(0, 100)), mtrk(program(0, 3)))) == "no notes"
  # Only note-offs, or a note-on of velocity 0 (which is a note-off), make no notes either.
  assert reason(smf(mtrk(off(0, 60), on(10, 62, velocity=0)))) == "no notes"


def test_absurd_delta_times_are_fast_and_small():
  # Each event 0x0FFFFFFF ticks after the last: a tick-indexed array would need terabytes.
  events = [on(0x0FFFFFFF, 60 + i % 12) if i % 2 == 0 else off(0x0FFFFFFF, 60 + (i - 1) % 12)
            for i in range(20_000)]
  data = smf(mtrk(*events))
  tracemalloc.start()
  start = time.perf_counter()
  try:
    assert reason(data) == "song is longer than max_bars (4096 bars)"
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert elapsed < 5.0
  assert peak < 50 * 2**20
  # One note, then an end of track an absurd time later, is too long as well.
  assert "longer than max_bars" in reason(smf(mtrk(on(0, 60), off(10, 60), eot(0x0FFFFFFF),
                                                   end=False)))


def test_oversize_file_is_refused_before_reading(tmp_path):
  cfg = MidiConfig(max_file_bytes=40)
  assert len(SIMPLE) > 40
  assert reason(SIMPLE, config=cfg) == "file is larger than max_file_bytes (40)"
  path = tmp_path / "big.mid"
  path.write_bytes(SIMPLE)
  assert reason(path, config=cfg) == "file is larger than max_file_bytes (40)"
  assert reason(io.BytesIO(SIMPLE), config=cfg) == "file is larger than max_file_bytes (40)"
  assert load_song(SIMPLE, config=MidiConfig(max_file_bytes=len(SIMPLE)))[0].num_notes == 2


def test_too_many_notes_and_events_and_bars():
  data = smf(mtrk(*[on(0, 60 + i) for i in range(11)], *[off(10, 60 + i) for i in range(11)]))
  assert reason(data, config=MidiConfig(max_notes=10)) == "more than max_notes (10) notes"
  assert load_song(data, config=MidiConfig(max_notes=11))[0].num_notes == 11
  assert reason(data, config=MidiConfig(max_events=5)) == "more than max_events (5) MIDI events"
  long = smf(mtrk(on(0, 60), off(480 * 4 * 3, 60)))  # three bars of 4/4
  assert reason(long, config=MidiConfig(max_bars=2)) == "song is longer than max_bars (2 bars)"
  assert load_song(long, config=MidiConfig(max_bars=3))[0].num_bars == 3


def test_paths_that_are_not_files(tmp_path):
  assert reason(tmp_path) == "not a regular file"
  assert reason(tmp_path / "missing.mid").startswith("cannot read: ")


@pytest.mark.parametrize("data, expected", [
  (smf(b"MTrk\x00\x00\x00\x04\x00\x3c\x40\x00"), "running status without a status byte in track 0"),
  (smf(mtrk(b"\x00\xF4")), "undefined status byte 0xF4 in track 0"),
  (smf(mtrk(b"\x00\x90\x3c\xC0")), "data byte above 127 in track 0"),
  (smf(mtrk(b"\xFF\xFF\xFF\xFF\x7F\x90\x3c\x40")),
   "invalid variable-length number (more than 4 bytes)"),
  (smf(mtrk(meta(0, 0x58, bytes([0, 2, 24, 8])), on(0, 60), off(1, 60))),
   "invalid time signature 0/4 in track 0"),
  (smf(mtrk(meta(0, 0x58, bytes([4, 40, 24, 8])))), "invalid time signature 4/2^40 in track 0"),
  (smf(mtrk(on(0, 60), off(10, 60)), fmt=2), "format 2 (independent sequences) is not supported"),
  (smf(mtrk(on(0, 60), off(10, 60)), fmt=7), "unknown MIDI format 7"),
  (smf(), "no tracks"),
  (smf(b"MT\x01k\x00\x00\x00\x00"), "corrupt chunk header before track 0"),
  # A meta event claiming more bytes than its chunk has.
  (smf(b"MTrk\x00\x00\x00\x06\x00\xFF\x01\x7F\x41\x42" + mtrk(on(0, 60), off(1, 60))),
   "event runs past the end of track 0"),
])
def test_corrupt_events(data, expected):
  assert reason(data) == expected


def test_tolerated_oddities():
  # Running status, note-on velocity 0 as note-off, unknown chunks, sysex, stray system bytes,
  # a missing end-of-track and bytes after it.
  body = (b"\x00\x90\x3c\x40" b"\x60\x3c\x00" b"\x00\x3e\x40" b"\x60\x3e\x00"
          b"\x00\xF0\x03\x7E\x7F\xF7" b"\x00\xFE")
  data = smf(b"XFIH\x00\x00\x00\x02ab" + mtrk(body, end=False) + b"MTrk\x00\x00\x00\x05"
             + eot() + b"\x00\x90", num_tracks=2)
  song, counts = load_song(data, config=CFG4)
  assert notes_of(song) == [(1, 60, 0, 1, 64), (1, 62, 1, 1, 64)]
  assert counts["notes_unterminated"] == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_files_raise_only_midi_error(data):
  raw = bytearray(SIMPLE)
  for _ in range(data.draw(st.integers(1, 6))):
    op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
    if op == "flip" and raw:
      raw[i] = data.draw(st.integers(0, 255))
    elif op == "cut":
      del raw[i:i + data.draw(st.integers(1, 8))]
    else:
      raw[i:i] = bytes(data.draw(st.lists(st.integers(0, 255), max_size=8)))
  try:
    song, counts = load_song(bytes(raw), config=CFG4)
  except MidiError as e:
    assert e.reason and e.path == "<bytes>"
  else:
    assert song.num_notes == counts["notes_kept"] > 0


# Meter changes, a pickup, a short bar, a restatement off the grid and a tempo change.
METERS = smf(mtrk(tempo(0, 90), meter(0, 1, 4), on(0, 60), off(480, 60), meter(0, 4, 4),
                  on(0, 62), off(1920, 62), meter(0, 2, 4), on(0, 64), off(960, 64),
                  meter(0, 3, 4), tempo(0, 70), on(0, 65), off(2880, 65), meter(480, 3, 4),
                  on(0, 67), off(1440, 67), meter(0, 1, 4), on(0, 69), off(480, 69)),
             mtrk(program(0, 33), on(0, 40), off(7000, 40), on(0, 41), off(100, 41)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mangled_meter_files_give_consistent_segments(data):
  raw = bytearray(METERS)
  for _ in range(data.draw(st.integers(1, 6))):
    op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
    if op == "flip" and raw:
      raw[i] = data.draw(st.integers(0, 255))
    elif op == "cut":
      del raw[i:i + data.draw(st.integers(1, 8))]
    else:
      raw[i:i] = bytes(data.draw(st.lists(st.integers(0, 255), max_size=8)))
  try:
    segments, counts = segments_of(bytes(raw))
  except MidiError as e:
    assert e.reason and e.path == "<bytes>"
    return
  kept = [s.song for s in segments if s.song is not None]
  assert kept and sum(s.num_notes for s in kept) == counts["notes_kept"]
  offsets = [s.bar_offset for s in segments]
  assert offsets == sorted(offsets) and offsets[0] == 0
  for song in kept:
    assert song.notes[:, ONSET].min() >= 0
    assert (song.notes[:, ONSET] < song.num_bars * song.steps_per_bar).all()
    assert len(song.tempos) == song.num_bars


def test_meter_seed_file():
  segments, counts = segments_of(METERS)
  # Bars of the file: 0 the 1/4 pickup, 1 in 4/4, 2 in 2/4 (the 3/4's upbeat), 3-5 in 3/4
  # (5 cut short by the 3/4 restated off its grid), 6-7 in 3/4 and a closing 1/4 bar.
  assert [(s.time_signature, s.bar_offset, s.pickup) for s in segments] == [
    ((4, 4), 0, True), ((3, 4), 2, True), ((3, 4), 6, False)]
  assert [s.song.num_bars for s in segments] == [2, 3, 2]
  assert counts["pickups"] == 2 and counts["notes_cut_at_meter_change"] == 1  # the bass
  np.testing.assert_allclose(segments[1].song.tempos, [90, 70, 70], rtol=1e-6)
  assert notes_of(segments[2].song)[-1] == (1, 69, 12, 4, 100)  # in the closing bar


# ---------------------------------------------------------------------------------------------
# miditoolkit 1.0.1 pitfalls


def test_tempo_map_is_merged_sorted_and_not_erased():
  # miditoolkit keeps tempos in track order and lets a tick-0 tempo in a later track wipe the
  # map; here the later track holds the first tempos of the song.
  data = smf(
    mtrk(tempo(0, 100), tempo(1920 * 2, 90)),
    mtrk(tempo(0, 120), tempo(1920, 60), on(0, 60), off(1920 * 3, 60)),
  )
  midi = load_midi(data)
  assert [(round(t.tempo, 3), t.time) for t in midi.tempo_changes] == [
    (120.0, 0), (60.0, 1920), (90.0, 3840)]
  song, _ = load_song(data, config=CFG4)
  np.testing.assert_allclose(song.tempos, [120, 60, 90, 90], rtol=1e-6)
  # No tempo at all: 120 from the start.
  song, _ = load_song(smf(mtrk(on(0, 60), off(10, 60))))
  assert song.tempos.tolist() == [120.0] and song.tempos.dtype == np.float32


def test_tempo_per_bar_follows_quantized_changes():
  # A tempo change two ticks after the downbeat still belongs to that bar.
  data = smf(mtrk(tempo(0, 100), tempo(1920 + 2, 150), tempo(1000, 80), on(0, 60),
                  off(1920 * 3, 60)))
  song, _ = load_song(data, config=CFG4)
  np.testing.assert_allclose(song.tempos, [100, 150, 80, 80, 80], rtol=1e-6)


def test_time_signatures_repeated_per_track_are_one():
  data = smf(mtrk(meter(0, 3, 4)), mtrk(meter(0, 3, 4), on(0, 60), off(1440 * 2, 60)),
             mtrk(meter(0, 3, 4), meter(1440, 3, 4), on(0, 64), off(10, 64)))
  midi = load_midi(data)
  assert [(t.numerator, t.denominator, t.time) for t in midi.time_signature_changes] == [(3, 4, 0)]
  song, _ = load_song(data, config=CFG4)
  assert song.time_signature == (3, 4) and song.steps_per_bar == 12 and song.num_bars == 2


def test_programs_are_plain_ints_and_json():
  data = smf(mtrk(program(0, 33, channel=2), on(0, 40, channel=2), off(10, 40, channel=2)))
  midi = load_midi(data)
  assert type(midi.instruments[0].program) is int and midi.instruments[0].program == 33
  song, _ = load_song(data, config=MidiConfig(track_mode="parts", track_names=("bass",)))
  assert json.loads(json.dumps([t.to_json() for t in song.tracks])) == [
    {"name": "bass", "program": 33, "is_drum": False}]


def test_notes_sorted_and_unterminated_closed_at_track_end():
  data = smf(mtrk(on(0, 67), on(0, 60), on(120, 64), off(120, 64), off(0, 60), on(0, 72),
                  eot(240), end=False))
  midi = load_midi(data)
  assert [(n.pitch, n.start, n.end) for n in midi.instruments[0].notes] == [
    (60, 0, 240), (67, 0, 480), (64, 120, 240), (72, 240, 480)]
  assert midi.load_counts == {"notes_unterminated": 2}
  song, counts = load_song(data, config=CFG4)
  assert counts["notes_unterminated"] == 2
  assert notes_of(song) == [(1, 60, 0, 2, 100), (1, 67, 0, 4, 100), (1, 64, 1, 1, 100),
                            (1, 72, 2, 2, 100)]


def test_overlapping_same_pitch_pairs_first_in_first_out():
  data = smf(mtrk(on(0, 60, 50), on(240, 60, 90), off(240, 60), off(480, 60)))
  notes = load_midi(data).instruments[0].notes
  assert [(n.velocity, n.start, n.end) for n in notes] == [(50, 0, 480), (90, 240, 960)]
  song, counts = load_song(data, config=CFG4)
  # The first is cut where the second begins.
  assert notes_of(song) == [(1, 60, 0, 2, 50), (1, 60, 2, 6, 90)]
  assert counts["notes_truncated"] == 1


# ---------------------------------------------------------------------------------------------
# Quantization


def test_rounding_minimum_and_clipping():
  cfg = MidiConfig(steps_per_beat=4, max_duration_beats=2)
  data = smf(mtrk(
    on(59, 60), off(1, 60),       # tick 59 -> step 0.49 -> 0; ends at 0.5 -> 1
    on(0, 62), off(0, 62),        # tick 60 -> 0.5 rounds up -> step 1
    on(0, 64), off(480 * 5, 64),  # five beats, clipped to two
  ))
  song, counts = load_song(data, config=cfg)
  assert notes_of(song) == [(1, 60, 0, 1, 100), (1, 62, 1, 1, 100), (1, 64, 1, 8, 100)]
  assert counts["notes_clipped"] == 1
  assert set(counts) == set(COUNT_KEYS)


def test_same_onset_notes_merge():
  data = smf(mtrk(on(0, 60, 40), on(0, 60, 90), off(240, 60), off(480, 60)),
             mtrk(program(0, 1), on(10, 60, 70), off(200, 60)))
  song, counts = load_song(data, config=CFG4)
  # Three notes on C4 at step 0 of the Piano track: the longest, the loudest.
  assert notes_of(song) == [(1, 60, 0, 6, 90)]
  assert counts["notes_merged"] == 2 and counts["notes_kept"] == 1 and counts["notes"] == 3


@pytest.mark.parametrize("events, cfg, expected", [
  ([meter(0, 4, 4), on(0, 60), meter(1920, 3, 4), on(0, 62), off(3000, 60), off(0, 62)], CFG4,
   "meter changes from 4/4 to 3/4 at tick 1920"),
  ([meter(0, 3, 4), on(0, 60), off(10, 60)], MidiConfig(steps_per_beat=4, meters=((4, 4),)),
   "meter 3/4 not in allowed meters (4/4)"),
  ([meter(0, 3, 4), on(0, 60), off(10, 60)],
   MidiConfig(steps_per_beat=4, meters=((4, 4), (6, 8))),
   "meter 3/4 not in allowed meters (4/4, 6/8)"),
  ([meter(0, 7, 16), on(0, 60), off(10, 60)], MidiConfig(steps_per_beat=1),
   "meter 7/16 is not a whole number of steps per bar at steps_per_beat 1"),
])
def test_meter_errors(events, cfg, expected):
  assert reason(smf(mtrk(*events)), config=cfg) == expected


def test_meter_tolerance():
  # Restating the meter, a signature before the first note and one after the last are fine.
  data = smf(mtrk(meter(0, 4, 4), meter(100, 6, 8), on(380, 60), meter(1440, 6, 8),
                  off(1440, 60), meter(0, 2, 4), eot(10), end=False))
  song, counts = load_song(data, config=CFG4)
  assert song.time_signature == (6, 8) and song.steps_per_bar == 12
  # Its bars count from the 6/8 at tick 100, step 1.
  assert counts["steps_shifted"] == 1
  assert notes_of(song) == [(1, 60, 3, 24, 100)] and song.num_bars == 3
  # No signature at all: 4/4.
  assert load_song(smf(mtrk(on(0, 60), off(10, 60))))[0].time_signature == (4, 4)


def test_bars_count_from_the_signature():
  # A beat of silence in 4/4, then 3/4 with the music: bar lines follow the 3/4, so the
  # silence off its grid is dropped (a whole silent bar would stay).
  data = smf(mtrk(meter(0, 4, 4), tempo(0, 100), meter(480, 3, 4), tempo(0, 80), on(0, 60),
                  off(1440, 60), on(0, 62), off(480, 62)))
  song, counts = load_song(data, config=CFG4)
  assert song.time_signature == (3, 4) and counts["steps_shifted"] == 4
  assert notes_of(song) == [(1, 60, 0, 12, 100), (1, 62, 12, 4, 100)]
  np.testing.assert_allclose(song.tempos, [80, 80], rtol=1e-6)
  data = smf(mtrk(meter(0, 3, 4), meter(1440, 3, 4), on(480, 60), off(480, 60)))
  song, counts = load_song(data, config=CFG4)
  assert counts["steps_shifted"] == 0 and notes_of(song) == [(1, 60, 16, 4, 100)]
  # Restated off its grid, the meter starts a bar there all the same (the bar before it was
  # short): bars count from the restatement.
  data = smf(mtrk(meter(0, 3, 4), meter(1440 + 480, 3, 4), on(0, 60), off(480, 60)))
  song, counts = load_song(data, config=CFG4)
  assert counts["steps_shifted"] == 4 and notes_of(song) == [(1, 60, 12, 4, 100)]
  assert [t.time for t in load_midi(data).time_signature_changes] == [0, 1920]
  moved = smf(mtrk(meter(0, 4, 4), on(0, 60), off(480, 60), meter(2400, 4, 4), on(0, 62),
                   off(480, 62)))
  assert reason(moved, config=CFG4) == (
    "bar lines of 4/4 move at tick 2880 (a short bar before it)")
  # A pickup bar in its own meter is padded to a full bar of the meter after it: the
  # downbeat is the bar line at step 16, and the grid moved the notes on (a negative shift).
  pickup = smf(mtrk(meter(0, 1, 4), on(0, 60), off(480, 60), meter(0, 4, 4), on(0, 62),
                    off(1920, 62)))
  song, counts = load_song(pickup, config=CFG4)
  assert song.time_signature == (4, 4) and song.num_bars == 2
  assert notes_of(song) == [(1, 60, 12, 4, 100), (1, 62, 16, 16, 100)]
  assert counts["pickups"] == 1 and counts["steps_shifted"] == -12
  # Two bars of 1/4 are not a pickup: a change of meter.
  twice = smf(mtrk(meter(0, 1, 4), on(0, 60), off(960, 60), meter(0, 4, 4), on(0, 62),
                   off(1920, 62)))
  assert reason(twice, config=CFG4) == "meter changes from 1/4 to 4/4 at tick 960"


def segments_of(data, config=CFG4):
  return quantize_segments(load_midi(data), config)


def test_segments_short_bars_pickups_and_tails():
  # 4/4, one 2/4 bar, 4/4 again: the 2/4 bar is the upbeat of the second 4/4 part.
  data = smf(mtrk(meter(0, 4, 4), on(0, 60), off(3840, 60), meter(0, 2, 4), on(0, 62),
                  off(960, 62), meter(0, 4, 4), on(0, 64), off(1920, 64)))
  segments, counts = segments_of(data)
  assert [(s.time_signature, s.bar_offset, s.pickup, s.tick) for s in segments] == [
    ((4, 4), 0, False, 0), ((4, 4), 2, True, 4800)]
  assert notes_of(segments[0].song) == [(1, 60, 0, 32, 100)]
  assert notes_of(segments[1].song) == [(1, 62, 8, 8, 100), (1, 64, 16, 16, 100)]
  assert counts["pickups"] == 1 and counts["notes_kept"] == 3
  with pytest.raises(MidiError, match="meter changes from 4/4 to 4/4|bar lines of 4/4 move"):
    quantize(load_midi(data), CFG4)
  # A 1/4 bar closing a 2/4 song is its last bar, not a change.
  data = smf(mtrk(meter(0, 2, 4), on(0, 60), off(3840, 60), meter(0, 1, 4), on(0, 62),
                  off(480, 62)))
  song, counts = load_song(data, config=CFG4)
  assert song.time_signature == (2, 4) and song.num_bars == 5
  assert notes_of(song)[-1] == (1, 62, 32, 4, 100)
  # Two bars of it are a change.
  data = smf(mtrk(meter(0, 2, 4), on(0, 60), off(3840, 60), meter(0, 1, 4), on(0, 62),
                  off(960, 62)))
  assert [s.time_signature for s in segments_of(data)[0]] == [(2, 4), (1, 4)]


def test_segments_of_other_meters_are_dropped():
  data = smf(mtrk(meter(0, 3, 4), on(0, 60), off(2880, 60), meter(0, 4, 4), on(0, 62),
                  off(1920, 62)))
  only44 = MidiConfig(steps_per_beat=4, meters=((4, 4),))
  segments, counts = segments_of(data, only44)
  assert segments[0].song is None and segments[0].bar_offset == 0
  assert segments[0].reason == "meter 3/4 not in allowed meters (4/4)"
  assert notes_of(segments[1].song) == [(1, 62, 0, 16, 100)] and segments[1].bar_offset == 2
  assert counts["notes_other_meter"] == 1 and counts["notes_kept"] == 1
  only68 = MidiConfig(steps_per_beat=4, meters=((6, 8),))
  assert reason(data, config=only68) == (
    "no segment left (bar 0: meter 3/4 not in allowed meters (6/8);"
    " bar 2: meter 4/4 not in allowed meters (6/8))")


def test_many_meter_changes_are_bounded():
  # 5,000 one-bar parts alternating 3/4 and 2/4: more parts than max_bars allows.
  events = [meter(0, 3, 4)]
  for k in range(5000):
    events += [on(0, 60), off(10, 60), meter(470 if k % 2 else 950, 2 if k % 2 == 0 else 3, 4)]
  data = smf(mtrk(*events))
  start = time.perf_counter()
  assert reason(data, config=CFG4).startswith("song is longer than max_bars")
  assert time.perf_counter() - start < 5
  # The most parts max_bars allows: each 2/4 bar is the upbeat of the 3/4 bar after it.
  events = []
  for k in range(4096):
    num = 3 if k % 2 else 2
    events += [meter(0, num, 4), on(0, 60), off(num * 480, 60)]
  start = time.perf_counter()
  segments, counts = segments_of(smf(mtrk(*events)))
  assert time.perf_counter() - start < 10  # ~1.5 s on one core
  assert len(segments) == 2048 and counts["pickups"] == 2048
  assert [s.bar_offset for s in segments[:3]] == [0, 2, 4] and segments[-1].bar_offset == 4094


@st.composite
def meter_maps(draw):
  """Parts of 2-4 bars in random meters, each with random notes on its eighth-note grid and
  one on its last eighth (so that the notes show every part's length)."""
  parts = []
  for _ in range(draw(st.integers(1, 4))):
    num, den = draw(st.sampled_from([(2, 4), (3, 4), (4, 4), (6, 8), (5, 8), (3, 2), (7, 8)]))
    bars = draw(st.integers(2, 4))
    eighths = bars * num * 8 // den
    onsets = sorted(draw(st.sets(st.integers(0, eighths - 2), max_size=6)) | {eighths - 1})
    parts.append(((num, den), bars, [(o, draw(st.integers(40, 90))) for o in onsets]))
  return parts


@given(meter_maps())
@settings(max_examples=60, deadline=None)
def test_segments_round_trip(parts):
  # One eighth note per onset; each part's notes come back exactly in its own segment.
  events, tick, last = [], 0, 0
  for (num, den), bars, notes in parts:
    events.append(meter(tick - last, num, den))
    last = tick
    for onset, pitch in notes:
      events += [on(tick + onset * 240 - last, pitch), off(240, pitch)]
      last = tick + onset * 240 + 240
    tick += bars * num * 1920 // den
  segments, counts = segments_of(smf(mtrk(*events)))
  merged = []  # consecutive parts in one meter are one part
  for meter_, bars, notes in parts:
    if merged and merged[-1][0] == meter_:
      offset = merged[-1][1] * meter_[0] * 8 // meter_[1]
      merged[-1] = (meter_, merged[-1][1] + bars, merged[-1][2] + [(o + offset, p)
                                                                   for o, p in notes])
    else:
      merged.append((meter_, bars, list(notes)))
  assert len(segments) == len(merged) and counts["pickups"] == 0
  bar_offset = 0
  for segment, (meter_, bars, notes) in zip(segments, merged):
    assert segment.time_signature == meter_ and segment.bar_offset == bar_offset
    assert notes_of(segment.song) == [(1, p, 2 * o, 2, 100) for o, p in notes]
    bar_offset += bars


def test_pitch_range_drop_and_fold():
  events = [on(0, 10), on(0, 23), on(0, 24), on(0, 107), on(0, 108), on(0, 127)]
  data = smf(mtrk(*events, *[off(10 if i == 0 else 0, p[2]) for i, p in enumerate(events)]))
  song, counts = load_song(data, config=CFG4)
  assert [n[1] for n in notes_of(song)] == [24, 107]
  assert counts["notes_out_of_range"] == 4
  song, counts = load_song(data, config=MidiConfig(steps_per_beat=4, out_of_range="fold"))
  # 10 -> 34, 23 -> 35, 108 -> 96, 127 -> 103
  assert [n[1] for n in notes_of(song)] == [24, 34, 35, 96, 103, 107]
  assert counts["notes_folded"] == 4 and counts["notes_out_of_range"] == 0
  # A range narrower than an octave cannot hold every pitch class: those are dropped.
  narrow = MidiConfig(steps_per_beat=4, lowest_pitch=60, num_pitches=5, out_of_range="fold")
  song, counts = load_song(data, config=narrow)
  # 24 and 108 both fold onto 60 and merge; the other pitch classes have no place.
  assert [n[1] for n in notes_of(song)] == [60]
  assert counts["notes_folded"] == 2 and counts["notes_out_of_range"] == 4
  assert counts["notes_merged"] == 1
  assert "no notes left (6 out of pitch range" in reason(
    data, config=MidiConfig(lowest_pitch=30, num_pitches=10))


def test_drums_use_the_same_range_handling():
  data = smf(mtrk(on(0, 20, channel=9), on(0, 36, channel=9), off(10, 20, channel=9),
                  off(0, 36, channel=9)))
  song, counts = load_song(data, config=CFG4)
  assert notes_of(song) == [(0, 36, 0, 1, 100)] and counts["notes_out_of_range"] == 1


def instruments_file(programs_and_channels):
  tracks = []
  for i, (prog, channel) in enumerate(programs_and_channels):
    tracks.append(mtrk(program(0, prog, channel), on(i, 60 + i, channel=channel),
                       off(100, 60 + i, channel=channel)))
  return smf(*tracks)


def test_lpd5_mapping():
  # piano, chromatic percussion, organ, guitar, bass, strings, brass, synth fx, ethnic,
  # percussive, drums
  data = instruments_file([(0, 0), (8, 1), (16, 2), (25, 3), (33, 4), (40, 5), (56, 6),
                           (100, 7), (105, 8), (115, 10), (0, 9)])
  song, counts = load_song(data, config=MidiConfig(steps_per_beat=480))
  assert song.tracks == LPD5_TRACKS
  got = {n[1] - 60: n[0] for n in notes_of(song)}
  assert got == {0: 1, 1: 4, 2: 4, 3: 2, 4: 3, 5: 4, 6: 4, 8: 4, 10: 0}
  assert counts["notes_unmapped"] == 2


def test_lpd17_mapping():
  data = instruments_file([(0, 0), (8, 1), (16, 2), (100, 3), (127, 4), (0, 9)])
  song, _ = load_song(data, config=MidiConfig(steps_per_beat=480, track_mode="lpd17"))
  assert song.tracks == LPD17_TRACKS
  assert {n[1] - 60: n[0] for n in notes_of(song)} == {0: 1, 1: 2, 2: 3, 3: 13, 4: 16, 5: 0}


def test_parts_mode():
  data = instruments_file([(52, 0), (52, 1), (0, 9), (70, 3), (71, 4)])
  names = ("s", "a", "perc", "t", "b")
  song, _ = load_song(data, config=MidiConfig(track_mode="parts", track_names=names))
  assert song.tracks == (Track("s", 52), Track("a", 52), Track("perc", 0, True), Track("t", 70),
                         Track("b", 71))
  assert [n[0] for n in notes_of(song)] == [0, 1, 2, 3, 4]
  assert reason(data, config=MidiConfig(track_mode="parts", track_names=names[:4])) == (
    "has 5 parts, expected 4")


# ---------------------------------------------------------------------------------------------
# Writing and reading back


@st.composite
def songs(draw, tracks=LPD5_TRACKS, steps_per_beat=4, max_duration_beats=16):
  time_signature = draw(st.sampled_from([(4, 4), (3, 4), (6, 8), (2, 2), (5, 8)]))
  steps_per_bar = time_signature[0] * 4 * steps_per_beat // time_signature[1]
  num_bars = draw(st.integers(1, 4))
  steps = num_bars * steps_per_bar
  note = st.tuples(
    st.integers(0, len(tracks) - 1), st.integers(58, 64) | st.integers(24, 107),
    st.integers(0, steps - 1), st.integers(1, max_duration_beats * steps_per_beat),
    st.integers(1, 127))
  notes, _ = normalize_notes(np.array(draw(st.lists(note, min_size=1, max_size=40))).reshape(-1, 5))
  notes[:, DURATION] = np.minimum(notes[:, DURATION], steps - notes[:, ONSET])
  tempos = draw(st.lists(st.sampled_from([60.0, 90.0, 120.0, 133.5, 200.0]),
                         min_size=num_bars, max_size=num_bars))
  return Song(notes=notes, num_bars=num_bars, steps_per_beat=steps_per_beat,
              time_signature=time_signature, tempos=np.array(tempos, np.float32),
              tracks=tracks, source="generated")


@settings(max_examples=60, deadline=None)
@given(songs())
def test_midi_round_trip(song):
  data = io.BytesIO()
  song_to_midi(song).dump(file=data)
  back, counts = load_song(data.getvalue(), config=CFG4)
  assert notes_of(back) == notes_of(song)
  assert counts["notes_merged"] == counts["notes_truncated"] == counts["notes_clipped"] == 0
  assert back.time_signature == song.time_signature and back.tracks == song.tracks
  assert back.num_bars == -(-int((song.notes[:, ONSET] + song.notes[:, DURATION]).max())
                            // song.steps_per_bar)
  np.testing.assert_allclose(back.tempos, song.tempos[:back.num_bars], rtol=1e-5)


def test_song_to_midi_contents(tmp_path):
  song = Song(notes=np.array([[0, 36, 0, 2, 100], [3, 40, 2, 4, 70]], np.int32), num_bars=2,
              steps_per_beat=4, time_signature=(3, 4), tempos=np.array([100, 80], np.float32),
              tracks=LPD5_TRACKS)
  midi = song_to_midi(song, ticks_per_beat=96)
  assert [(i.name, i.program, i.is_drum) for i in midi.instruments] == [
    (t.name, t.program, t.is_drum) for t in LPD5_TRACKS]
  assert [(n.pitch, n.start, n.end, n.velocity) for n in midi.instruments[3].notes] == [
    (40, 48, 144, 70)]
  assert [(t.tempo, t.time) for t in midi.tempo_changes] == [(100.0, 0), (80.0, 288)]
  assert [(t.numerator, t.denominator, t.time) for t in midi.time_signature_changes] == [(3, 4, 0)]
  write_midi(song, tmp_path / "x.mid")
  back = load_midi(tmp_path / "x.mid")
  assert [(i.program, i.is_drum, len(i.notes)) for i in back.instruments] == [
    (0, True, 1), (32, False, 1)]
  with pytest.raises(ValueError, match="ticks_per_beat"):
    song_to_midi(song, ticks_per_beat=3)


# ---------------------------------------------------------------------------------------------
# Real music: Bach chorales written by music21.

CHORALES = ("bach/bwv66.6", "bach/bwv269")
PARTS = MidiConfig(track_mode="parts", track_names=("soprano", "alto", "tenor", "bass"))
_scores: dict[str, object] = {}


def chorale(name: str):
  """The parsed score and its MIDI bytes, parsed once per module (music21 is slow)."""
  if name not in _scores:
    music21 = pytest.importorskip("music21")
    score = music21.corpus.parse(name)
    path = f"{name.replace('/', '_')}.mid"
    with tempfile.TemporaryDirectory() as tmp:
      score.write("midi", fp=os.path.join(tmp, path))
      with open(os.path.join(tmp, path), "rb") as f:
        _scores[name] = (score, f.read())
  return _scores[name]


def score_notes(score) -> list[tuple[int, int, int, int]]:
  out = []
  # music21 writes repeats out in full.
  for track, part in enumerate(score.expandRepeats().parts):
    for n in part.stripTies().flatten().notes:
      out.append((track, n.pitch.midi, round(float(n.offset) * 12), round(n.quarterLength * 12)))
  return sorted(out, key=lambda n: (n[2], n[0], n[1]))


@pytest.mark.parametrize("name", CHORALES)
def test_bach_chorale(name, tmp_path):
  score, data = chorale(name)
  song, counts = load_song(data, config=PARTS, name=name)
  assert song.source == name
  assert [t.name for t in song.tracks] == list(PARTS.track_names)
  assert [n[:4] for n in notes_of(song)] == score_notes(score)
  assert counts["notes_merged"] == counts["notes_truncated"] == counts["notes_out_of_range"] == 0
  ts = score.recurse().getElementsByClass("TimeSignature")[0]
  assert song.time_signature == (ts.numerator, ts.denominator)
  qpm = score.metronomeMarkBoundaries()[0][2].getQuarterBPM()
  np.testing.assert_allclose(song.tempos, qpm, rtol=1e-6)
  # And back out through MIDI, exactly.
  write_midi(song, tmp_path / "again.mid")
  again, _ = load_song(tmp_path / "again.mid", config=PARTS)
  assert notes_of(again) == notes_of(song) and again.num_bars == song.num_bars
  assert again.tracks == song.tracks
  # Four parts where five are expected.
  with pytest.raises(MidiError, match="has 4 parts, expected 5"):
    load_song(data, config=MidiConfig(track_mode="parts", track_names=tuple("abcde")))


def test_fuzz_script_runs_bounded(tmp_path):
  # The mutation engine for 3 s on the generated seeds (no music21): it must finish on time,
  # keep its corpus and report what it ran.
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  start = time.perf_counter()
  done = subprocess.run(
    [sys.executable, os.path.join(root, "scripts", "fuzz_midi.py"), "--seconds", "3",
     "--engine", "mutate", "--no-chorales", "--dir", str(tmp_path)],
    capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  assert time.perf_counter() - start < 60
  runs = [line for line in done.stdout.splitlines() if line.startswith("mutate: ")]
  assert runs[-1].endswith("in 3 s, 0 problem(s)") and int(runs[-1].split()[1]) > 100
  seeds = os.listdir(tmp_path / "corpus")
  assert len(seeds) >= 9 and os.listdir(tmp_path / "crashes") == []
  for name in seeds:  # every seed is a usable song
    segments, _ = quantize_segments(load_midi((tmp_path / "corpus" / name).read_bytes()),
                                    MidiConfig())
    assert any(s.song is not None for s in segments), name
