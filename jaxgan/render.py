"""Listening: MIDI files to WAV audio with the FluidSynth program and a General MIDI SoundFont.

    wav = jaxgan.render.render_wav("samples/sample_0000.mid")   # samples/sample_0000.wav

FluidSynth renders offline (`fluidsynth -ni -F FILE`: no audio device, much faster than real
time); the audio is then peak-normalized. Neither FluidSynth nor a SoundFont is a Python
package: when one is missing, `RenderError` says how to install it.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
import uuid
import wave
from typing import Iterable, Sequence

import numpy as np

INSTALL_HINT = ("install FluidSynth and a General MIDI SoundFont with `sudo apt-get install "
                "fluidsynth timgm6mb-soundfont` (Debian/Ubuntu; fluid-soundfont-gm is a larger "
                "SoundFont), or set JAXGAN_SOUNDFONT or --soundfont to a .sf2 file")
SOUNDFONT_ENV = "JAXGAN_SOUNDFONT"
# Where distributions put a General MIDI SoundFont, smallest and most common first.
SOUNDFONT_PATHS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default.sf2",
)
SAMPLE_RATES = (8000, 96000)  # what FluidSynth accepts
DEFAULT_GAIN = 0.5  # before normalizing; float output does not clip
MAX_BOOST_DB = 40.0  # the most normalizing amplifies a quiet piece


class RenderError(RuntimeError):
  """A file that could not be rendered: `path` says which, `reason` says why."""

  def __init__(self, path: object, reason: str):
    self.path = str(path)
    self.reason = str(reason)
    super().__init__(f"{self.path}: {self.reason}")

  def __reduce__(self):
    return (type(self), (self.path, self.reason))


def find_fluidsynth() -> str:
  """The path of the `fluidsynth` program; RenderError (with the install hint) if not on PATH."""
  path = shutil.which("fluidsynth")
  if path is None:
    raise RenderError("fluidsynth", f"the FluidSynth program is not on PATH; {INSTALL_HINT}")
  return path


def _check_soundfont(path: str, where: str) -> str:
  try:
    with open(path, "rb") as f:
      head = f.read(12)
  except OSError as e:
    raise RenderError(path, f"cannot read the SoundFont ({where}): {e.strerror or e}; "
                            f"{INSTALL_HINT}") from None
  # FluidSynth takes a missing or foreign file silently and renders silence: check it here.
  if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
    raise RenderError(path, f"not a SoundFont 2 (.sf2) file ({where})")
  return path


def find_soundfont(explicit: str | os.PathLike | None = None) -> str:
  """A General MIDI SoundFont: `explicit`, else $JAXGAN_SOUNDFONT, else a standard path.

  A path that was asked for (explicit or the variable) must be usable; it never falls back.
  """
  if explicit:
    return _check_soundfont(os.fspath(explicit), "given by --soundfont")
  env = os.environ.get(SOUNDFONT_ENV)
  if env:
    return _check_soundfont(env, f"given by ${SOUNDFONT_ENV}")
  for path in SOUNDFONT_PATHS:
    if os.path.isfile(path):
      return _check_soundfont(path, "a standard location")
  raise RenderError("soundfont", f"no General MIDI SoundFont found (looked at "
                                 f"${SOUNDFONT_ENV} and {', '.join(SOUNDFONT_PATHS)}); "
                                 f"{INSTALL_HINT}")


def available(soundfont: str | os.PathLike | None = None) -> bool:
  """Whether render_wav can run here: the program and a SoundFont are both found."""
  try:
    check_setup(soundfont)
  except RenderError:
    return False
  return True


def check_sample_rate(sample_rate: int) -> int:
  lo, hi = SAMPLE_RATES
  if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) \
      or not lo <= sample_rate <= hi:
    raise RenderError("sample rate", f"{sample_rate!r} Hz is not an integer in {lo}..{hi}")
  return sample_rate


def check_setup(soundfont: str | os.PathLike | None = None, sample_rate: int = 44100
                ) -> tuple[str, str]:
  """The program and SoundFont render_wav would use; RenderError saying what is missing."""
  program = find_fluidsynth()
  font = find_soundfont(soundfont)
  check_sample_rate(sample_rate)
  return program, font


def midi_seconds(midi_path: str | os.PathLike) -> float:
  """The length of a MIDI file in seconds (to its last event); RenderError if it is unreadable."""
  import miditoolkit  # pylint: disable=import-outside-toplevel
  path = os.fspath(midi_path)
  try:
    midi = miditoolkit.MidiFile(path)
  except Exception as e:  # noqa: BLE001 -- mido raises anything from OSError to KeyError
    detail = str(e) or ("the file ends early" if isinstance(e, EOFError) else "")
    raise RenderError(path, f"not a readable MIDI file ({type(e).__name__}: {detail})") from None
  tpb = midi.ticks_per_beat
  if tpb <= 0:
    raise RenderError(path, f"not a readable MIDI file (ticks_per_beat is {tpb})")
  # Summed over tempo segments: miditoolkit's tick->time table would hold one entry per tick.
  seconds, tick, qpm = 0.0, 0, 120.0
  for change in sorted(midi.tempo_changes, key=lambda c: c.time):
    if change.time >= midi.max_tick:
      break
    seconds += (change.time - tick) * 60.0 / (qpm * tpb)
    tick, qpm = change.time, float(change.tempo)
  return seconds + (midi.max_tick - tick) * 60.0 / (qpm * tpb)


def _tail(text: str, lines: int = 8) -> str:
  kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
  return " | ".join(kept) if kept else "(no output)"


def _write_normalized(raw_path: str, wav_path: str, sample_rate: int,
                      peak_db: float | None) -> int:
  """Float32 stereo frames -> 16-bit WAV, scaled so the loudest sample peaks at `peak_db` dBFS.

  Returns the number of frames. Normalizing after rendering keeps a sparse solo audible and a
  dense five-track sample from clipping, which no single FluidSynth gain does.
  """
  audio = np.memmap(raw_path, dtype="<f4", mode="r") if os.path.getsize(raw_path) else np.zeros(0)
  chunk = 1 << 20
  peak = max((float(np.abs(audio[i:i + chunk]).max()) for i in range(0, audio.size, chunk)),
             default=0.0)
  scale = 1.0
  if peak_db is not None and peak > 0:
    # Capped: an empty piece renders as faint numerical noise that must stay silent.
    scale = min(10 ** (peak_db / 20) / peak, 10 ** (MAX_BOOST_DB / 20))
  with wave.open(wav_path, "wb") as w:
    w.setnchannels(2)
    w.setsampwidth(2)
    w.setframerate(sample_rate)
    for i in range(0, audio.size, chunk):
      block = np.clip(np.asarray(audio[i:i + chunk], np.float64) * (scale * 32767), -32768, 32767)
      w.writeframes(np.round(block).astype("<i2").tobytes())
  del audio  # close the map before the file is removed
  return int(os.path.getsize(raw_path) // 8)


def render_wav(midi_path: str | os.PathLike, wav_path: str | os.PathLike | None = None, *,
               soundfont: str | os.PathLike | None = None, sample_rate: int = 44100,
               gain: float = DEFAULT_GAIN, peak_db: float | None = -1.0,
               timeout: float | None = None) -> str:
  """Renders a MIDI file to a 16-bit stereo WAV; returns its path (default: beside the MIDI).

  The audio is scaled to peak at `peak_db` dBFS (None: FluidSynth's level at `gain`, clipped).
  The WAV appears only when FluidSynth succeeded and wrote audio. `timeout` defaults to a
  minute plus the piece's length: offline rendering is much faster than real time.
  """
  midi_path = os.fspath(midi_path)
  wav_path = os.fspath(wav_path) if wav_path else os.path.splitext(midi_path)[0] + ".wav"
  try:
    program, font = check_setup(soundfont, sample_rate)
  except RenderError as e:
    raise RenderError(midi_path, f"cannot render: {e}") from None
  # FluidSynth reads a broken file as "not a SoundFont or MIDI file" or renders silence.
  seconds = midi_seconds(midi_path)
  if timeout is None:
    timeout = 60.0 + seconds
  out_dir = os.path.dirname(os.path.abspath(wav_path))
  os.makedirs(out_dir, exist_ok=True)
  # Temporary files beside the target, moved into place: a failed run leaves no partial WAV.
  tmp = os.path.join(out_dir, f".{os.path.basename(wav_path)}.{uuid.uuid4().hex[:12]}")
  raw, part = tmp + ".raw", tmp + ".wav"
  try:
    # -n no MIDI input, -i no shell, -q quiet, -F fast offline render (no audio driver);
    # raw little-endian float frames, unclipped, normalized afterwards.
    # Absolute paths: a name starting with '-' must not read as an option.
    cmd = [program, "-n", "-i", "-q", "-g", f"{gain:g}", "-r", str(sample_rate),
           "-T", "raw", "-O", "float", "-E", "little", "-F", raw,
           os.path.abspath(font), os.path.abspath(midi_path)]
    try:
      proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
      raise RenderError(midi_path, f"fluidsynth did not finish in {timeout:g} s") from None
    except OSError as e:
      raise RenderError(midi_path, f"cannot run {program}: {e}") from None
    output = _tail(proc.stderr + "\n" + proc.stdout)
    if proc.returncode != 0:
      raise RenderError(midi_path, f"fluidsynth exited with status {proc.returncode}: {output}")
    size = os.path.getsize(raw) if os.path.exists(raw) else 0
    if size == 0 or size % 8:
      raise RenderError(midi_path, f"fluidsynth wrote no audio ({size} bytes): {output}")
    _write_normalized(raw, part, sample_rate, peak_db)
    os.replace(part, wav_path)
  finally:
    for path in (raw, part):
      if os.path.exists(path):
        os.remove(path)
  return wav_path


def render_many(midi_paths: Iterable[str | os.PathLike], *, out_dir: str | None = None,
                soundfont: str | os.PathLike | None = None, sample_rate: int = 44100,
                gain: float = DEFAULT_GAIN, peak_db: float | None = -1.0,
                jobs: int | None = None) -> tuple[list[str], list[RenderError]]:
  """Renders files side by side (each beside its MIDI, or into `out_dir`).

  Returns the WAVs written and the errors of the files that failed, in input order; a missing
  program or SoundFont raises at once instead of failing every file.
  """
  _, font = check_setup(soundfont, sample_rate)
  midis = [os.fspath(p) for p in midi_paths]
  targets: list[str] = []
  for midi in midis:
    stem = os.path.splitext(os.path.basename(midi))[0]
    targets.append(os.path.join(out_dir, stem + ".wav") if out_dir
                   else os.path.splitext(midi)[0] + ".wav")
  jobs = jobs or min(8, os.cpu_count() or 1)
  results: list[str | RenderError] = [""] * len(midis)
  seen: dict[str, str] = {}
  todo = []
  for i, (midi, wav) in enumerate(zip(midis, targets)):
    key = os.path.abspath(wav)
    if key in seen:  # two inputs of the same name into one --out folder
      results[i] = RenderError(midi, f"would overwrite {wav}, rendered from {seen[key]}")
    else:
      seen[key] = midi
      todo.append(i)

  def one(i: int) -> str:
    return render_wav(midis[i], targets[i], soundfont=font, sample_rate=sample_rate, gain=gain,
                      peak_db=peak_db)

  # Threads suffice: the work happens in fluidsynth processes.
  with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
    futures = {i: pool.submit(one, i) for i in todo}
    for i, future in futures.items():
      try:
        results[i] = future.result()
      except RenderError as e:
        results[i] = e
  written = [r for r in results if isinstance(r, str)]
  errors = [r for r in results if isinstance(r, RenderError)]
  return written, errors


def wav_for(midi_path: str) -> str | None:
  """The WAV rendered beside a MIDI file, when there is one at least as new as the MIDI."""
  wav = os.path.splitext(midi_path)[0] + ".wav"
  try:
    return wav if os.path.getmtime(wav) >= os.path.getmtime(midi_path) else None
  except OSError:
    return None


def stale(midi_paths: Sequence[str]) -> list[str]:
  """The MIDI files without an up-to-date WAV beside them."""
  return [p for p in midi_paths if wav_for(p) is None]
