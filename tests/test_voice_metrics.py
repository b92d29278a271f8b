"""Tests for jaxgan.voice_metrics: hand-made lines whose values are worked out by hand, music21's
voice-leading predicates on real chorales, and Bach against degenerate music."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgan import metrics as M
from jaxgan import voice_metrics as VM

SPB = 4  # 16th notes
BAR = 16
SPEC = M.RollSpec(SPB, 24, VM.SATB)
CHORALES = ("bach/bwv66.6", "bach/bwv347", "bach/bwv153.1", "bach/bwv86.6", "bach/bwv267",
            "bach/bwv244.62", "bach/bwv40.8", "bach/bwv26.6")


def line(*notes):
  """Pitch and onset [T] of one voice from (pitch or None for a rest, length in steps) pairs."""
  pitch, onset = [], []
  for p, length in notes:
    pitch += [-1 if p is None else p] * length
    onset += [p is not None] + [False] * (length - 1)
  return np.array(pitch), np.array(onset)


def voices(*lines, names=None, steps_per_bar=None):
  """One piece of the given lines (each from `line` or a list of pitches, one per step)."""
  lines = [line_ if isinstance(line_, tuple) else (np.array(line_), np.zeros(len(line_), bool))
           for line_ in lines]
  pitch = np.stack([p for p, _ in lines], -1)[None]
  onset = np.stack([o for _, o in lines], -1)[None]
  names = names or tuple(f"v{k}" for k in range(len(lines)))
  return VM.Voices(pitch, onset, SPB, steps_per_bar or pitch.shape[1], names)


# --- Real chorales from the music21 corpus ------------------------------------------------------


def chorale(name):
  """(pitch [T, 4], onset [T, 4], the music21 note sounding per step and voice) from the first
  full bar on, at 16th notes, ties merged; T a whole number of bars."""
  from music21 import chord, corpus  # pylint: disable=import-outside-toplevel
  score = corpus.parse(name).stripTies()
  parts = score.parts[:4]
  measures = parts[0].getElementsByClass("Measure")
  bar_quarters = measures[1].duration.quarterLength
  shift = measures[1].offset if measures[0].duration.quarterLength < bar_quarters else 0.0
  steps_per_bar = int(bar_quarters * SPB)
  total = int((score.highestTime - shift) * SPB) // steps_per_bar * steps_per_bar
  pitch = np.full((total, 4), -1, np.int16)
  onset = np.zeros((total, 4), bool)
  notes = [[None] * 4 for _ in range(total)]
  for v, part in enumerate(parts):
    for n in part.flatten().notes:
      if isinstance(n, chord.Chord):
        n = max(n.notes, key=lambda x: x.pitch.midi)
      start = int(round((n.offset - shift) * SPB))
      end = min(int(round((n.offset + n.quarterLength - shift) * SPB)), total)
      for t in range(max(start, 0), end):
        pitch[t, v], notes[t][v] = n.pitch.midi, n
      if 0 <= start < total:
        onset[start, v] = True
  assert steps_per_bar == BAR, name  # the chosen chorales are in 4/4
  return pitch, onset, notes


@pytest.fixture(scope="module")
def chorales():
  return [chorale(name) for name in CHORALES]


def bach_windows(pieces):
  """4-bar windows, one bar apart, of the given chorales."""
  pitch = VM.windows([p for p, _, _ in pieces], 4 * BAR, BAR)
  onset = VM.windows([o for _, o, _ in pieces], 4 * BAR, BAR)
  return VM.Voices(pitch, onset, SPB, BAR)


# --- Voices -------------------------------------------------------------------------------------


def test_from_rolls_keeps_one_pitch_and_counts_the_rest():
  r = np.zeros((1, 1, 4, 84, 2), np.uint8)
  r[0, 0, 0:2, [36, 40, 43], 0] = 1  # a C-E-G cluster in track 0 for 2 steps
  r[0, 0, 0, [36, 40, 43], 0] = 2
  r[0, 0, 2, 41, 0] = 2  # then F alone
  r[0, 0, 1:3, 12, 1] = 1  # track 1 held from step 1 without an onset mark
  spec = M.RollSpec(SPB, 24, ("a", "b"))
  top = VM.from_rolls(r, spec)
  assert top.pitch[0, :, 0].tolist() == [67, 67, 65, -1]  # rows 43, 43, 41 + 24
  assert top.pitches_per_step[0, :, 0].tolist() == [3, 3, 1, 0]
  assert top.onset[0, :, 0].tolist() == [True, False, True, False]
  # A pitch appearing after a rest starts a note even without a mark.
  assert top.pitch[0, :, 1].tolist() == [-1, 36, 36, -1]
  assert top.onset[0, :, 1].tolist() == [False, True, False, False]
  bottom = VM.from_rolls(r, spec, pick="bottom")
  assert bottom.pitch[0, :, 0].tolist() == [60, 60, 65, -1]
  stats = VM.statistics(top)
  assert stats["pitches_per_step"][0] == pytest.approx(7 / 3)
  assert stats["poly_share"][0] == pytest.approx(2 / 3)


def test_from_rolls_onsets_follow_marks_or_pitch_changes():
  r = np.zeros((1, 1, 6, 84, 1), np.uint8)
  r[0, 0, 0:4, 36, 0] = [2, 1, 2, 1]  # two touching notes of one pitch
  r[0, 0, 4:6, 38, 0] = 1  # a new pitch with no mark
  spec = M.RollSpec(SPB, 24, ("a",))
  assert VM.from_rolls(r, spec).onset[0, :, 0].tolist() == [True, False, True, False, True, False]
  # A bool roll cannot mark repeated notes: only changes start notes.
  assert VM.from_rolls(r > 0, spec).onset[0, :, 0].tolist() == [True, False, False, False, True,
                                                                 False]


@pytest.mark.parametrize("kwargs, error", [
    (dict(pitch=np.full((1, 4, 1), 128)), "MIDI pitches 0-127"),
    (dict(pitch=np.full((1, 4, 1), -2)), "MIDI pitches 0-127"),
    (dict(pitch=np.zeros((4, 1))), r"\[pieces, steps, voices\]"),
    (dict(pitch=np.zeros((1, 4, 1), np.float32)), "integer"),
    (dict(onset=np.ones((1, 4, 1), bool), pitch=np.full((1, 4, 1), -1)), "onset on a rest"),
    (dict(steps_per_bar=3), "not whole bars"),
    (dict(names=("a", "b")), "2 voice names"),
])
def test_voices_reject_bad_input(kwargs, error):
  args = dict(pitch=np.full((1, 4, 1), 60), onset=np.zeros((1, 4, 1), bool), steps_per_beat=SPB,
              steps_per_bar=4, names=("a",))
  args.update(kwargs)
  with pytest.raises((ValueError, TypeError), match=error):
    VM.Voices(**args)


def test_from_rolls_rejects_drums_and_real_values():
  with pytest.raises(ValueError, match="drums"):
    VM.from_rolls(np.zeros((1, 1, 4, 12, 2), bool), M.RollSpec(SPB, 24, ("a", "d"), (1,)))
  with pytest.raises(TypeError, match="binarize"):
    VM.from_rolls(np.zeros((1, 1, 4, 12, 1), np.float32), M.RollSpec(SPB, 24, ("a",)))
  with pytest.raises(ValueError, match="pick"):
    VM.from_rolls(np.zeros((1, 1, 4, 12, 1), bool), M.RollSpec(SPB, 24, ("a",)), pick="middle")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 83), st.integers(1, 5), st.booleans()), min_size=1,
                max_size=12),
       st.integers(0, 3))
def test_rolls_round_trip(notes, voice):
  # A line of notes (pitch row or rest, length, struck again when the pitch repeats).
  pitch, onset = [], []
  for row, length, strike in notes:
    repeat = bool(pitch) and pitch[-1] == row
    pitch += [row] * length
    onset += [row >= 0 and (strike or not repeat)] + [False] * (length - 1)
  steps = -(-len(pitch) // 4) * 4
  pitch = np.pad(np.array(pitch) + np.where(np.array(pitch) >= 0, 24, 0), (0, steps - len(pitch)),
                 constant_values=-1)
  onset = np.pad(np.array(onset), (0, steps - len(onset)))
  full = np.full((1, steps, 4), -1)
  full_onset = np.zeros((1, steps, 4), bool)
  full[0, :, voice], full_onset[0, :, voice] = pitch, onset
  v = VM.Voices(full, full_onset, SPB, 4)
  back = VM.from_rolls(VM.to_rolls(v, lowest_pitch=24, num_pitches=84), SPEC)
  np.testing.assert_array_equal(back.pitch, v.pitch)
  np.testing.assert_array_equal(back.onset, v.onset)


def test_to_rolls_rejects_pitches_outside_the_roll():
  with pytest.raises(ValueError, match="outside"):
    VM.to_rolls(voices([20, 20, 20, 20]), lowest_pitch=24, num_pitches=84)


def test_windows():
  pieces = [np.arange(10)[:, None], np.arange(3)[:, None]]
  w = VM.windows(pieces, 4, 3)
  assert w[:, :, 0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
  assert VM.windows(pieces, 11, 1).shape == (0, 11, 1)


# --- Statistics ---------------------------------------------------------------------------------


def test_statistics_of_a_hand_made_line():
  # C4 quarter, D4 8th, E4 8th, quarter rest, G4 16th, G4 16th again, A4 8th; a silent voice.
  soprano = line((60, 4), (62, 2), (64, 2), (None, 4), (67, 1), (67, 1), (69, 2))
  silent = line((None, 16))
  s = VM.piece_statistics(voices(soprano, silent))
  get = {name: values[0, 0] for name, values in s.items() if name != "TD"}
  assert get["rest_share"] == 0.25
  assert get["pitches_per_step"] == 1.0 and get["poly_share"] == 0.0
  assert (get["pitch_low"], get["pitch_high"], get["pitch_span"]) == (60, 69, 9)
  assert get["pitch_mean"] == pytest.approx((60 * 4 + 62 * 2 + 64 * 2 + 67 * 2 + 69 * 2) / 12)
  assert get["notes_per_bar"] == 6  # the repeated G counts twice
  assert get["UPC"] == 5  # C D E G A
  assert get["QN"] == pytest.approx(4 / 6)  # the two 16ths are fragments
  assert get["on_beat"] == pytest.approx(3 / 6)  # C, D and the first G start on a beat
  # Notes per pitch class C D E G G A: four of 1/6 and one of 1/3.
  assert get["PCE"] == pytest.approx(4 / 6 * math.log2(6) + 1 / 3 * math.log2(3))
  assert get["interval"] == pytest.approx((2 + 2 + 3 + 0 + 2) / 5)  # E -> G across the rest
  assert s["rest_share"][0, 1] == 1.0 and s["notes_per_bar"][0, 1] == 0.0
  for name in ("pitches_per_step", "pitch_low", "pitch_mean", "UPC", "QN", "PCE", "interval"):
    assert np.isnan(s[name][0, 1]), name
  assert np.isnan(s["TD"][0, 0])  # the pair never sounds together


def test_tonal_distance_between_lines():
  upper = line((72, 4), (76, 4), (79, 8))
  octave_below = line((60, 4), (64, 4), (67, 8))
  fifth_below = line((65, 4), (69, 4), (72, 8))
  v = voices(upper, octave_below, fifth_below)
  assert VM.pair_names(v) == ["v0-v1", "v0-v2", "v1-v2"]
  td = VM.piece_statistics(v)["TD"][0]
  assert td[0] == 0.0  # same pitch classes at every beat
  assert td[1] > 0.5 and td[1] == pytest.approx(td[2])


def test_held_chords_count_chords_every_voice_holds_two_beats():
  count = lambda *lines: int(VM.held_chord_counts(voices(*lines))[0])  # noqa: E731
  # Both voices struck together and held 8 steps (two beats at SPB 4), then moving on.
  assert count(line((72, 8), (74, 4), (76, 4)), line((60, 8), (59, 4), (57, 4))) == 1
  # Held 7 steps: a beat and three quarters is not a held chord (the 9 steps after it are).
  assert count(line((72, 7), (74, 9)), line((60, 7), (59, 9))) == 1
  assert count(line((72, 7), (74, 2), (76, 7)), line((60, 16))) == 0
  # One voice moves in the middle: two chords of 4 steps, neither held.
  assert count(line((72, 8), (74, 4), (76, 4)), line((60, 4), (62, 4), (64, 4), (65, 4))) == 0
  # A voice that rests is no chord of every voice; one that enters late starts the chord there.
  assert count(line((72, 16)), line((None, 4), (60, 12))) == 1
  assert count(line((72, 16)), line((None, 10), (60, 6))) == 0
  # A repeated note (struck again at the same pitch) ends the chord; a chord running to the end
  # of the piece counts, and so do two in a row.
  assert count(line((72, 4), (72, 4)), line((60, 8))) == 0
  assert count(line((72, 8), (74, 8)), line((60, 8), (59, 8))) == 2
  # Per bar in the statistics: one held chord in a piece of two bars of 8 steps.
  v = voices(line((72, 8), (74, 4), (76, 4)), line((60, 8), (59, 4), (57, 4)), steps_per_bar=8)
  assert VM.piece_statistics(v)["held_chords"][0, 0] == 0.5


def test_statistics_averages_pieces_and_skips_undefined():
  sounding = line((60, 8), (62, 8))
  silent = line((None, 16))
  both = VM.Voices(np.stack([sounding[0], silent[0]])[:, :, None],
                   np.stack([sounding[1], silent[1]])[:, :, None], SPB, BAR, ("v",))
  stats = VM.statistics(both)
  assert stats["rest_share"][0] == 0.5  # (0 + 1) / 2
  assert stats["notes_per_bar"][0] == 1.0  # (2 + 0) / 2
  assert stats["pitch_mean"][0] == 61.0  # the silent piece has none


# --- Voice leading ------------------------------------------------------------------------------

VOICE_LEADING_CASES = [
    # (what, upper voice per step, lower voice per step, rules that fire)
    ("parallel fifths", [67, 69], [60, 62], {"parallel_fifths"}),
    ("fifth to twelfth", [67, 81], [60, 62], {"parallel_fifths"}),
    ("contrary fifth to twelfth", [67, 74], [60, 55], set()),
    ("oblique into a fifth", [67, 69], [62, 62], set()),
    ("parallel octaves", [72, 74], [60, 62], {"parallel_octaves"}),
    ("unison to octave", [60, 74], [60, 62], {"parallel_octaves", "overlap"}),
    ("hidden fifth", [72, 74], [64, 67], {"hidden_fifths"}),
    ("hidden octave", [71, 74], [60, 62], {"hidden_octaves"}),
    ("contrary into an octave", [67, 69], [60, 57], set()),
    ("crossing", [64, 60], [59, 62], {"crossing"}),
    ("crossed before, uncrossed after", [60, 64], [62, 59], {"crossing"}),
    ("overlap into a crossing", [64, 59], [60, 60], {"crossing", "overlap"}),
    ("overlap without crossing", [67, 62], [64, 60], {"overlap"}),
    ("thirds", [64, 65], [60, 62], set()),
]


@pytest.mark.parametrize("what, upper, lower, fire", VOICE_LEADING_CASES,
                         ids=[c[0] for c in VOICE_LEADING_CASES])
def test_voice_leading_rules_on_hand_made_moves(what, upper, lower, fire):
  counts = VM.voice_leading_counts(voices(upper, lower, steps_per_bar=2), ranges=None)
  fired = {rule for rule, (events, _, _) in counts.items() if events.sum()}
  assert fired == fire, what
  for rule, (_, chances, labels) in counts.items():
    if rule == "spacing":  # two voices have no pair of upper voices
      assert labels == [] and chances.size == 0
    else:
      assert labels == ["v0-v1"] and chances.sum() == 1, rule  # one transition of one pair


def test_spacing_counts_only_upper_adjacent_voices():
  # S-A a tenth apart then a 10th + 5 semitones; A-B 14-15 apart, which is not a spacing fault.
  v = voices([76, 77], [62, 62], [48, 47], names=("s", "a", "b"), steps_per_bar=2)
  counts = VM.voice_leading_counts(v, ranges=None)
  events, chances, labels = counts["spacing"]
  assert labels == ["s-a"] and events.sum() == 1 and chances.sum() == 1
  assert counts["crossing"][2] == ["s-a", "a-b"]
  assert counts["parallel_fifths"][2] == ["s-a", "s-b", "a-b"]


def test_out_of_range_counts_notes():
  v = voices(line((84, 2), (70, 2)), line((38, 2), (50, 2)), steps_per_bar=4)
  result = VM.voice_leading(v, ranges=((60, 79), (40, 60)))["out_of_range"]
  assert (result["events"], result["opportunities"]) == (2, 4)
  assert result["per"] == {"v0": 0.5, "v1": 0.5}
  with pytest.raises(ValueError, match="one \\(low, high\\) per voice"):
    VM.voice_leading(v, ranges=((60, 79),))


def test_rests_and_repeated_notes_are_not_transitions():
  # The upper voice rests at step 1: only steps 2 -> 3 are a transition (parallel fifths).
  after_rest = voices([67, -1, 69, 71], [60, 60, 62, 64], steps_per_bar=4)
  fifths = VM.voice_leading(after_rest, None)["parallel_fifths"]
  assert (fifths["events"], fifths["opportunities"]) == (1, 1)
  restruck = voices(line((67, 1), (67, 1)), line((60, 1), (60, 1)), steps_per_bar=2)
  assert restruck.onset[0, 1].all()
  assert all(c.sum() == 0 for _, c, _ in VM.voice_leading_counts(restruck, None).values())
  assert math.isnan(VM.voice_leading(restruck, None)["crossing"]["rate"])


def _music21_events(quartet):
  """The pair rules from music21's VoiceLeadingQuartet (similar-motion parallels only)."""
  names = {quartet.vIntervals[0].simpleName, quartet.vIntervals[1].simpleName}
  return {
      "parallel_fifths": quartet.parallelMotion("P5", allowOctaveDisplacement=True),
      # music21 keeps unisons and octaves apart; counted here as one class.
      "parallel_octaves": quartet.similarMotion() and names == {"P1"},
      "hidden_fifths": quartet.hiddenFifth(),
      "hidden_octaves": quartet.hiddenOctave(),
      "crossing": quartet.voiceCrossing(),
      "overlap": quartet.voiceOverlap(),
      "spacing": quartet.v1n2.pitch.ps - quartet.v2n2.pitch.ps > 12,
  }


