"""tpu/pod.sh against a fake gcloud: the whole life of a TPU slice, on this machine.

tests/fakes/gcloud keeps the slices' states, runs `ssh --worker=all` commands in a home folder per
worker and plays preemptions (every process of the VM killed at once). The lifecycle test trains
for real: create -> setup -> launch -> preemption -> the babysitter recreates, sets up and
relaunches -> the run resumes from its checkpoint on shared storage -> finish -> delete.
"""

import ast
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES = os.path.join(ROOT, "tests", "fakes")
POD = os.path.join(ROOT, "tpu", "pod.sh")
README = os.path.join(ROOT, "tpu", "README.md")
WORKER = os.path.join(ROOT, "tpu", "worker.sh")
NAME = "jaxgan-test"
# Where the workers find jaxgan's dependencies: this interpreter's environment (no pip here).
SETUP = f"--venv {sys.prefix} --skip-install"


def _load_pod_module():
  spec = importlib.util.spec_from_file_location("pod", os.path.join(ROOT, "tpu", "pod.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules["pod"] = module   # dataclasses look their module up
  spec.loader.exec_module(module)
  return module


pod_lib = _load_pod_module()


class Cloud:
  """The fake cloud of one test: runs tpu/pod.sh with the fake gcloud first on PATH."""

  def __init__(self, tmp_path):
    self.dir = tmp_path / "cloud"
    # pod.py and the fake need any python3; the real binary starts faster than a pyenv shim.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
    self.env = {k: v for k, v in os.environ.items()
                if k not in ("ACCEL", "RUNTIME", "SPOT", "PROJECT", "PYTHONPATH")}
    self.env.update({
        "PATH": os.pathsep.join([FAKES, str(bin_dir), os.environ["PATH"]]),
        "FAKE_GCLOUD_DIR": str(self.dir),
        "TPU": NAME, "ZONE": "us-central2-b",
        # What a TPU VM's jaxgan would find by itself; here: the CPU, quietly, and the tests'
        # compilation cache so that a relaunch does not compile again.
        "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
        "JAX_COMPILATION_CACHE_DIR": os.path.join(ROOT, ".pytest_cache", "xla"),
        "MPLCONFIGDIR": str(tmp_path / "matplotlib")})

  def pod(self, args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([POD, *shlex.split(args)], env=self.env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)

  def fake(self, *args: str) -> str:
    out = subprocess.run([os.path.join(FAKES, "gcloud"), "fake", *args], env=self.env,
                         capture_output=True, text=True, check=True)
    return out.stdout

  def calls(self, *prefix: str) -> list[list[str]]:
    with open(self.dir / "calls.jsonl") as f:
      calls = [json.loads(line) for line in f]
    return [c for c in calls if c[:len(prefix)] == list(prefix)]

  def state(self) -> dict:
    return json.loads(self.fake("state"))

  def home(self, node: str, worker: int) -> str:
    """A worker's home folder on the current incarnation of `node`."""
    gen = self.state()["nodes"][node]["gen"]
    return str(self.dir / "nodes" / f"{node}-{gen}" / f"worker-{worker}")


@pytest.fixture
def cloud(tmp_path):
  c = Cloud(tmp_path)
  yield c
  if c.dir.exists():
    c.fake("shutdown")   # no worker process outlives its test


def ok(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 0, (f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n"
                                f"{proc.stderr[-3000:]}")
  return proc.stdout


def wait_for(predicate, timeout: float, what: str) -> None:
  deadline = time.time() + timeout
  while not predicate():
    if time.time() > deadline:
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.1)


def _run_pid(home: str) -> int:
  with open(os.path.join(home, "jaxgan", "run", "pid")) as f:
    return int(f.read().split()[0])


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f"/proc/{pid}/stat") as f:   # a zombie is dead too
    return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow
def test_lifecycle_preemption_babysit_resume(cloud, tmp_path):
  shared = tmp_path / "bucket"     # storage every VM sees, like gs://; not a worker's disk
  workdir = shared / "runs" / "tiny"
  steps = 120
  train = (f"jaxgan train --config configs/tiny.py --workdir {workdir} --distributed --quiet "
           f"--config.train.num_steps={steps} --config.train.ckpt_every=5")

  out = ok(cloud.pod("create --accelerator-type v4-8 --spot"))
  assert "ready: 1 node(s), 1 worker(s)" in out
  assert cloud.calls("compute", "tpus", "tpu-vm", "create")[0][4:8] == [NAME,
      "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base", "--spot"]
  data = shared / "tfds"
  out = ok(cloud.pod(f"setup {SETUP} --prepare 'jsb_chorales --data-dir {data} --max-songs 4 "
                     "--quiet'", timeout=300))
  assert "worker 0: jaxgan prepare jsb_chorales" in out and "(built in" in out
  assert os.path.isdir(data / "jsb_chorales")
  # The code runs from the uploaded copy, through the wrapper setup put on PATH.
  home = cloud.home(NAME, 0)
  assert os.path.isfile(os.path.join(home, "jaxgan", "src", "jaxgan", "train.py"))
  ok(cloud.pod(f"launch --no-tail -- {train}"))

  first = workdir / "checkpoints" / "5"
  wait_for(first.exists, 300, "the first checkpoint")
  pid = _run_pid(home)
  assert "preempted" in cloud.fake("preempt", NAME)
  assert not _alive(pid)
  assert "PREEMPTED" in ok(cloud.pod("status"))

  out = ok(cloud.pod(f"babysit --accelerator-type v4-8 --spot {SETUP} --prepare 'jsb_chorales "
                     f"--data-dir {data} --max-songs 4 --quiet' --poll 0.5 --max-restarts 3 "
                     f"-- {train}", timeout=400))
  assert "PREEMPTED: creating it again (restart 1 of 3)" in out, out
  assert "worker 0: jaxgan prepare" in out and "(built in" not in out   # prepared once
  assert "the run finished: exit 0 on every worker" in out
  assert len(cloud.calls("compute", "tpus", "tpu-vm", "create")) == 2
  assert len(cloud.calls("compute", "tpus", "tpu-vm", "delete")) == 1

  log = ok(cloud.pod("tail --no-follow --lines 400"))
  resumed = re.search(r"resumed from \S+ at step (\d+)", log)
  assert resumed, log
  assert 5 <= int(resumed.group(1)) < steps
  saved = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert saved[-1] == steps
  assert re.search(r"worker 0 t1v-n-\S+: exited 0", ok(cloud.pod("status")))

  ok(cloud.pod("delete"))
  assert cloud.state()["nodes"] == {}
  assert "nothing to delete" in ok(cloud.pod("delete"))


@pytest.mark.slow
def test_launch_on_every_worker_clears_stale_runs(cloud):
  ok(cloud.pod("create --accelerator-type v4-16"))
  ok(cloud.pod(f"setup {SETUP}"))
  ok(cloud.pod("launch --no-tail -- sleep 300"))
  homes = [cloud.home(NAME, w) for w in range(2)]
  pids = [_run_pid(h) for h in homes]
  assert all(_alive(p) for p in pids)
  status = ok(cloud.pod("status"))
  assert status.count(": running") == 2, status
  for h in homes:   # what a crashed run leaves behind
    open(os.path.join(h, "tmp", "libtpu_lockfile"), "w").close()

  # Attached launch: follows worker 0 and exits with its status.
  proc = cloud.pod("launch -- bash -c 'echo process $JAXGAN_PROCESS_ID of $JAXGAN_NUM_PROCESSES "
                   "on $(hostname); exit 0'")
  out = ok(proc)
  assert "process 0 of 2 on t1v-n-jaxgan-test-w-0" in out
  assert not any(_alive(p) for p in pids)
  for w, h in enumerate(homes):
    assert not os.path.exists(os.path.join(h, "tmp", "libtpu_lockfile"))
    with open(os.path.join(h, "jaxgan", "run", "worker.log")) as f:
      assert f"process {w} of 2 on t1v-n-jaxgan-test-w-{w}" in f.read()
    assert os.path.exists(os.path.join(h, "jaxgan", "run", "worker.log.1"))  # kept, not lost
  assert "process 1 of 2" in ok(cloud.pod("tail --worker 1 --no-follow"))
  assert ok(cloud.pod("status")).count("exited 0") == 2

  # Commands on the workers run in the environment setup made (the venv's bin on PATH).
  out = ok(cloud.pod("ssh -- 'command -v jaxgan; echo $PYTHONPATH'"))
  assert out.count("/jaxgan/bin/jaxgan") == 2 and out.count("/jaxgan/src") == 2
  assert "w-1" in ok(cloud.pod("ssh --worker 1 -- hostname"))

  ok(cloud.pod("launch --no-tail -- sleep 300"))
  ok(cloud.pod("stop --grace 5"))
  assert ok(cloud.pod("status")).count("stopped 143") == 2   # SIGTERM, recorded as such
  exit_code = cloud.pod("launch -- bash -c 'exit 7'")
  assert exit_code.returncode == 7


def test_launch_needs_setup_and_setup_needs_no_live_run(cloud):
  ok(cloud.pod("create --accelerator-type v4-8"))
  proc = cloud.pod("launch -- sleep 300")
  assert proc.returncode == 1 and "t1v-n-jaxgan-test-w-0: not set up" in proc.stderr
  ok(cloud.pod(f"setup {SETUP}"))
  ok(cloud.pod("launch --no-tail -- sleep 300"))
  proc = cloud.pod(f"setup {SETUP}")
  assert proc.returncode == 1
  assert "a run is active" in proc.stdout + proc.stderr
  ok(cloud.pod("stop --grace 5"))
  ok(cloud.pod(f"setup {SETUP}"))


def test_babysit_gives_up_after_max_restarts(cloud):
  # A queued spot slice preempted soon after every start: recreated twice, then left alone.
  cloud.fake("arm", NAME, "--after-calls", "8", "--times", "99")
  proc = cloud.pod(f"babysit --queued --spot --accelerator-type v4-8 {SETUP} --poll 0.2 "
                   "--max-restarts 2 -- sleep 300", timeout=120)
  out = proc.stdout
  assert proc.returncode == 1, out + proc.stderr
  assert "giving up after 2 restarts (--max-restarts 2)" in out
  assert out.count("launched on 1 workers: sleep 300") == 3
  creates = cloud.calls("compute", "tpus", "queued-resources", "create")
  assert len(creates) == 3
  assert "--node-id=jaxgan-test" in creates[0] and "--spot" in creates[0]
  deletes = cloud.calls("compute", "tpus", "queued-resources", "delete")
  assert len(deletes) == 2 and all("--force" in d for d in deletes)
  assert "SUSPENDED" in ok(cloud.pod("status"))


def test_babysit_gives_up_on_a_command_that_keeps_failing(cloud):
  proc = cloud.pod(f"babysit --accelerator-type v4-8 {SETUP} --poll 0.2 --max-failures 1 "
                   "-- bash -c 'echo no such config >&2; exit 3'", timeout=120)
  out = proc.stdout
  assert proc.returncode == 1, out + proc.stderr
  assert "no such slice yet: creating it" in out
  assert out.count("the command exited 3 on worker 0") == 2
  assert "no such config" in out          # the worker's log, shown where the babysitter runs
  assert "giving up (--max-failures 1)" in out
  assert len(cloud.calls("compute", "tpus", "tpu-vm", "create")) == 1


def test_babysit_rides_out_gcloud_errors_and_relaunches_a_killed_run(cloud):
  cloud.fake("fail", "3")
  # Killed with its wrapper the first time (as by the OOM killer): no exit status at all.
  once = ("if [ ! -e ~/once ]; then touch ~/once; "
          "kill -9 -- -$(cut -d' ' -f1 ~/jaxgan/run/pid); fi; sleep 1")
  proc = cloud.pod(f"babysit --accelerator-type v4-8 {SETUP} --poll 0.2 -- \"{once}\"",
                   timeout=120)
  out = proc.stdout
  assert proc.returncode == 0, out + proc.stderr
  assert "UNAVAILABLE" in out and "(3 errors in a row)" in out
  assert "the run was interrupted (dead) on a live slice: relaunching (restart 1 of 20)" in out
  assert "the run finished" in out
  assert len(cloud.calls("compute", "tpus", "tpu-vm", "create")) == 1


def test_babysit_watches_a_run_already_going_and_refuses_another(cloud):
  ok(cloud.pod("create --accelerator-type v4-8"))
  ok(cloud.pod(f"setup {SETUP}"))
  ok(cloud.pod("launch --no-tail -- sleep 300"))
  proc = cloud.pod(f"babysit --accelerator-type v4-8 {SETUP} --poll 0.2 -- sleep 299")
  assert proc.returncode == 1
  assert "a different command is running" in proc.stdout
  ok(cloud.pod("launch --no-tail -- sleep 3"))
  out = ok(cloud.pod(f"babysit --accelerator-type v4-8 {SETUP} --poll 0.2 --delete-when-done "
                     "-- sleep 3"))
  assert "the run is already going on 1 workers: watching it" in out
  assert "launched on" not in out
  assert cloud.state()["nodes"] == {}


def test_multislice_queued_resource(cloud):
  out = ok(cloud.pod("create --accelerator-type v4-16 --slices 2 --spot --valid-until 6h "
                     "--poll 0.1"))
  assert "2 node(s), 4 worker(s)" in out
  create = cloud.calls("compute", "tpus", "queued-resources", "create")[0]
  assert {"--node-count=2", "--node-prefix=jaxgan-test", "--valid-until-duration=6h",
          "--runtime-version=tpu-ubuntu2204-base", "--spot"} <= set(create)
  ok(cloud.pod(f"setup {SETUP}"))
  ok(cloud.pod("launch -- bash -c 'echo slice $MEGASCALE_SLICE_ID of $MEGASCALE_NUM_SLICES, "
               "process $JAXGAN_PROCESS_ID'"))
  for worker, (node, w) in enumerate([("jaxgan-test-0", 0), ("jaxgan-test-0", 1),
                                      ("jaxgan-test-1", 0), ("jaxgan-test-1", 1)]):
    log = ok(cloud.pod(f"tail --worker {worker} --no-follow"))
    assert f"slice {worker // 2} of 2, process {worker}" in log
    assert f"t1v-n-{node}-w-{w}" in log
  status = ok(cloud.pod("status"))
  assert "queued resource" in status and status.count("exited 0") == 4
  ok(cloud.pod("delete"))
  assert cloud.state()["qrs"] == {} and cloud.state()["nodes"] == {}


def test_queued_resource_waits_for_capacity(cloud):
  cloud.env["FAKE_GCLOUD_QR_STEPS"] = "2"
  out = ok(cloud.pod("create --queued --accelerator-type v5litepod-16 --poll 0.1"))
  assert "WAITING_FOR_RESOURCES: waiting" in out and "PROVISIONING: waiting" in out
  assert "1 node(s), 4 worker(s)" in out
  assert "--runtime-version=v2-alpha-tpuv5-lite" in cloud.calls(
      "compute", "tpus", "queued-resources", "create")[0]
  proc = cloud.pod("create --queued --accelerator-type v5litepod-16")
  assert proc.returncode == 1 and "already exists" in proc.stderr


def test_clear_errors(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("TPU", "ZONE", "ACCEL")}
  run = lambda *a: subprocess.run([POD, *a], env=env, capture_output=True, text=True)
  assert "give --name (or set $TPU)" in run("status").stderr
  assert "give --zone" in run("status", "--name", "x").stderr
  proc = run("create", "--name", "x", "--zone", "z")
  assert proc.returncode == 1 and "give --accelerator-type" in proc.stderr
  proc = run("launch", "--name", "x", "--zone", "z")
  assert "no command given" in proc.stderr
  proc = run("status", "--name", "x", "--zone", "z", "--", "ls")
  assert "status takes no command" in proc.stderr
  no_gcloud = dict(env, PATH=str(tmp_path))
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tpu", "pod.py"), "status",
                         "--name", "x", "--zone", "z"], env=no_gcloud, capture_output=True,
                        text=True)
  assert proc.returncode == 1 and "gcloud is not on PATH" in proc.stderr
  with pytest.raises(pod_lib.PodError, match="give --version"):
    pod_lib.default_version("v9x-8")


