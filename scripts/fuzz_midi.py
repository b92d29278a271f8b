"""Fuzzes the MIDI loader from raw bytes for a bounded time.

  python scripts/fuzz_midi.py --seconds 300 [--engine auto|atheris|mutate] [--dir runs/fuzz_midi]
  python scripts/fuzz_midi.py --minimize runs/fuzz_midi/crashes/crash-XXXX

The target is what `jaxgan prepare midi_folder` runs on every file: `load_midi` on the bytes,
`quantize_segments` at the default MidiConfig and at a 4-steps-per-beat, 4/4-only one, and
`encode` of each kept segment whose meter the vocabulary has. A `MidiError` (and a
`ValueError` from `encode`) is the expected answer to a bad file; any other exception is a
crash, and so is an input that takes more than --timeout seconds or takes the process past
--rss-limit-mb.

Engines: `atheris` (coverage-guided libFuzzer, `pip install jaxgan[fuzz]`), run in a child
process with jaxgan.midi instrumented; `mutate` (no extra dependency, not coverage-guided):
random byte-level mutations and splices of the corpus files. `auto` picks atheris when it is
installed. The corpus lives in DIR/corpus and grows across runs (atheris adds the inputs that
reach new code); it is seeded with small generated files (meter changes, pickups, drums,
running status, RMID, format 0, unterminated notes, every event kind), three chorales of the
music21 corpus rendered to MIDI, and the regression inputs in tests/fixtures/midi/. Crashing
inputs go to DIR/crashes; reduce one with --minimize and commit it to tests/fixtures/midi/
with a test in tests/test_midi_io.py (it then seeds every later run too).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
  sys.path.insert(0, REPO)   # jaxgan from this checkout, not an installed copy
FIXTURES = os.path.join(REPO, "tests", "fixtures", "midi")
CHORALES = ("bach/bwv269", "bach/bwv41.6", "bach/bwv304")


# ---------------------------------------------------------------------------------- the target


def make_target():
  """The function under test, with its imports done (after atheris instruments them)."""
  import dataclasses  # pylint: disable=import-outside-toplevel

  from jaxgan.midi import (  # pylint: disable=import-outside-toplevel
      MidiConfig, MidiError, Vocabulary, encode, load_midi, quantize_segments)

  configs = [MidiConfig(), MidiConfig(steps_per_beat=4, meters=((4, 4),), out_of_range="fold")]
  vocabs = [Vocabulary(c) for c in configs]

  def target(data: bytes) -> None:
    for config, vocab in zip(configs, vocabs):
      try:
        midi = load_midi(data, name="fuzz", config=config)
        segments, _ = quantize_segments(midi, config, source="fuzz")
      except MidiError:
        continue
      for segment in segments:
        if segment.song is None or segment.time_signature not in vocab.meters:
          continue
        song = dataclasses.replace(segment.song, source="fuzz")
        try:
          encode(song, vocab)
        except ValueError as e:
          if type(e) is not ValueError:  # MidiError and others are subclasses: not expected
            raise
  return target


# ------------------------------------------------------------------------------------ the seeds


def _vlq(n: int) -> bytes:
  out = [n & 0x7F]
  n >>= 7
  while n:
    out.append(0x80 | (n & 0x7F))
    n >>= 7
  return bytes(reversed(out))


def _smf(tracks: list[bytes], tpb: int = 480, fmt: int = 1) -> bytes:
  head = b"MThd" + (6).to_bytes(4, "big") + fmt.to_bytes(2, "big")
  head += len(tracks).to_bytes(2, "big") + tpb.to_bytes(2, "big")
  return head + b"".join(b"MTrk" + len(t).to_bytes(4, "big") + t + b"" for t in tracks)


def _meta(delta: int, kind: int, payload: bytes) -> bytes:
  return _vlq(delta) + bytes([0xFF, kind]) + _vlq(len(payload)) + payload


EOT = b"\x00\xff\x2f\x00"


def _miditoolkit_seeds() -> dict[str, bytes]:
  import miditoolkit  # pylint: disable=import-outside-toplevel

  def dump(meters, notes, programs=((0, False),), tempos=((0, 120.0),), tpb=480) -> bytes:
    midi = miditoolkit.MidiFile(ticks_per_beat=tpb)
    midi.time_signature_changes = [miditoolkit.TimeSignature(n, d, t) for t, n, d in meters]
    midi.tempo_changes = [miditoolkit.TempoChange(q, t) for t, q in tempos]
    for k, (program, drum) in enumerate(programs):
      inst = miditoolkit.Instrument(program=program, is_drum=drum, name=f"t{k}")
      inst.notes = [miditoolkit.Note(80, p + 3 * k, s, e) for s, e, p in notes]
      midi.instruments.append(inst)
    buf = io.BytesIO()
    midi.dump(file=buf)
    return buf.getvalue()

  beat = 480
  return {
      "song_4_4": dump([(0, 4, 4)], [(i * beat, i * beat + 240, 60 + i % 12) for i in range(16)],
                       programs=((0, False), (33, False), (0, True), (25, False), (48, False)),
                       tempos=((0, 100.0), (8 * beat, 90.0))),
      "two_one": dump([(0, 2, 4), (8 * beat, 1, 4)],
                      [(i * beat, i * beat + 240, 60 + i) for i in range(12)]),
      "three_four": dump([(0, 3, 4), (9 * beat, 4, 4), (17 * beat, 6, 8)],
                         [(i * beat, (i + 1) * beat, 60 + i % 12) for i in range(23)]),
      "pickup": dump([(0, 1, 4), (beat, 4, 4)],
                     [(i * beat, (i + 1) * beat, 62 + i % 5) for i in range(9)]),
      "short_bars": dump([(0, 4, 4), (8 * beat, 2, 4), (10 * beat, 4, 4), (18 * beat, 1, 4)],
                         [(i * beat, (i + 1) * beat, 50 + i % 20) for i in range(19)], tpb=96),
  }


def _hand_seeds() -> dict[str, bytes]:
  notes = b"".join(_vlq(0) + bytes([0x90, 60 + k, 90]) + _vlq(120) + bytes([0x80, 60 + k, 0])
                   for k in range(8))
  running = b"\x00\x90\x3c\x50\x60\x3c\x00\x00\x3e\x50\x60\x3e\x00"  # running status, 0-vel off
  events = (_meta(0, 0x03, b"name") + _meta(0, 0x51, b"\x07\xa1\x20") +
            _meta(0, 0x58, b"\x06\x03\x18\x08") + _meta(0, 0x59, b"\xfd\x01") +
            _meta(0, 0x05, b"la") + _meta(0, 0x06, b"A") + b"\x00\xc1\x19" +
            b"\x00\xb1\x40\x7f\x00\x91\x30\x40\x30\xe1\x00\x50\x30\xb1\x40\x00\x10\x81\x30\x00" +
            b"\x00\xf0\x03\x7e\x7f\xf7" + b"\x00\xd1\x20" + b"\x05\xa1\x30\x10")
  smf0 = _smf([events + notes + EOT], fmt=0, tpb=96)
  riff_data = _smf([running + EOT])
  rmid = (b"RIFF" + (4 + 8 + len(riff_data)).to_bytes(4, "little") + b"RMID" + b"data" +
          len(riff_data).to_bytes(4, "little") + riff_data)
  unterminated = _smf([b"\x00\x90\x3c\x50\x10\x90\x40\x50" + EOT, notes + EOT])
  return {"format0_events": smf0, "running_status": _smf([running + EOT]), "rmid": rmid,
          "unterminated": unterminated}


def _chorale_seeds() -> dict[str, bytes]:
  try:
    from jaxgan.data import corpus  # pylint: disable=import-outside-toplevel
    pieces = [p for p in corpus.chorale_pieces() if p.name in CHORALES]
    out = {}
    for piece in pieces:
      converted = corpus.piece_to_midi(piece)
      if converted.midi is not None:
        out[piece.name.replace("/", "_")] = converted.midi
    return out
  except Exception as e:  # pylint: disable=broad-except -- seeds are a help, not a need
    print(f"no chorale seeds ({type(e).__name__}: {e})", file=sys.stderr)
    return {}


def write_seeds(corpus_dir: str, chorales: bool = True) -> int:
  """Adds the seed files to the corpus (content-named, so re-adding is a no-op)."""
  os.makedirs(corpus_dir, exist_ok=True)
  seeds = {**_miditoolkit_seeds(), **_hand_seeds(), **(_chorale_seeds() if chorales else {})}
  for path in sorted(glob.glob(os.path.join(FIXTURES, "*"))):
    with open(path, "rb") as f:
      seeds["fixture_" + os.path.basename(path)] = f.read()
  for name, data in seeds.items():
    digest = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(corpus_dir, f"seed-{name}-{digest}"), "wb") as f:
      f.write(data)
  return len(seeds)


# ------------------------------------------------------------------------------------- atheris


def atheris_worker(argv: list[str]) -> None:
  """The child process: libFuzzer with jaxgan.midi instrumented; it exits when done."""
  import atheris  # pylint: disable=import-outside-toplevel
  with atheris.instrument_imports(include=["jaxgan.midi"]):
    target = make_target()
  atheris.Setup([sys.argv[0]] + argv, target)
  atheris.Fuzz()


def run_atheris(args, corpus_dir: str, crashes_dir: str) -> int:
  flags = [f"-max_total_time={args.seconds}", f"-timeout={args.timeout}",
           f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={args.max_len}",
           f"-artifact_prefix={crashes_dir}{os.sep}", "-print_final_stats=1",
           f"-seed={args.seed}"]
  command = [sys.executable, os.path.abspath(__file__), "--worker", *flags, corpus_dir]
  start = time.time()
  done = subprocess.run(command, capture_output=True, text=True, check=False,
                        timeout=args.seconds + 120)
  out = done.stdout + done.stderr
  with open(os.path.join(args.dir, "last_run.log"), "w", encoding="utf-8") as f:
    f.write(out)
  runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", out)
  cov = re.findall(r"cov: (\d+) ft: (\d+)", out)
  print(f"atheris: {runs[-1] if runs else '?'} inputs in {time.time() - start:.0f} s, "
        f"coverage {cov[-1][0] if cov else '?'} edges / {cov[-1][1] if cov else '?'} features, "
        f"corpus {len(os.listdir(corpus_dir))} files, exit {done.returncode}")
  if done.returncode:
    print("\n".join(out.splitlines()[-40:]))
  return done.returncode


def minimize(args, path: str) -> int:
  out = os.path.join(os.path.dirname(os.path.abspath(path)),
                     "minimized-" + os.path.basename(path))
  command = [sys.executable, os.path.abspath(__file__), "--worker", "-minimize_crash=1",
             f"-max_total_time={args.seconds}", f"-timeout={args.timeout}",
             f"-rss_limit_mb={args.rss_limit_mb}", f"-exact_artifact_path={out}", path]
  done = subprocess.run(command, check=False)
  print(f"minimized input: {out}" if os.path.exists(out) else "nothing minimized")
  return done.returncode


# ------------------------------------------------------------------------------------- mutation


def _mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
  buf = bytearray(data)
  for _ in range(rng.randint(1, 4)):
    op = rng.randrange(7)
    pos = rng.randrange(len(buf) + 1)
    if op == 0 and buf:    # flip a bit
      i = rng.randrange(len(buf))
      buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and buf:  # an interesting byte
      buf[rng.randrange(len(buf))] = rng.choice([0, 1, 0x7F, 0x80, 0xF0, 0xF7, 0xFF, 0x2F, 0x58])
    elif op == 2:          # insert random bytes
      buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == 3 and buf:  # delete a run
      del buf[pos:pos + rng.randint(1, 16)]
    elif op == 4:          # an absurd VLQ or length
      buf[pos:pos] = rng.choice([b"\xff\xff\xff\x7f", b"\x8f\xff\xff\xff\x7f", b"\xff\xff\xff\xff"])
    elif op == 5 and corpus:  # splice another file in
      other = rng.choice(corpus)
      a = rng.randrange(len(other) + 1)
      buf[pos:] = other[a:a + rng.randint(1, 256)] + bytes(buf[pos:])
    elif op == 6 and len(buf) >= 2:  # duplicate a run
      run = bytes(buf[pos:pos + rng.randint(1, 64)])
      buf[pos:pos] = run * rng.randint(1, 64)
  return bytes(buf)


def peak_rss_kb() -> int:
  """This process image's peak resident set in KiB.

  /proc's VmHWM starts afresh at exec; getrusage's ru_maxrss does not (Linux carries the
  parent's peak across fork + exec), so a fuzzer started from a large process, a test runner
  say, would read the runner's memory as its own.
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1])
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class _Hang(Exception):
  pass


