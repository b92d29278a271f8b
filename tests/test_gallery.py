"""The HTML gallery of samples: piano-roll PNGs, audio players, metrics, links, escaping."""

from __future__ import annotations

import json
import os
import re
import wave

import matplotlib.pyplot as plt
import numpy as np
import pytest

from jaxgan import cli, gallery, render
from jaxgan.midi import MidiConfig, Song, Track, to_pianoroll, write_midi
from tests.test_render import WRITES_AUDIO, fake_fluidsynth, fake_soundfont, needs_fluidsynth
from tests.tiny_run import train_tiny

ODD = 'zz odd <b> & "q"'  # a sample name that must be escaped in text and encoded in links
TRACKS = (Track("piano & <keys>", 0), Track("bass", 33))
GRID = gallery.Grid(steps_per_beat=4, lowest_pitch=36, num_pitches=48)


def song(seed: int, *, empty_bass: bool = False) -> Song:
  rng = np.random.default_rng(seed)
  notes = [(0, int(rng.integers(60, 84)), s, int(rng.integers(1, 5)), 90) for s in range(0, 32, 2)]
  if not empty_bass:
    notes += [(1, int(rng.integers(36, 48)), s, 4, 90) for s in range(0, 32, 4)]
  notes = sorted(set(notes), key=lambda n: (n[2], n[0], n[1]))
  return Song(notes=np.array(notes, np.int32), num_bars=2, steps_per_beat=4,
              time_signature=(4, 4), tempos=np.full(2, 100.0, np.float32), tracks=TRACKS)


def write_wav(path, seconds: float = 0.1) -> None:
  with wave.open(str(path), "wb") as w:
    w.setnchannels(2)
    w.setsampwidth(2)
    w.setframerate(8000)
    w.writeframes(b"\0\0\0\0" * int(8000 * seconds))


@pytest.fixture
def samples(tmp_path):
  """What `jaxgan sample` leaves: MIDI files, a metrics.json, and a WAV for one of them."""
  folder = tmp_path / "samples"
  folder.mkdir()
  write_midi(song(0), folder / "sample_0000.mid")
  write_midi(song(1, empty_bass=True), folder / "sample_0001.mid")
  write_midi(song(2), folder / f"{ODD}.mid")
  write_wav(folder / "sample_0000.wav")
  (folder / "metrics.json").write_text(json.dumps({
      "step": 1234, "num": 3, "seed": 7,
      "metrics": {"EB": [0.5, float("nan")], "UPC": [3.0, 4.25],
                  "TD": [[0.0, 1.5], [1.5, 0.0]], "<script>x</script>": 2.0}}))
  return folder


def test_pianoroll_png_is_the_songs_pianoroll(samples):
  # Tracks stay in file order, the empty bass too: the colours of `jaxgan sample`'s grid.
  config = MidiConfig(steps_per_beat=4, lowest_pitch=36, num_pitches=48, track_mode="parts",
                      track_names=tuple(t.name for t in TRACKS))
  for name, seed, empty in (("sample_0000", 0, False), ("sample_0001", 1, True)):
    midi_roll = gallery.read_midi_roll(samples / f"{name}.mid", GRID)
    assert midi_roll.track_names == tuple(t.name for t in TRACKS)
    np.testing.assert_array_equal(midi_roll.roll,
                                  to_pianoroll(song(seed, empty_bass=empty), config) > 0)
  png = gallery.write_pianoroll_png(samples / "sample_0000.mid", grid=GRID, scale=2)
  assert png == str(samples / "sample_0000.png")
  image = plt.imread(png)
  assert image.shape[:2] == ((48 + 2) * 2, (2 * 16 + 2) * 2)  # pitches x steps, framed, x2
  # Without a grid the rows fit the notes in whole octaves.
  fitted = gallery.read_midi_roll(samples / "sample_0001.mid")
  assert fitted.lowest_pitch % 12 == 0 and fitted.roll.shape[2] % 12 == 0


def test_gallery_page_has_images_audio_links_and_metrics(samples):
  page = gallery.build_gallery(samples, grid=GRID)
  assert page == str(samples / "index.html")
  text = (samples / "index.html").read_text()
  for stem in ("sample_0000", "sample_0001"):
    assert f'<img src="{stem}.png"' in text and (samples / f"{stem}.png").stat().st_size > 0
    assert f'<a href="{stem}.mid" download>MIDI</a>' in text
  # A player (and a WAV link) only where a WAV was rendered.
  assert text.count("<audio controls") == 1
  assert '<audio controls preload="none" src="sample_0000.wav">' in text
  assert '<a href="sample_0000.wav" download>WAV</a>' in text
  # The metrics, formatted as the sample command's table: per track, per pair, scalars.
  assert "step 1234" in text and "seed 7" in text and "3 samples" in text
  assert re.search(r"<th>EB</th><td>50\.00%</td><td>-</td>", text)
  assert re.search(r"<th>UPC</th><td>3\.000</td><td>4\.250</td>", text)
  assert "<th>piano &amp; &lt;keys&gt;-bass</th>" in text
  assert re.search(r"<th>TD</th><td>1\.500</td>", text)


def test_gallery_escapes_text_and_encodes_links(samples):
  text = open(gallery.build_gallery(samples, grid=GRID)).read()
  assert "<b>" not in text and "<script>" not in text and "<keys>" not in text
  assert "<figcaption>zz odd &lt;b&gt; &amp; &quot;q&quot;</figcaption>" in text
  assert 'href="zz%20odd%20%3Cb%3E%20%26%20%22q%22.mid"' in text
  assert (samples / f"{ODD}.png").exists()
  assert "<th>&lt;script&gt;x&lt;/script&gt;</th><td>2.000</td>" in text
  assert "piano &amp; &lt;keys&gt;</span>" in text  # the legend