def test_judge():
  def runs(*states):
    return [pod_lib.WorkerRun(i, f"h{i}", s, c, "abc", "") for i, (s, c) in enumerate(states)]
  assert pod_lib.judge(runs(("exited", "0"), ("exited", "0"))) == "done"
  assert pod_lib.judge(runs(("exited", "0"), ("running", "-"))) == "running"
  assert pod_lib.judge(runs(("exited", "1"), ("running", "-"))) == "failed"
  assert pod_lib.judge(runs(("dead", "-"), ("running", "-"))) == "interrupted"
  # SIGTERM then exit 0 (a preemption notice): not finished.
  assert pod_lib.judge(runs(("stopped", "0"), ("stopped", "0"))) == "interrupted"


def test_upload_leaves_out_environments_data_runs_and_caches(tmp_path):
  files = {"pyproject.toml": "x", "jaxgan/train.py": "x", "jaxgan/data/pipeline.py": "x",
           "tpu/worker.sh": "x", "configs/tiny.py": "x",
           ".venv/bin/python": "x", ".venv-python3.12/lib/x.py": "x", ".git/HEAD": "x",
           "runs/jsb/checkpoints/1/x": "x", "data/big.npz": "x", "samples/a.mid": "x",
           "jaxgan/__pycache__/train.cpython-311.pyc": "x", ".pytest_cache/xla/k": "x",
           "jaxgan.egg-info/PKG-INFO": "x", "tests/.hypothesis/db": "x"}
  for rel, text in files.items():
    os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
    (tmp_path / rel).write_text(text)
  kept = sorted(arc for _, arc in pod_lib.upload_files(str(tmp_path)))
  assert kept == ["configs/tiny.py", "jaxgan/data/pipeline.py", "jaxgan/train.py",
                  "pyproject.toml", "tpu/worker.sh"]
  (tmp_path / "configs" / "weights.bin").write_bytes(b"\0" * 3 * 2**20)
  with pytest.raises(pod_lib.PodError, match=r"upload would be 3 MB .*configs/weights.bin"):
    pod_lib.make_tarball(str(tmp_path), str(tmp_path / "out.tgz"), max_mb=2)
  pod_lib.make_tarball(str(tmp_path), str(tmp_path / "out.tgz"), max_mb=4)
  import tarfile  # pylint: disable=import-outside-toplevel
  with tarfile.open(tmp_path / "out.tgz") as tar:
    assert "configs/weights.bin" in tar.getnames() and "runs" not in tar.getnames()


