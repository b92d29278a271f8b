"""Monophonic voices: classes <-> piano-rolls exactly, soft rolls, masked cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgan import voice_metrics
from jaxgan.models import voicenet, voices

SHAPE = (2, 3, 8, 24, 3)   # batch, bars, steps, pitches, tracks
LAYOUT = voices.VoiceLayout(tracks=(0, 2), ranges=((10, 20), (0, 6)), num_pitches=24)


@st.composite
def voice_lines(draw):
  """A roll whose voice tracks hold non-overlapping notes inside their ranges (repeated notes
  included), and whose other track holds anything."""
  b, bars, steps, pitches, tracks = SHAPE
  total = bars * steps
  roll = np.zeros(SHAPE, np.uint8)
  flat = roll.reshape(b, total, pitches, tracks)
  for i in range(b):
    for t, (lo, hi) in zip(LAYOUT.tracks, LAYOUT.ranges):
      pos = 0
      while pos < total:
        gap = draw(st.integers(0, 3))
        length = draw(st.integers(1, 6))
        pitch = draw(st.integers(lo, hi))
        start = pos + gap
        end = min(start + length, total)
        if start >= total:
          break
        flat[i, start:end, pitch, t] = 1
        flat[i, start, pitch, t] = 2
        pos = end
    poly = draw(st.lists(st.tuples(st.integers(0, total - 1), st.integers(0, pitches - 1)),
                         max_size=10))
    for s, p in poly:
      flat[i, s, p, 1] = 2
  return roll


@settings(max_examples=60, deadline=None)
@given(voice_lines())
def test_round_trip_is_exact(roll):
  classes, restrike = voices.classes_from_roll(LAYOUT, jnp.asarray(roll))
  back = voices.roll_from_classes(LAYOUT, classes, restrike, roll.shape,
                                  base=jnp.asarray(roll))
  np.testing.assert_array_equal(np.asarray(back), roll)
  # Without a base the voices alone come back and the other track is silent.
  alone = np.asarray(voices.roll_from_classes(LAYOUT, classes, restrike, roll.shape))
  np.testing.assert_array_equal(alone[..., list(LAYOUT.tracks)], roll[..., list(LAYOUT.tracks)])
  assert not alone[..., 1].any()


def test_one_pitch_per_voice_by_construction():
  key = jax.random.PRNGKey(0)
  t = SHAPE[1] * SHAPE[2]
  classes = jax.random.randint(key, (SHAPE[0], t, 2), 0, LAYOUT.num_classes)
  classes = jnp.where(jnp.asarray(LAYOUT.valid_classes())[jnp.arange(2), classes], classes, 0)
  restrike = jax.random.bernoulli(key, 0.3, classes.shape)
  roll = np.asarray(voices.roll_from_classes(LAYOUT, classes, restrike, SHAPE))
  per_step = (roll[..., list(LAYOUT.tracks)] > 0).sum(axis=3)
  assert per_step.max() <= 1


def test_repeated_and_held_notes_differ():
  roll = np.zeros((1, 1, 8, 24, 3), np.uint8)
  roll[0, 0, 0:4, 12, 0] = [2, 1, 1, 1]      # one held note
  roll[0, 0, 4:8, 12, 0] = [2, 1, 2, 1]      # two repeated notes
  classes, restrike = voices.classes_from_roll(LAYOUT, jnp.asarray(roll))
  assert np.asarray(classes[0, :, 0]).tolist() == [3] * 8
  assert np.asarray(restrike[0, :, 0]).tolist() == [0, 0, 0, 0, 1, 0, 1, 0]
  starts = voices.note_starts(classes, restrike)
  assert np.asarray(starts[0, :, 0]).tolist() == [1, 0, 0, 0, 1, 0, 1, 0]


def test_highest_pitch_wins_where_data_breaks_the_layout():
  roll = np.zeros((1, 1, 8, 24, 3), np.uint8)
  roll[0, 0, 0, 11, 0] = 2
  roll[0, 0, 0, 15, 0] = 2
  roll[0, 0, 1, 25 - 2, 0] = 2   # row 23 is outside soprano's rows 10..20: ignored
  classes, _ = voices.classes_from_roll(LAYOUT, jnp.asarray(roll))
  assert int(classes[0, 0, 0]) == 15 - 10 + 1
  assert int(classes[0, 1, 0]) == voices.REST


def test_soft_roll_of_one_hots_is_the_roll():
  key = jax.random.PRNGKey(3)
  t = SHAPE[1] * SHAPE[2]
  classes = jnp.stack([jax.random.randint(key, (SHAPE[0], t), 0, 12),
                       jax.random.randint(key, (SHAPE[0], t), 0, 8)], -1)
  restrike = jnp.zeros_like(classes, bool)
  roll = voices.roll_from_classes(LAYOUT, classes, restrike, SHAPE)
  soft = voices.soft_roll(LAYOUT, jax.nn.one_hot(classes, LAYOUT.num_classes), SHAPE)
  np.testing.assert_array_equal(np.asarray(soft > 0), np.asarray(roll > 0))


def test_gumbel_straight_through_is_one_hot_with_soft_gradients():
  logits = jnp.array([[0.0, 1.0, -1.0, 2.0]])
  sample = voices.gumbel_softmax(jax.random.PRNGKey(0), logits, 10.0)
  assert np.asarray(sample).sum() == pytest.approx(1.0)
  assert set(np.asarray(sample).ravel().tolist()) <= {0.0, 1.0}
  grad = jax.grad(lambda l: (voices.gumbel_softmax(jax.random.PRNGKey(0), l, 1.0)
                             * jnp.arange(4.0)).sum())(logits)
  assert np.abs(np.asarray(grad)).sum() > 0
  # The sampled class follows the logits: a dominant class is always drawn.
  picks = [int(jnp.argmax(voices.gumbel_softmax(jax.random.PRNGKey(i),
                                                jnp.array([0.0, 30.0, 0.0]), 1.0)))
           for i in range(20)]
  assert picks == [1] * 20


def test_masked_cross_entropy_weights_examples_equally():
  c = 5
  targets = jnp.zeros((2, 4, 1), jnp.int32)
  logits = jnp.zeros((2, 4, 1, c))
  hidden = jnp.zeros((2, 4, 1), bool).at[0, :, 0].set(True).at[1, 0, 0].set(True)
  per_example, per_cell = voices.masked_cross_entropy(logits, targets, hidden)
  assert float(per_example) == pytest.approx(np.log(c))
  assert float(per_cell) == pytest.approx(np.log(c))
  sure = logits.at[1, 0, 0, 0].set(50.0)   # example 1's only hidden cell is certain
  per_example, per_cell = voices.masked_cross_entropy(sure, targets, hidden)
  assert float(per_example) == pytest.approx(np.log(c) / 2, rel=1e-4)
  assert float(per_cell) == pytest.approx(np.log(c) * 4 / 5, rel=1e-4)


def test_layout_refuses_rows_outside_the_roll():
  with pytest.raises(ValueError, match="rows"):
    voices.VoiceLayout(tracks=(0,), ranges=((0, 30),), num_pitches=24)
  layout = voices.VoiceLayout.from_pitches((0, 1), ((60, 81), (52, 74)), 24, 84)
  assert layout.ranges == ((36, 57), (28, 50))
  assert layout.num_classes == 24


SATB_LAYOUT = voices.VoiceLayout(tracks=(0, 1, 2, 3), ranges=((30, 50), (25, 45), (20, 40),
                                                              (10, 34)), num_pitches=60)


def _classes(rows_per_voice):
  """int32 [1, T, V] classes from piano-roll rows per voice (None = rest)."""
  out = []
  for v, rows in enumerate(rows_per_voice):
    lo = SATB_LAYOUT.ranges[v][0]
    out.append([voices.REST if r is None else r - lo + 1 for r in rows])
  return jnp.asarray(np.asarray(out).T[None], jnp.int32)


def test_parallel_counts_on_hand_made_moves():
  # Soprano 42 -> ? -> held, alto 35 -> 37 -> 37: a fifth below the soprano at the start.
  classes = _classes([[42, 42, 44], [35, 37, 37], [None, None, None], [None, None, None]])
  counts = np.asarray(voices.parallel_perfect_counts(SATB_LAYOUT, classes))
  soprano_at_1 = counts[0, 1, 0]
  row = lambda r: r - SATB_LAYOUT.ranges[0][0] + 1  # noqa: E731
  assert soprano_at_1[row(44)] == 1      # up a tone with the alto: fifth -> fifth
  assert soprano_at_1[row(42)] == 0      # holds: oblique motion
  assert soprano_at_1[row(40)] == 0      # contrary motion
  assert soprano_at_1[row(49)] == 0      # into an octave from a fifth: a hidden octave
  assert soprano_at_1[row(32)] == 0      # below the alto's range of motion, a third: none
  assert counts[0, 1, 0, voices.REST] == 0
  # Octaves and their compounds count the same way: soprano and bass two octaves apart.
  classes = _classes([[46, 46, 46], [None] * 3, [None] * 3, [22, 24, 24]])
  counts = np.asarray(voices.parallel_perfect_counts(SATB_LAYOUT, classes))
  assert counts[0, 1, 0, row(48)] == 1   # both up a tone: octave -> octave
  assert counts[0, 1, 0, row(47)] == 0


def test_parallel_counts_agree_with_the_voice_leading_metric():
  """For every cell and every choice there, the penalty's count equals the parallel fifths and
  octaves `voice_metrics` finds at the two transitions around that cell."""
  rng = np.random.default_rng(3)
  steps = 6
  rows = [[int(r) if rng.random() > 0.1 else None
           for r in rng.integers(lo + 3, lo + 12, steps)] for lo, _ in SATB_LAYOUT.ranges]
  classes = np.asarray(_classes(rows))
  counts = np.asarray(voices.parallel_perfect_counts(SATB_LAYOUT, jnp.asarray(classes)))
  pitch_of = voices.class_pitches(SATB_LAYOUT)

  def events_at(cls, t):
    pitch = np.take_along_axis(pitch_of[None, None].repeat(steps, 1),
                               cls[..., None], -1)[..., 0]
    vs = voice_metrics.from_pitches(pitch, steps_per_beat=1, steps_per_bar=steps)
    _, events = voice_metrics.transition_events(vs)
    hits = events["parallel_fifths"] | events["parallel_octaves"]
    return hits[0, max(t - 1, 0):t + 1]    # the transitions into and out of step t

  upper, lower = voice_metrics._pair_indices(4)  # noqa: SLF001
  for t in range(steps):
    for v in range(4):
      pairs_with_v = (upper == v) | (lower == v)
      for c in np.flatnonzero(SATB_LAYOUT.valid_classes()[v]):
        changed = classes.copy()
        changed[0, t, v] = c
        expected = events_at(changed, t)[:, pairs_with_v].sum()
        assert counts[0, t, v, c] == expected, (t, v, c)


def test_rotary_attention_scores_depend_on_distance_only():
  q = jax.random.normal(jax.random.PRNGKey(0), (1, 1, 2, 8))
  k = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 2, 8))
  # The same query and key vector at every one of 40 steps: only positions differ.
  rq = voicenet._rotate(jnp.tile(q, (1, 40, 1, 1)))[0]
  rk = voicenet._rotate(jnp.tile(k, (1, 40, 1, 1)))[0]
  scores = np.asarray(jnp.einsum("ihd,jhd->hij", rq, rk))
  for shift in (1, 7, 16):
    np.testing.assert_allclose(scores[:, 3, 5], scores[:, 3 + shift, 5 + shift], atol=1e-4)
  # ... and do depend on the distance (a bar back is not the step before).
  assert np.abs(scores[:, 4, 3] - scores[:, 20, 3]).max() > 1e-2
  np.testing.assert_allclose(np.asarray(voicenet._rotate(q)), np.asarray(q), atol=1e-6)


def test_onset_rates_count_note_starts_by_step_of_the_bar():
  roll = np.zeros(SHAPE, np.uint8)
  flat = roll.reshape(SHAPE[0], -1, SHAPE[3], SHAPE[4])
  flat[:, :, 12, 0] = 1
  flat[:, ::4, 12, 0] = 2          # voice 0: a note every 4 steps, struck again on the same pitch
  flat[:, :, 3, 2] = 1
  flat[:, ::8, 3, 2] = 2           # voice 1: one note per bar, then none at all in the last bar
  flat[:, 16:, 3, 2] = 0
  rates = voices.onset_rates(LAYOUT, roll, steps_per_bar=8)
  # step 0: voice 0 always, voice 1 in 2 bars of 3; step 4: voice 0 only; elsewhere nothing
  np.testing.assert_allclose(rates[[0, 4]], [(3 + 2) / 6, 3 / 6], atol=1e-6)
  np.testing.assert_allclose(np.delete(rates, [0, 4]), 1e-3)


def test_onset_rates_per_voice_keep_each_voice_apart():
  roll = np.zeros(SHAPE, np.uint8)
  flat = roll.reshape(SHAPE[0], -1, SHAPE[3], SHAPE[4])
  flat[:, :, 12, 0] = 1
  flat[:, ::4, 12, 0] = 2          # voice 0: a note every 4 steps
  flat[:, :, 3, 2] = 1
  flat[:, 2::8, 3, 2] = 2          # voice 1: a note at step 2 of every bar
  rates = voices.onset_rates(LAYOUT, roll, steps_per_bar=8, per_voice=True)
  assert rates.shape == (2, 8)
  np.testing.assert_allclose(rates[0, [0, 4]], 1.0 - 1e-3)
  np.testing.assert_allclose(rates[1, 2], 1.0 - 1e-3)
  np.testing.assert_allclose(rates[1, 0], 1 / 3)    # the piece's first note, in bar 1 of 3
  np.testing.assert_allclose(np.delete(rates[1], [0, 2]), 1e-3)
  # The shared rates are the voices' mean.
  shared = voices.onset_rates(LAYOUT, roll, steps_per_bar=8)
  np.testing.assert_allclose(shared, np.clip(rates.mean(0), 1e-3, 1 - 1e-3), atol=1e-3)


def test_metre_prior_per_voice_reads_each_voice_its_own_rates():
  a, b = 3, 7
  one = jnp.asarray([[a, a, a, a, b, b, b, b]])                       # [1, T=8]
  classes = jnp.stack([one, one], -1)                                 # [1, 8, V=2]
  strong_first = jnp.asarray([0.8, 0.01, 0.3, 0.01])
  strong_third = jnp.asarray([0.3, 0.01, 0.8, 0.01])
  prior = np.asarray(voices.metre_log_prior(classes, 10, jnp.stack([strong_first,
                                                                    strong_third])))
  # Step 4 is the bar's first step (bars of 4): voice 0 prefers starting b there, voice 1
  # (strongest at step 2 of its bar) less so.
  assert prior[0, 4, 0, b] - prior[0, 4, 0, a] > prior[0, 4, 1, b] - prior[0, 4, 1, a] + 0.5
  # A row per voice equal to the shared rates gives the shared prior.
  shared = np.asarray(voices.metre_log_prior(classes, 10, strong_first))
  same = np.asarray(voices.metre_log_prior(classes, 10, jnp.stack([strong_first] * 2)))
  np.testing.assert_allclose(same, shared, atol=1e-6)
  # A gain g on a voice adds log(g) per event a choice makes there (at steps of equal rates),
  # nothing to holding on.
  flat_rates = jnp.full([4], 0.3)
  plain = np.asarray(voices.metre_log_prior(classes, 10, flat_rates))
  gained = np.asarray(voices.metre_log_prior(classes, 10, flat_rates, jnp.asarray([1.0, 2.0])))
  np.testing.assert_allclose(gained[..., 0, :], plain[..., 0, :], atol=1e-6)
  events = np.rint((gained[..., 1, :] - plain[..., 1, :]) / np.log(2.0))
  np.testing.assert_allclose(gained[..., 1, :] - plain[..., 1, :], events * np.log(2.0),
                             atol=1e-5)
  assert events[0, 2, a] == 0 and events[0, 2, b] == 2    # inside a's note: b starts and ends
  assert events[0, 3, a] == 1 and events[0, 3, b] == 1    # before b: a holds, or b starts early
  # With a metre, the gain acts in proportion to the step's rate: fully on the strongest step,
  # hardly on a weak one (notes a sparse voice lacks are those held over a beat).
  metred = np.asarray(voices.metre_log_prior(classes, 10, strong_first, jnp.asarray([2.0, 2.0])))
  added = metred - shared
  np.testing.assert_allclose(added[0, 0, 0, b], np.log(2.0) * (1 + 0.01 / 0.8), atol=1e-5)
  np.testing.assert_allclose(added[0, 1, 0, b], np.log(2.0) * (0.01 / 0.8 + 0.3 / 0.8),
                             atol=1e-5)


def test_metre_prior_moves_a_note_start_onto_the_stronger_step():
  rates = jnp.asarray([0.8, 0.01, 0.3, 0.01])   # bar of 4 steps: strong, weak, medium, weak
  a, b = 3, 7
  classes = jnp.asarray([[a, a, a, b, b, b, b, b]])[..., None]          # [1, T=8, V=1]
  prior = np.asarray(voices.metre_log_prior(classes, 10, rates))[0, :, 0]
  # Step 3 (weak) between a and b: holding a starts b on the strong step 4, choosing b starts
  # it on step 3: the prior prefers holding. Step 4 (strong): starting b there is preferred.
  assert prior[3, a] > prior[3, b] + 2
  assert prior[4, b] > prior[4, a]
  # A rest that begins at a weak step is an event there, as a new pitch is (no cheap way out);
  # a rest that goes on is not: inside a rest, going on beats a note that would start here and
  # end on the weak step after.
  assert abs(prior[1, voices.REST] - prior[1, 9]) < 1e-6
  rests = jnp.asarray([[a, voices.REST, voices.REST, voices.REST, b]])[..., None]
  after_rest = np.asarray(voices.metre_log_prior(rests, 10, rates))[0, :, 0]
  assert after_rest[2, voices.REST] > after_rest[2, b] + 2
  # Relative to a bar without metre: at a step with the mean rate, starting costs nothing.
  flat = np.asarray(voices.metre_log_prior(classes, 10, jnp.full([4], 0.3)))
  np.testing.assert_allclose(flat, 0.0, atol=1e-6)


def _line(*classes):
  return jnp.asarray([classes], jnp.int32)[..., None]             # [1, T, V=1]


def test_one_step_notes_on_hand_made_lines():
  a, b, c, r = 3, 5, 7, voices.REST
  got = voices.one_step_notes(_line(a, a, b, c, c, r, a, r, b, b, c), jnp.zeros([1, 11, 1], bool))
  # b at step 2 (a note start, then c starts), a at 6 (between rests); not c at 10 (last step)
  np.testing.assert_array_equal(np.asarray(got)[0, :, 0], [0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0])
  # A restrike ends the note before it: struck at steps 1 and 2, a held pitch is three notes
  # of 1, 1 and 2 steps.
  strike = jnp.asarray([[0, 1, 1, 0]], bool)[..., None]
  got = voices.one_step_notes(_line(a, a, a, a), strike)
  np.testing.assert_array_equal(np.asarray(got)[0, :, 0], [1, 1, 0, 0])


def test_a_one_step_note_joins_the_neighbour_the_logits_prefer():
  a, b, c, r = 3, 5, 7, voices.REST
  line = _line(a, a, b, c, c)
  no_strike = jnp.zeros(line.shape, bool)
  which = voices.one_step_notes(line, no_strike)
  logits = jnp.zeros(line.shape + (10,))
  prefer_c = logits.at[0, 2, 0, c].set(1.0)
  joined, strike = voices.join_one_step_notes(line, no_strike, prefer_c, which)
  np.testing.assert_array_equal(np.asarray(joined)[0, :, 0], [a, a, c, c, c])
  assert not np.asarray(strike).any()
  prefer_a = logits.at[0, 2, 0, a].set(1.0)
  joined, _ = voices.join_one_step_notes(line, no_strike, prefer_a, which)
  np.testing.assert_array_equal(np.asarray(joined)[0, :, 0], [a, a, a, c, c])
  # Next to a rest the only pitched neighbour takes it, whatever the logits say; between
  # rests it stays.
  for line, want in ((_line(a, a, b, r, r), [a, a, a, r, r]),
                     (_line(r, r, b, c, c), [r, r, c, c, c]),
                     (_line(r, r, b, r, r), [r, r, b, r, r])):
    which = voices.one_step_notes(line, no_strike)
    joined, _ = voices.join_one_step_notes(line, no_strike, prefer_a, which)
    np.testing.assert_array_equal(np.asarray(joined)[0, :, 0], want)
  # Between two notes of one pitch the note before takes the cell, and the note after stays
  # a note of its own: a restrike.
  line = _line(a, a, b, a, a)
  joined, strike = voices.join_one_step_notes(line, no_strike, prefer_c,
                                              voices.one_step_notes(line, no_strike))
  np.testing.assert_array_equal(np.asarray(joined)[0, :, 0], [a] * 5)
  np.testing.assert_array_equal(np.asarray(voices.note_starts(joined, strike))[0, :, 0],
                                [1, 0, 0, 1, 0])


@jax.jit
def _join_all(roll, logits):
  """The classes and restrikes of a roll with both passes of joins run as the sampler runs
  them (even steps, then odd ones), and what the result reads back as through a roll."""
  classes, strike = voices.classes_from_roll(LAYOUT, roll)
  parity = jnp.arange(classes.shape[1])[None, :, None] % 2
  joined, joined_strike = classes, strike
  for p in (0, 1):
    which = voices.one_step_notes(joined, joined_strike) & (parity == p)
    joined, joined_strike = voices.join_one_step_notes(joined, joined_strike, logits, which)
  again = voices.classes_from_roll(
      LAYOUT, voices.roll_from_classes(LAYOUT, joined, joined_strike, roll.shape))
  return {"old": classes, "new": joined, "starts": voices.note_starts(classes, strike),
          "new_starts": voices.note_starts(joined, joined_strike),
          "one_step": voices.one_step_notes(classes, strike),
          "left": voices.one_step_notes(joined, joined_strike),
          "again": again[0], "again_starts": voices.note_starts(*again)}


@settings(max_examples=25, deadline=None)
@given(voice_lines(), st.integers(0, 2**31 - 1))
def test_joins_only_lengthen_notes_and_leave_none_of_one_step(roll, seed):
  num_classes = LAYOUT.num_classes
  logits = jax.random.normal(jax.random.PRNGKey(seed), SHAPE[:1] + (SHAPE[1] * SHAPE[2], 2,
                                                                   num_classes))
  r = {k: np.asarray(v) for k, v in _join_all(jnp.asarray(roll), logits).items()}
  old, new = r["old"], r["new"]

  def next_to_a_note(classes):
    before = np.concatenate([np.zeros_like(classes[:, :1], bool), classes[:, :-1] != 0], 1)
    after = np.concatenate([classes[:, 1:] != 0, np.zeros_like(classes[:, :1], bool)], 1)
    return before | after

  # Every note of the result began where a note began before, and rests stay rests: notes
  # only took cells of the notes beside them; if any one-step note had a note beside it,
  # some note is gone.
  assert not (r["new_starts"] & ~r["starts"]).any()
  np.testing.assert_array_equal(new == voices.REST, old == voices.REST)
  joinable = (r["one_step"] & next_to_a_note(old)).any()
  assert (r["new_starts"].sum() < r["starts"].sum()) == joinable
  # What is left of one step stands between rests (or starts the piece before a rest).
  assert not (r["left"] & next_to_a_note(new)).any()
  # The classes and restrikes still make a roll whose voices read back the same.
  np.testing.assert_array_equal(r["again"], new)
  np.testing.assert_array_equal(r["again_starts"], r["new_starts"])


def test_interval_counts_and_prior_on_hand_made_lines():
  layout = voices.VoiceLayout(tracks=(0,), ranges=((0, 30),), num_pitches=32)
  a, r = 5, voices.REST
  line = _line(a, a, a + 2, a + 2, a - 1, r, a + 19, a + 19)      # +2, -3, (rest), no leap
  roll = voices.roll_from_classes(layout, line, jnp.zeros(line.shape, bool), (1, 1, 8, 32, 1))
  counts = voices.interval_counts(layout, np.asarray(roll))
  want = np.zeros([1, voices.INTERVAL_BINS])
  want[0, 2] = want[0, 3] = 1
  np.testing.assert_array_equal(counts, want)
  weights = jnp.zeros([1, voices.INTERVAL_BINS]).at[0, 2].set(1.0).at[0, 13].set(-5.0)
  prior = np.asarray(voices.interval_log_prior(line, 32, weights))[0, :, 0]
  # Step 1, between a and a + 2: every pitch leaps from a and to a + 2 unless it is one of
  # them; a leaps 2 to step 2, a + 2 leaps 2 from step 0, a - 2 leaps 2 and then 4.
  assert prior[1, a] == 1.0 and prior[1, a + 2] == 1.0 and prior[1, a - 2] == 1.0
  assert prior[1, a + 1] == 0.0 and prior[1, a + 4] == 1.0
  # A rest makes no leap, nor does a pitch beside a rest on that side; leaps of 13 semitones
  # and more share the last bin.
  assert prior[1, r] == 0.0
  assert prior[6, a + 19] == 0.0 and prior[6, a + 17] == 1.0
  assert prior[5, a + 19] == -5.0 and prior[7, a] == -5.0


def test_pickup_shares_count_how_long_every_voice_rests_first():
  roll = np.zeros((5,) + SHAPE[1:], np.uint8)
  flat = roll.reshape(5, -1, SHAPE[3], SHAPE[4])
  flat[:, :, 12, 0] = 1                    # voice 0 sings throughout...
  flat[1, :3, 12, 0] = 0                   # ...but in piece 1 only from step 3,
  flat[2, :3, 12, 0] = 0                   # in piece 2 from step 3 too,
  flat[3, :10, 12, 0] = 0                  # in piece 3 from the second bar (not counted),
  flat[4, :5, 12, 0] = 0                   # and in piece 4 from step 5, where voice 1 sings
  flat[4, 2:, 3, 2] = 1                    # from step 2: the piece's pickup is 2 steps
  flat[1, :, 5, 1] = 1                     # a polyphonic track is no voice
  shares = voices.pickup_shares(LAYOUT, roll, steps_per_bar=8)
  np.testing.assert_allclose(shares, [1 / 4, 0, 1 / 4, 2 / 4, 0, 0, 0, 0])


def test_pickup_cells_follow_the_drawn_length_in_free_pieces_only():
  num, steps, bar = 400, 24, 8
  free = np.ones((num, steps, 2), bool)
  free[:50, 5, 1] = False                  # a given cell in the first bar: no pickup drawn
  free[50:100, 20, 0] = False              # nor anywhere else (a restoration, an accompaniment)
  shares = jnp.asarray([0.5, 0, 0, 0.25, 0, 0, 0.25, 0])
  rest, sound = (np.asarray(x) for x in
                 voices.pickup_cells(jax.random.PRNGKey(0), jnp.asarray(free), shares))
  assert not rest[:100].any() and not sound[:100].any()
  length = rest[100:, :, 0].sum(1)
  assert set(np.unique(length)) == {0, 3, 6}
  np.testing.assert_allclose(np.bincount(length, minlength=7)[[0, 3, 6]] / 300,
                             [0.5, 0.25, 0.25], atol=0.08)
  # A batch holds the shares' number of each length (systematic sampling), to within one.
  whole = voices.pickup_cells(jax.random.PRNGKey(1), jnp.ones((num, steps, 2), bool), shares)
  counts = np.bincount(np.asarray(whole[0])[:, :, 0].sum(1), minlength=7)[[0, 3, 6]]
  assert np.abs(counts - num * np.array([0.5, 0.25, 0.25])).max() <= 1, counts
  step = np.arange(steps)[None, :, None]
  np.testing.assert_array_equal(rest[100:], np.broadcast_to(step < length[:, None, None],
                                                             rest[100:].shape))
  np.testing.assert_array_equal(
      sound[100:], np.broadcast_to((step >= length[:, None, None])
                                   & (step < length[:, None, None] + bar),
                                   sound[100:].shape))


def test_ornament_shares_count_the_sets_of_voices_with_one_step_notes():
  roll = np.zeros((4,) + SHAPE[1:], np.uint8)
  flat = roll.reshape(4, -1, SHAPE[3], SHAPE[4])
  flat[:, :, 12, 0] = 1                    # every piece: voice 0 holds one pitch...
  flat[:, :, 3, 2] = 1                     # ...and voice 1 another
  flat[1, 5, 12, 0] = 0                    # piece 1: voice 0 sings a 16th (another pitch)
  flat[1, 5, 14, 0] = 1
  flat[2, 7, 3, 2] = 0                     # piece 2: voice 1 does
  flat[2, 7, 4, 2] = 1
  flat[3, 5, 12, 0] = 0                    # piece 3: both do
  flat[3, 5, 14, 0] = 1
  flat[3, 9, 3, 2] = 0
  flat[3, 9, 4, 2] = 1
  flat[0, 6, 7, 1] = 1                     # a polyphonic track is no voice
  shares = voices.ornament_shares(LAYOUT, roll)
  np.testing.assert_allclose(shares, [1 / 4, 1 / 4, 1 / 4, 1 / 4])
  # A held pitch struck again for one step is a one-step note too.
  flat[0, 10, 12, 0] = 2
  flat[0, 11, 12, 0] = 2
  np.testing.assert_allclose(voices.ornament_shares(LAYOUT, roll), [0, 2 / 4, 1 / 4, 1 / 4])


def test_plain_voices_follow_the_drawn_sets_in_free_pieces_only():
  num, steps = 400, 24
  free = np.ones((num, steps, 2), bool)
  free[:60, 9, 1] = False                  # a restoration or accompaniment: nothing drawn
  shares = jnp.asarray([0.5, 0.0, 0.3, 0.2])   # none / voice 1 only / both
  plain = np.asarray(voices.plain_voices(jax.random.PRNGKey(0), jnp.asarray(free), shares))
  assert plain.shape == (num, 1, 2)
  assert not plain[:60].any()
  drawn = plain[60:, 0]
  # Voice 0 is never ornamented alone, so where it is, voice 1 is too.
  assert not (~drawn[:, 0] & drawn[:, 1]).any()
  whole = np.asarray(voices.plain_voices(jax.random.PRNGKey(1), jnp.ones((num, steps, 2), bool),
                                         shares))[:, 0]
  counts = np.array([(whole[:, 0] & whole[:, 1]).sum(), (whole[:, 0] & ~whole[:, 1]).sum(),
                     (~whole[:, 0] & ~whole[:, 1]).sum()])
  assert np.abs(counts - num * np.array([0.5, 0.3, 0.2])).max() <= 1, counts


def test_syncopations_on_hand_made_lines():
  a, b, c, r = 3, 5, 7, voices.REST
  # 4 steps per beat. b begins on an 8th off the beat and is held over beat 1; c begins off
  # the beat and ends on the next beat; a is a whole note from a beat; a held 8th after a
  # rest is no syncopation unless it is held over the beat.
  line = _line(a, a, b, b, b, b, c, c, a, a, a, a, a, a, a, a, r, r, c, c, c, r, r, r)
  got = voices.syncopations(line, jnp.zeros(line.shape, bool), 4)
  want = np.zeros(24, int)
  want[4] = 1                              # b over beat 1
  want[20] = 1                             # c (from step 18) over beat 5
  np.testing.assert_array_equal(np.asarray(got)[0, :, 0], want)
  # Struck again on the beat, the held note is two notes: no syncopation.
  strike = np.zeros(line.shape, bool)
  strike[0, 4, 0] = True
  got = voices.syncopations(line, jnp.asarray(strike), 4)
  assert not np.asarray(got)[0, 4, 0]
  # A note begun off a beat and held over two counts once.
  line = _line(a, a, b, b, b, b, b, b, b, b)
  np.testing.assert_array_equal(np.asarray(voices.syncopations(line, jnp.zeros(line.shape, bool),
                                                               4))[0, :, 0].nonzero()[0], [4])


@settings(max_examples=10, deadline=None)
@given(voice_lines(), st.integers(0, 2**31 - 1))
def test_syncopation_prior_counts_what_each_choice_would_make(roll, seed):
  """The prior of a class at a cell differs from another class's by the weighted difference in
  the voice's syncopations over the whole piece with either choice at that cell."""
  classes, strike = voices.classes_from_roll(LAYOUT, jnp.asarray(roll))
  classes, strike = np.asarray(classes)[:1, :16], np.asarray(strike)[:1, :16]
  weights = np.asarray([-1.5, 2.0])
  num_classes = LAYOUT.num_classes
  prior = np.asarray(voices.syncopation_log_prior(jnp.asarray(classes), jnp.asarray(strike),
                                                  num_classes, 4, weights))
  rng = np.random.default_rng(seed)
  count = jax.jit(lambda c: voices.syncopations(c, jnp.asarray(strike), 4).sum((0, 1)))
  for t, v in zip(rng.integers(0, 16, 6), rng.integers(0, 2, 6)):
    totals = []
    for c in range(num_classes):
      changed = classes.copy()
      changed[0, t, v] = c
      totals.append(float(np.asarray(count(jnp.asarray(changed)))[v]) * weights[v])
    np.testing.assert_allclose(prior[0, t, v] - prior[0, t, v, 0],
                               np.asarray(totals) - totals[0], atol=1e-6)


