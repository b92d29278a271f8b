"""tpu/worker.sh setup on images with and without a Python >= 3.11, with stand-ins for python
and uv that record their calls: which interpreter builds the venv, what gets installed, when
an install is redone, and what the non-interactive shell of a run gets on PATH."""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tpu", "worker.sh")
TOOLS = ("bash", "sh", "cat", "mkdir", "rm", "mv", "cp", "cut", "sha256sum", "grep", "chmod",
         "hostname", "awk", "id", "base64", "tail", "tr", "ls", "sort", "env", "printf",
         "dirname", "basename", "sleep")

# A Python >= 3.11 with venv: answers every check, makes venvs, prints its version.
GOOD_PYTHON = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; fi
case "$*" in *platform*) echo 3.12.9 ;; esac
exit 0
"""
# The Python 3.10 of Ubuntu 22.04 TPU VM images: fails the version check.
OLD_PYTHON = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STUB_LOG"
exit 1
"""
UV = """#!/bin/sh
echo "uv $*" >> "$STUB_LOG"
if [ "$1" = venv ]; then
  for last in "$@"; do :; done
  mkdir -p "$last/bin"; cp "$GOOD_PYTHON" "$last/bin/python"
fi
"""


class Worker:
  """A worker's home with a fresh upload in ~/jaxgan/src.new and a PATH of stand-ins."""

  def __init__(self, tmp_path, stubs: dict):
    self.home = tmp_path / "home"
    self.log = tmp_path / "calls.log"
    self.log.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:   # no real python on this PATH
      if shutil.which(tool):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for name, text in {**stubs, "good-python": GOOD_PYTHON}.items():
      (bin_dir / name).write_text(text)
      (bin_dir / name).chmod(0o755)
    self.env = {"HOME": str(self.home), "PATH": str(bin_dir), "STUB_LOG": str(self.log),
                "GOOD_PYTHON": str(bin_dir / "good-python")}

  def upload(self, pyproject_extra: str = "") -> None:
    src = self.home / "jaxgan" / "src.new"
    (src / "tpu").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), src)
    with open(src / "pyproject.toml", "a") as f:
      f.write(pyproject_extra)

  def run(self, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("bash"), WORKER, *args], env=self.env,
                          capture_output=True, text=True, timeout=60)

  def calls(self) -> list[str]:
    return self.log.read_text().splitlines()


def test_image_with_python_310_gets_python_312_from_uv(tmp_path):
  w = Worker(tmp_path, {"python3": OLD_PYTHON, "python3.10": OLD_PYTHON, "uv": UV})
  assert w.run("find-python").stdout.strip() == "uv"
  w.upload()
  proc = w.run("setup")
  assert proc.returncode == 0, proc.stderr
  venv, src = w.home / "jaxgan" / "venv", w.home / "jaxgan" / "src"
  assert f"uv venv --quiet --seed --python 3.12 {venv}" in w.calls()
  assert f"uv pip install --quiet --python {venv}/bin/python -e {src}[tpu]" in w.calls()
  assert "python=3.12.9" in proc.stdout
  env_sh = (w.home / "jaxgan" / "env.sh").read_text()
  assert f'export PATH="{w.home}/jaxgan/bin:{venv}/bin:$PATH"' in env_sh
  assert f"exec \"{venv}/bin/python\" -m jaxgan.cli" in (w.home / "jaxgan/bin/jaxgan").read_text()
  assert "jaxgan/env.sh" in (w.home / ".bashrc").read_text()   # for interactive logins

  # A new upload with the same dependencies: nothing is installed again.
  w.upload()
  assert w.run("setup").returncode == 0
  assert sum("pip install" in c for c in w.calls()) == 1
  # New dependencies: installed again, into the same venv.
  w.upload(pyproject_extra="# a new dependency\n")
  assert w.run("setup").returncode == 0
  assert sum("pip install" in c for c in w.calls()) == 2
  assert sum(c.startswith("uv venv") for c in w.calls()) == 1
  assert len((w.home / ".bashrc").read_text().splitlines()) == 1   # added once


def test_image_python_312_builds_the_venv(tmp_path):
  w = Worker(tmp_path, {"python3": OLD_PYTHON, "python3.12": GOOD_PYTHON})
  assert w.run("find-python").stdout.strip().endswith("/python3.12")
  w.upload()
  proc = w.run("setup", "--extras", "tpu,test")
  assert proc.returncode == 0, proc.stderr
  venv, src = w.home / "jaxgan" / "venv", w.home / "jaxgan" / "src"
  calls = w.calls()
  assert f"python3.12 -m venv {venv}" in calls
  assert f"python -m pip install --quiet -e {src}[tpu,test]" in calls   # no uv: pip
  assert not any(c.startswith("uv") for c in calls)


@pytest.mark.parametrize("args, message", [
    (("--python", "python3.10"), "--python python3.10 is older than 3.11"),
    (("--venv", "/nonexistent/env", "--skip-install"), "no Python environment at /nonexistent"),
])
def test_setup_errors(tmp_path, args, message):
  w = Worker(tmp_path, {"python3.10": OLD_PYTHON})
  w.upload()
  proc = w.run("setup", *args)
  assert proc.returncode == 1 and message in proc.stderr


def test_setup_without_an_upload(tmp_path):
  w = Worker(tmp_path, {})
  proc = w.run("setup")
  assert proc.returncode == 1 and "no unpacked code" in proc.stderr
