"""Tests for jaxgan.metrics on hand-made piano-rolls whose values are worked out by hand."""

import math

import numpy as np
import pytest

from jaxgan import metrics as M

# 24 steps per beat, 4/4: 96 steps per bar; 84 pitches from C1 (MIDI 24), as in MuseGAN.
SPB, STEPS, PITCHES = 24, 96, 84
SPEC = M.RollSpec(steps_per_beat=SPB, lowest_pitch=24, track_names=("bass", "drums", "piano"),
                  drum_tracks=(1,))
BASS, DRUMS, PIANO = 0, 1, 2
# Rows of some pitches (row = MIDI pitch - 24).
C1, C2, C3, C4, D4, E4, F4, G4, A4, B4 = 0, 12, 24, 36, 38, 40, 41, 43, 45, 47
CS4, FS3, AS3 = 37, 30, 34
HIHAT = 42 - 24

pytestmark = pytest.mark.filterwarnings("error")  # NaN handling must not warn


def roll(bars=1, n=1, steps=STEPS, pitches=PITCHES, tracks=3):
  return np.zeros((n, bars, steps, pitches, tracks), np.uint8)


def note(r, track, row, start, length, bar=0, sample=0):
  """An onset-marked note: 2 at its first step, 1 while held."""
  r[sample, bar, start, row, track] = 2
  r[sample, bar, start + 1:start + length, row, track] = 1
  return r


def metrics(r, spec=SPEC, **kw):
  return M.track_metrics(r, spec, **kw)


# --- EB and NaN handling ------------------------------------------------------------------------


def test_empty_bars_and_nan_for_empty_tracks():
  r = roll(bars=4)
  note(r, PIANO, C4, 0, 24, bar=0)
  note(r, PIANO, E4, 0, 24, bar=2)
  note(r, DRUMS, HIHAT, 0, 1, bar=0)
  m = metrics(r)
  # bass: all 4 bars empty; drums: 3 of 4; piano: bars 1 and 3 of 4.
  np.testing.assert_array_equal(m["EB"], [1.0, 0.75, 0.5])
  # A track with no non-empty bar has no value for any bar metric.
  for name in ("UPC", "QN", "PP", "PCE", "SC", "ND", "POLY", "GC"):
    assert np.isnan(m[name][BASS]), name
  # Pitch metrics are undefined for drums, DP for pitched tracks.
  for name in ("UPC", "QN", "PP", "PCE", "SC", "POLY"):
    assert np.isnan(m[name][DRUMS]), name
  assert np.isnan(m["DP"][BASS]) and np.isnan(m["DP"][PIANO])
  assert m["DP"][DRUMS] == 1.0  # one hit, on the grid
  # The piano's bars 0 and 2 are not adjacent: no pair of non-empty adjacent bars, no GC.
  assert np.isnan(m["GC"][PIANO])
  td = M.pair_metrics(r, SPEC)["TD"]
  # Bass never sounds and drums are left out: only the piano's own diagonal (0) is defined.
  expected = np.full((3, 3), np.nan)
  expected[PIANO, PIANO] = 0.0
  np.testing.assert_array_equal(td, expected)
  # v1 needs a track to sound in every beat of a bar; the piano only plays beat 0.
  assert np.isnan(M.pair_metrics(r, SPEC, v1_compat=True)["TD"]).all()


def test_empty_input_gives_nan():
  m = metrics(roll(n=0))
  assert np.isnan(m["EB"]).all() and np.isnan(m["UPC"]).all()


# --- UPC: the written definition and the v1 grouping --------------------------------------------


def test_bass_octave_chord_written_vs_v1():
  r = roll()
  for row in (C1, C2, C3):
    note(r, BASS, row, 0, STEPS)
  # Written: C1, C2 and C3 are all pitch class C -> 1 pitch class.
  assert metrics(r)["UPC"][BASS] == 1.0
  # v1: rows are cut into 12 blocks of 84 / 12 = 7; rows 0, 12, 24 fall in blocks 0, 1, 3 -> 3.
  assert metrics(r, v1_compat=True)["UPC"][BASS] == 3.0
  # Three pitches sound at every step: PP = 96 / 96 = 1, POLY = 3, in both modes.
  for v1 in (False, True):
    m = metrics(r, v1_compat=v1)
    assert m["PP"][BASS] == 1.0
    assert m["POLY"][BASS] == 3.0


