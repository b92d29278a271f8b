"""MIDI to WAV with FluidSynth: real renders where it is installed, and every failure path with
a stand-in program that works anywhere."""

from __future__ import annotations

import os
import stat
import sys
import wave

import numpy as np
import pytest

from jaxgan import cli, render
from jaxgan.midi import Song, Track, write_midi

HINT = "sudo apt-get install fluidsynth timgm6mb-soundfont"
needs_fluidsynth = pytest.mark.skipif(
    not render.available(),
    reason=f"FluidSynth or a General MIDI SoundFont is not installed ({HINT})")


def write_song(path, *, bars: int = 2, qpm: float = 120.0, seed: int = 0) -> float:
  """A two-track song (a note on every beat in each) via the project's writer; its seconds."""
  rng = np.random.default_rng(seed)
  notes = []
  for beat in range(bars * 4):
    notes.append((0, int(rng.integers(60, 72)), beat * 4, 3, 90))
    notes.append((1, int(rng.integers(40, 48)), beat * 4, 4, 100))
  song = Song(notes=np.array(notes, np.int32), num_bars=bars, steps_per_beat=4,
              time_signature=(4, 4), tempos=np.full(bars, qpm, np.float32),
              tracks=(Track("piano", 0), Track("bass", 33)), source=str(path))
  write_midi(song, path)
  return bars * 4 * 60.0 / qpm


def fake_soundfont(path) -> str:
  """A file with a SoundFont 2 header: enough for the checks, never for real synthesis."""
  with open(path, "wb") as f:
    f.write(b"RIFF" + (4).to_bytes(4, "little") + b"sfbk")
  return str(path)


def fake_fluidsynth(bindir, body: str) -> str:
  """A `fluidsynth` on a directory of its own: a Python script whose main is `body`."""
  os.makedirs(bindir, exist_ok=True)
  path = os.path.join(bindir, "fluidsynth")
  with open(path, "w") as f:
    f.write(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n{body}\n")
  os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
  return path


# Writes 0.5 s of a float sine at the asked rate (peak 0.25) where -F says: a working render.
WRITES_AUDIO = """
import math, struct
rate = int(args[args.index("-r") + 1])
frames = [0.25 * math.sin(2 * math.pi * 440 * i / rate) for i in range(rate // 2)]
with open(args[args.index("-F") + 1], "wb") as f:
  f.write(b"".join(struct.pack("<ff", x, x) for x in frames))
"""


@pytest.fixture
def fake_audio(tmp_path, monkeypatch):
  """The stand-in fluidsynth (writing a sine) and SoundFont, alone on PATH."""
  fake_fluidsynth(tmp_path / "bin", WRITES_AUDIO)
  monkeypatch.setenv("PATH", str(tmp_path / "bin"))
  monkeypatch.setenv(render.SOUNDFONT_ENV, fake_soundfont(tmp_path / "fake.sf2"))
  return tmp_path


def read_wav(path) -> tuple[int, int, np.ndarray]:
  with wave.open(str(path), "rb") as w:
    assert w.getsampwidth() == 2
    data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
    return w.getframerate(), w.getnchannels(), data


# --- Real renders ------------------------------------------------------------------------------


@needs_fluidsynth
def test_render_wav_has_the_rate_length_and_sound_of_the_midi(tmp_path):
  mid = tmp_path / "song.mid"
  seconds = write_song(mid, bars=2, qpm=120.0)  # 4 s
  assert render.midi_seconds(mid) == pytest.approx(seconds, abs=0.01)
  wav = render.render_wav(mid, tmp_path / "out" / "song.wav", sample_rate=22050)
  assert wav == str(tmp_path / "out" / "song.wav")
  rate, channels, data = read_wav(wav)
  assert rate == 22050 and channels == 2
  # The piece, then at most a few seconds of release and reverb tail.
  assert seconds <= len(data) / rate <= seconds + 4.0
  # Something sounds in every second of the piece (a note on every beat) ...
  for s in range(int(seconds)):
    second = data[s * rate:(s + 1) * rate].astype(np.float64)
    assert np.sqrt(np.mean(second ** 2)) > 100, f"second {s} is silent"
  # ... and the loudest sample peaks at -1 dBFS.
  assert np.abs(data.astype(np.int32)).max() == pytest.approx(32767 * 10 ** (-1 / 20), abs=2)
  assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".")]  # no temp files