def test_voice_leading_matches_music21_on_chorales(chorales):
  from music21 import voiceLeading  # pylint: disable=import-outside-toplevel
  pairs = list(zip(*np.triu_indices(4, 1)))
  checked, fired = 0, {rule: 0 for rule in VM.PAIR_RULES}
  for pitch, onset, notes in chorales:
    transition, events = VM.transition_events(VM.Voices(pitch[None], onset[None], SPB, BAR))
    for t, k in zip(*np.nonzero(transition[0])):
      i, j = pairs[k]
      quartet = voiceLeading.VoiceLeadingQuartet(notes[t][i], notes[t + 1][i], notes[t][j],
                                                 notes[t + 1][j])
      for rule, theirs in _music21_events(quartet).items():
        ours = bool(events[rule][0, t, k])
        fired[rule] += ours
        if ours != bool(theirs):
          # The one difference: a diminished fifth (6 semitones) moving to a perfect fifth in
          # similar motion is a hidden fifth here, generic parallel fifths to music21.
          assert rule == "hidden_fifths" and quartet.vIntervals[0].generic.simpleUndirected == 5, (
              rule, t, [n.nameWithOctave for n in (quartet.v1n1, quartet.v1n2, quartet.v2n1,
                                                    quartet.v2n2)])
      checked += 1
  assert checked > 1000
  # Bach writes hidden intervals, crossings and wide spacings, now and then.
  assert min(fired[r] for r in ("hidden_fifths", "hidden_octaves", "crossing", "spacing")) > 0