def test_upc_c_major_chord():
  r = roll()
  for row in (C4, E4, G4, C4 + 12):
    note(r, PIANO, row, 0, 48)
  # Written: C, E, G, C -> 3 pitch classes.
  assert metrics(r)["UPC"][PIANO] == 3.0
  # v1: rows 36, 40, 43, 48 // 7 = blocks 5, 5, 6, 6 -> 2.
  assert metrics(r, v1_compat=True)["UPC"][PIANO] == 2.0


def test_upc_follows_lowest_pitch():
  # With row 0 = MIDI 21 (A0), rows 0 and 3 are A and C: 2 pitch classes, rows 0 and 12 one.
  spec = M.RollSpec(SPB, 21, SPEC.track_names, (1,))
  r = roll()
  note(r, PIANO, 0, 0, 4)
  note(r, PIANO, 12, 10, 4)
  assert metrics(r, spec)["UPC"][PIANO] == 1.0
  note(r, PIANO, 3, 20, 4)
  assert metrics(r, spec)["UPC"][PIANO] == 2.0


def test_upc_averages_non_empty_bars():
  r = roll(bars=3)
  note(r, PIANO, C4, 0, 4, bar=0)  # bar 0: 1 pitch class
  note(r, PIANO, C4, 0, 4, bar=2)  # bar 2: C, D, E -> 3
  note(r, PIANO, D4, 4, 4, bar=2)
  note(r, PIANO, E4, 8, 4, bar=2)
  # Bar 1 is empty and left out: (1 + 3) / 2 = 2.
  assert metrics(r)["UPC"][PIANO] == 2.0


# --- QN and how notes are found -----------------------------------------------------------------


def test_qn_thresholds():
  r = roll()
  for row, length in ((C4, 1), (D4, 2), (E4, 3), (F4, 4)):
    note(r, PIANO, row, 10, length)
  # Written: at least 3 steps at 24 per beat -> lengths 3 and 4 of 1, 2, 3, 4 -> 2 / 4.
  assert metrics(r)["QN"][PIANO] == 0.5
  # v1: at least 2 steps -> 3 / 4.
  assert metrics(r, v1_compat=True)["QN"][PIANO] == 0.75


def test_qn_threshold_scales_with_resolution():
  # 3/24 of a beat, ceil(spb / 8) steps, and never below two steps; v1's 2/24: ceil(spb / 12).
  assert [M.qn_min_steps(s) for s in (4, 8, 12, 16, 24, 48)] == [2, 2, 2, 2, 3, 6]
  assert [M.qn_min_steps(s, v1_compat=True) for s in (4, 12, 24, 48)] == [1, 1, 2, 4]


def test_qn_on_a_16th_note_grid_tells_fragments_from_notes():
  # At 4 steps per beat 3/24 beat is under one step: the written QN counts notes of 2+ steps
  # (8ths and longer), so 16ths are the fragments; v1 keeps its one-step threshold.
  spec = M.RollSpec(4, 24, ("v",))
  r = np.zeros((1, 1, 16, 84, 1), np.uint8)
  for start, length in ((0, 1), (1, 1), (2, 2), (4, 4), (8, 8)):
    note(r, 0, C4 + start, start, length)
  assert M.track_metrics(r, spec)["QN"][0] == 3 / 5
  assert M.track_metrics(r, spec, v1_compat=True)["QN"][0] == 1.0


