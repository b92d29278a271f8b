"""Which two four-voice pieces are the same music: a content matcher for chorales.

The standard JSB split (`jaxgan.data.standard`) has no names, meters or bar lines; the music21
corpus has all three. Matching each standard chorale to the corpus chorale it was made from
recovers its meter and pickup, and tells which corpus chorales are held-out music. The two
sources differ in ways a matcher must forgive: names; keys (a few chorales are transposed);
repeats (the standard split writes them out); rests after phrase-ending fermatas; a continuo
bass an octave lower; a few edited notes; note values halved or doubled; repeated notes (music21)
against held ones (the standard encoding cannot tell them apart). It must not forgive a
different harmonisation of the same melody: Bach set many melodies several times, so the soprano
says little, and the alto, tenor and bass decide.

Both pieces become *frames*: one pitch per voice per 16th note, -1 where the voice is silent.
A repeated note and a held one give the same frames, so that difference is gone by
construction. Then, in two stages:

1. Candidates (approximate, all pairs at once): each piece's chords with consecutive duplicates
   dropped, written without key (upper voices as intervals above the bass, the bass as its
   motion, modulo 12) and cut into overlapping 3-chord shingles; pairs are ranked by the Jaccard
   similarity of their shingle sets, one sparse product for every pair. The same for 5-interval
   shingles of the soprano line, so that harmonisations of one tune meet too. Neither looks at
   note values, so pickups, halved note values and rests between phrases do not matter here.
2. Verification (exact, top candidates only): the best alignment of one piece's frames onto the
   other's, a path that runs along the diagonal and may jump anywhere (a written-out repeat, a
   cut) at the cost of `JUMP_FRAMES` 16ths of full agreement, found by a batched Viterbi pass
   in both directions. A voice agrees in a frame when both pieces have the same pitch there
   (the bass: the same pitch class, for continuo octaves); a voice that sounds in one piece and
   rests in the other counts half (the rest after a fermata that the other edition holds).
   `harmony` is the share of sounding alto, tenor and bass frames that agree, the lower of the
   two directions (so that a fragment does not match the whole); `melody` is the same for the
   soprano.

Two harmonisations of one melody share the soprano and many chords, but their inner voices
move differently: on the chorales, the best match of every standard chorale that has its
harmonisation in music21 scores 0.88 or more (one, whose triple-time section the two editions
write in different note values, 0.852), and no pair of different harmonisations more than
0.830 (figures in BENCHMARKS.md); `HARMONY_THRESHOLD` sits between.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from jaxgan.midi.song import DURATION, ONSET, PITCH, TRACK

FRAMES_PER_BEAT = 4          # 16th notes: the standard split's grid
SILENT = -1
HARMONY_THRESHOLD = 0.85     # same harmonisation at or above (alto, tenor, bass agreement)
MELODY_THRESHOLD = 0.85      # same melody at or above (soprano agreement)
JUMP_FRAMES = 8              # a jump in the alignment costs this many 16ths of full agreement
TOP_K = 3                    # candidates verified per piece, in each direction, by chords
MELODY_TOP_K = 2             # ... and by melody
# Verification compares 8th-note frames: a quarter of the work of 16ths, and the two editions
# differ more in 16th passing notes than anywhere else. Bar phases use 16ths.
VERIFY_STRIDE = 2
_BASE = 13                   # 12 interval classes and "silent"


# --------------------------------------------------------------------------------------------
# Frames.


def frames_from_notes(notes: np.ndarray, steps_per_beat: int, num_voices: int = 4,
                      num_steps: int | None = None) -> np.ndarray:
  """int16 [T, num_voices]: the pitch of each voice (notes[:, TRACK]) per 16th, -1 silent.

  A note sounds in the frames whose start lies in [onset, onset + duration); where a voice has
  several notes at once its highest pitch is kept. T covers num_steps (default: the last end).
  """
  notes = np.asarray(notes, np.int64).reshape(-1, 5)
  ends = notes[:, ONSET] + notes[:, DURATION]
  last = int(ends.max()) if len(notes) else 0
  steps = last if num_steps is None else max(int(num_steps), 0)
  num_frames = -(-steps * FRAMES_PER_BEAT // steps_per_beat)
  frames = np.full((num_frames, num_voices), SILENT, np.int16)
  first = -(-notes[:, ONSET] * FRAMES_PER_BEAT // steps_per_beat)
  stop = np.minimum(-(-ends * FRAMES_PER_BEAT // steps_per_beat), num_frames)
  count = np.maximum(stop - first, 0)
  if count.sum():
    note = np.repeat(np.arange(len(notes)), count)
    frame = first[note] + np.arange(len(note)) - np.repeat(np.cumsum(count) - count, count)
    np.maximum.at(frames, (frame, notes[note, TRACK]), notes[note, PITCH].astype(np.int16))
  return frames


def frames_from_midi(midi, voices: Sequence[int], num_voices: int = 4) -> np.ndarray:
  """Frames of a miditoolkit.MidiFile whose instrument i is voice voices[i]."""
  rows = [(voice, n.pitch, n.start, n.end - n.start, 0)
          for voice, inst in zip(voices, midi.instruments) for n in inst.notes]
  notes = np.asarray(rows, np.int64).reshape(-1, 5)
  return frames_from_notes(notes, int(midi.ticks_per_beat), num_voices)


def notes_from_frames(frames: np.ndarray, steps_per_frame: int = 1, *, pad: int = 0,
                      velocity: int = 80) -> np.ndarray:
  """int32 [N, 5] notes of frames: a run of equal pitches in a voice is one held note.

  Frame j starts at step (pad + j) * steps_per_frame. The inverse of frames_from_notes for
  notes that start and end on frames and never overlap within a voice.
  """
  frames = np.asarray(frames)
  out = []
  for voice in range(frames.shape[1]):
    line = frames[:, voice].astype(np.int64)
    change = np.flatnonzero(np.diff(line, prepend=SILENT - 1, append=SILENT - 1))
    starts, ends = change[:-1], change[1:]
    sounding = line[starts] != SILENT
    starts, ends = starts[sounding], ends[sounding]
    out.append(np.stack([np.full(len(starts), voice), line[starts],
                         (starts + pad) * steps_per_frame, (ends - starts) * steps_per_frame,
                         np.full(len(starts), velocity)], 1))
  notes = np.concatenate(out) if out else np.zeros((0, 5), np.int64)
  order = np.lexsort((notes[:, PITCH], notes[:, TRACK], notes[:, ONSET]))
  return notes[order].astype(np.int32)


# --------------------------------------------------------------------------------------------
# Stage 1: candidates by shingles of key-free chords and melodies.


def _chord_tokens(frames: np.ndarray) -> np.ndarray:
  """One int per chord change: upper voices above the bass and the bass motion, mod 12."""
  if not len(frames):
    return np.zeros(0, np.int64)
  change = np.ones(len(frames), bool)
  change[1:] = np.any(frames[1:] != frames[:-1], axis=1)
  chords = frames[change].astype(np.int64)
  bass = chords[:, -1]
  silent = chords < 0
  upper = np.where(silent[:, :-1] | silent[:, -1:], 12, (chords[:, :-1] - bass[:, None]) % 12)
  motion = np.full(len(chords), 12)
  moved = ~silent[1:, -1] & ~silent[:-1, -1]
  motion[1:] = np.where(moved, np.diff(bass) % 12, 12)
  token = motion
  for column in range(upper.shape[1]):
    token = token * _BASE + upper[:, column]
  return token


def _melody_tokens(frames: np.ndarray) -> np.ndarray:
  """One int per soprano note change: the interval from the previous pitch (-24..24), or
  "silent" (49) around rests. Note values are ignored, as for chords."""
  line = frames[:, 0].astype(np.int64) if len(frames) else np.zeros(0, np.int64)
  if not len(line):
    return line
  change = np.ones(len(line), bool)
  change[1:] = line[1:] != line[:-1]
  notes = line[change]
  step = np.clip(np.diff(notes, prepend=notes[0]), -24, 24) + 24
  silent = (notes < 0) | np.r_[True, notes[:-1] < 0]
  return np.where(silent, 49, step)


def _shingles(tokens: np.ndarray, n: int, base: int) -> np.ndarray:
  if len(tokens) < n:
    return np.unique(tokens)
  out = np.zeros(len(tokens) - n + 1, np.int64)
  for i in range(n):
    out = out * base + tokens[i:len(tokens) - n + 1 + i]
  return np.unique(out)


def _jaccard(sets_a: list[np.ndarray], sets_b: list[np.ndarray]) -> np.ndarray:
  """float32 [len(a), len(b)]: Jaccard similarity of every pair of sets, by one sparse product."""
  import scipy.sparse  # pylint: disable=import-outside-toplevel  (only the matcher needs it)
  sets = sets_a + sets_b
  vocab, ids = np.unique(np.concatenate(sets + [np.zeros(0, np.int64)]), return_inverse=True)
  sizes = np.array([len(s) for s in sets])
  rows = np.repeat(np.arange(len(sets)), sizes)
  incidence = scipy.sparse.csr_matrix(
      (np.ones(len(ids), np.float32), (rows, ids)), shape=(len(sets), max(len(vocab), 1)))
  n = len(sets_a)
  inter = np.asarray((incidence[:n] @ incidence[n:].T).todense(), np.float32)
  union = sizes[:n, None] + sizes[None, n:] - inter
  return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def shingle_similarity(a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                       kind: str = "chords") -> np.ndarray:
  """float32 [len(a), len(b)]: Jaccard similarity of the pieces' shingles of 3 chords
  (kind="chords") or of 5 soprano intervals (kind="melody")."""
  if kind == "chords":
    voices = np.shape(a[0])[1] if len(a) else 4
    shingle = lambda f: _shingles(_chord_tokens(f), 3, _BASE ** voices)
  elif kind == "melody":
    shingle = lambda f: _shingles(_melody_tokens(f), 5, 50)
  else:
    raise ValueError(f"kind={kind!r} is not 'chords' or 'melody'")
  return _jaccard([shingle(np.asarray(f)) for f in a], [shingle(np.asarray(f)) for f in b])


def candidate_pairs(similarity: np.ndarray, top_k: int = TOP_K) -> list[tuple[int, int]]:
  """The top_k most similar b of every a and a of every b (similarity > 0), sorted."""
  pairs = set()
  if similarity.size == 0:
    return []
  k_b = min(top_k, similarity.shape[1])
  k_a = min(top_k, similarity.shape[0])
  for i, row in enumerate(similarity):
    pairs.update((i, int(j)) for j in np.argsort(-row, kind="stable")[:k_b] if row[j] > 0)
  for j, col in enumerate(similarity.T):
    pairs.update((int(i), j) for i in np.argsort(-col, kind="stable")[:k_a] if col[i] > 0)
  return sorted(pairs)


# --------------------------------------------------------------------------------------------
# Stage 2: verification by alignment.


@dataclasses.dataclass(frozen=True)
class PairScore:
  """How well piece a of one list and piece b of the other agree.

  harmony: share of the sounding alto, tenor and bass frames that agree along the best
    alignment, the lower of the two directions (a onto b, b onto a).
  melody: the same for the soprano.
  containment: like harmony, the higher direction (a fragment of the other scores high).
  transpose: semitones added to b's pitches to bring them to a's key.
  a_repeat, b_repeat: each frame of a (b) was repeated this many times to bring both to the
    same note values (1 and 1 unless one piece is written in halved note values).
  similarity: the shingle similarity that made the pair a candidate.
  """

  a: int
  b: int
  harmony: float
  melody: float
  containment: float
  transpose: int
  a_repeat: int
  b_repeat: int
  similarity: float

  @property
  def same_harmonisation(self) -> bool:
    return self.harmony >= HARMONY_THRESHOLD

  @property
  def same_melody(self) -> bool:
    return self.melody >= MELODY_THRESHOLD


def _histogram(frames: np.ndarray) -> np.ndarray:
  pitches = frames[frames >= 0].astype(np.int64)
  return np.bincount(pitches, minlength=128)[:128].astype(np.float64)


def _transposition(hist_a: np.ndarray, hist_b: np.ndarray) -> int:
  """The shift (-12..12) that best lines up b's pitch histogram with a's (ties: the
  smaller shift)."""
  best, best_score = 0, -1.0
  for shift in sorted(range(-12, 13), key=abs):
    lo, hi = max(0, shift), min(128, 128 + shift)
    score = float(np.dot(hist_a[lo:hi], hist_b[lo - shift:hi - shift]))
    if score > best_score:
      best, best_score = shift, score
  return best


def _note_length(frames: np.ndarray) -> float:
  """Mean length in frames of a soprano note (held and repeated notes alike)."""
  line = frames[:, 0] if len(frames) else np.zeros(0, np.int16)
  starts = np.flatnonzero(np.diff(line, prepend=-9, append=-9))
  runs, first = np.diff(starts), starts[:-1]
  sounding = line[first] >= 0
  return float(runs[sounding].mean()) if sounding.any() else 1.0


def _repeats(length_a: float, length_b: float) -> tuple[int, int]:
  """Frame repeats that bring two pieces to the same note values: (1, 1), (1, 2) or (2, 1)."""
  ratio = length_a / length_b
  if ratio > 1.6:
    return 1, 2
  if ratio < 1 / 1.6:
    return 2, 1
  return 1, 1


# Agreement is counted in half cells: a voice that sounds in both pieces with the same pitch
# scores AGREE; one that sounds in the piece aligned and rests in the other scores REST (a rest
# where the other edition holds a fermata is neither agreement nor contradiction).
AGREE, REST = 2, 1


def _keys(frames: np.ndarray) -> np.ndarray:
  """What is compared: the pitch of the upper voices, the pitch class of the bass."""
  keys = frames.astype(np.int16, copy=True)
  bass = keys[:, -1]
  keys[:, -1] = np.where(bass >= 0, bass % 12, SILENT)
  return keys


def _gains(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
  """Agreement per (frame of a, frame of b), b already in a's key and note values, in half
  cells (AGREE, REST): uint8 [Ta, Tb] over the lower voices and over the soprano with a
  aligned onto b, then [Tb, Ta] the same with b aligned onto a."""
  ka, kb = _keys(a).T, _keys(b).T
  out = []
  for x, y in zip(ka, kb):
    same = (x[:, None] == y[None, :]).view(np.uint8) * np.uint8(AGREE)
    silent_x, silent_y = x < 0, y < 0
    a_on_b = same.copy()
    a_on_b[:, silent_y] = REST
    a_on_b[silent_x, :] = 0
    b_on_a = same
    b_on_a[silent_x, :] = REST
    b_on_a[:, silent_y] = 0
    out.append((a_on_b, b_on_a))
  lower_a = out[1][0] + out[2][0] + out[3][0] if len(out) == 4 else sum(o[0] for o in out[1:])
  lower_b = out[1][1] + out[2][1] + out[3][1] if len(out) == 4 else sum(o[1] for o in out[1:])
  return lower_a, out[0][0], lower_b.T, out[0][1].T


def viterbi(gains: Sequence[np.ndarray], penalties: Sequence[float], *,
            keep_paths: bool = False) -> tuple[np.ndarray, list[np.ndarray] | None]:
  """Best alignment of each gain matrix [R, C] (rows: the frames of the piece being aligned).

  Each row goes to a column or to nowhere (gain 0). From one row to the next the path moves one
  column on, or stays nowhere, for free, or jumps to any column or to nowhere at the cost of
  its penalty; the first row starts anywhere for free. All matrices run in one batch: the loop
  is over rows, each step a few numpy operations on [batch, columns].
  Returns the best total gain of each matrix and, with keep_paths, the column of each row
  (-1: nowhere).
  """
  n = len(gains)
  if n == 0:
    return np.zeros(0, np.float32), ([] if keep_paths else None)
  rows = np.array([g.shape[0] for g in gains])
  cols = max(g.shape[1] for g in gains)
  nowhere = cols
  num_rows = int(rows.max())
  # Columns past a matrix's own are never worth visiting: a huge loss each row.
  stack = np.full((n, num_rows, cols + 1), -1e6, np.float32)
  for i, g in enumerate(gains):
    stack[i, :, :g.shape[1]] = 0.0
    stack[i, :g.shape[0], :g.shape[1]] = g
  stack[:, :, nowhere] = 0.0
  penalty = np.asarray(penalties, np.float32)[:, None]
  value = stack[:, 0].copy()
  final = np.zeros((n, cols + 1), np.float32)
  final[rows == 1] = value[rows == 1]
  diagonal_at = np.zeros((n, num_rows, cols + 1), bool) if keep_paths else None
  jump_from = np.zeros((n, num_rows), np.int64) if keep_paths else None
  shifted = np.empty_like(value)
  shifted[:, 0] = -1e9                      # column 0 is entered by a jump only
  for r in range(1, num_rows):
    if keep_paths:
      jump_from[:, r] = value.argmax(1)
    jump = value.max(1, keepdims=True) - penalty
    shifted[:, 1:cols] = value[:, :cols - 1]
    shifted[:, nowhere] = value[:, nowhere]  # staying nowhere is free
    if keep_paths:
      diagonal_at[:, r] = shifted >= jump
    np.maximum(shifted, jump, out=value)
    value += stack[:, r]
    ends = rows == r + 1
    if ends.any():
      final[ends] = value[ends]
  best = final.max(1)
  if not keep_paths:
    return best, None
  paths = []
  for i, g in enumerate(gains):
    state = int(final[i].argmax())
    path = np.empty(g.shape[0], np.int64)
    for r in range(g.shape[0] - 1, -1, -1):
      path[r] = -1 if state == nowhere else state
      if r and diagonal_at[i, r, state]:
        state = state if state == nowhere else state - 1
      elif r:
        state = int(jump_from[i, r])
    paths.append(path)
  return best, paths


# Work per Viterbi batch: batch * rows * columns cells (float32, ~64 MB).
_BATCH_CELLS = 16 * 2**20


def _batched_viterbi(gains: list[np.ndarray], penalties: list[float]) -> np.ndarray:
  """viterbi() over many matrices, in batches of similar shape (little padding, bounded
  memory); scores in the order given."""
  order = sorted(range(len(gains)), key=lambda i: gains[i].shape)
  out = np.zeros(len(gains), np.float32)
  start = 0
  while start < len(order):
    rows, cols = gains[order[start]].shape
    end = start + 1
    while end < len(order):
      r, c = (max(x, y) for x, y in zip((rows, cols), gains[order[end]].shape))
      if (end - start + 1) * r * (c + 1) > _BATCH_CELLS:
        break
      rows, cols, end = r, c, end + 1
    chunk = order[start:end]
    out[chunk], _ = viterbi([gains[i] for i in chunk], [penalties[i] for i in chunk])
    start = end
  return out


@dataclasses.dataclass(frozen=True)
class _Profile:
  frames: np.ndarray
  histogram: np.ndarray
  note_length: float


def _profile(frames: np.ndarray) -> _Profile:
  frames = np.asarray(frames, np.int16).reshape(-1, np.shape(frames)[-1] if np.ndim(frames) > 1
                                                else 4)
  return _Profile(frames, _histogram(frames), _note_length(frames))


def _aligned(a: _Profile, b: _Profile) -> tuple[np.ndarray, np.ndarray, int, int, int]:
  """Both pieces on one grid and in one key: (a, b transposed, transpose, a_repeat, b_repeat)."""
  a_repeat, b_repeat = _repeats(a.note_length, b.note_length)
  shift = _transposition(a.histogram, b.histogram)
  a2 = np.repeat(a.frames, a_repeat, axis=0)
  b2 = np.repeat(np.where(b.frames >= 0, b.frames + shift, SILENT).astype(np.int16), b_repeat,
                 axis=0)
  return a2, b2, shift, a_repeat, b_repeat


def score_pairs(a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                pairs: Sequence[tuple[int, int]],
                similarity: np.ndarray | None = None) -> list[PairScore]:
  """Verifies pairs (i, j) of a[i] and b[j] by alignment (see the module docstring)."""
  profiles_a = {i: _profile(a[i]) for i in sorted({i for i, _ in pairs})}
  profiles_b = {j: _profile(b[j]) for j in sorted({j for _, j in pairs})}
  jump = JUMP_FRAMES / VERIFY_STRIDE * AGREE
  gains, penalties, cells, info = [], [], [], []
  for i, j in pairs:
    a2, b2, shift, a_repeat, b_repeat = _aligned(profiles_a[i], profiles_b[j])
    a2, b2 = a2[::VERIFY_STRIDE], b2[::VERIFY_STRIDE]
    if not len(a2) or not len(b2):
      a2 = b2 = np.full((1, 4), SILENT, np.int16)
    lower_a, upper_a, lower_b, upper_b = _gains(a2, b2)
    gains += [lower_a, lower_b, upper_a, upper_b]
    voices = a2.shape[1] - 1
    penalties += [jump * voices, jump * voices, jump, jump]
    cells += [(a2[:, 1:] >= 0).sum(), (b2[:, 1:] >= 0).sum(),
              (a2[:, 0] >= 0).sum(), (b2[:, 0] >= 0).sum()]
    info.append((shift, a_repeat, b_repeat))
  best = _batched_viterbi(gains, penalties)
  share = (best / (AGREE * np.maximum(np.asarray(cells, np.float32), 1))).reshape(-1, 4)
  out = []
  for (i, j), s, (shift, a_repeat, b_repeat) in zip(pairs, share, info):
    out.append(PairScore(
        a=int(i), b=int(j), harmony=float(min(s[0], s[1])), melody=float(min(s[2], s[3])),
        containment=float(max(s[0], s[1])), transpose=int(shift), a_repeat=a_repeat,
        b_repeat=b_repeat,
        similarity=float(similarity[i, j]) if similarity is not None else float("nan")))
  return out


@dataclasses.dataclass
class Matches:
  """The verified candidate pairs of two lists of pieces."""

  num_a: int
  num_b: int
  similarity: np.ndarray           # [num_a, num_b] shingle similarity (stage 1)
  pairs: list[PairScore]           # every verified candidate pair

  def best_for_a(self, i: int) -> PairScore | None:
    """The best verified b for a[i] (by harmony, then melody), or None."""
    found = [p for p in self.pairs if p.a == i]
    return max(found, key=lambda p: (p.harmony, p.melody), default=None)

  def best_for_b(self, j: int) -> PairScore | None:
    found = [p for p in self.pairs if p.b == j]
    return max(found, key=lambda p: (p.harmony, p.melody), default=None)

  def related_a(self, j: int, threshold: float = HARMONY_THRESHOLD) -> list[PairScore]:
    """The pairs of b[j] whose harmony or containment reaches the threshold."""
    return [p for p in self.pairs
            if p.b == j and max(p.harmony, p.containment) >= threshold]


def match(a: Sequence[np.ndarray], b: Sequence[np.ndarray], *, top_k: int = TOP_K,
          melody_top_k: int = MELODY_TOP_K) -> Matches:
  """Finds which frames of `a` are the same music as which frames of `b` (see the module
  docstring): the top_k candidates of every piece by chord shingles and the melody_top_k by
  melody shingles (so that harmonisations of one tune meet), each verified by alignment."""
  similarity = shingle_similarity(a, b, "chords")
  pairs = set(candidate_pairs(similarity, top_k))
  pairs.update(candidate_pairs(shingle_similarity(a, b, "melody"), melody_top_k))
  return Matches(len(a), len(b), similarity, score_pairs(a, b, sorted(pairs), similarity))


def align(a: np.ndarray, b: np.ndarray, pair: PairScore) -> np.ndarray:
  """The frame of b (on b's grid after pair.b_repeat) that each frame of a (after
  pair.a_repeat) aligns with, all four voices compared at full resolution; -1: none."""
  a2 = np.repeat(np.asarray(a, np.int16), pair.a_repeat, axis=0)
  b2 = np.repeat(np.asarray(b, np.int16), pair.b_repeat, axis=0)
  b2 = np.where(b2 >= 0, b2 + pair.transpose, SILENT).astype(np.int16)
  lower, upper, _, _ = _gains(a2, b2)
  gains = lower.astype(np.float32) + upper
  _, paths = viterbi([gains], [JUMP_FRAMES * AGREE * a2.shape[1]], keep_paths=True)
  return paths[0]


def bar_phase(path: np.ndarray, bar_frames: int, a_repeat: int = 1,
              b_repeat: int = 1) -> tuple[int, int, float]:
  """Where a's bar lines fall, from b's: (pickup pad, bar length, share of frames agreeing).

  b's bars start at its frames 0, bar_frames, 2 * bar_frames, ...; `path` is align()'s.
  Returns, in a's own frames, the silence to put before a's first frame so that its bar lines
  land where b's do, the length of a's bar, and the share of a's aligned frames whose bar
  position agrees with that pad (below 1 where a repeat or a cut moved the bar lines).
  """
  bar = bar_frames * b_repeat                 # b's bar on the common grid
  rows = np.flatnonzero(path >= 0)
  if not len(rows) or bar % a_repeat:
    return 0, max(bar // max(a_repeat, 1), 1), 0.0
  phase = (path[rows] - rows) % bar
  votes = np.bincount(phase, minlength=bar)
  best = int(votes.argmax())
  return best // a_repeat, bar // a_repeat, float(votes[best] / len(rows))
