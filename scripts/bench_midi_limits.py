"""Worst cases of the MIDI loader: time and peak memory on files at and past its limits.

  python scripts/bench_midi_limits.py [--cases NAME,NAME] [--timeout 300]

Each case is a file built here to sit at one of `MidiConfig`'s bounds (file size, notes,
events, bars) or to attack one thing (huge delta times, many tracks, tempo, meter, marker or
controller events, long and unterminated notes); each is loaded in a fresh process, from raw
bytes, through `load_midi` and `quantize_segments` at the defaults (what `prepare
midi_folder` does), and the process's peak RSS and the seconds taken are reported. "RSS
added" is the peak past the process's own once its imports (numpy, miditoolkit, jaxgan) are
done and the file is read.

Output: Markdown on stdout (progress on stderr). Timings only; nothing is asserted
(tests/test_midi_io.py holds the bounds that are asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import _bench_util as bu  # also puts this checkout first on sys.path

from jaxgan.midi import MidiConfig

LIMITS = MidiConfig()


# ---------------------------------------------------------------------------------- file bytes


def vlq(n: int) -> bytes:
  out = [n & 0x7F]
  n >>= 7
  while n:
    out.append(0x80 | (n & 0x7F))
    n >>= 7
  return bytes(reversed(out))


def smf(tracks: list[bytes], tpb: int = 480) -> bytes:
  header = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big")
  header += len(tracks).to_bytes(2, "big") + tpb.to_bytes(2, "big")
  return header + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t for t in tracks)


EOT = b"\x00\xff\x2f\x00"


def meter_event(delta: int, num: int, den: int) -> bytes:
  return vlq(delta) + bytes([0xFF, 0x58, 4, num, den.bit_length() - 1, 24, 8])


def notes_track(count: int, spacing: int, length: int) -> bytes:
  """`count` notes `spacing` ticks apart, each `length` ticks long (length < spacing)."""
  on = [vlq(spacing - length) + bytes([0x90, 36 + k % 72, 100]) for k in range(count)]
  off = vlq(length) + bytes([0x80, 0, 0])
  return b"".join(a + off[:-2] + bytes([36 + k % 72, 0]) for k, a in enumerate(on)) + EOT


def case_notes_max() -> bytes:
  # max_notes notes, 10 ticks apart: 2,604 bars of 4/4.
  return smf([notes_track(LIMITS.max_notes, 10, 5)])


def case_notes_over() -> bytes:
  return smf([notes_track(LIMITS.max_notes + 1, 10, 5)])


def case_controllers_max() -> bytes:
  # max_events - 2 controller changes (4 bytes each, about 8 MB) and one note.
  body = b"\x00\x90\x3c\x64" + b"\x01\xb0\x07\x40" * (LIMITS.max_events - 3) + b"\x00\x80\x3c\x00"
  return smf([body + EOT])


def case_pitch_bends_max() -> bytes:
  body = b"\x00\x90\x3c\x64" + b"\x01\xe0\x00\x40" * (LIMITS.max_events - 3) + b"\x00\x80\x3c\x00"
  return smf([body + EOT])


def case_events_over() -> bytes:
  body = b"\x00\x90\x3c\x64" + b"\x01\xb0\x07\x40" * LIMITS.max_events + b"\x00\x80\x3c\x00"
  return smf([body + EOT])


def case_sysex_16mib() -> bytes:
  payload = b"\x01" * (LIMITS.max_file_bytes - 64)
  body = b"\x00\x90\x3c\x64\x10\x80\x3c\x00" + b"\x00\xf0" + vlq(len(payload)) + payload
  return smf([body + EOT])


def case_file_over() -> bytes:
  return case_sysex_16mib() + b"\x00" * 128


def case_huge_ticks() -> bytes:
  # Every event 0x0FFFFFFF ticks (the largest delta) after the last.
  events = [vlq(0x0FFFFFFF) + (bytes([0x90, 60, 100]) if k % 2 == 0 else bytes([0x80, 60, 0]))
            for k in range(200_000)]
  return smf([b"".join(events) + EOT])


def case_many_tracks() -> bytes:
  # The header's largest track count, a note in each.
  track = b"\x00\x90\x3c\x64\x60\x80\x3c\x00" + EOT
  return smf([track] * 65_535)


def case_tempo_events() -> bytes:
  # A tempo change every tick (7 bytes each, about 14 MB) under one long note.
  tempo = b"\x01\xff\x51\x03\x07\xa1\x20"
  body = b"\x00\x90\x3c\x64" + tempo * 1_999_000 + b"\x00\x80\x3c\x00"
  return smf([body + EOT])


def case_meter_events() -> bytes:
  # A time signature every tick, alternating 3/4 and 2/4 (8 bytes each, about 15 MB).
  events = b"".join(meter_event(1, 3 if k % 2 else 2, 4) for k in range(1_900_000))
  return smf([b"\x00\x90\x3c\x64" + events + b"\x00\x80\x3c\x00" + EOT])


def case_meter_parts_max() -> bytes:
  # max_bars one-bar parts alternating 3/4 and 2/4, a note in each: the most segments.
  out = []
  for k in range(LIMITS.max_bars):
    num = 3 if k % 2 == 0 else 2
    out.append(meter_event(0, num, 4) + b"\x00\x90\x3c\x64" + vlq(num * 480) + b"\x80\x3c\x00")
  return smf([b"".join(out) + EOT])


def case_meter_parts_over() -> bytes:
  out = []
  for k in range(LIMITS.max_bars + 8):
    num = 3 if k % 2 == 0 else 2
    out.append(meter_event(0, num, 4) + b"\x00\x90\x3c\x64" + vlq(num * 480) + b"\x80\x3c\x00")
  return smf([b"".join(out) + EOT])


def case_notes_in_parts_max() -> bytes:
  # max_bars one-bar parts as above, holding max_notes notes between them.
  per_bar = LIMITS.max_notes // LIMITS.max_bars
  out = []
  for k in range(LIMITS.max_bars):
    num = 3 if k % 2 == 0 else 2
    spacing = num * 480 // per_bar
    notes = b"".join(vlq(spacing - 3 if j else 0) + b"\x90" + bytes([36 + j % 72, 100]) +
                     vlq(3) + b"\x80" + bytes([36 + j % 72, 0]) for j in range(per_bar))
    rest = num * 480 - spacing * (per_bar - 1) - 3
    out.append(meter_event(0, num, 4) + notes + vlq(rest) + b"\xff\x01\x00")
  return smf([b"".join(out) + EOT])


def case_markers() -> bytes:
  # 2,000,000 marker events with 2-byte texts (each becomes a Python object).
  marker = b"\x01\xff\x06\x02ab"
  return smf([b"\x00\x90\x3c\x64" + marker * 1_999_000 + b"\x00\x80\x3c\x00" + EOT])


def case_long_notes() -> bytes:
  # 100,000 notes, each held to the end of a 4,000-bar song.
  end = 4000 * 1920
  ons = b"".join(b"\x00\x90" + bytes([36 + k % 72, 100]) for k in range(100_000))
  offs = vlq(end) + b"\x80\x3c\x00" + b"".join(
      b"\x00\x80" + bytes([36 + k % 72, 0]) for k in range(100_000))
  return smf([ons + offs + EOT])


def case_unterminated() -> bytes:
  # max_notes note-ons that never end (closed at the end of the track).
  body = b"".join(b"\x0a\x90" + bytes([36 + k % 72, 100]) for k in range(LIMITS.max_notes))
  return smf([body + EOT])


CASES: dict[str, Callable[[], bytes]] = {
    "notes_max": case_notes_max,
    "notes_over": case_notes_over,
    "controllers_max": case_controllers_max,
    "pitch_bends_max": case_pitch_bends_max,
    "events_over": case_events_over,
    "sysex_16mib": case_sysex_16mib,
    "file_over": case_file_over,
    "huge_ticks": case_huge_ticks,
    "many_tracks": case_many_tracks,
    "tempo_events": case_tempo_events,
    "meter_events": case_meter_events,
    "meter_parts_max": case_meter_parts_max,
    "meter_parts_over": case_meter_parts_over,
    "notes_in_parts_max": case_notes_in_parts_max,
    "markers": case_markers,
    "long_notes": case_long_notes,
    "unterminated": case_unterminated,
}

# ------------------------------------------------------------------------------------ the child

CHILD = r"""
import json, resource, sys, time
from jaxgan.midi import MidiConfig, MidiError, load_midi, quantize_segments
def rss():
  # VmHWM: this process's peak; ru_maxrss would carry the parent's over from before exec.
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with open(sys.argv[1], "rb") as f:
  data = f.read()