def test_touching_repeated_notes_use_onset_marks():
  r = roll()
  # Two notes of 2 steps on one pitch, touching: 2 1 2 1.
  note(r, PIANO, C4, 0, 2)
  note(r, PIANO, C4, 2, 2)
  # Onset-marked: 2 notes of 2 steps, neither reaches 3 -> QN 0, ND 2.
  m = metrics(r)
  assert m["QN"][PIANO] == 0.0
  assert m["ND"][PIANO] == 2.0
  # As a bool roll (or in v1, which ignores marks) it is one run of 4 steps -> QN 1, ND 1.
  m_bool = metrics(r > 0)
  assert m_bool["QN"][PIANO] == 1.0
  assert m_bool["ND"][PIANO] == 1.0
  assert metrics(r, v1_compat=True)["QN"][PIANO] == 1.0


def test_notes_are_split_at_bar_lines():
  r = roll(bars=2)
  # One note from step 94 of bar 0 to step 1 of bar 1 (4 steps), no new onset mark in bar 1.
  note(r, PIANO, C4, 94, 2, bar=0)
  r[0, 1, 0:2, C4, PIANO] = 1
  # Each bar scores its own 2-step piece: 2 notes, none of 3 steps -> QN 0, ND 1 per bar.
  m = metrics(r)
  assert m["QN"][PIANO] == 0.0
  assert m["ND"][PIANO] == 1.0
  assert m["EB"][PIANO] == 0.0


# --- PP and POLY --------------------------------------------------------------------------------


def test_polyphonic_rate():
  r = roll()
  note(r, PIANO, C4, 0, 48)
  note(r, PIANO, E4, 0, 72)
  # Steps 0-47: 2 pitches, 48-71: 1, 72-95: none. PP = 48 / 96 = 0.5 (over all steps of the bar).
  # POLY = (48 * 2 + 24 * 1) / 72 sounding steps = 120 / 72 = 5 / 3.
  for v1 in (False, True):
    m = metrics(r, v1_compat=v1)
    assert m["PP"][PIANO] == 0.5
    assert m["POLY"][PIANO] == pytest.approx(5 / 3, abs=1e-15)


# --- DP -----------------------------------------------------------------------------------------


def hits(r, steps, bar=0, row=HIHAT):
  for s in steps:
    note(r, DRUMS, row, s, 1, bar=bar)
  return r


def test_dp_straight_sixteenths_is_one():
  # A 16th note is 6 steps at 24 per beat: 16 hits at 0, 6, ..., 90 all fall on the grid.
  r = hits(roll(), range(0, STEPS, 6))
  assert metrics(r)["DP"][DRUMS] == 1.0
  assert metrics(r, v1_compat=True)["DP"][DRUMS] == 1.0
  # The best circular shift finds a grid displaced as a whole: hits at 2, 8, ..., 92 -> still 1.
  assert metrics(hits(roll(), range(2, STEPS, 6)))["DP"][DRUMS] == 1.0


def test_dp_off_grid_hits():
  # 8 hits on 8th notes (phase 0 of the 6-step grid) and 8 halfway between 16ths (phase 3).
  # Filter [1, .3, 0, 0, 0, .3]: shift 0 scores 8 * 1 + 8 * 0 = 8, shift 3 likewise 8, the other
  # shifts 8 * .3 = 2.4. DP = 8 / 16 = 0.5.
  r = hits(roll(), list(range(0, STEPS, 12)) + list(range(3, STEPS, 12)))
  assert metrics(r)["DP"][DRUMS] == 0.5
  # 8 hits at phase 0 and 4 one step late (phase 1): shift 0 gives 8 + 4 * .3 = 9.2, shift 1
  # gives 8 * .3 + 4 = 6.4. DP = 9.2 / 12 = 23 / 30.
  r = hits(roll(), list(range(0, STEPS, 12)) + [1, 25, 49, 73])
  assert metrics(r)["DP"][DRUMS] == pytest.approx(23 / 30, abs=1e-15)