def _roll_of_lines(lines_per_piece, steps_per_piece):
  """uint8 rolls of SHAPE[1:] from per piece (pitches of voice 0, of voice 1) per step, a note
  starting where the pitch changes, or where a step is listed in the piece's third entry."""
  roll = np.zeros((len(lines_per_piece),) + SHAPE[1:], np.uint8)
  flat = roll.reshape(len(lines_per_piece), steps_per_piece, SHAPE[3], SHAPE[4])
  for i, (*lines, restruck) in enumerate(lines_per_piece):
    for (track, _), pitches in zip(zip(LAYOUT.tracks, LAYOUT.ranges), lines):
      for t, p in enumerate(pitches):
        start = t == 0 or pitches[t - 1] != p or t in restruck
        flat[i, t, p, track] = 2 if start else 1
  return roll


def _moving(low, steps):
  return [low + (t % 2) for t in range(steps)]      # a new note every step


def test_hold_shares_count_chords_every_voice_holds_by_beat_and_length():
  steps = SHAPE[1] * SHAPE[2]                       # 3 bars of 8 steps, 2 steps per beat
  def piece(hold_from, hold_steps, restruck=()):
    lines = []
    for low, held in ((12, 15), (3, 6)):
      line = _moving(low, steps)
      line[hold_from:hold_from + hold_steps] = [held] * hold_steps
      lines.append(line)
    return (*lines, set(restruck))
  roll = _roll_of_lines([
      piece(0, 4),              # bar 0, beat 0, 2 beats           -> 1 + 0 * 3 + 0 = 1
      piece(4, 6),              # bar 0, beat 2, 3 beats           -> 1 + 2 * 3 + 1 = 8
      piece(8, 0),              # nothing held
      piece(8, 8),              # bar 1, beat 0, 4 beats           -> 3
      piece(16, 8, [20]),       # struck again at step 20: 2 + 2 beats -> 1 and 1 + 2 * 3 = 7
  ], steps)
  shares = voices.hold_shares(LAYOUT, roll, steps_per_bar=8, steps_per_beat=2)
  expected = np.zeros(13)
  expected[[1, 8, 3, 7]] = [2, 1, 1, 1]
  expected[0] = 15 - 5                              # 5 pieces of 3 bars, 5 held chords
  np.testing.assert_allclose(shares, expected / 15)


