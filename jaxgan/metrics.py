"""Musical evaluation of multi-track piano-rolls: MuseGAN metrics, extras, set comparison.

Piano-rolls are arrays `[N, bars, steps_per_bar, pitches, tracks]`, either bool (activity) or an
integer type holding 0 silent, 1 held, 2 onset. Everything is vectorised numpy over the batch.

How notes are found. Every bar is scored on its own, as the MuseGAN definitions are per bar: a
note held over a bar line is split there and counts once in each bar, with its in-bar length.
Inside a bar a note of one pitch starts where that pitch becomes active or, in an onset-marked
roll, at any cell marked 2 (so touching repeated notes stay separate). A bool roll cannot tell
touching repeated notes apart: there a note is a maximal run of activity. `v1_compat=True`
ignores the marks, since the original code only ever saw binary rolls.

Per-track values pool the bars of all samples: EB is over all bars, the other bar metrics over
the non-empty bars of that track only. NaN marks an undefined value: a track with no non-empty
bar, a pitch metric on a drum track, DP on a pitched track.

Written definitions (the default):
- EB: fraction of bars with no note.
- UPC: pitch classes used per bar, pitch class = (lowest_pitch + row) % 12.
- QN: fraction of qualified notes: notes at least 3/24 of a beat long (3 steps at 24 steps per
  beat) and at least two steps long. MuseGAN's threshold marks fragments, notes shorter than the
  grid's musical unit; on a grid coarser than 8 steps per beat 3/24 beat is one step or less, so
  every note would qualify (QN 100 % for noise and Bach alike). There the shortest note the grid
  can write is the fragment, and a qualified note is one of two steps or more: an 8th note at 4
  steps per beat. In steps: max(2, ceil(3 * steps_per_beat / 24)); the ceil is the exact
  rescaling of 3/24 beat, so 12, 16, 24 and 48 steps per beat keep 2, 2, 3 and 6 steps.
- PP: fraction of the bar's time steps with two or more pitches sounding.
- DP (drum tracks): onsets weighted 1 on a grid line, 0.3 near one, 0 elsewhere, over the number
  of onsets, best over the grid's circular shifts. The grid is the 16th note where that spans at
  least two steps (steps_per_beat divisible by 4 and >= 8), else the 8th note; "near" is within
  1/24 beat but at least one step. At 24 steps per beat this is the original filter
  [1, .3, 0, 0, 0, .3] with its six shifts. Odd steps_per_beat has no 8th grid: DP is NaN.
  Below 8 steps per beat every onset lies on the 16th grid, so DP measures 8th-note alignment:
  at 4 steps per beat a straight 8th-note groove scores 1, onsets on random 16ths about 0.65,
  and a 16th-note hi-hat groove scores like them.
- TD (Harte, Sandler & Gasser 2006): per beat each track's 12-bin chroma (sounding cells per
  pitch class), L1-normalised, mapped by the 6x12 tonal-centroid matrix (radii 1, 1, 0.5); the
  L2 distance between two tracks' centroids, averaged over all beats where both tracks sound.
  Only whole beats count when a bar is not a whole number of beats.
Extras (the same in both modes):
- PCE: entropy in bits of the bar's pitch-class histogram of notes (each note counts once).
- SC: per sample, the fraction of notes in the best-fitting major scale (a natural minor scale
  holds the pitch classes of its relative major, so this is the best of all 24 keys).
- ND: notes per non-empty bar.
- POLY: mean number of pitches sounding over the bar's steps where any sounds.
- GC: 1 - Hamming distance between the onset patterns (steps with any onset) of adjacent bars,
  over steps per bar; taken over pairs of adjacent bars that are both non-empty.

`v1_compat=True` reproduces the code behind the MuseGAN AAAI 2018 tables, defects included:
- its chroma groups neighbouring rows instead of pitch % 12: the pitch axis is cut into 12 blocks
  of pitches // 12 rows (7 for 84 pitches; the later code pads to a multiple of 12 first, which
  is used here when pitches is not one), so C1, C2, C3 of an 84-pitch roll from C1 fall in
  blocks 0, 1 and 3. This changes UPC and TD, which then use blocks as if they were pitch classes;
- QN counts notes of at least 2 steps at 24 steps per beat (ceil(steps_per_beat / 12)), with no
  two-step floor: at 4 steps per beat every note qualifies there, as in the original code;
- TD is a mean over bars of the mean over the bar's beats; a bar where either track is silent
  for a whole beat gives NaN and is dropped;
- DP keeps the 0.3-weighted filter and its shifts: that is what the AAAI-era code used. The 0.1
  tolerance (with no shifts) only appears in the later TensorFlow rewrite.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_FRACTION_METRICS = ("EB", "QN", "PP", "DP", "SC", "GC")
# The keys of `track_metrics`, in table order.
TRACK_METRICS = ("EB", "UPC", "QN", "PP", "DP", "PCE", "SC", "ND", "POLY", "GC")
# Metrics that only make sense for pitched tracks, and the one that only does for drums.
_PITCHED_ONLY = ("UPC", "QN", "PP", "PCE", "SC", "POLY")
_DRUM_ONLY = ("DP",)

_DP_ON_GRID, _DP_NEAR_GRID = 1.0, 0.3
_MAJOR_SCALE = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)


@dataclasses.dataclass(frozen=True)
class RollSpec:
  """How to read a piano-roll: grid, MIDI pitch of row 0, track names and drum tracks."""

  steps_per_beat: int
  lowest_pitch: int
  track_names: tuple[str, ...]
  drum_tracks: tuple[int, ...] = ()

  def __post_init__(self) -> None:
    if self.steps_per_beat < 1:
      raise ValueError(f"steps_per_beat must be positive, got {self.steps_per_beat}")
    if not 0 <= self.lowest_pitch <= 127:
      raise ValueError(f"lowest_pitch must be a MIDI pitch, got {self.lowest_pitch}")
    object.__setattr__(self, "track_names", tuple(self.track_names))
    object.__setattr__(self, "drum_tracks", tuple(int(t) for t in self.drum_tracks))
    for t in self.drum_tracks:
      if not 0 <= t < len(self.track_names):
        raise ValueError(f"drum track {t} is not one of the {len(self.track_names)} tracks")

  @property
  def num_tracks(self) -> int:
    return len(self.track_names)

  def is_drum(self) -> np.ndarray:
    """Bool [tracks]: which tracks are drums."""
    mask = np.zeros(self.num_tracks, bool)
    mask[list(self.drum_tracks)] = True
    return mask


# --- Reading the roll ---------------------------------------------------------------------------


def _notes(rolls: np.ndarray, spec: RollSpec, use_marks: bool, need_onsets: bool = True
           ) -> tuple[np.ndarray, np.ndarray | None]:
  """Activity and note onsets, both bool [N, bars, tracks, steps, pitches], notes split at bars."""
  rolls = np.asarray(rolls)
  if rolls.ndim != 5:
    raise ValueError(f"expected [N, bars, steps, pitches, tracks], got shape {rolls.shape}")
  if rolls.shape[-1] != spec.num_tracks:
    raise ValueError(f"roll has {rolls.shape[-1]} tracks, spec names {spec.num_tracks}")
  if rolls.dtype != bool and not np.issubdtype(rolls.dtype, np.integer):
    # Real-valued generator output needs a threshold the caller must choose (tanh: 0, sigmoid: .5).
    raise TypeError(f"expected a bool or integer roll, got {rolls.dtype}; binarize it first")
  # Tracks before time and pitch: every later reduction then runs over contiguous memory.
  rolls = np.ascontiguousarray(rolls.transpose(0, 1, 4, 2, 3))
  active = rolls if rolls.dtype == bool else rolls > 0
  if not need_onsets:
    return active, None
  onsets = np.empty_like(active)
  onsets[:, :, :, 0] = active[:, :, :, 0]
  # For bools a > b is a & ~b: active now, silent the step before.
  np.greater(active[:, :, :, 1:], active[:, :, :, :-1], out=onsets[:, :, :, 1:])
  if use_marks and rolls.dtype != bool:
    onsets |= rolls == 2
  return active, onsets


def _count(x: np.ndarray, axis: int) -> np.ndarray:
  """Number of True cells along `axis`, in the narrowest unsigned type that holds it."""
  # Summing into uint8 skips numpy's casting buffers: about twice as fast as into int32.
  n = x.shape[axis]
  dtype = np.uint8 if n < 256 else np.uint16 if n < 65536 else np.int64
  return np.add.reduce(x.view(np.uint8), axis=axis, dtype=dtype)


def _fold_pitch_classes(x: np.ndarray, lowest_pitch: int) -> np.ndarray:
  """Sum [..., pitches] into [..., 12] pitch classes, pitch class = (lowest_pitch + row) % 12."""
  # Small counts add up in uint16: far less memory traffic than int32 on these big arrays.
  dtype = np.uint16 if x.dtype.itemsize == 1 and x.shape[-1] < 2048 else np.int64
  out = np.zeros(x.shape[:-1] + (12,), dtype)
  row, num_rows = 0, x.shape[-1]
  while row < num_rows:  # one slice per octave run, not one per pitch
    pc = (lowest_pitch + row) % 12
    n = min(12 - pc, num_rows - row)
    np.add(out[..., pc:pc + n], x[..., row:row + n], out=out[..., pc:pc + n])
    row += n
  return out


def _fold_v1(x: np.ndarray) -> np.ndarray:
  """The original code's chroma: 12 blocks of neighbouring rows, [..., pitches] -> [..., 12]."""
  num_rows = x.shape[-1]
  if num_rows % 12:
    x = np.concatenate([x, np.zeros(x.shape[:-1] + (12 - num_rows % 12,), x.dtype)], -1)
  return x.reshape(x.shape[:-1] + (12, -1)).sum(-1, dtype=np.int32)


