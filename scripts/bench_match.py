"""The chorale matcher on the real data, and the standard split's own statistics.

  python scripts/bench_match.py [--reps 3] [--workers N]

(a) Matching. The music21 corpus chorales are rendered to MIDI bytes as the data sets do (not
timed: music21's parser is not jaxgan's) and turned into 16th-note frames; then
`jaxgan.data.match.match` of the 382 standard chorales against them is timed (median and
min-max of --reps runs). Reported: how many standard chorales match a corpus chorale (same
harmonisation), how many only a same melody, how many corpus chorales are the same music as a
train / validation / test chorale, and the closest scores on either side of the threshold.

(b) The standard split, per split, with the bars `jaxgan.data.standard.recover_meters` gives:
per-voice pitch range, rest share (silent voice-steps), notes per bar (held runs of a voice are
one note, as the encoding has them) and chorales per meter.

Output: Markdown on stdout (progress on stderr). Timings only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

import numpy as np

import _bench_util as bu  # also puts this checkout first on sys.path


def corpus_chorales(workers: int | None):
  from jaxgan.data import builders, corpus, standard  # pylint: disable=import-outside-toplevel
  pieces = corpus.chorale_pieces("bach")
  start = time.perf_counter()
  converted = list(builders.convert_pieces(pieces, num_workers=workers, progress=True,
                                           desc="music21"))
  seconds = time.perf_counter() - start
  chorales = [c for c in map(standard.corpus_chorale, converted) if c is not None]
  return chorales, len(pieces), seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--workers", type=int)
  args = parser.parse_args()

  from jaxgan.data import match as match_lib  # pylint: disable=import-outside-toplevel
  from jaxgan.data import standard  # pylint: disable=import-outside-toplevel

  split_chorales = standard.load_chorales()
  names = [(s, i) for s in split_chorales for i in range(len(split_chorales[s]))]
  frames = [split_chorales[s][i] for s, i in names]
  chorales, num_pieces, convert_s = corpus_chorales(args.workers)
  corpus_frames = [c.frames for c in chorales]

  times, found = [], None
  for rep in range(args.reps):
    print(f"match {rep + 1}/{args.reps}", file=sys.stderr)
    start = time.perf_counter()
    found = match_lib.match(frames, corpus_frames)
    times.append(time.perf_counter() - start)
  meters, _ = standard.recover_meters(frames, chorales, found)

  how = collections.Counter(m.how for m in meters)
  same = standard.same_music(found)
  by_split = collections.Counter()
  for pairs in same.values():
    for split in {names[p.a][0] for p in pairs}:
      by_split[split] += 1
  held_out = sum(1 for pairs in same.values() if any(names[p.a][0] != "train" for p in pairs))
  best = {}
  for p in found.pairs:
    if p.a not in best or (p.harmony, p.melody) > (best[p.a].harmony, best[p.a].melody):
      best[p.a] = p
  accepted = [p.harmony for p in best.values() if p.same_harmonisation]
  rejected = [p.harmony for p in found.pairs if not p.same_harmonisation]
  low_bars = sum(1 for m in meters if m.how != "default" and m.bar_agreement < 0.9)

  lines = bu.header("The chorale matcher on the real data", [
      f"{num_pieces} music21 chorales rendered to MIDI in {convert_s:.1f} s (not timed below), "
      f"{len(chorales)} compared; 382 standard chorales",
  ])
  lines += [
      "",
      "| what | figure |",
      "| --- | --- |",
      f"| `match()` 382 x {len(chorales)}, seconds, median (min-max of {args.reps}) | "
      f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f}) |",
      f"| candidate pairs verified | {len(found.pairs):,} |",
      f"| standard chorales with the same harmonisation in music21 | {how['harmony']} |",
      f"| ... with only the same melody (meter from it) | {how['melody']} |",
      f"| ... with neither (default 4/4, bars counted from the end) | {how['default']} |",
      f"| ... whose bars agree with the match's on < 90 % of the frames | {low_bars} |",
      f"| music21 chorales the same music as a standard chorale | {len(same)} of "
      f"{len(chorales)} |",
      f"| ... as a train / validation / test chorale | {by_split['train']} / "
      f"{by_split['validation']} / {by_split['test']} |",
      f"| ... as a validation or test chorale (kept out of music21_extras) | {held_out} |",
      f"| music21 chorales new to the split (the music21_extras) | {len(chorales) - len(same)} |",
      f"| lowest harmony of an accepted best match / highest of a rejected pair | "
      f"{min(accepted):.3f} / {max(rejected):.3f} (threshold "
      f"{match_lib.HARMONY_THRESHOLD}) |",
  ]
  lines += ["", *split_statistics(split_chorales, names, meters)]
  print("\n".join(lines))


def split_statistics(split_chorales, names, meters) -> list[str]:
  """(b): per split, per-voice ranges, rest share, notes per bar, meters."""
  from jaxgan.data import match as match_lib  # pylint: disable=import-outside-toplevel
  from jaxgan.data import standard  # pylint: disable=import-outside-toplevel
  meter_of = {n: m for n, m in zip(names, meters)}
  voices = ("soprano", "alto", "tenor", "bass")
  lines = ["### The standard split (bars from the matches)", "",
           "| split | chorales | " + " | ".join(f"{v} range" for v in voices)
           + " | rest share | notes per bar | meters |",
           "| --- | ---: | " + " | ".join("---" for _ in voices) + " | ---: | ---: | --- |"]
  for split, chorales in split_chorales.items():
    every = np.concatenate(chorales)
    ranges = []
    for v in range(len(voices)):
      line = every[:, v][every[:, v] >= 0]
      ranges.append(f"{line.min()}-{line.max()}")
    notes = bars = 0
    meter_count = collections.Counter()
    for i, frames in enumerate(chorales):
      meter = meter_of[(split, i)]
      notes += len(match_lib.notes_from_frames(frames))
      bar = standard.bar_frames(meter.time_signature)
      bars += -(-(meter.pad + len(frames)) // bar)
      meter_count["/".join(map(str, meter.time_signature))] += 1
    meters_text = ", ".join(f"{k} {v}" for k, v in meter_count.most_common())
    lines.append(f"| {split} | {len(chorales)} | " + " | ".join(ranges)
                 + f" | {(every < 0).mean():.2%} | {notes / bars:.2f} | {meters_text} |")
  return lines


if __name__ == "__main__":
  main()
