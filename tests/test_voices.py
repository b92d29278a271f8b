"""Monophonic voices: classes <-> piano-rolls exactly, soft rolls, masked cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxgan.models import voices

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