# --- Restoration and accompaniment --------------------------------------------------------------

TRUTH = line((60, 4), (62, 4), (64, 4), (65, 4))
HIDDEN = np.zeros((1, 16, 1), bool)
HIDDEN[0, 8:] = True


def test_restoration_scores_by_hand():
  truth = voices(TRUTH, names=("s",))
  filled = voices(line((60, 4), (62, 4), (64, 2), (67, 2), (65, 4)), names=("s",))
  s = VM.restoration_scores(truth, filled, HIDDEN)["s"]
  assert s["cells"] == 8 and s["onsets"] == 2
  assert s["cell_accuracy"] == 0.75 and s["pitch_class_accuracy"] == 0.75
  assert s["onset_precision"] == pytest.approx(2 / 3) and s["onset_recall"] == 1.0
  assert s["onset_f1"] == pytest.approx(0.8)
  octave_up = voices(line((60, 4), (62, 4), (76, 4), (77, 4)), names=("s",))
  s = VM.restoration_scores(truth, octave_up, HIDDEN)
  assert s["s"]["cell_accuracy"] == 0.0 and s["s"]["pitch_class_accuracy"] == 1.0
  assert s["s"]["onset_f1"] == 0.0
  assert s["s"]["rhythm_f1"] == 1.0  # every note starts where Bach's does, an octave up
  assert s["all"] == s["s"]


