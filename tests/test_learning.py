"""The GAN learns: on synthetic chord patterns the EMA generator matches the data's statistics.

configs/tiny_learn.py trains the tiny model on `data.name="synthetic"` (4 fixed patterns; every
track sounds exactly one pitch at every step, pitch classes from 4 major-chord roots). After a
bounded number of steps, samples of the EMA generator must reproduce the data's note density
and pitch-class histogram; the untrained generator must not, so the bounds mean something.
"""

import os

import jax
import numpy as np
import pytest

from jaxgan import config as config_lib
from jaxgan import gan, sharding
from jaxgan.data import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "tiny_learn.py")

NUM_SAMPLES = 256
# Sounding pitches per step per track, relative to the data's (1.0 on the synthetic data).
DENSITY_RTOL = 0.25
# L1 distance between pitch-class histograms (each sums to 1, so the distance is at most 2).
PC_L1_MAX = 0.3


def _stats(rolls, lowest_pitch):
  """(sounding pitches per step per track, pitch-class histogram) of bool [N, bars, steps, P, T]."""
  rolls = np.asarray(rolls, bool)
  density = rolls.sum(axis=3).mean()
  per_pitch = rolls.sum(axis=(0, 1, 2, 4))
  classes = (np.arange(rolls.shape[3]) + lowest_pitch) % 12
  hist = np.bincount(classes, weights=per_pitch, minlength=12)
  return density, hist / max(hist.sum(), 1.0)


def _matches(fake, data):
  (df, hf), (dd, hd) = fake, data
  return abs(df / dd - 1.0) <= DENSITY_RTOL, float(np.abs(hf - hd).sum())


def test_ema_generator_learns_density_and_pitch_classes():
  config = config_lib.load_config(CONFIG)
  low = config.data.lowest_pitch
  # The data's statistics from the training pipeline itself: 8 steps' batches (n_critic each).
  ds = pipeline.make_dataset(config, process_index=0, process_count=1).as_numpy_iterator()
  real = np.concatenate([b["pianoroll"].reshape((-1,) + b["pianoroll"].shape[2:])
                         for _, b in zip(range(8), ds)]) > 0
  data = _stats(real, low)
  assert abs(data[0] - 1.0) < 1e-6  # one sounding pitch per step and track, by construction

  # One device: the 8 simulated devices of the test set-up make a step ~6x slower on one core,
  # and the equivalence of meshes is tested in test_train.py.
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  engine = gan.Engine(config, mesh)
  key = jax.random.PRNGKey(1)

  # Untrained (seed 0): about 21.8 pitches per step per track, pitch-class L1 about 1.20.
  init = engine.init(jax.random.PRNGKey(config.train.seed))
  density_ok, l1 = _matches(_stats(engine.sample_ema(init, key, NUM_SAMPLES), low), data)
  assert not density_ok and l1 > PC_L1_MAX, "the bounds must reject an untrained generator"

  # Trained for config.train.num_steps (1000) as `train_and_evaluate` trains (same init, batches):
  # density 1.00, L1 0.08 (between 0.08 and 0.22 at every 100th step from step 600 on).
  state = init
  batches = pipeline.train_iterator(config, mesh)
  for _ in range(config.train.num_steps):
    state, _ = engine.step(state, next(batches))
  fake = _stats(engine.sample_ema(state, key, NUM_SAMPLES), low)
  density_ok, l1 = _matches(fake, data)
  assert density_ok, f"density {fake[0]:.2f} per step per track, data {data[0]:.2f}"
  assert l1 < PC_L1_MAX, f"pitch-class L1 {l1:.3f} >= {PC_L1_MAX}"


def _pitch_class_hist(rolls, lowest_pitch):
  """Per example: pitch-class histogram (sums to 1) of bool [N, steps, P, T]."""
  classes = (np.arange(rolls.shape[2]) + lowest_pitch) % 12
  w = rolls.sum(axis=(1, 3))
  h = np.stack([np.bincount(classes, weights=row, minlength=12) for row in w])
  return h / np.maximum(h.sum(1, keepdims=True), 1)


@pytest.mark.slow   # a few hundred steps of a conditional model: minutes of CPU
def test_infilling_follows_the_given_bar():
  """With bar 0 of a song given, the generated bar 1 takes that song's chord (each synthetic
  song repeats one of 4 chords), not just any chord of the data set."""
  config = config_lib.load_config(CONFIG, [
      "--config.conditioning.infill=0.5", "--config.g_optim.learning_rate=0.001",
      "--config.d_optim.learning_rate=0.001", "--config.train.num_steps=2000"])
  low = config.data.lowest_pitch
  ds = pipeline.make_dataset(config, process_index=0, process_count=1,
                             start_step=10_000).as_numpy_iterator()
  real = np.concatenate([b["pianoroll"].reshape((-1,) + b["pianoroll"].shape[2:])
                         for _, b in zip(range(8), ds)]) > 0
  given = _pitch_class_hist(real[:, 0], low)
  assert np.abs(given - np.roll(given, 1, axis=0)).sum(1).mean() > 0.5  # songs differ
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  engine = gan.Engine(config, mesh)
  cond = {"context": jax.numpy.where(real, 1.0, -1.0),
          "known": np.zeros([len(real), 2, real.shape[-1]], bool)}
  cond["known"][:, 0] = True
  z = jax.random.normal(jax.random.PRNGKey(7), [len(real), engine.latent_size])

  def distances(state):
    out, _ = engine.generate(state["g_ema"], state["g_stats"], z, jax.random.PRNGKey(8),
                             train=False, slope=1.0, cond=cond)
    made = _pitch_class_hist(np.asarray(out > 0)[:, 1], low)
    same = np.abs(made - given).sum(1).mean()                     # vs its own song's bar 0
    other = np.abs(made - np.roll(given, 1, axis=0)).sum(1).mean()  # vs another song's
    return same, other

  state = engine.init(jax.random.PRNGKey(config.train.seed))
  same, other = distances(state)
  assert abs(other - same) < 0.05, "an untrained generator ignores the context"
  batches = pipeline.train_iterator(config, mesh)
  for _ in range(config.train.num_steps):
    state, _ = engine.step(state, next(batches))
  # Measured at seed 0: same 0.26, other 0.66 after 2000 steps (0.25 / 0.67 after 1000).
  same, other = distances(state)
  assert other - same > 0.2, f"pitch-class L1 to the given bar {same:.2f}, to another {other:.2f}"
  assert same < 0.4, f"pitch-class L1 to the given bar {same:.2f}"
