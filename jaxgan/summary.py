"""What a run shows a person: TensorBoard scalars and piano-roll images, and a progress bar."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import jax
import numpy as np

from jaxgan import errors, paths

# One colour per track (cycled): bass-like dark to light, easy to tell apart when overlaid.
TRACK_COLOURS = np.array([
    [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)


def render_pianorolls(rolls: np.ndarray, *, columns: int = 1, scale: int = 2) -> np.ndarray:
  """bool/uint8 [N, bars, steps, pitches, tracks] -> RGB uint8 image of N rolls in a grid.

  Time runs left to right, pitch bottom to top; each track has its colour; bar lines are grey.
  """
  rolls = np.asarray(rolls) > 0
  n, bars, steps, pitches, tracks = rolls.shape
  width, height = bars * steps, pitches
  tiles = []
  for roll in rolls:
    img = np.full([height, width, 3], 255, np.uint8)
    img[:, ::steps] = 200
    flat = roll.reshape(bars * steps, pitches, tracks).transpose(1, 0, 2)[::-1]
    for t in range(tracks):
      img[flat[:, :, t]] = TRACK_COLOURS[t % len(TRACK_COLOURS)]
    tiles.append(np.pad(img, ((1, 1), (1, 1), (0, 0)), constant_values=0))
  rows = -(-n // columns)
  tiles += [np.zeros_like(tiles[0])] * (rows * columns - n)
  grid = np.concatenate([np.concatenate(tiles[r * columns:(r + 1) * columns], 1)
                         for r in range(rows)], 0)
  return np.repeat(np.repeat(grid, scale, 0), scale, 1)


def save_png(image: np.ndarray, path: str) -> None:
  """Writes an RGB image; raises errors.WriteError naming the path when it cannot.

  Local files only (matplotlib writes them): the sample and gallery folders beside the MIDI.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  try:
    plt.imsave(path, image)
  except OSError as e:
    raise errors.WriteError("the image", path, errors.reason_of(e)) from None


class Writer:
  """TensorBoard event files in `workdir` (process 0 only; a no-op elsewhere). A failed write
  (a full disk, a lost mount) raises errors.WriteError naming the folder and the reason.
  TensorFlow's writer takes a gs:// workdir as it is."""

  def __init__(self, workdir: str, *, enabled: bool = True):
    self.enabled = enabled
    self.path = paths.join(workdir, "tensorboard")
    if enabled:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      self._tf = tf
      with self._writing():
        self._writer = tf.summary.create_file_writer(self.path)

  @contextlib.contextmanager
  def _writing(self):
    # TensorFlow reports a write that fails (here or when its queue is flushed) as an OpError.
    try:
      yield
    except (OSError, self._tf.errors.OpError) as e:
      raise errors.WriteError("TensorBoard events", self.path, errors.reason_of(e)) from None

  def scalars(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if self.enabled:
      with self._writing(), self._writer.as_default(step=step):
        for k, v in values.items():
          self._tf.summary.scalar(k, v)
    return values

  def pianorolls(self, step: int, rolls: np.ndarray, name: str = "samples") -> None:
    if self.enabled:
      image = render_pianorolls(rolls, columns=2)
      with self._writing(), self._writer.as_default(step=step):
        self._tf.summary.image(name, image[None], step=step)

  def close(self) -> None:
    if self.enabled:
      with self._writing():
        self._writer.flush()
        self._writer.close()


class _Progress:
  def __init__(self, start: int, total: int, enabled: bool):
    self.bar = None
    if enabled:
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                      file=sys.stderr, smoothing=0.1)
    self.n = start

  def update_to(self, step: int, shown: dict[str, float] | None = None) -> None:
    if self.bar is None:
      return
    self.bar.update(step - self.n)
    self.n = step
    if shown:
      keys = ("d_loss", "g_loss", "examples_per_s")
      self.bar.set_postfix({k: f"{shown[k]:.3g}" for k in keys if k in shown}, refresh=False)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def progress(start: int, total: int, *, enabled: bool = True) -> _Progress:
  return _Progress(start, total, enabled)