def test_onsets_everywhere_or_nowhere_score_low():
  truth = voices(TRUTH, names=("s",))
  restruck = voices(line((60, 4), (62, 4), *[(64, 1)] * 4, *[(65, 1)] * 4), names=("s",))
  s = VM.restoration_scores(truth, restruck, HIDDEN)["s"]
  assert s["cell_accuracy"] == 1.0  # the right pitches, struck on every 16th
  assert s["onset_precision"] == 0.25 and s["onset_f1"] == pytest.approx(0.4)
  held = VM.hold_previous_note(truth, HIDDEN)
  assert held.pitch[0, 8:, 0].tolist() == [62] * 8
  s = VM.restoration_scores(truth, held, HIDDEN)["s"]
  assert s["onset_recall"] == 0.0 and s["onset_f1"] == 0.0 and s["cell_accuracy"] == 0.0


def test_restoration_rejects_mismatched_shapes():
  truth = voices(TRUTH, names=("s",))
  with pytest.raises(ValueError, match="hidden mask shape"):
    VM.restoration_scores(truth, truth, HIDDEN[:, :8])


def test_repeat_previous_bar_fills_the_gap_without_looking_into_it():
  truth = voices(line((60, 2), (62, 2), (64, 4), (65, 4)), names=("s",), steps_per_bar=4)
  hidden = np.zeros((1, 12, 1), bool)
  hidden[0, 4:12] = True  # bars 1-2
  filled = VM.repeat_previous_bar(truth, hidden)
  assert filled.pitch[0, :, 0].tolist() == [60, 60, 62, 62] * 3
  assert filled.onset[0, :, 0].tolist() == [True, False, True, False] * 3
  # Whatever the hidden cells hold, the baseline is the same.
  scrambled = truth.replace(pitch=np.where(hidden, 70, truth.pitch), onset=truth.onset & ~hidden)
  np.testing.assert_array_equal(VM.repeat_previous_bar(scrambled, hidden).pitch, filled.pitch)
  first = np.zeros((1, 12, 1), bool)
  first[0, :4] = True  # no bar before: the bar after
  assert VM.repeat_previous_bar(truth, first).pitch[0, :4, 0].tolist() == [64] * 4
  everything = np.ones((1, 12, 1), bool)
  assert (VM.repeat_previous_bar(truth, everything).pitch == -1).all()


