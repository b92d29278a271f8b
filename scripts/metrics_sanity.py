"""Do the chorale measures tell Bach from bad music? A table on the standard JSB split.

  python scripts/metrics_sanity.py PATH/Jsb16thSeparated.json [--split test] [--stand-in train]
      [--bars 4] [--num 256] [--seed 0] [--json OUT.json]

Reads the standard split (Boulanger-Lewandowski et al. 2012; SATB MIDI pitch per 16th note, -1
silent; Coconet's encoding), cuts every chorale of `--split` (the reference: held-out Bach) into
windows of `--bars` bars of 16 steps, one bar apart, and scores against it, with
`jaxgan.voice_metrics.report`:
- the windows of `--stand-in` (Bach from another split: what a perfect model would get),
- `--num` pieces of each kind of degenerate music (`voice_metrics.DEGENERATE_KINDS`),
- the stand-in's lines with one defect each (`voice_metrics.CORRUPTIONS`).
Then Bach's own voice-leading rates over whole chorales of each split, the MuseGAN metrics
(`jaxgan.metrics`) of the same sets as piano-rolls, the restoration baselines on the reference
(2 bars hidden per window) and the time one report takes.

The file has no bar lines: "bars" are 16-step groups from each chorale's first step, so per-bar
figures (notes per bar, UPC) are per 16 steps, wherever Bach's bar lines fall. Held and repeated
notes are not told apart there: onsets are pitch changes, for Bach and for the bad music alike.

Output: text tables on stdout (a value marked "!" is outside its target against the reference);
`--json` also writes every report. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxgan import metrics as metrics_lib  # noqa: E402  (this checkout, not an installed copy)
from jaxgan import voice_metrics as vm  # noqa: E402

SPB, STEPS_PER_BAR = 4, 16
LOWEST, PITCHES = 24, 84
SPEC = metrics_lib.RollSpec(SPB, LOWEST, vm.SATB)


def load_split(path: str, split: str) -> list[np.ndarray]:
  """The chorales of one split as int16 [T, 4] arrays, checked."""
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  if split not in data:
    raise SystemExit(f"{path}: no split {split!r} (has {sorted(data)})")
  pieces = []
  for i, piece in enumerate(data[split]):
    array = np.asarray(piece)
    if array.ndim != 2 or array.shape[1] != 4 or not np.issubdtype(array.dtype, np.integer):
      raise SystemExit(f"{path}: {split}[{i}] is not a list of 4 integer pitches per step")
    if array.min() < -1 or array.max() > 127:
      raise SystemExit(f"{path}: {split}[{i}] holds pitches outside -1..127")
    pieces.append(array.astype(np.int16))
  return pieces


def window_voices(pieces: list[np.ndarray], bars: int) -> vm.Voices:
  pitch = vm.windows(pieces, bars * STEPS_PER_BAR, STEPS_PER_BAR)
  return vm.from_pitches(pitch, steps_per_beat=SPB, steps_per_bar=STEPS_PER_BAR)


def whole_chorale_rates(pieces: list[np.ndarray]) -> dict[str, tuple[int, int]]:
  """Voice-leading events and opportunities summed over whole chorales."""
  totals: dict[str, list[int]] = {}
  for piece in pieces:
    piece = piece[:len(piece) // STEPS_PER_BAR * STEPS_PER_BAR]
    v = vm.from_pitches(piece, steps_per_beat=SPB, steps_per_bar=STEPS_PER_BAR)
    for rule, (events, chances, _) in vm.voice_leading_counts(v).items():
      total = totals.setdefault(rule, [0, 0])
      total[0] += int(events.sum())
      total[1] += int(chances.sum())
  return {rule: (e, c) for rule, (e, c) in totals.items()}


def fmt(value) -> str:
  if value is None:
    return "-"
  return f"{value:.4f}" if abs(value) < 0.1 and value != 0 else f"{value:.3f}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("path", help="Jsb16thSeparated.json")
  parser.add_argument("--split", default="test", help="the reference split (held-out Bach)")
  parser.add_argument("--stand-in", default="train", help="the split scored as a perfect model")
  parser.add_argument("--bars", type=int, default=4)
  parser.add_argument("--num", type=int, default=256, help="pieces of each degenerate kind")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", help="also write every report here")
  args = parser.parse_args()

  reference_pieces = load_split(args.path, args.split)
  stand_in_pieces = load_split(args.path, args.stand_in)
  reference = window_voices(reference_pieces, args.bars)
  stand_in = window_voices(stand_in_pieces, args.bars)
  candidates: dict[str, vm.Voices] = {f"Bach {args.stand_in}": stand_in}
  bad_rolls = {}
  for kind in vm.DEGENERATE_KINDS:
    bad_rolls[kind] = vm.degenerate_rolls(
        kind, args.num, bars=args.bars, steps_per_bar=STEPS_PER_BAR, steps_per_beat=SPB,
        lowest_pitch=LOWEST, num_pitches=PITCHES, seed=args.seed)
    candidates[kind] = vm.from_rolls(bad_rolls[kind], SPEC).onsets_at_changes()
  for kind in vm.CORRUPTIONS:
    candidates[kind] = vm.corrupt(stand_in, kind)

  print(f"# Reference: Bach {args.split}, {len(reference_pieces)} chorales, {len(reference)} "
        f"windows of {args.bars} bars; stand-in: Bach {args.stand_in}, {len(stand_in)} windows; "
        f"{args.num} pieces per degenerate kind\n")
  reports = {name: vm.report(v, reference, seed=args.seed) for name, v in candidates.items()}

  # One wide table: the reference's value, then each set's value ("!" = outside target).
  names = list(candidates)
  first = reports[names[0]]["rows"]
  header = ["statistic", "voice", f"Bach {args.split}"] + names
  lines = []
  for k, row in enumerate(first):
    cells = [row["statistic"], row["voice"], fmt(row["bach"])]
    for name in names:
      r = reports[name]["rows"][k]
      cells.append(fmt(r["model"]) + ("" if r["ok"] else "!"))
    lines.append(cells)
  lines.append(["within target", "", ""] + [f"{reports[n]['passed']}/{reports[n]['total']}"
                                            for n in names])
  widths = [max(len(c) for c in column) for column in zip(header, *lines)]
  for cells in [header] + lines:
    print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(cells, widths))))

  print(f"\n# Bach {args.stand_in} against Bach {args.split}, in full\n")
  print(reports[names[0]]["table"])

  print("\n# Bach's voice-leading rates over whole chorales (events / opportunities)\n")
  splits = {args.split: reference_pieces, args.stand_in: stand_in_pieces}
  rates = {split: whole_chorale_rates(pieces) for split, pieces in splits.items()}
  print(f"{'rule':18s}" + "".join(f"{split:>26s}" for split in splits))
  for rule in vm.VOICE_LEADING:
    cells = []
    for split in splits:
      e, c = rates[split][rule]
      cells.append(f"{100 * e / c:6.2f} % ({e:5d}/{c:6d})")
    print(f"{rule:18s}" + "".join(f"{c:>26s}" for c in cells))

  print(f"\n# MuseGAN metrics (jaxgan.metrics) at {SPB} steps per beat\n")
  rows = {}
  for name, rolls in [(f"Bach {args.split}",
                       vm.to_rolls(reference, lowest_pitch=LOWEST, num_pitches=PITCHES))] + list(
                           bad_rolls.items()):
    merged = dict(metrics_lib.track_metrics(rolls, SPEC))
    merged.update(metrics_lib.pair_metrics(rolls, SPEC))
    rows[name] = merged
  print(metrics_lib.summary_table(rows, SPEC))

  print(f"\n# Restoration baselines on Bach {args.split}: 2 bars of all voices hidden per "
        f"window (from bar 2 on)\n")
  hidden = vm.bar_span_mask(len(reference), reference.num_bars, STEPS_PER_BAR, 4, span=2,
                            seed=args.seed)
  restoration = vm.restoration_report(reference, {}, hidden, onsets_at_changes=True)
  print(restoration["table"])

  # Timing: one report of 256 windows against 256, without music21 or file reading.
  n = min(256, len(reference), len(stand_in))
  gen, ref = stand_in.take(np.arange(n)), reference.take(np.arange(n))
  vm.report(gen, ref)  # warm-up
  start = time.perf_counter()
  vm.report(gen, ref)
  with_oa = time.perf_counter() - start
  start = time.perf_counter()
  vm.report(gen, ref, with_oa=False)
  without_oa = time.perf_counter() - start
  print(f"\n# Time for one report, {n} windows against {n}: {with_oa:.3f} s "
        f"({without_oa:.3f} s without the overlapping areas)")

  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump({"reports": {name: {k: v for k, v in r.items() if k != "table"}
                             for name, r in reports.items()},
                 "bach_voice_leading": {split: {rule: {"events": e, "opportunities": c}
                                                for rule, (e, c) in r.items()}
                                        for split, r in rates.items()},
                 "restoration_baselines": restoration["methods"]},
                f, indent=1)


if __name__ == "__main__":
  main()