def run_mutate(args, corpus_dir: str, crashes_dir: str) -> int:
  target = make_target()
  corpus = []
  for path in sorted(glob.glob(os.path.join(corpus_dir, "*"))):
    with open(path, "rb") as f:
      corpus.append(f.read()[:args.max_len])
  rng = random.Random(args.seed)

  def alarm(*_):
    raise _Hang()
  signal.signal(signal.SIGALRM, alarm)
  found, count, end = 0, 0, time.time() + args.seconds
  while time.time() < end:
    data = _mutate(rng.choice(corpus), corpus, rng)[:args.max_len]
    count += 1
    problem = ""
    signal.alarm(args.timeout)
    try:
      target(data)
    except _Hang:
      problem = "timeout"
    except Exception:  # pylint: disable=broad-except
      problem = "crash"
      detail = traceback.format_exc()
    finally:
      signal.alarm(0)
    if not problem and peak_rss_kb() > args.rss_limit_mb * 1024:
      problem = "oom"
    if problem:
      found += 1
      path = os.path.join(crashes_dir, f"{problem}-{hashlib.sha1(data).hexdigest()}")
      with open(path, "wb") as f:
        f.write(data)
      print(f"{problem}: {path}" + (f"\n{detail}" if problem == "crash" else ""))
      if problem == "oom":
        break  # the peak cannot go down again in this process
  print(f"mutate: {count} inputs in {args.seconds} s, {found} problem(s)")
  return 1 if found else 0