def test_hold_previous_note():
  truth = voices(line((60, 2), (None, 2), (64, 4), (65, 4)), names=("s",), steps_per_bar=4)
  hidden = np.zeros((1, 12, 1), bool)
  hidden[0, 2:8] = True
  held = VM.hold_previous_note(truth, hidden)
  assert held.pitch[0, :, 0].tolist() == [60] * 8 + [65] * 4  # holds over the hidden rest too
  assert held.onset[0, :, 0].tolist() == [True] + [False] * 7 + [True, False, False, False]
  start = np.zeros((1, 12, 1), bool)
  start[0, :2] = True  # nothing before: the first given note after
  assert VM.hold_previous_note(truth, start).pitch[0, :2, 0].tolist() == [64, 64]


def test_accompaniment_scores():
  s, a, t, b = ([p] * 8 for p in (72, 67, 64, 48))  # a C major chord, C in the bass
  truth = voices(s, a, t, b, names=VM.SATB, steps_per_bar=8)
  same = VM.accompaniment_scores(truth, truth)
  assert same["bass_pc_in_chord"] == 1.0 and same["bass_pc_equal"] == 1.0
  assert same["given"] == ["soprano"]
  assert same["restoration"]["all"]["cell_accuracy"] == 1.0
  assert same["restoration"]["soprano"]["cells"] == 0  # given, not scored
  # No C among the generated voices: the given soprano's C does not count.
  other = voices(s, a, t, [55] * 8, names=VM.SATB, steps_per_bar=8)
  scores = VM.accompaniment_scores(truth, other)
  assert scores["bass_pc_in_chord"] == 0.0 and scores["bass_pc_equal"] == 0.0
  assert set(scores["voice_leading"]) == set(VM.VOICE_LEADING)
  with pytest.raises(ValueError, match="some, not all"):
    VM.accompaniment_scores(truth, truth, given=(0, 1, 2, 3))