@needs_fluidsynth
def test_render_wav_defaults_to_beside_the_midi_and_cli_renders_into_out(tmp_path, capsys):
  a, b = tmp_path / "a.mid", tmp_path / "b.mid"
  write_song(a, seed=1)
  write_song(b, bars=1, seed=2)
  assert render.render_wav(a) == str(tmp_path / "a.wav")
  assert read_wav(tmp_path / "a.wav")[0] == 44100
  assert cli.main(["render", str(a), str(b), "--out", str(tmp_path / "wavs"),
                   "--sample-rate", "16000"]) == 0
  assert "rendered 2 WAV files" in capsys.readouterr().out
  for name, bars in (("a", 2), ("b", 1)):
    rate, _, data = read_wav(tmp_path / "wavs" / f"{name}.wav")
    assert rate == 16000 and bars * 2.0 <= len(data) / rate <= bars * 2.0 + 4.0


# --- Setup errors: the install hint ------------------------------------------------------------


def test_missing_program_says_how_to_install(tmp_path, monkeypatch, capsys):
  mid = tmp_path / "song.mid"
  write_song(mid)
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  with pytest.raises(render.RenderError, match="not on PATH") as e:
    render.find_fluidsynth()
  assert HINT in str(e.value)
  with pytest.raises(render.RenderError) as e:
    render.render_wav(mid)
  assert str(mid) in str(e.value) and HINT in str(e.value)
  assert not render.available()
  # The command: one line with the hint, exit status 1, nothing written.
  assert cli.main(["render", str(mid)]) == 1
  assert HINT in capsys.readouterr().err
  assert not (tmp_path / "song.wav").exists()


def test_missing_soundfont_says_how_to_install(tmp_path, monkeypatch):
  monkeypatch.delenv(render.SOUNDFONT_ENV, raising=False)
  monkeypatch.setattr(render, "SOUNDFONT_PATHS", (str(tmp_path / "nowhere.sf2"),))
  with pytest.raises(render.RenderError, match="no General MIDI SoundFont found") as e:
    render.find_soundfont()
  assert HINT in str(e.value) and render.SOUNDFONT_ENV in str(e.value)
  # A SoundFont that was asked for must exist: no quiet fall-back to a standard one.
  good = fake_soundfont(tmp_path / "good.sf2")
  monkeypatch.setattr(render, "SOUNDFONT_PATHS", (good,))
  assert render.find_soundfont() == good
  monkeypatch.setenv(render.SOUNDFONT_ENV, str(tmp_path / "missing.sf2"))
  with pytest.raises(render.RenderError, match="missing.sf2.*JAXGAN_SOUNDFONT") as e:
    render.find_soundfont()
  assert HINT in str(e.value)
  # FluidSynth would render silence from any file: only a real SoundFont header passes.
  text = tmp_path / "notes.txt"
  text.write_text("not a soundfont")
  with pytest.raises(render.RenderError, match="not a SoundFont"):
    render.find_soundfont(text)
  assert render.find_soundfont(good) == good


def test_bad_sample_rate(fake_audio):
  mid = fake_audio / "song.mid"
  write_song(mid)
  with pytest.raises(render.RenderError, match="song.mid.*1000 Hz"):
    render.render_wav(mid, sample_rate=1000)


# --- FluidSynth runs: a stand-in program ------------------------------------------------------