def test_hold_plan_places_chords_on_the_drawn_beats_in_free_pieces_only():
  num, steps, bar, spb = 300, 24, 8, 2
  free = np.ones((num, steps, 2), bool)
  free[:60, 9, 1] = False                           # a restoration or accompaniment: no plan
  blocked = np.zeros((num, steps, 2), bool)
  blocked[60:120, :3] = True                        # a pickup's rests: no chord over them
  shares = np.zeros(13)
  shares[[0, 1, 9]] = [0.5, 0.25, 0.25]             # none / beat 0 for 2 beats / beat 2 for 4
  held, tied = (np.asarray(x)[..., 0] for x in voices.hold_plan(
      jax.random.PRNGKey(0), jnp.asarray(free), jnp.asarray(shares), bar, spb,
      blocked=jnp.asarray(blocked)))
  assert not held[:60].any() and not tied[:60].any()
  assert not held[60:120, :3].any()
  starts = []
  for i in range(60, num):
    first = held[i] & ~tied[i]                      # each chord's first step
    assert not tied[i, 0] and (held[i, :-1] >= tied[i, 1:]).all()   # tied steps follow held
    for s in np.nonzero(first)[0]:
      length = 1 + int(np.argmin(np.append(tied[i, s + 1:], False)))
      assert (s % bar, length) in ((0, 4), (4, min(8, steps - s))), (i, s, length)
      starts.append(s % bar)
  # Chords from beat 2 are never dropped; those from beat 0 are where the bar before holds one
  # over its bar line (a quarter of them), or in the pickup's bar.
  from_beat_2, from_beat_0 = starts.count(4), starts.count(0)
  assert abs(from_beat_2 - 0.25 * 240 * 3) <= 12, from_beat_2
  assert 0.5 * 0.25 * 720 < from_beat_0 < 0.25 * 720, from_beat_0


