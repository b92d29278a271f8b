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


# --- Machine listening: what the rendered audio holds, beat by beat ---------------------------
# No substitute for an ear, but it hears what an ear would notice first: silent stretches, a
# render that lost or mangled the written notes, and harmony that never moves.

LISTEN_BAND_HZ = (60.0, 2100.0)  # the fundamentals of four voices (B1 to C7)
SILENT_DB = -40.0  # a beat this far under the piece's loudest beat counts as silent


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """(mono float samples in [-1, 1], sample rate) of a 16-bit PCM WAV."""
  path = os.fspath(path)
  try:
    with wave.open(path, "rb") as w:
      if w.getsampwidth() != 2:
        raise RenderError(path, f"{8 * w.getsampwidth()}-bit samples; 16-bit PCM expected")
      rate, channels = w.getframerate(), w.getnchannels()
      data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
  except (wave.Error, EOFError, OSError) as e:
    raise RenderError(path, f"not a readable WAV file ({e})") from None
  data = data[:data.size - data.size % channels].reshape(-1, channels)
  return data.astype(np.float64).mean(axis=1) / 32768.0, rate


def beat_times(midi_path: str | os.PathLike) -> np.ndarray:
  """Seconds at which each beat (quarter note) of a MIDI file starts, up to its last event,
  following its tempo changes."""
  import miditoolkit  # pylint: disable=import-outside-toplevel
  midi = miditoolkit.MidiFile(os.fspath(midi_path))
  ticks = np.arange(0, midi.max_tick + 1, midi.ticks_per_beat)
  return _ticks_to_seconds(midi, ticks)


def _ticks_to_seconds(midi, ticks: np.ndarray) -> np.ndarray:
  changes = sorted(midi.tempo_changes, key=lambda c: c.time)
  starts, qpms = [0], [120.0]
  for change in changes:
    if change.time == starts[-1]:
      qpms[-1] = float(change.tempo)
    else:
      starts.append(change.time)
      qpms.append(float(change.tempo))
  starts = np.asarray(starts, np.float64)
  per_tick = 60.0 / (np.asarray(qpms) * midi.ticks_per_beat)
  offsets = np.concatenate([[0.0], np.cumsum(np.diff(starts) * per_tick[:-1])])
  seg = np.searchsorted(starts, ticks, side="right") - 1
  return offsets[seg] + (ticks - starts[seg]) * per_tick[seg]


def midi_chroma(midi_path: str | os.PathLike, beats: np.ndarray) -> np.ndarray:
  """[beats - 1, 12]: per beat, the seconds each pitch class sounds in the MIDI file (drums
  left out), summed over notes."""
  import miditoolkit  # pylint: disable=import-outside-toplevel
  midi = miditoolkit.MidiFile(os.fspath(midi_path))
  chroma = np.zeros((max(len(beats) - 1, 0), 12))
  for inst in midi.instruments:
    if inst.is_drum or not inst.notes:
      continue
    on = _ticks_to_seconds(midi, np.array([n.start for n in inst.notes]))
    off = _ticks_to_seconds(midi, np.array([n.end for n in inst.notes]))
    overlap = (np.minimum(off[:, None], beats[None, 1:])
               - np.maximum(on[:, None], beats[None, :-1])).clip(min=0)   # [notes, beats]
    pcs = np.array([n.pitch % 12 for n in inst.notes])
    np.add.at(chroma.T, pcs, overlap)
  return chroma


def audio_chroma(samples: np.ndarray, rate: int, beats: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
  """([beats - 1, 12] power per pitch class, [beats - 1] level in dB under the loudest beat)
  of mono audio, one spectrum per beat. A spectral bin counts for the pitch class nearest its
  frequency: overtones add a little fifth and third above each note, alike for every piece."""
  n = len(beats) - 1
  chroma, power = np.zeros((n, 12)), np.zeros(n)
  for b in range(n):
    seg = samples[int(beats[b] * rate):int(beats[b + 1] * rate)]
    if seg.size < 16:
      continue
    power[b] = float(np.mean(seg ** 2))
    # Zero-padded to ~1.3 Hz bins: a semitone at the band's bottom is ~3.6 Hz wide.
    size = 1 << int(np.ceil(np.log2(max(seg.size, rate * 0.75))))
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(seg.size), size)) ** 2
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    band = (freqs >= LISTEN_BAND_HZ[0]) & (freqs <= LISTEN_BAND_HZ[1])
    pcs = np.round(12 * np.log2(freqs[band] / 440.0) + 69).astype(int) % 12
    np.add.at(chroma[b], pcs, spectrum[band])
  loudest = power.max(initial=0.0)
  level = 10 * np.log10(np.maximum(power, 1e-20) / max(loudest, 1e-20))
  return chroma, level


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
  return np.divide((a * b).sum(-1), norm, out=np.zeros(norm.shape), where=norm > 0)


def listen(midi_path: str | os.PathLike, wav_path: str | os.PathLike | None = None
           ) -> dict[str, float]:
  """What the WAV rendered from a MIDI file holds, beat by beat (wav_path default: beside it):

  - "agreement": mean cosine between the audio's and the MIDI's pitch-class profile over the
    beats where notes sound: ~1 when the render holds the written notes;
  - "change": mean 1 - cosine between the audio profiles of consecutive sounding beats: how
    much the harmony moves as heard (one chord struck bar after bar: ~0);
  - "static": share of consecutive sounding beats heard as the same sound (cosine > 0.95: a
    chord struck again sounds 0.98-0.99 alike);
  - "silent": share of the piece's beats more than 40 dB under its loudest beat;
  - "pitch_classes": pitch classes per sounding beat holding 90 % of the heard power.
  """
  midi_path = os.fspath(midi_path)
  wav_path = os.fspath(wav_path) if wav_path else os.path.splitext(midi_path)[0] + ".wav"
  beats = beat_times(midi_path)
  if len(beats) < 2:
    raise RenderError(midi_path, "shorter than one beat: nothing to listen to")
  samples, rate = read_wav(wav_path)
  heard, level = audio_chroma(samples, rate, beats)
  written = midi_chroma(midi_path, beats)
  sounding = (written.sum(1) > 0) & (level > SILENT_DB)
  pairs = sounding[1:] & sounding[:-1]
  similarity = _cosine(heard[1:], heard[:-1])[pairs]
  share = np.sort(heard[sounding], axis=1)[:, ::-1].cumsum(1)
  kept = (share < 0.9 * share[:, -1:]).sum(1) + 1 if len(share) else np.zeros(0)
  nan = float("nan")
  return {
      "agreement": float(_cosine(heard, written)[sounding].mean()) if sounding.any() else nan,
      "change": float((1 - similarity).mean()) if pairs.any() else nan,
      "static": float((similarity > 0.95).mean()) if pairs.any() else nan,
      "silent": float((level <= SILENT_DB).mean()),
      "pitch_classes": float(kept.mean()) if len(kept) else nan,
  }