def test_dp_counts_onsets_not_held_steps():
  r = hits(roll(), range(0, STEPS, 6))
  r[0, 0, 1, HIHAT, DRUMS] = 2  # a second hit right after the first, touching it
  # Written: 17 onsets, the extra one step off the grid: (16 + .3) / 17.
  assert metrics(r)["DP"][DRUMS] == pytest.approx(16.3 / 17, abs=1e-15)
  # v1 only sees activity: the touching hits are one note, 16 onsets on the grid -> 1.
  assert metrics(r, v1_compat=True)["DP"][DRUMS] == 1.0
  # A held hit (steps 0-2) is one onset.
  r2 = hits(roll(), range(0, STEPS, 6))
  r2[0, 0, 1:3, HIHAT, DRUMS] = 1
  assert metrics(r2)["DP"][DRUMS] == 1.0


def test_dp_grid_at_low_resolution():
  # 4 steps per beat: the 16th grid is every step, so the 8th grid (2 steps) is used.
  spec = M.RollSpec(4, 24, SPEC.track_names, (1,))
  r16 = hits(roll(steps=16), range(16))
  # Every step hit: 8 on the 8th grid (1) and 8 one step off (.3): (8 + 2.4) / 16 = 0.65.
  assert metrics(r16, spec)["DP"][DRUMS] == pytest.approx(0.65, abs=1e-15)
  assert metrics(hits(roll(steps=16), range(0, 16, 2)), spec)["DP"][DRUMS] == 1.0
  # An odd resolution has no 8th grid: DP undefined.
  spec3 = M.RollSpec(3, 24, SPEC.track_names, (1,))
  assert np.isnan(metrics(hits(roll(steps=12), range(12)), spec3)["DP"][DRUMS])


def test_drum_filter_shapes():
  np.testing.assert_array_equal(M._drum_filter(24), [1, .3, 0, 0, 0, .3])
  np.testing.assert_array_equal(M._drum_filter(12), [1, .3, .3])
  np.testing.assert_array_equal(M._drum_filter(4), [1, .3])
  # 48 per beat: 12-step grid, "near" = within 1/24 beat = 2 steps.
  np.testing.assert_array_equal(M._drum_filter(48), [1, .3, .3, 0, 0, 0, 0, 0, 0, 0, .3, .3])
  assert M._drum_filter(3) is None


# --- TD -----------------------------------------------------------------------------------------


def chord(r, track, rows, start=0, length=STEPS, bar=0):
  for row in rows:
    note(r, track, row, start, length, bar=bar)
  return r


def test_td_identical_tracks_is_zero():
  r = chord(chord(roll(), PIANO, (C4, E4, G4)), BASS, (C4 - 24, E4 - 24, G4 - 24))
  for v1 in (False, True):
    td = M.pair_metrics(r, SPEC, v1_compat=v1)["TD"]
    # Written: same pitch classes; v1: rows 12, 16, 19 -> blocks 1, 2, 2 vs 5, 5, 6: not the same
    # blocks, so v1 only gives 0 for literally identical rows.
    if not v1:
      assert td[BASS, PIANO] == pytest.approx(0.0, abs=1e-12)
    assert td[PIANO, PIANO] == 0.0
    assert np.isnan(td[DRUMS]).all() and np.isnan(td[:, DRUMS]).all()
  same = chord(chord(roll(), PIANO, (C4, E4, G4)), BASS, (C4, E4, G4))
  assert M.pair_metrics(same, SPEC, v1_compat=True)["TD"][BASS, PIANO] == 0.0


def test_td_c_major_vs_f_sharp_major():
  r = chord(chord(roll(), PIANO, (C4, E4, G4)), BASS, (FS3, AS3, CS4))
  # F# major is C major moved a tritone (6 semitones): on the circle of fifths (7/6 pi per
  # semitone) and of minor thirds (3/2 pi) that is a turn of pi, on the major thirds (2/3 pi) a
  # full turn. So with C major's centroid (f, m, M), F# major's is (-f, -m, M) and
  # TD = 2 * sqrt(|f|^2 + |m|^2). C, E, G sit at fifth angles 0, 2/3 pi, 1/6 pi:
  # |f|^2 = |(0,1) + (sqrt3/2, -1/2) + (1/2, sqrt3/2)|^2 / 9 = (2 + sqrt3) / 9; minor-third angles
  # 0, 0, 1/2 pi: |m|^2 = |(0,2) + (1,0)|^2 / 9 = 5 / 9. TD = (2/3) sqrt(7 + sqrt3) ~ 1.9700.
  expected = 2 / 3 * math.sqrt(7 + math.sqrt(3))
  td = M.pair_metrics(r, SPEC)["TD"]
  assert td[BASS, PIANO] == pytest.approx(expected, abs=1e-12)
  assert td[PIANO, BASS] == td[BASS, PIANO]


