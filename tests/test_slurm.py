"""tpu/slurm.sbatch and tpu/multigpu.sh under simulated launchers.

A fake `srun` (tests/fakes/srun) runs each task with the variables SLURM gives it, and a probe
stands in for `jaxgan`: it records its arguments and asks JAX's own cluster detection, as
`jax.distributed.initialize()` does for `jaxgan train --distributed`, what it derives: the
coordinator, the process count and id, and the devices the process may use. No distributed
service is started (the 2-process CPU run is tests/test_multihost.py).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES = os.path.join(ROOT, "tests", "fakes")
SBATCH = os.path.join(ROOT, "tpu", "slurm.sbatch")
MULTIGPU = os.path.join(ROOT, "tpu", "multigpu.sh")

PROBE = textwrap.dedent("""\
    import json, os, sys
    from jax._src import clusters
    # jax.distributed.initialize(): JAX_LOCAL_DEVICE_IDS first, then the detected cluster.
    ids = os.environ.get("JAX_LOCAL_DEVICE_IDS")
    ids = [int(i) for i in ids.split(",")] if ids else None
    coordinator, count, pid, ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        coordinator_address=None, num_processes=None, process_id=None, local_device_ids=ids,
        cluster_detection_method=None, initialization_timeout=None)
    print(json.dumps({"argv": sys.argv[1:], "coordinator": coordinator, "processes": count,
                      "process_id": pid, "local_device_ids": ids}))
    """)


@pytest.fixture
def launcher_env(tmp_path):
  """PATH with the fake srun and a `jaxgan` probe; no SLURM variables from the outside."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  probe = bin_dir / "jaxgan"
  probe.write_text(f"#!{sys.executable}\n{PROBE}")
  probe.chmod(0o755)
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "JAX_LOCAL_DEVICE_IDS", "JAXGAN_"))}
  env.update(PATH=os.pathsep.join([FAKES, str(bin_dir), env["PATH"]]),
             FAKE_SRUN_LOG=str(tmp_path / "srun.jsonl"), JAXGAN_LOG_DIR=str(tmp_path / "logs"),
             JAX_PLATFORMS="cpu")
  return env


def _sbatch(env, tmp_path, job: dict, *args):
  env = dict(env, **{k: str(v) for k, v in job.items()})
  proc = subprocess.run(["bash", SBATCH, *args], env=env, capture_output=True, text=True,
                        cwd=tmp_path, timeout=240)
  assert proc.returncode == 0, proc.stderr
  logs = tmp_path / "logs" / str(job["SLURM_JOB_ID"])
  tasks = []
  for t in range(int(job["SLURM_NTASKS"])):
    with open(logs / f"task-{t}.log") as f:
      tasks.append(json.loads(f.read().strip().splitlines()[-1]))
  with open(tmp_path / "srun.jsonl") as f:
    srun = [json.loads(line) for line in f]
  return tasks, srun, proc.stderr


@pytest.mark.slow
def test_one_task_per_gpu(launcher_env, tmp_path):
  job = dict(SLURM_JOB_ID=4242, SLURM_JOB_NODELIST="gpu[007-008]", SLURM_JOB_NUM_NODES=2,
             SLURM_NNODES=2, SLURM_NTASKS=4, SLURM_NTASKS_PER_NODE=2, SLURM_GPUS_ON_NODE=2)
  tasks, srun, err = _sbatch(launcher_env, tmp_path, job, "configs/jsb_musegan.py",
                             "/shared/runs/jsb", "--config.train.global_batch=256")
  assert "4 tasks on 2 node(s) (gpu[007-008]), 2 per node, 2 GPU(s) per node" in err
  assert srun[0]["options"][0] == "--kill-on-bad-exit=1"
  port = 4242 % 2**12 + 65535 - 2**12 + 1     # JAX's port for a SLURM job: from the job id
  for t, task in enumerate(tasks):
    assert task["argv"] == ["train", "--config", "configs/jsb_musegan.py", "--workdir",
                            "/shared/runs/jsb", "--distributed", "--config.train.global_batch=256"]
    assert task["coordinator"] == f"gpu007:{port}"
    assert task["processes"] == 4 and task["process_id"] == t
    assert task["local_device_ids"] == [t % 2]   # each process its own GPU of the node


@pytest.mark.slow
def test_one_task_per_node_drives_all_its_gpus(launcher_env, tmp_path):
  job = dict(SLURM_JOB_ID=77, SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_NUM_NODES=2,
             SLURM_NNODES=2, SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=1, SLURM_GPUS_ON_NODE=4)
  tasks, _, _ = _sbatch(launcher_env, tmp_path, job, "configs/tiny.py", "/shared/runs/t")
  assert [t["process_id"] for t in tasks] == [0, 1]
  assert all(t["coordinator"].startswith("node1:") for t in tasks)
  # Without JAX_LOCAL_DEVICE_IDS, JAX would give each process GPU SLURM_LOCALID = 0 only.
  assert all(t["local_device_ids"] == [0, 1, 2, 3] for t in tasks)


def test_sbatch_usage(launcher_env, tmp_path):
  proc = subprocess.run(["bash", SBATCH, "configs/tiny.py"], env=launcher_env,
                        capture_output=True, text=True, cwd=tmp_path)
  assert proc.returncode == 2 and "usage: sbatch tpu/slurm.sbatch CONFIG WORKDIR" in proc.stderr


def test_multigpu_passes_the_coordinator(launcher_env):
  proc = subprocess.run([MULTIGPU, "10.0.0.2:1234", "2", "1", "configs/jsb_musegan.py",
                         "/shared/runs/jsb", "--config.train.global_batch=64"],
                        env=launcher_env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert json.loads(proc.stdout)["argv"] == [
      "train", "--config", "configs/jsb_musegan.py", "--workdir", "/shared/runs/jsb",
      "--coordinator", "10.0.0.2:1234", "--num-processes", "2", "--process-id", "1",
      "--config.train.global_batch=64"]