def _readme_commands(program: str) -> list[list[str]]:
  """The `program ...` lines of the README's bash blocks, split like a shell would."""
  with open(README) as f:
    blocks = re.findall(r"```bash\n(.*?)```", f.read(), re.S)
  lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
  return [shlex.split(line) for line in lines if line.startswith(program + " ")]


def _tested_pod_commands() -> list[list[str]]:
  """The arguments of every `cloud.pod(...)` call in this file; f-string holes become 0,
  or the value of the module constant they name."""
  with open(__file__) as f:
    tree = ast.parse(f.read())
  commands = []
  for node in ast.walk(tree):
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "pod" and node.args):
      continue
    arg = node.args[0]
    parts = arg.values if isinstance(arg, ast.JoinedStr) else [arg]
    text = ""
    for part in parts:
      if isinstance(part, ast.Constant):
        text += part.value
      else:
        name = getattr(part.value, "id", None)
        text += globals()[name] if isinstance(globals().get(name), str) else "0"
    commands.append(shlex.split(text))
  return commands


def _options(args: list[str]) -> tuple[str, set[str]]:
  ours, _ = pod_lib.split_command(args)
  try:
    pod_lib.build_parser().parse_args(ours)
  except SystemExit as e:
    raise AssertionError(f"tpu/pod.sh {shlex.join(args)} does not parse") from e
  return ours[0], {a.split("=")[0] for a in ours[1:] if a.startswith("-")}


def test_every_readme_command_is_exercised():
  tested: dict[str, set[str]] = {}
  for args in _tested_pod_commands():
    action, options = _options(args)
    tested.setdefault(action, set()).update(options)
  readme = _readme_commands("tpu/pod.sh")
  assert len(readme) >= 10
  for args in readme:
    ours, command = pod_lib.split_command(args[1:])
    action, options = _options(ours + (["--", *command] if command else []))
    assert action in tested, f"README: `tpu/pod.sh {action}` is never run by a test"
    assert options <= tested[action], (
        f"README: tpu/pod.sh {action} {sorted(options - tested[action])} never run by a test")
  # The SLURM and scheduler-less launchers are run by tests/test_slurm.py.
  with open(os.path.join(ROOT, "tests", "test_slurm.py")) as f:
    slurm_tests = f.read()
  for program, script in (("sbatch", "slurm.sbatch"), ("tpu/multigpu.sh", "multigpu.sh")):
    lines = _readme_commands(program)
    assert lines and f'"tpu", "{script}"' in slurm_tests
    assert all(any(a.endswith(script) for a in line) for line in lines)