def test_restoration_report_with_baselines(chorales):
  truth = bach_windows(chorales)
  hidden = VM.bar_span_mask(len(truth), truth.num_bars, BAR, 4, seed=0)
  result = VM.restoration_report(truth, {"Bach": truth}, hidden, onsets_at_changes=True)
  methods = result["methods"]
  assert list(methods) == ["Bach", "repeat previous bar", "hold previous note"]
  assert methods["Bach"]["all"]["cell_accuracy"] == methods["Bach"]["all"]["onset_f1"] == 1.0
  repeat, hold = methods["repeat previous bar"]["all"], methods["hold previous note"]["all"]
  assert repeat["cells"] == hidden.sum() and 0.05 < repeat["cell_accuracy"] < 0.6
  assert hold["onset_recall"] < 0.05 < repeat["onset_recall"]
  json.dumps(result, allow_nan=False)
  assert len(result["table"].splitlines()) == 1 + 3 * 5  # header, 3 methods x (4 voices + all)


def test_masked_nll():
  k = 5
  log_probs = np.full((1, 3, 4, k), -math.log(k))
  targets = np.zeros((1, 3, 4), int)
  hidden = np.zeros((1, 3, 4), bool)
  hidden[0, :2] = True  # two whole frames
  hidden[0, 2, :2] = True  # and two voices of a third
  nll = VM.masked_nll(log_probs, targets, hidden, names=VM.SATB)
  assert (nll["cells"], nll["frames"]) == (10, 3)
  assert nll["nats_per_cell"] == pytest.approx(math.log(k))
  assert nll["nats_per_frame"] == pytest.approx(10 * math.log(k) / 3)
  assert nll["per_voice"]["bass"] == pytest.approx(math.log(k))
  sure = np.log(np.eye(k)[targets] * (1 - 1e-9) + 1e-9 / k)
  assert VM.masked_nll(sure, targets, hidden)["nats_per_cell"] < 1e-6
  with pytest.raises(ValueError, match="log-softmax"):
    VM.masked_nll(np.zeros((1, 3, 4, k)), targets, hidden)
  with pytest.raises(ValueError, match="class indices"):
    VM.masked_nll(log_probs, targets + k, hidden)