def test_runs_follow_their_first_step_and_draw_from_the_mean_of_their_logits():
  tied = jnp.array([[0, 1, 1, 0, 0, 1, 0, 1, 1, 1], [0] * 10], bool)[..., None]
  np.testing.assert_array_equal(np.asarray(voices.run_starts(tied))[0, :, 0],
                                [0, 0, 0, 3, 4, 4, 6, 6, 6, 6])
  x = jnp.broadcast_to(jnp.arange(10)[None, :, None], (2, 10, 3))
  np.testing.assert_array_equal(np.asarray(voices.follow_runs(x, tied))[0, :, 1],
                                [0, 0, 0, 3, 4, 4, 6, 6, 6, 6])
  np.testing.assert_array_equal(np.asarray(voices.follow_runs(x, tied))[1], np.asarray(x[1]))
  logits = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 3, 4))
  logits = logits.at[:, :2, :, 0].set(-1e9)         # a masked class before a run, as a pickup's
  mean = np.asarray(voices.run_mean_logits(logits, tied))
  ref = np.asarray(logits)
  for start, end in ((0, 3), (4, 6), (6, 10)):
    np.testing.assert_allclose(mean[0, start, :, 1:], ref[0, start:end, :, 1:].mean(0),
                               rtol=1e-5)
  np.testing.assert_allclose(mean[0, 6, :, 0], ref[0, 6:, :, 0].mean(0), rtol=1e-5)
  # Steps outside a run, and every step of a piece without runs, keep their logits exactly.
  np.testing.assert_array_equal(mean[0, 3], ref[0, 3])
  np.testing.assert_array_equal(mean[1], ref[1])