def qn_min_steps(steps_per_beat: int, v1_compat: bool = False) -> int:
  """Shortest qualified note in steps: 3/24 beat and two steps (written), 2/24 beat (v1)."""
  if v1_compat:
    return max(1, -(-steps_per_beat * 2 // 24))
  return max(2, -(-steps_per_beat * 3 // 24))


def _drum_filter(steps_per_beat: int) -> np.ndarray | None:
  """Weights over one grid period (index = steps past a grid line), or None if no 8th grid."""
  if steps_per_beat % 4 == 0 and steps_per_beat >= 8:
    period = steps_per_beat // 4  # 16th notes
  elif steps_per_beat % 2 == 0:
    period = steps_per_beat // 2  # 8th notes
  else:
    return None
  near = max(1, steps_per_beat // 24)
  offset = np.arange(period)
  dist = np.minimum(offset, period - offset)
  return np.where(dist == 0, _DP_ON_GRID, np.where(dist <= near, _DP_NEAR_GRID, 0.0))


def tonal_matrix(r1: float = 1.0, r2: float = 1.0, r3: float = 0.5) -> np.ndarray:
  """The 6x12 tonal-centroid matrix: circles of fifths, minor thirds and major thirds."""
  k = np.arange(12)
  rows = []
  for radius, step in ((r1, 7 / 6), (r2, 3 / 2), (r3, 2 / 3)):
    rows += [radius * np.sin(k * step * np.pi), radius * np.cos(k * step * np.pi)]
  return np.stack(rows)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den with NaN where den is 0, without warnings."""
  num, den = np.broadcast_arrays(np.asarray(num, np.float64), np.asarray(den, np.float64))
  out = np.full(num.shape, np.nan)
  np.divide(num, den, out=out, where=den != 0)
  return out


def _nanmean(x: np.ndarray, axis) -> np.ndarray:
  """Mean over the non-NaN values; NaN where there are none (no warnings)."""
  valid = ~np.isnan(x)
  return _safe_div(np.where(valid, x, 0.0).sum(axis), valid.sum(axis))


# --- Per-bar values -----------------------------------------------------------------------------


def _bar_values(active: np.ndarray, onsets: np.ndarray, spec: RollSpec, v1_compat: bool
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Each metric per bar [N, bars, tracks] (NaN where undefined); SC per sample [N, 1, tracks];
  GC per pair of adjacent bars [N, bars - 1, tracks]; EB defined for every bar. Also returns the
  onsets per pitch and bar, [N, bars, tracks, pitches]."""
  num_steps = active.shape[3]
  spb = spec.steps_per_beat

  # Onsets per step feed DP, GC and the note counts; onsets per pitch feed UPC, PCE and SC.
  onsets_per_step = _count(onsets, 4)  # [N, B, T, S]
  notes_per_bar = onsets_per_step.sum(-1, dtype=np.int64)  # [N, B, T]
  nonempty = notes_per_bar > 0  # a non-empty bar always has an onset
  out = {"EB": (~nonempty).astype(np.float64)}

  # UPC: pitch classes present in the bar.
  # A pitch sounding in a bar has an onset in it (its first step there), so onset counts suffice.
  onsets_per_pitch = _count(onsets, 3)  # [N, B, T, P]
  pitch_present = (onsets_per_pitch > 0).view(np.uint8)
  if v1_compat:
    pcs = _fold_v1(pitch_present)
  else:
    pcs = _fold_pitch_classes(pitch_present, spec.lowest_pitch)
  out["UPC"] = np.where(nonempty, (pcs > 0).sum(-1), np.nan)

  # QN: a note lasts >= L steps iff its next L - 1 cells continue it (active, no new onset).
  min_len = qn_min_steps(spb, v1_compat)
  num_qualified = notes_per_bar
  if min_len > 1:
    cont = np.greater(active, onsets)  # active & ~onsets
    qualified = onsets[:, :, :, :num_steps - min_len + 1].copy()
    for k in range(1, min_len):
      qualified &= cont[:, :, :, k:num_steps - min_len + 1 + k]
    num_qualified = _count(qualified, 4).sum(-1, dtype=np.int64)
  out["QN"] = _safe_div(num_qualified, notes_per_bar)

  # PP and POLY from the number of pitches sounding at each step.
  sounding = _count(active, 4)  # [N, B, T, S]
  out["PP"] = np.where(nonempty, (sounding >= 2).sum(-1) / num_steps, np.nan)
  out["POLY"] = _safe_div(sounding.sum(-1, dtype=np.int64), (sounding > 0).sum(-1))

  weights = _drum_filter(spb)
  if weights is None:
    out["DP"] = np.full(notes_per_bar.shape, np.nan)
  else:
    period = len(weights)
    pad = -num_steps % period
    per_step = np.pad(onsets_per_step, [(0, 0)] * 3 + [(0, pad)]).astype(np.float64)
    folded = per_step.shape[:-1] + (per_step.shape[-1] // period, period)
    per_phase = per_step.reshape(folded).sum(-2)  # [N, B, T, period]
    # Row k of `shifted` is the filter with its grid lines moved k steps later.
    shifted = np.stack([np.roll(weights, k) for k in range(period)])
    out["DP"] = _safe_div((per_phase @ shifted.T).max(-1), notes_per_bar)

  onset_pcs = _fold_pitch_classes(onsets_per_pitch, spec.lowest_pitch)  # [N, B, T, 12]
  prob = _safe_div(onset_pcs, notes_per_bar[..., None])
  with np.errstate(divide="ignore", invalid="ignore"):
    plogp = np.where(prob > 0, prob * np.log2(prob), 0.0)
  out["PCE"] = np.where(nonempty, -plogp.sum(-1) + 0.0, np.nan)
  out["ND"] = np.where(nonempty, notes_per_bar, np.nan).astype(np.float64)

  song_pcs = onset_pcs.sum(1)  # [N, T, 12]
  scales = np.stack([np.roll(_MAJOR_SCALE, root) for root in range(12)]).astype(np.float64)
  in_scale = (song_pcs @ scales.T).max(-1)
  out["SC"] = _safe_div(in_scale, song_pcs.sum(-1))[:, None, :]

  pattern = onsets_per_step > 0
  hamming = (pattern[:, 1:] != pattern[:, :-1]).sum(-1) / num_steps  # [N, B - 1, T]
  both = nonempty[:, 1:] & nonempty[:, :-1]
  out["GC"] = np.where(both, 1.0 - hamming, np.nan)

  drums = spec.is_drum()
  for name in _PITCHED_ONLY:
    out[name] = np.where(drums, np.nan, out[name])
  for name in _DRUM_ONLY:
    out[name] = np.where(drums, out[name], np.nan)
  return out, onsets_per_pitch


def beat_tonal_distances(active: np.ndarray, spec: RollSpec, v1_compat: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Per-beat tonal distances [N, B, beats, T, T] and where both tracks sound (bool, same shape).

  `active` is bool [N, bars, tracks, steps, pitches], row 0 = `spec.lowest_pitch`.
  """
  n, b, t, s, p = active.shape
  spb = spec.steps_per_beat
  beats = s // spb
  whole = active[:, :, :, :beats * spb].reshape(n, b, t, beats, spb, p)
  per_pitch = _count(whole, 4)  # [N, B, T, beats, P]
  chroma = _fold_v1(per_pitch) if v1_compat else _fold_pitch_classes(per_pitch, spec.lowest_pitch)
  total = chroma.sum(-1, keepdims=True)
  centroid = _safe_div(chroma, total) @ tonal_matrix().T  # [N, B, T, beats, 6], NaN if silent
  centroid = np.moveaxis(centroid, 2, 3)  # [N, B, beats, T, 6]
  # Distances of distinct pairs only; the matrix is symmetric with a zero diagonal.
  first, second = np.triu_indices(t, 1)
  dist = np.zeros((n, b, beats, t, t))
  upper = np.linalg.norm(centroid[..., first, :] - centroid[..., second, :], axis=-1)
  dist[..., first, second] = upper
  dist[..., second, first] = upper
  sounds = np.moveaxis(total[..., 0] > 0, 2, 3)  # [N, B, beats, T]
  return dist, sounds[..., :, None] & sounds[..., None, :]


# --- Public API ---------------------------------------------------------------------------------


# Samples are processed in chunks of about this many cells, so that the dozen passes over each
# chunk mostly hit the CPU caches instead of memory (faster than whole-batch passes).
_CHUNK_CELLS = 1 << 22


def _chunks(rolls: np.ndarray):
  """Consecutive slices of the samples axis (at least one, so empty input keeps its shape)."""
  rolls = np.asarray(rolls)
  size = max(1, _CHUNK_CELLS // max(1, math.prod(rolls.shape[1:])))
  for start in range(0, max(len(rolls), 1), size):
    yield rolls[start:start + size]


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def track_metrics(rolls: np.ndarray, spec: RollSpec, *, v1_compat: bool = False
                  ) -> dict[str, np.ndarray]:
  """Per-track metrics over a set of piano-rolls: name -> float64 [tracks], NaN where undefined."""
  parts = []
  for chunk in _chunks(rolls):
    active, onsets = _notes(chunk, spec, use_marks=not v1_compat)
    parts.append(_bar_values(active, onsets, spec, v1_compat)[0])
  values = _concat(parts)
  return {name: _nanmean(values[name], axis=(0, 1)) for name in TRACK_METRICS}


def pair_metrics(rolls: np.ndarray, spec: RollSpec, *, v1_compat: bool = False
                 ) -> dict[str, np.ndarray]:
  """Inter-track metrics: "TD" [tracks, tracks], NaN for drum tracks and pairs that never meet."""
  total, count, per_bar = 0.0, 0, []
  for chunk in _chunks(rolls):
    active, _ = _notes(chunk, spec, use_marks=False, need_onsets=False)
    dist, both = beat_tonal_distances(active, spec, v1_compat)  # [n, B, beats, T, T]
    if v1_compat:
      # The original averaged beats per bar (NaN if a beat is silent in either track), then bars.
      with np.errstate(invalid="ignore"):  # bars shorter than a beat: no beats, NaN
        per_bar.append(np.where(both.all(2), np.where(both, dist, 0.0).mean(2), np.nan))
    else:
      total = total + np.where(both, dist, 0.0).sum((0, 1, 2))
      count = count + both.sum((0, 1, 2))
  if v1_compat:
    td = _nanmean(np.concatenate(per_bar), axis=(0, 1))
  else:
    td = _safe_div(np.broadcast_to(total, (spec.num_tracks,) * 2), count)
  drums = spec.is_drum()
  td[drums, :] = np.nan
  td[:, drums] = np.nan
  return {"TD": td}


def song_features(rolls: np.ndarray, spec: RollSpec) -> dict[str, np.ndarray]:
  """Per-sample features for set-level comparison, each [N] or [N, k]; NaN where undefined.

  Per track "<metric>/<track>" for each applicable metric (the sample's own average), plus
  "pitch_count/<track>" (distinct pitches used), "pitch_range/<track>" (pitched tracks),
  "TD/<track>-<track>" for pitched pairs, and "pitch_class_histogram" [N, 12]: the notes of all
  pitched tracks, normalised to sum to 1.
  """
  return _concat([_song_features(chunk, spec) for chunk in _chunks(rolls)])


def _song_features(rolls: np.ndarray, spec: RollSpec) -> dict[str, np.ndarray]:
  active, onsets = _notes(rolls, spec, use_marks=True)
  values, onsets_per_pitch = _bar_values(active, onsets, spec, v1_compat=False)
  drums = spec.is_drum()
  features = {}
  for name in TRACK_METRICS:
    per_sample = _nanmean(values[name], axis=1)  # [N, T]
    for t, track in enumerate(spec.track_names):
      if (name in _PITCHED_ONLY and drums[t]) or (name in _DRUM_ONLY and not drums[t]):
        continue
      features[f"{name}/{track}"] = per_sample[:, t]

  used = (onsets_per_pitch > 0).any(1)  # [N, T, P]
  rows = np.arange(used.shape[-1])
  for t, track in enumerate(spec.track_names):
    features[f"pitch_count/{track}"] = used[:, t].sum(-1).astype(np.float64)
    if not drums[t]:
      top = np.where(used[:, t], rows, -1).max(-1)
      bottom = np.where(used[:, t], rows, rows.size).min(-1)
      features[f"pitch_range/{track}"] = np.where(top >= 0, top - bottom, np.nan).astype(float)

  dist, both = beat_tonal_distances(active, spec, v1_compat=False)
  td = _safe_div(np.where(both, dist, 0.0).sum((1, 2)), both.sum((1, 2)))  # [N, T, T]
  pitched = [t for t in range(spec.num_tracks) if not drums[t]]
  for i, a in enumerate(pitched):
    for b in pitched[i + 1:]:
      features[f"TD/{spec.track_names[a]}-{spec.track_names[b]}"] = td[:, a, b]

  per_pitch = onsets_per_pitch[:, :, ~drums].sum((1, 2), dtype=np.int64)  # [N, P]
  hist = _fold_pitch_classes(per_pitch, spec.lowest_pitch)
  features["pitch_class_histogram"] = _safe_div(hist, hist.sum(-1, keepdims=True))
  return features


# --- Set-level comparison (Yang & Lerch 2020) ---------------------------------------------------


def _pair_distances(x: np.ndarray, y: np.ndarray | None, max_pairs: int,
                    rng: np.random.Generator) -> np.ndarray:
  """Euclidean distances between rows of x (distinct pairs, y None) or between x and y rows."""
  n = len(x)
  if y is None:
    if n * (n - 1) // 2 <= max_pairs:
      i, j = np.triu_indices(n, 1)
    else:
      i = rng.integers(0, n, max_pairs)
      j = (i + rng.integers(1, n, max_pairs)) % n  # never i itself
    return np.linalg.norm(x[i] - x[j], axis=-1)
  m = len(y)
  if n * m <= max_pairs:
    i, j = np.divmod(np.arange(n * m), m)
  else:
    i, j = rng.integers(0, n, max_pairs), rng.integers(0, m, max_pairs)
  return np.linalg.norm(x[i] - y[j], axis=-1)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
  """The trapezoid rule (np.trapz was renamed across numpy versions)."""
  return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)


def _bandwidth(samples: np.ndarray, fallback_scale: float) -> float:
  """Scott's rule, as scipy's gaussian_kde; a constant sample borrows the other sample's spread."""
  scale = samples.std(ddof=1) if len(samples) > 1 else 0.0
  if scale == 0.0:
    scale = fallback_scale
  return scale * len(samples) ** -0.2


def _binned_kde(samples: np.ndarray, lo: float, delta: float, size: int, bandwidth: float
                ) -> np.ndarray:
  """Gaussian KDE on the grid lo + delta * k, k < size, from linearly binned samples.

  Binning first makes the cost grid x kernel instead of grid x samples; with the grid step at
  most a third of the bandwidth the error is far below the sampling noise of the distances.
  """
  pos = (samples - lo) / delta
  left = np.clip(np.floor(pos).astype(np.int64), 0, size - 2)
  frac = pos - left
  weights = np.bincount(left, 1 - frac, size) + np.bincount(left + 1, frac, size)
  # Past 40 bandwidths the kernel underflows anyway.
  reach = min(size - 1, math.ceil(40 * bandwidth / delta))
  kernel = np.exp(-0.5 * (np.arange(-reach, reach + 1) * delta / bandwidth) ** 2)
  density = np.convolve(weights, kernel)[reach:reach + size]
  return density / (len(samples) * bandwidth * math.sqrt(2 * math.pi))


def overlap_and_kl(reference: np.ndarray, other: np.ndarray, bins: int = 512
                   ) -> tuple[float, float]:
  """Overlapping area and KL(reference || other) of the Gaussian KDEs of two 1-D samples.

  Both densities live on one common grid (at least `bins` points) reaching 4 bandwidths past the
  data, so the OA of a sample with itself is 1; mgeval integrates over the data range only and
  evaluates the two densities of its KL on different grids, neither of which is replicated.
  Where the other density underflows it is floored at 1e-300, which keeps KL finite.
  """
  reference, other = np.asarray(reference, float), np.asarray(other, float)
  spread = np.concatenate([reference, other]).std()
  if spread == 0.0:  # both samples one and the same constant
    return 1.0, 0.0
  h_ref, h_other = _bandwidth(reference, spread), _bandwidth(other, spread)
  lo = min(reference.min(), other.min()) - 4 * max(h_ref, h_other)
  hi = max(reference.max(), other.max()) + 4 * max(h_ref, h_other)
  # A grid step of at most a third of the narrower bandwidth, within a cap for long tails.
  size = max(bins, min(4096, math.ceil(3 * (hi - lo) / min(h_ref, h_other)) + 1))
  grid = np.linspace(lo, hi, size)
  delta = grid[1] - grid[0]
  p = _binned_kde(reference, lo, delta, size, h_ref)
  q = _binned_kde(other, lo, delta, size, h_other)
  oa = _trapezoid(np.minimum(p, q), grid)
  with np.errstate(divide="ignore", invalid="ignore"):
    integrand = np.where(p > 0, p * (np.log(p) - np.log(np.maximum(q, 1e-300))), 0.0)
  kl = _trapezoid(integrand, grid)
  return float(min(oa, 1.0)), float(max(kl, 0.0))


def compare_sets(generated_features: dict[str, np.ndarray],
                 reference_features: dict[str, np.ndarray], *, bins: int = 512,
                 max_pairs: int = 4000, seed: int = 0) -> dict[str, dict[str, float]]:
  """Per feature: OA and KL between the reference's intra-set and the inter-set distance KDEs.

  Distances are Euclidean between per-sample feature vectors; samples with a NaN in a feature are
  left out of it. Each distance set is capped at `max_pairs` pairs, drawn with `seed`. `bins` is
  the least number of grid points the densities are evaluated on. Also reported: the mean
  intra-set distance of each set and the mean inter-set distance. A feature with fewer than two
  samples in either set gets NaN.
  """
  results = {}
  for name in generated_features:
    if name not in reference_features:
      continue
    gen = np.asarray(generated_features[name], float)
    ref = np.asarray(reference_features[name], float)
    gen = gen.reshape(len(gen), -1)
    ref = ref.reshape(len(ref), -1)
    gen = gen[~np.isnan(gen).any(-1)]
    ref = ref[~np.isnan(ref).any(-1)]
    if len(gen) < 2 or len(ref) < 2:
      results[name] = dict.fromkeys(("OA", "KL", "intra_gen", "intra_ref", "inter"), math.nan)
      continue
    rng = np.random.default_rng(seed)
    intra_gen = _pair_distances(gen, None, max_pairs, rng)
    intra_ref = _pair_distances(ref, None, max_pairs, rng)
    inter = _pair_distances(gen, ref, max_pairs, rng)
    oa, kl = overlap_and_kl(intra_ref, inter, bins)
    results[name] = {"OA": oa, "KL": kl, "intra_gen": float(intra_gen.mean()),
                     "intra_ref": float(intra_ref.mean()), "inter": float(inter.mean())}
  return results


# --- Reporting ----------------------------------------------------------------------------------


def _format(name: str, value: float) -> str:
  if np.isnan(value):
    return "-"
  if name in _FRACTION_METRICS:
    return f"{100 * value:.2f}%"
  return f"{value:.3f}"


def summary_table(rows: dict[str, dict[str, np.ndarray]], spec: RollSpec) -> str:
  """A text table, data vs generated: one line per (metric, row label), one column per track.

  `rows` maps a label ("data", "generated", ...) to merged `track_metrics` and `pair_metrics`
  output. [tracks] values fill the track table; [tracks, tracks] values fill a second table with
  one column per pair of distinct tracks that has a value in some row. NaN shows as "-".
  """
  labels = list(rows)
  metrics = list(dict.fromkeys(name for row in rows.values() for name in row))
  per_track = [m for m in metrics if any(np.ndim(r[m]) == 1 for r in rows.values() if m in r)]
  per_pair = [m for m in metrics if any(np.ndim(r[m]) == 2 for r in rows.values() if m in r)]
  n = spec.num_tracks
  pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
           if any(not np.isnan(np.asarray(r[m], float)[i, j])
                  for r in rows.values() for m in per_pair if m in r)]
  name_width = max([len(m) for m in metrics] + [6])
  label_width = max([len(label) for label in labels] + [3])

  def block(columns: list[str], names: list[str], pick) -> list[str]:
    widths = [max(len(c), 8) for c in columns]
    lines = [" ".join([f"{'metric':<{name_width}}", f"{'set':<{label_width}}"]
                      + [f"{c:>{w}}" for c, w in zip(columns, widths)])]
    for name in names:
      shown = name
      for label in labels:
        if name not in rows[label]:
          continue
        values = pick(np.asarray(rows[label][name], float))
        lines.append(" ".join([f"{shown:<{name_width}}", f"{label:<{label_width}}"]
                              + [f"{_format(name, v):>{w}}" for v, w in zip(values, widths)]))
        shown = ""  # the metric name only on its first line
    return lines

  lines = block(list(spec.track_names), per_track, lambda v: v) if per_track else []
  if per_pair and pairs:
    if lines:
      lines.append("")
    columns = [f"{spec.track_names[i]}-{spec.track_names[j]}" for i, j in pairs]
    lines += block(columns, per_pair, lambda v: [v[i, j] for i, j in pairs])
  return "\n".join(lines)