def test_bar_span_mask():
  mask = VM.bar_span_mask(200, 4, BAR, 4, span=2, seed=1)
  assert mask.shape == (200, 4 * BAR, 4)
  bars = mask.reshape(200, 4, BAR, 4)
  assert (bars.all((2, 3)) == bars.any((2, 3))).all()  # whole bars of all voices
  hidden_bars = bars.all((2, 3))
  assert (hidden_bars.sum(1) == 2).all() and not hidden_bars[:, 0].any()
  assert set(hidden_bars.argmax(1).tolist()) == {1, 2}
  with pytest.raises(ValueError, match="cannot hide"):
    VM.bar_span_mask(1, 2, BAR, 4, span=2)


# --- Report -------------------------------------------------------------------------------------


def test_report_of_bach_against_itself_is_within_target(chorales):
  bach = bach_windows(chorales)
  result = VM.report(bach, bach)
  assert result["passed"] == result["total"], result["table"]
  json.dumps(result, allow_nan=False)  # JSON as it is, no NaN
  lines = result["table"].splitlines()
  assert lines[0].split()[:4] == ["statistic", "voice", "Bach", "model"]
  assert len(lines) == result["total"] + 2
  assert {r["statistic"] for r in result["rows"]} == (set(VM.STATISTICS) | {"TD", "held_chords"}
                                                      | set(VM.VOICE_LEADING))


def test_report_can_count_notes_at_pitch_changes_only(chorales):
  bach = bach_windows(chorales)
  eighths = np.zeros(bach.pitch.shape, bool)
  eighths[:, ::2] = True
  restruck = bach.replace(onset=bach.onset | (eighths & (bach.pitch >= 0)))  # struck every 8th
  rows = {(r["statistic"], r["voice"]): r for r in VM.report(restruck, bach)["rows"]}
  assert not rows["notes_per_bar", "soprano"]["ok"]
  result = VM.report(restruck, bach, onsets_at_changes=True)
  assert result["passed"] == result["total"]


def test_report_reads_rolls_and_flags_noise(chorales):
  bach = VM.to_rolls(bach_windows(chorales), lowest_pitch=24, num_pitches=84)
  noise = VM.degenerate_rolls("noise", 16, bars=4, steps_per_bar=BAR, steps_per_beat=SPB,
                              lowest_pitch=24, num_pitches=84)
  result = VM.report(noise, bach, spec=SPEC, with_oa=False)
  rows = {(r["statistic"], r["voice"]): r for r in result["rows"]}
  alto = rows["pitches_per_step", "alto"]
  assert alto["model"] > 3 and not alto["ok"] and alto["oa"] is None
  assert result["passed"] < result["total"] / 2
  with pytest.raises(ValueError, match="RollSpec"):
    VM.report(noise, bach)


# --- Measures that separate Bach from bad music -------------------------------------------------

# Which measure is meant to catch which defect: degenerate samples (`VM.degenerate_rolls`) and
# Bach's lines with one defect (`VM.corrupt`). A measure with no entry only describes the music:
# Bach himself writes hidden fifths and octaves in 2-3 % of transitions.
VOICE_CATCHES = {
    "pitches_per_step": {"noise", "cluster"},
    "poly_share": {"noise", "cluster"},
    "rest_share": {"silence"},
    "pitch_low": {"transposed"},
    "pitch_high": {"transposed"},
    "pitch_mean": {"transposed"},
    "pitch_span": {"chord", "random_lines"},
    "notes_per_bar": {"noise", "silence", "random_lines"},
    "UPC": {"chord", "noise", "random_lines"},
    "QN": {"noise", "random_lines"},
    "on_beat": {"noise", "random_lines"},
    "PCE": {"chord"},
    "interval": {"chord", "random_lines"},
    "TD": {"noise"},
    "held_chords": {"chord", "noise", "random_lines"},
    "parallel_fifths": {"fifths"},
    "parallel_octaves": {"doubled"},
    "crossing": {"noise", "cluster", "random_lines"},
    "overlap": {"noise", "cluster", "random_lines"},
    "spacing": {"noise", "cluster", "random_lines"},
    "out_of_range": {"transposed"},
}
# The MuseGAN metrics at 4 steps per beat (DP, drums only, is tested on its own below).
MUSEGAN_CATCHES = {
    "EB": {"silence"},
    "UPC": {"chord", "noise", "cluster", "random_lines"},
    "QN": {"noise", "random_lines"},
    "PP": {"noise", "cluster"},
    "POLY": {"noise", "cluster"},
    "PCE": {"chord", "noise", "cluster"},
    "SC": {"noise", "cluster"},
    "ND": {"noise", "cluster", "random_lines"},
    "GC": {"random_lines"},
    "TD": {"noise"},
}