def test_td_single_notes_written_vs_v1():
  # Two notes d semitones apart: the centroids differ by chords 2|sin(7 pi d / 12)|,
  # 2|sin(3 pi d / 4)| and 0.5 * 2|sin(pi d / 3)| on the three circles.
  # C4 vs G4 (d = 7): 2 sin(pi/12), sqrt2, sqrt3/2 -> TD^2 = 2 - sqrt3 + 2 + 3/4 = 4.75 - sqrt3.
  r = note(note(roll(), PIANO, C4, 0, STEPS), BASS, G4, 0, STEPS)
  td = M.pair_metrics(r, SPEC)["TD"][BASS, PIANO]
  assert td == pytest.approx(math.sqrt(4.75 - math.sqrt(3)), abs=1e-12)
  # v1 puts rows 36 and 43 in blocks 5 and 6, a semitone apart (d = 1): 2 sin(7 pi/12), sqrt2,
  # sqrt3/2 -> TD^2 = 2 + sqrt3 + 2 + 3/4 = 4.75 + sqrt3.
  td_v1 = M.pair_metrics(r, SPEC, v1_compat=True)["TD"][BASS, PIANO]
  assert td_v1 == pytest.approx(math.sqrt(4.75 + math.sqrt(3)), abs=1e-12)


def test_td_uses_beats_where_both_sound():
  # Bass only in beats 0-1, piano throughout; plus a second bar where both sound in all beats.
  r = roll(bars=2)
  chord(r, PIANO, (C4, E4, G4), bar=0)
  chord(r, BASS, (FS3, AS3, CS4), length=48, bar=0)
  chord(r, PIANO, (C4, E4, G4), bar=1)
  note(r, BASS, C4 - 12, 0, STEPS, bar=1)
  tritone = 2 / 3 * math.sqrt(7 + math.sqrt(3))
  # Bar 1: bass C, at (0, 1) on every circle, against C, E, G. Fifths: C, E, G at 0, 2/3 pi,
  # 1/6 pi -> [(0,1) + (sqrt3/2,-1/2) + (1/2,sqrt3/2)] / 3. Minor thirds: 0, 0, 1/2 pi ->
  # (1, 2) / 3. Major thirds (radius 0.5): 0, 2/3 pi, 2/3 pi -> 0.5 * (sqrt3, 0) / 3.
  s3 = math.sqrt(3)
  f = np.array([(s3 / 2 + 1 / 2) / 3, (1 / 2 + s3 / 2) / 3 - 1])
  m = np.array([1 / 3, 2 / 3 - 1])
  maj = 0.5 * np.array([s3 / 3, -1])
  bar1 = math.sqrt(f @ f + m @ m + maj @ maj)
  # Written: 2 beats of bar 0 (tritone) and 4 beats of bar 1, pooled: (2 t + 4 b) / 6.
  td = M.pair_metrics(r, SPEC)["TD"][BASS, PIANO]
  assert td == pytest.approx((2 * tritone + 4 * bar1) / 6, abs=1e-12)
  # v1 drops bar 0 (the bass is silent in beats 2-3): its value is that of bar 1 alone.
  only_bar1 = r[:, 1:]
  td_v1 = M.pair_metrics(r, SPEC, v1_compat=True)["TD"][BASS, PIANO]
  assert td_v1 == M.pair_metrics(only_bar1, SPEC, v1_compat=True)["TD"][BASS, PIANO]