base = rss()
start = time.perf_counter()
config = MidiConfig()
try:
  midi = load_midi(data, name="case", config=config)
  segments, counts = quantize_segments(midi, config, source="case")
  kept = [s for s in segments if s.song is not None]
  outcome = (f"{len(kept)} segment(s), {sum(s.song.num_bars for s in kept):,} bars,"
             f" {counts['notes_kept']:,} notes")
except MidiError as e:
  outcome = "MidiError: " + e.reason
seconds = time.perf_counter() - start
print(json.dumps({"outcome": outcome, "seconds": seconds, "base_mib": base,
                  "peak_mib": rss()}))
"""


def run_case(name: str, folder: str, timeout: float) -> dict:
  data = CASES[name]()
  path = os.path.join(folder, name + ".mid")
  with open(path, "wb") as f:
    f.write(data)
  env = dict(os.environ, PYTHONPATH=bu.REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  start = time.perf_counter()
  try:
    done = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)
  except subprocess.TimeoutExpired:
    return {"name": name, "bytes": len(data), "outcome": f"timed out after {timeout:.0f} s"}
  finally:
    os.unlink(path)
  if done.returncode:
    return {"name": name, "bytes": len(data),
            "outcome": f"crashed (exit {done.returncode}): {done.stderr.strip()[-300:]}",
            "wall": time.perf_counter() - start}
  return {"name": name, "bytes": len(data), **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
  parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case")
  args = parser.parse_args()
  names = [n for n in args.cases.split(",") if n]
  unknown = sorted(set(names) - set(CASES))
  if unknown:
    parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    for name in names:
      print(f"{name} ...", file=sys.stderr, flush=True)
      rows.append(run_case(name, folder, args.timeout))
  print("\n".join(bu.header("MIDI loader limits")))
  print(f"limits: max_file_bytes {LIMITS.max_file_bytes:,}, max_events {LIMITS.max_events:,},"
        f" max_notes {LIMITS.max_notes:,}, max_bars {LIMITS.max_bars:,}\n")
  print("| case | file | outcome | seconds | peak RSS (MiB) | RSS added (MiB) |")
  print("| --- | ---: | --- | ---: | ---: | ---: |")
  for r in rows:
    size = f"{r['bytes'] / 2**20:.2f} MiB"
    if "seconds" in r:
      print(f"| {r['name']} | {size} | {r['outcome']} | {r['seconds']:.2f} |"
            f" {r['peak_mib']:.0f} | {r['peak_mib'] - r['base_mib']:.0f} |")
    else:
      print(f"| {r['name']} | {size} | {r['outcome']} | | | |")


if __name__ == "__main__":
  main()