def test_stand_in_render_is_normalized_at_the_asked_rate(fake_audio):
  mid = fake_audio / "song.mid"
  write_song(mid)
  wav = render.render_wav(mid, sample_rate=8000)
  rate, channels, data = read_wav(wav)
  assert (rate, channels, len(data)) == (8000, 2, 4000)
  # 0.25 full scale scaled up to -1 dBFS; unnormalized it stays at FluidSynth's level.
  assert np.abs(data.astype(np.int32)).max() == pytest.approx(32767 * 10 ** (-1 / 20), abs=2)
  _, _, raw = read_wav(render.render_wav(mid, sample_rate=8000, peak_db=None))
  assert np.abs(raw.astype(np.int32)).max() == pytest.approx(0.25 * 32767, abs=2)


def test_failing_fluidsynth_gives_its_status_and_stderr(fake_audio):
  mid = fake_audio / "song.mid"
  write_song(mid)
  fake_fluidsynth(fake_audio / "bin", "sys.stderr.write('fluidsynth: error: voices ran off\\n')\n"
                                      "sys.exit(3)")
  with pytest.raises(render.RenderError) as e:
    render.render_wav(mid)
  message = str(e.value)
  assert str(mid) in message and "status 3" in message and "voices ran off" in message
  assert not (fake_audio / "song.wav").exists()


def test_fluidsynth_writing_nothing_is_an_error(fake_audio):
  mid = fake_audio / "song.mid"
  write_song(mid)
  fake_fluidsynth(fake_audio / "bin", "print('all good')")
  with pytest.raises(render.RenderError, match="song.mid: fluidsynth wrote no audio.*all good"):
    render.render_wav(mid)
  assert os.listdir(fake_audio).count("song.wav") == 0
  assert not [p for p in os.listdir(fake_audio) if p.startswith(".song")]  # temp files removed


def test_hanging_fluidsynth_times_out(fake_audio):
  mid = fake_audio / "song.mid"
  write_song(mid)
  fake_fluidsynth(fake_audio / "bin", "import time\ntime.sleep(60)")
  with pytest.raises(render.RenderError, match="song.mid: fluidsynth did not finish in 0.5 s"):
    render.render_wav(mid, timeout=0.5)


def test_corrupt_midi_names_the_file(fake_audio, capsys):
  bad = fake_audio / "broken.mid"
  bad.write_bytes(os.urandom(300))
  good = fake_audio / "good.mid"
  write_song(good)
  short = fake_audio / "short.mid"
  short.write_bytes(good.read_bytes()[:40])
  for path, why in ((bad, "MThd not found"), (short, "ends early")):
    with pytest.raises(render.RenderError, match="not a readable MIDI file") as e:
      render.render_wav(path)
    assert str(e.value).startswith(str(path)) and why in str(e.value)
  # The command renders what it can and names each failure.
  assert cli.main(["render", str(bad), str(good), str(short)]) == 1
  captured = capsys.readouterr()
  assert "rendered 1 WAV files, 2 failed" in captured.out
  assert f"jaxgan render: {bad}: not a readable MIDI file" in captured.err
  assert str(short) in captured.err
  assert (fake_audio / "good.wav").exists() and not (fake_audio / "broken.wav").exists()


def test_render_many_keeps_order_and_refuses_to_overwrite(fake_audio):
  for d in ("x", "y"):
    os.makedirs(fake_audio / d)
    write_song(fake_audio / d / "song.mid")
  write_song(fake_audio / "x" / "other.mid")
  midis = [fake_audio / "x" / "song.mid", fake_audio / "x" / "other.mid",
           fake_audio / "y" / "song.mid"]
  wavs, errors = render.render_many(midis, out_dir=str(fake_audio / "out"))
  assert wavs == [str(fake_audio / "out" / "song.wav"), str(fake_audio / "out" / "other.wav")]
  assert len(errors) == 1 and errors[0].path == str(midis[2])
  assert "would overwrite" in errors[0].reason
  assert render.stale([str(m) for m in midis]) == [str(m) for m in midis]  # none beside them
  wavs, errors = render.render_many(midis)
  assert not errors and render.stale([str(m) for m in midis]) == []


# --- Machine listening -----------------------------------------------------------------------