# ----------------------------------------------------------------------------------------- main


def main() -> int:
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    atheris_worker(sys.argv[2:])
    return 0
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz")
  parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
  parser.add_argument("--dir", default=os.path.join(REPO, "runs", "fuzz_midi"),
                      help="DIR/corpus (kept across runs) and DIR/crashes")
  parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
  parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory one run may take")
  parser.add_argument("--max-len", type=int, default=65536, help="largest input in bytes")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no-chorales", action="store_true",
                      help="do not seed with chorales (skips music21)")
  parser.add_argument("--minimize", metavar="FILE", help="reduce a crashing input (atheris)")
  args = parser.parse_args()
  engine = args.engine
  if engine == "auto":
    try:
      import atheris  # pylint: disable=import-outside-toplevel,unused-import
      engine = "atheris"
    except ImportError:
      engine = "mutate"
  if args.minimize:
    return minimize(args, args.minimize)
  corpus_dir = os.path.join(args.dir, "corpus")
  crashes_dir = os.path.join(args.dir, "crashes")
  os.makedirs(crashes_dir, exist_ok=True)
  seeds = write_seeds(corpus_dir, chorales=not args.no_chorales)
  print(f"{engine}: {seeds} seeds, corpus {corpus_dir}, crashes to {crashes_dir}", flush=True)
  if engine == "atheris":
    return run_atheris(args, corpus_dir, crashes_dir)
  return run_mutate(args, corpus_dir, crashes_dir)


if __name__ == "__main__":
  sys.exit(main())