def test_tonal_matrix_rows():
  tm = M.tonal_matrix()
  assert tm.shape == (6, 12)
  # Column norms: radii 1, 1, 0.5 -> sqrt(1 + 1 + 0.25) = 1.5 for every pitch class.
  np.testing.assert_allclose(np.linalg.norm(tm, axis=0), 1.5)
  np.testing.assert_allclose(tm[:, 0], [0, 1, 0, 1, 0, 0.5], atol=1e-15)


# --- Extras -------------------------------------------------------------------------------------


def test_pitch_class_entropy_and_scale_consistency():
  r = roll(bars=2)
  for k, row in enumerate((C4, C4 + 12, E4, G4)):  # bar 0: C, C, E, G as four notes
    note(r, PIANO, row, 12 * k, 6)
  # p = (1/2, 1/4, 1/4): H = 1/2 + 1/4 * 2 + 1/4 * 2 = 1.5 bits. Bar 1 empty: left out.
  m = metrics(r)
  assert m["PCE"][PIANO] == 1.5
  # Every note is in C major -> SC 1.
  assert m["SC"][PIANO] == 1.0
  # Add C#, D, F, A, B in bar 1: 9 notes of 8 classes, 8 in C major (all but C#); no 7-note
  # scale holds all 8 classes, so SC = 8 / 9.
  for k, row in enumerate((CS4, D4, F4, A4, B4)):
    note(r, PIANO, row, 12 * k, 6, bar=1)
  assert metrics(r)["SC"][PIANO] == pytest.approx(8 / 9, abs=1e-15)
  # Bar 1 has 5 distinct classes, one note each: log2(5) bits; mean (1.5 + log2 5) / 2.
  assert metrics(r)["PCE"][PIANO] == pytest.approx((1.5 + math.log2(5)) / 2, abs=1e-12)


def test_note_density_and_groove_consistency():
  r = roll(bars=3)
  for b in range(3):
    hits(r, range(0, STEPS, 12), bar=b)  # 8 hits per bar
  hits(r, [3, 5], bar=2)  # bar 2: two more onsets at steps no other bar uses
  m = metrics(r)
  # ND: (8 + 8 + 10) / 3 bars.
  assert m["ND"][DRUMS] == pytest.approx(26 / 3, abs=1e-15)
  # GC: bars 0-1 identical -> 1; bars 1-2 differ at 2 of 96 steps -> 1 - 2/96. Mean 1 - 1/96.
  assert m["GC"][DRUMS] == pytest.approx(1 - 1 / 96, abs=1e-15)


# --- Cross-check against a plain loop -----------------------------------------------------------


def loop_reference(r, spec, min_len):
  """Per-bar loop over notes found one by one (written definitions, onset-marked input)."""
  n, bars, steps, pitches, tracks = r.shape
  out = {k: [[] for _ in range(tracks)] for k in ("UPC", "QN", "PP", "DP")}
  weights = M._drum_filter(spec.steps_per_beat)
  for i in range(n):
    for b in range(bars):
      for t in range(tracks):
        bar = r[i, b, :, :, t]
        if not bar.any():
          continue
        lengths, onset_steps = [], []
        for p in range(pitches):
          s = 0
          while s < steps:
            if bar[s, p]:
              e = s + 1
              while e < steps and bar[e, p] == 1:
                e += 1
              lengths.append(e - s)
              onset_steps.append(s)
              s = e
            else:
              s += 1
        if t in spec.drum_tracks:
          period = len(weights)
          best = max(sum(weights[(s - k) % period] for s in onset_steps) for k in range(period))
          out["DP"][t].append(best / len(onset_steps))
        else:
          pcs = {(spec.lowest_pitch + p) % 12 for p in range(pitches) if bar[:, p].any()}
          out["UPC"][t].append(len(pcs))
          out["QN"][t].append(np.mean([d >= min_len for d in lengths]))
          out["PP"][t].append(np.mean((bar > 0).sum(1) >= 2))
  return {k: np.array([np.mean(v) if v else np.nan for v in vals]) for k, vals in out.items()}