def _bad_rolls(kind):
  return VM.degenerate_rolls(kind, 32, bars=4, steps_per_bar=BAR, steps_per_beat=SPB,
                             lowest_pitch=24, num_pitches=84)


def _bad_sets(bach):
  sets = {kind: VM.from_rolls(_bad_rolls(kind), SPEC) for kind in VM.DEGENERATE_KINDS}
  sets.update({kind: VM.corrupt(bach, kind) for kind in VM.CORRUPTIONS})
  return sets


def _apart(row):
  """Clearly apart from Bach: twice the target's distance, an overlapping area under 0.5, or a
  figure Bach has and the other set lacks; for voice leading over 3x Bach's rate + 1 point."""
  bach, model = row["bach"], row["model"]
  if model is None:
    return bach is not None
  if row["statistic"] in VM.VOICE_LEADING:
    return model > 3 * bach + 0.01
  return (abs(model - bach) > 2 * row["tolerance"]
          or (row["oa"] is not None and row["oa"] < 0.5))


def _by_statistic(result):
  out = {}
  for row in result["rows"]:
    out.setdefault(row["statistic"], []).append(row)
  return out


def test_each_measure_tells_bach_from_the_defect_it_is_meant_to_catch(chorales):
  bach = bach_windows(chorales)
  for kind, bad in _bad_sets(bach).items():
    rows = _by_statistic(VM.report(bad, bach))
    for statistic, kinds in VOICE_CATCHES.items():
      if kind in kinds:
        missed = [(r["voice"], r["bach"], r["model"], r["oa"]) for r in rows[statistic]
                  if not _apart(r)]
        assert not missed, (statistic, kind, missed)
  # Held-out Bach is not flagged by what flags the bad music: half the chorales against the rest.
  first, second = bach_windows(chorales[::2]), bach_windows(chorales[1::2])
  rows = _by_statistic(VM.report(first, second))
  for statistic in VOICE_CATCHES:
    flagged = [(r["voice"], r["bach"], r["model"], r["oa"]) for r in rows[statistic] if _apart(r)]
    assert not flagged, (statistic, flagged)


def test_musegan_metrics_tell_bach_from_bad_music(chorales):

  def values(rolls):
    out = dict(M.track_metrics(rolls, SPEC))
    upper, lower = np.triu_indices(4, 1)
    out["TD"] = M.pair_metrics(rolls, SPEC)["TD"][upper, lower]
    return out

  def apart(ref, other):
    return np.isnan(other) & ~np.isnan(ref) | (np.abs(other - ref) > 0.2 * np.abs(ref))

  def bach_rolls(pieces):
    return VM.to_rolls(bach_windows(pieces), lowest_pitch=24, num_pitches=84)

  reference = values(bach_rolls(chorales))
  for kind in VM.DEGENERATE_KINDS:
    got = values(_bad_rolls(kind))
    for metric, kinds in MUSEGAN_CATCHES.items():
      if kind in kinds:
        assert apart(reference[metric], got[metric]).all(), (metric, kind, reference[metric],
                                                              got[metric])
  first, second = values(bach_rolls(chorales[::2])), values(bach_rolls(chorales[1::2]))
  for metric in MUSEGAN_CATCHES:
    assert not apart(first[metric], second[metric]).any(), (metric, first[metric],
                                                            second[metric])


def test_drum_pattern_on_a_16th_note_grid():
  # At 4 steps per beat DP's grid is the 8th note: a straight 8th-note groove scores 1, onsets
  # on random 16ths about (1 + 0.3) / 2.
  spec = M.RollSpec(SPB, 24, ("drums",), (0,))
  groove = np.zeros((8, 1, BAR, 84, 1), np.uint8)
  groove[:, 0, ::2, 42 - 24, 0] = 2
  rng = np.random.default_rng(0)
  noise = (rng.random((8, 1, BAR, 84, 1)) < 0.05).astype(np.uint8) * 2
  assert M.track_metrics(groove, spec)["DP"][0] == 1.0
  assert M.track_metrics(noise, spec)["DP"][0] == pytest.approx(0.65, abs=0.08)


def test_degenerate_and_corrupt_reject_unknown_kinds():
  with pytest.raises(ValueError, match="kind must be one of"):
    VM.degenerate_rolls("jazz", 1, bars=1, steps_per_bar=BAR, steps_per_beat=SPB,
                        lowest_pitch=24, num_pitches=84)
  with pytest.raises(ValueError, match="kind must be one of"):
    VM.corrupt(voices([60] * 4, [55] * 4, [50] * 4), "inverted")