def test_gallery_elsewhere_links_back_and_num_limits(samples, tmp_path):
  out = tmp_path / "site" / "page.html"
  gallery.build_gallery(samples, out, num=1, title="Run <3")
  text = out.read_text()
  assert '<img src="../samples/sample_0000.png"' in text
  assert 'src="../samples/sample_0000.wav"' in text
  assert "sample_0001" not in text and "<h1>Run &lt;3</h1>" in text


def test_unreadable_midi_and_stale_wav_do_not_lose_the_page(samples):
  (samples / "zz_broken.mid").write_bytes(b"MThd garbage")
  # A WAV older than its MIDI belongs to an earlier sample: no player for it.
  write_wav(samples / "sample_0001.wav")
  os.utime(samples / "sample_0001.wav", (1, 1))
  text = open(gallery.build_gallery(samples)).read()
  assert '<p class="error">zz_broken.mid: ' in text
  assert 'src="sample_0001.wav"' not in text and text.count("<audio controls") == 1
  assert '<img src="sample_0000.png"' in text


def test_gallery_command_on_a_samples_folder(samples, capsys):
  assert cli.main(["gallery", "--samples", str(samples), "--num", "2"]) == 0
  assert f"wrote {samples / 'index.html'} (2 samples)" in capsys.readouterr().out
  assert (samples / "sample_0001.png").exists()
  assert cli.main(["gallery", "--samples", str(samples / "nothing")]) == 1
  err = capsys.readouterr().err
  assert "no MIDI files" in err and "Traceback" not in err


def test_gallery_command_samples_a_workdir_then_renders(tmp_path, monkeypatch, capsys):
  """With no samples yet, `gallery` runs the sample command into WORKDIR/gallery."""
  fake_fluidsynth(tmp_path / "bin", WRITES_AUDIO)
  monkeypatch.setenv("PATH", str(tmp_path / "bin"))
  monkeypatch.setenv(render.SOUNDFONT_ENV, fake_soundfont(tmp_path / "fake.sf2"))
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(
      {"data": {"steps_per_beat": 4, "lowest_pitch": 36, "num_pitches": 48}}))
  calls = []

  def fake_sample(workdir, out, *, num, seed):
    calls.append(dict(workdir=workdir, out=out, num=num, seed=seed))
    os.makedirs(out)
    for i in range(num):
      write_midi(song(i), os.path.join(out, f"sample_{i:04d}.mid"))
    return []

  monkeypatch.setattr(cli, "_sample_workdir", fake_sample)
  assert cli.main(["gallery", "--workdir", str(workdir), "--render", "wav"]) == 0
  (args,) = calls
  assert (args["num"], args["out"]) == (8, str(workdir / "gallery"))
  assert args["workdir"] == str(workdir) and args["seed"] == 0
  text = (workdir / "gallery" / "index.html").read_text()
  assert text.count("<audio controls") == 8 and text.count("<img src=") == 8
  assert "rendered 8 WAV files" in capsys.readouterr().out
  # The images use the run's grid: 48 pitch rows.
  assert plt.imread(workdir / "gallery" / "sample_0000.png").shape[0] == (48 + 2) * 3
  # Samples there now: the next call neither samples nor renders again.
  assert cli.main(["gallery", "--workdir", str(workdir), "--render", "wav"]) == 0
  assert len(calls) == 1 and "rendered" not in capsys.readouterr().out


def test_gallery_without_fluidsynth_fails_before_sampling(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  monkeypatch.setattr(cli, "_sample_workdir", lambda *a, **k: pytest.fail("sampled"))
  assert cli.main(["gallery", "--workdir", str(tmp_path), "--render", "wav"]) == 1
  assert "sudo apt-get install fluidsynth timgm6mb-soundfont" in capsys.readouterr().err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  # The same tiny run as tests/test_cli.py: its compilations are already in the cache.
  return train_tiny(tmp_path_factory.mktemp("run"))


def test_sample_and_gallery_from_a_trained_run(run, tmp_path, monkeypatch):
  if not render.available():  # the stand-in program keeps the test meaningful without audio
    fake_fluidsynth(tmp_path / "bin", WRITES_AUDIO)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv(render.SOUNDFONT_ENV, fake_soundfont(tmp_path / "fake.sf2"))
  out = tmp_path / "samples"
  assert cli.main(["sample", "--workdir", str(run), "--num", "2", "--out", str(out),
                   "--render", "wav", "--sample-rate", "22050"]) == 0
  for i in range(2):
    with wave.open(str(out / f"sample_{i:04d}.wav")) as w:
      assert w.getframerate() == 22050 and w.getnframes() > 0
  assert cli.main(["gallery", "--workdir", str(run), "--num", "2"]) == 0
  text = (run / "gallery" / "index.html").read_text()
  assert text.count("<img src=") == 2 and "<th>UPC</th>" in text and "<th>track0</th>" in text
  # The per-sample images are the tiles of the sample command's grid.
  grid = plt.imread(run / "gallery" / "samples.png")[..., :3]
  tile = plt.imread(run / "gallery" / "sample_0000.png")[::3, ::3, :3]
  h, w = tile.shape[:2]
  np.testing.assert_array_equal(grid[:2 * h:2, :2 * w:2], tile)


@needs_fluidsynth
def test_real_render_of_a_gallery_sample(samples):
  wavs, errors = render.render_many([samples / "sample_0001.mid"], sample_rate=22050)
  assert not errors
  text = open(gallery.build_gallery(samples)).read()
  assert text.count("<audio controls") == 2 and 'src="sample_0001.wav"' in text
  with wave.open(wavs[0]) as w:
    assert w.getframerate() == 22050 and w.getnframes() / 22050 >= 4.8  # 2 bars at 100 qpm
