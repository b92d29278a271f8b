"""`jaxgan compile`: the train step compiled for TPU topologies on this CPU-only machine."""

import importlib.util
import json
import os

import pytest

from jaxgan import aot, cli, config as config_lib, sharding
from jaxgan.data import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.py")
TUTORIAL = os.path.join(ROOT, "configs", "musegan_tutorial.py")
CHORALES = os.path.join(ROOT, "configs", "jsb_chorale.py")

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install -e '.[tpu]'): TPU topologies cannot be "
           "described without it")


def test_unknown_topology_lists_the_accepted_ones(capsys):
  assert cli.main(["compile", "--config", TINY, "--topology", "v9z:2x2"]) == 2
  err = capsys.readouterr().err
  assert "not a known TPU topology" in err and "v4, v5e, v5p, v6e" in err
  assert "\n" not in err.strip()   # one line, no traceback
  assert aot.parse_topology("V5E:4x4") == ("v5e", (4, 4))
  with pytest.raises(config_lib.ConfigError, match="v5litepod-16 is v5e:4x4"):
    aot.parse_topology("v5litepod-16")


def test_missing_libtpu_says_how_to_install_it(monkeypatch, capsys):
  real = importlib.util.find_spec
  monkeypatch.setattr(aot.importlib.util, "find_spec",
                      lambda name, *a: None if name == "libtpu" else real(name, *a))
  assert cli.main(["compile", "--config", TINY, "--topology", "v5e:2x2"]) == 1
  err = capsys.readouterr().err
  assert "libtpu is not installed" in err and 'pip install "jax[tpu]==' in err


@needs_libtpu
# One topology here: the tutorial's test below compiles for both (each compile is ~45 s of CPU).
@pytest.mark.parametrize("topology,devices,kind", [("v5e:2x2", 4, "TPU v5 lite")])
def test_tiny_compiles_for_a_topology(topology, devices, kind):
  report = aot.compile_for_topology(config_lib.load_config(TINY), topology)
  assert report["devices"] == devices and report["device_kind"] == kind
  assert report["mesh"] == {"data": devices, "fsdp": 1}
  step = report["step"]
  assert 0 < step["arguments"] and 0 < step["temporaries"]
  assert step["total"] >= step["arguments"] + step["temporaries"]
  chip = topology.split(":")[0]
  assert step["total"] < report["hbm_per_device"] == aot.CHIPS[chip]["hbm_gib"] * aot.GIB
  assert step["flops"] == pytest.approx(devices * step["flops_per_device"]) and step["flops"] > 0
  if step["est_step_s"] is not None:
    assert step["est_examples_per_s"] == pytest.approx(8 / step["est_step_s"])
  assert report["sampler"]["total"] > 0 and report["sampler"]["batch"] % devices == 0
  assert "estimated step time" in aot.format_report(report)


@needs_libtpu
@pytest.mark.parametrize("topology", ["v5e:2x2", "v4:2x2x1"])
def test_cli_compiles_the_tutorial(topology, capsys):
  assert cli.main(["compile", "--config", TUTORIAL, "--topology", topology, "--no-sampler",
                   "--json"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["global_batch"] == 16 and report["mesh"]["data"] == 4
  assert "sampler" not in report
  # A bigger model than tiny, on the same mesh: more memory and more FLOPs.
  assert report["step"]["arguments"] > 2**20 and report["step"]["flops_per_device"] > 1e8


@pytest.fixture(scope="module")
def chorale_data(tmp_path_factory):
  """A few standard-split chorales: the voices model reads its tracks' ranges from the data."""
  data_dir = str(tmp_path_factory.mktemp("jsb"))
  prepare.prepare("jsb_chorales_standard", data_dir=data_dir, max_songs=12, progress=False)
  return data_dir


@needs_libtpu
# The shipped chorale model's recipe (the voices model), on both topologies the tutorial takes.
@pytest.mark.parametrize("topology", ["v4:2x2x1", "v5e:2x2"])
def test_cli_compiles_the_chorale_model(topology, chorale_data, capsys):
  assert cli.main(["compile", "--config", CHORALES, "--topology", topology, "--no-sampler",
                   "--json", f"--config.data.data_dir={chorale_data}"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["global_batch"] == 16 and report["mesh"]["data"] == 4
  step = report["step"]
  assert step["arguments"] > 2**20 and step["flops_per_device"] > 1e9
  assert step["total"] < report["hbm_per_device"]


@needs_libtpu
def test_oversized_config_fails_with_the_memory_figures(capsys):
  code = cli.main(["compile", "--config", TINY, "--topology", "v5e:2x2", "--no-sampler",
                   "--config.train.global_batch=1048576"])
  err = capsys.readouterr().err
  assert code == 1, err
  assert "does not fit in the 16 GiB of HBM" in err and "Traceback" not in err
  assert "reduce train.global_batch" in err and "G)" in err   # XLA's figures, in GiB


@needs_libtpu
def test_batch_and_fsdp_that_do_not_fit_are_config_errors(capsys):
  assert cli.main(["compile", "--config", TINY, "--topology", "v5e:4x4"]) == 2
  assert "train.global_batch=8 is not divisible" in capsys.readouterr().err
  assert cli.main(["compile", "--config", TINY, "--topology", "v5e:2x2",
                   "--config.train.mesh_fsdp=3"]) == 2
  assert "train.mesh_fsdp=3 does not divide the 4 devices" in capsys.readouterr().err
  assert cli.main(["compile", "--config", TINY, "--topology", "v5e:2x2", "--slices", "0"]) == 2
  assert "--slices=0 must be a positive integer" in capsys.readouterr().err


@needs_libtpu
def test_slices_are_folded_into_the_data_axis():
  devices = aot.topology_devices("v5e:2x2", slices=2)
  assert len(devices) == 8 and sharding.num_slices(devices) == 2
  mesh = sharding.make_mesh(-1, 2, devices=devices)
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2}
  grid = mesh.devices
  # Data rows 0-1 on one slice, 2-3 on the other: only the data axis crosses slices, and
  # every FSDP group stays inside its slice.
  assert {d.slice_index for d in grid[:2].flat} != {d.slice_index for d in grid[2:].flat}
  for row in grid:
    assert len({d.slice_index for d in row}) == 1
  with pytest.raises(config_lib.ConfigError, match="does not divide the 4 devices of a slice"):
    sharding.make_mesh(-1, 8, devices=devices)