def write_chords(path, chords, *, qpm: float = 120.0, beats_each: int = 2,
                 faster: bool = False) -> None:
  """Four voices (choir) singing the given chords (MIDI pitches), each held `beats_each` beats,
  through the project's writer; with `faster`, the second half 1.5x as fast."""
  notes = []
  for k, chord in enumerate(chords):
    for v, pitch in enumerate(chord):
      notes.append((v, pitch, k * beats_each * 4, beats_each * 4, 90))
  bars = len(chords) * beats_each // 4
  tempos = np.full(bars, qpm, np.float32)
  if faster:
    tempos[bars // 2:] = qpm * 1.5
  song = Song(notes=np.array(notes, np.int32), num_bars=bars, steps_per_beat=4,
              time_signature=(4, 4), tempos=tempos,
              tracks=tuple(Track(f"v{v}", 52) for v in range(4)), source=str(path))
  write_midi(song, path)


def test_beat_times_follow_tempo_changes(tmp_path):
  mid = tmp_path / "c.mid"
  write_chords(mid, [(60, 64, 67, 72)] * 4, faster=True)   # 2 bars, 120 then 180 qpm
  beats = render.beat_times(mid)
  np.testing.assert_allclose(beats, [0, .5, 1, 1.5, 2, 2 + 1 / 3, 2 + 2 / 3, 3, 3 + 1 / 3],
                             atol=1e-5)
  chroma = render.midi_chroma(mid, beats)
  assert chroma.shape == (8, 12)
  np.testing.assert_allclose(chroma[0, [0, 4, 7]], [1.0, 0.5, 0.5])   # C twice, E, G
  np.testing.assert_allclose(chroma[5, [0, 4, 7]], [2 / 3, 1 / 3, 1 / 3], rtol=1e-5)
  assert chroma[:, [1, 2, 3, 5, 6, 8, 9, 10, 11]].sum() == 0


def test_audio_chroma_hears_a_sine_s_pitch_class_and_its_level():
  rate = 8000
  t = np.arange(2 * rate) / rate
  audio = np.where(t < 1, 0.5 * np.sin(2 * np.pi * 440 * t), 0.001 * np.sin(2 * np.pi * 262 * t))
  chroma, level = render.audio_chroma(audio, rate, np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
  assert (chroma[:2].argmax(1) == 9).all() and (chroma[2:].argmax(1) == 0).all()   # A, then C
  assert chroma[0, 9] > 50 * np.delete(chroma[0], 9).max()
  np.testing.assert_allclose(level[:2], 0, atol=0.1)
  assert -55 < level[2] < -45                       # 0.001 against 0.5: -54 dB


@needs_fluidsynth
def test_listen_hears_the_written_chords_and_whether_they_move(tmp_path):
  moving, still = tmp_path / "moving.mid", tmp_path / "still.mid"
  write_chords(moving, [(72, 67, 64, 48), (72, 69, 65, 53), (71, 67, 62, 55), (72, 67, 64, 48)]
               * 2)
  write_chords(still, [(72, 67, 64, 48)] * 8)
  heard = {}
  for mid in (moving, still):
    render.render_wav(mid, sample_rate=22050)
    heard[mid.stem] = render.listen(mid)
  for h in heard.values():
    assert h["agreement"] > 0.7 and h["silent"] == 0.0, heard
    assert 2 <= h["pitch_classes"] <= 6, heard
  # Chords change every 2 beats: half the beat pairs move; one chord held moves on none.
  assert heard["moving"]["change"] > 5 * heard["still"]["change"], heard
  assert heard["still"]["static"] > 0.9 and heard["moving"]["static"] < 0.7, heard


def test_listen_refuses_a_wav_that_is_not_one(tmp_path):
  mid = tmp_path / "c.mid"
  write_chords(mid, [(60, 64, 67, 72)] * 2)
  (tmp_path / "c.wav").write_bytes(b"RIFF not audio")
  with pytest.raises(render.RenderError, match="c.wav.*not a readable WAV"):
    render.listen(mid)