def test_matches_loop_on_random_rolls():
  rng = np.random.default_rng(7)
  spec = M.RollSpec(12, 30, ("a", "drums", "b"), (1,))
  r = np.zeros((3, 2, 48, 36, 3), np.uint8)
  for _ in range(400):
    i, b, s, p, t = (rng.integers(k) for k in r.shape)
    length = rng.integers(1, 6)
    r[i, b, s:s + length, p, t] = 1
    r[i, b, s, p, t] = 2
  r[0, 1, :, :, 2] = 0  # an empty bar
  got = metrics(r, spec)
  want = loop_reference(r, spec, min_len=2)  # ceil(12 / 8) = 2
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-12, err_msg=name)


def test_chunking_does_not_change_results(monkeypatch):
  rng = np.random.default_rng(3)
  r = (rng.random((9, 2, STEPS, PITCHES, 3)) < 0.02).astype(np.uint8) * 2
  whole = metrics(r)
  whole_td = M.pair_metrics(r, SPEC, v1_compat=True)["TD"]
  monkeypatch.setattr(M, "_CHUNK_CELLS", 1)  # one sample per chunk
  for name, value in metrics(r).items():
    np.testing.assert_allclose(value, whole[name], rtol=1e-12, err_msg=name)
  np.testing.assert_allclose(M.pair_metrics(r, SPEC, v1_compat=True)["TD"], whole_td, rtol=1e-12)


# --- Input checks -------------------------------------------------------------------------------


def test_rejects_bad_input():
  with pytest.raises(TypeError):
    metrics(roll().astype(np.float32))
  with pytest.raises(ValueError):
    metrics(roll(tracks=2))
  with pytest.raises(ValueError):
    M.RollSpec(24, 24, ("a",), drum_tracks=(1,))


# --- Set-level comparison -----------------------------------------------------------------------


def test_overlap_of_a_sample_with_itself():
  a = np.random.default_rng(0).normal(size=300)
  oa, kl = M.overlap_and_kl(a, a)
  assert oa == pytest.approx(1.0, abs=1e-3)
  assert kl == pytest.approx(0.0, abs=1e-12)
  # Far apart: (almost) no overlap, large KL.
  oa_far, kl_far = M.overlap_and_kl(a, a + 20)
  assert oa_far < 1e-6 and kl_far > 10
  # Constant and equal: identical.
  assert M.overlap_and_kl(np.zeros(5), np.zeros(7)) == (1.0, 0.0)


def test_compare_sets_self_and_shifted():
  rng = np.random.default_rng(1)
  ref = {"x": rng.normal(size=(200, 3)), "y": rng.normal(size=200)}
  same = {"x": rng.normal(size=(200, 3)), "y": rng.normal(size=200)}
  shifted = {"x": rng.normal(size=(200, 3)) + 3.0, "y": rng.normal(size=200) + 3.0}
  self_cmp = M.compare_sets(ref, ref)
  same_cmp = M.compare_sets(same, ref)
  shift_cmp = M.compare_sets(shifted, ref)
  for key in ("x", "y"):
    assert self_cmp[key]["OA"] > 0.95
    assert same_cmp[key]["OA"] > 0.85
    assert shift_cmp[key]["OA"] < 0.5
    assert shift_cmp[key]["KL"] > same_cmp[key]["KL"]
    assert shift_cmp[key]["inter"] > shift_cmp[key]["intra_ref"]
  # Fixed seed: the same call gives the same numbers.
  assert M.compare_sets(shifted, ref, max_pairs=500) == M.compare_sets(shifted, ref, max_pairs=500)


def test_compare_sets_drops_nan_samples():
  ref = {"x": np.array([0.0, 1.0, np.nan, 2.0])}
  gen = {"x": np.array([np.nan, 5.0])}  # one usable sample: too few for intra-set distances
  assert math.isnan(M.compare_sets(gen, ref)["x"]["OA"])
  gen = {"x": np.array([0.0, 1.0, 2.0, np.nan])}
  out = M.compare_sets(gen, ref)["x"]
  # Intra-set distances of {0, 1, 2}: 1, 2, 1 -> mean 4/3 for both sets.
  assert out["intra_ref"] == pytest.approx(4 / 3) and out["intra_gen"] == pytest.approx(4 / 3)


