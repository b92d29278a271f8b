"""The GAN learns: on synthetic chord patterns the EMA generator matches the data's statistics.

configs/tiny_learn.py trains the tiny model on `data.name="synthetic"` (4 fixed patterns; every
track sounds exactly one pitch at every step, pitch classes from 4 major-chord roots). After a
bounded number of steps, samples of the EMA generator must reproduce the data's note density
and pitch-class histogram; the untrained generator must not, so the bounds mean something.
"""

import os

import jax
import numpy as np

from jaxgan import config as config_lib
from jaxgan import sharding, train
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
  engine = train.Engine(config, mesh)
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