def test_song_features_feed_compare_sets():
  rng = np.random.default_rng(2)
  data = (rng.random((24, 2, 48, 36, 3)) < 0.03).astype(np.uint8) * 2
  busy = (rng.random((24, 2, 48, 36, 3)) < 0.15).astype(np.uint8) * 2
  spec = M.RollSpec(12, 36, ("a", "drums", "b"), (1,))
  fd, fb = M.song_features(data, spec), M.song_features(busy, spec)
  assert fd["UPC/a"].shape == (24,) and fd["pitch_class_histogram"].shape == (24, 12)
  assert "DP/drums" in fd and "DP/a" not in fd and "UPC/drums" not in fd
  assert "TD/a-b" in fd and "pitch_range/drums" not in fd
  np.testing.assert_allclose(fd["pitch_class_histogram"].sum(-1), 1.0)
  # Per-sample values average to the set value when every sample has the same bar count.
  m = metrics(data, spec)
  assert np.nanmean(fd["EB/b"]) == pytest.approx(m["EB"][2])
  cmp = M.compare_sets(fb, fd)
  assert cmp["ND/a"]["OA"] < 0.2 < M.compare_sets(fd, fd)["ND/a"]["OA"]


# --- Summary table ------------------------------------------------------------------------------


def test_summary_table():
  r = chord(chord(roll(bars=2), PIANO, (C4, E4, G4)), BASS, (FS3, AS3, CS4))
  hits(r, range(0, STEPS, 6))
  data = {**metrics(r), **M.pair_metrics(r, SPEC)}
  table = M.summary_table({"data": data, "generated": data}, SPEC)
  lines = table.splitlines()
  assert lines[0].split() == ["metric", "set", "bass", "drums", "piano"]
  eb = lines[1].split()
  # EB: bar 1 of every track is empty -> 50.00%.
  assert eb == ["EB", "data", "50.00%", "50.00%", "50.00%"]
  assert lines[2].split() == ["generated", "50.00%", "50.00%", "50.00%"]
  upc = next(line.split() for line in lines if line.startswith("UPC"))
  assert upc == ["UPC", "data", "3.000", "-", "3.000"]
  # Pair table: only bass-piano has a value (drums are out).
  pair_header = lines[lines.index("") + 1].split()
  assert pair_header == ["metric", "set", "bass-piano"]
  td = next(line.split() for line in lines if line.startswith("TD"))
  assert td == ["TD", "data", f"{2 / 3 * math.sqrt(7 + math.sqrt(3)):.3f}"]


def test_written_metrics_do_not_depend_on_key():
  # Moving every pitched note up 5 semitones changes no written metric: pitch classes, scale fit
  # and entropy only move round the circle, and TD rotates both centroids alike.
  rng = np.random.default_rng(5)
  r = np.zeros((4, 2, STEPS, PITCHES, 3), np.uint8)
  r[..., :60, :] = (rng.random((4, 2, STEPS, 60, 3)) < 0.01) * 2
  up = np.zeros_like(r)
  up[..., 5:65, :] = r[..., :60, :]
  up[..., DRUMS] = r[..., DRUMS]
  a, b = metrics(r), metrics(up)
  for name in a:
    np.testing.assert_allclose(b[name], a[name], rtol=1e-12, err_msg=name)
  np.testing.assert_allclose(M.pair_metrics(up, SPEC)["TD"], M.pair_metrics(r, SPEC)["TD"],
                             rtol=1e-9)
  # The v1 grouping is not shift-invariant: its UPC moves.
  assert metrics(up, v1_compat=True)["UPC"][PIANO] != metrics(r, v1_compat=True)["UPC"][PIANO]
