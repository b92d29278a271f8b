#!/usr/bin/env bash
# Step and sampler figures on an accelerator machine, with no input pipeline (TensorFlow is not
# needed): `jaxgan profile --input synthetic` per shipped config, a batch-size and bf16 sweep of
# the tutorial model, then scripts/bench_sample.py. Usage: scripts/bench_accel.sh OUT_DIR
set -uo pipefail
out=${1:?usage: scripts/bench_accel.sh OUT_DIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
nvidia-smi -L 2>/dev/null || true
$py -c "import jax; print('jax', jax.__version__, jax.devices())"
# The warm-up critic schedule (100 D steps early on) would dominate a short profile.
steady="--config.loss.critic_warmup_steps=0 --config.loss.critic_every_n=0"
run() {  # name config [overrides...]
  local name=$1; shift
  echo "== $name: $*"
  $py -m jaxgan.cli profile --input synthetic --steps 50 --trace-steps 0 --json \
      --workdir "/tmp/jaxgan_profile/$name" "$@" $steady > "$out/$name.json" \
    && $py -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['step_ms_p50']:.2f} ms p50, {r['steps_per_s']:.1f} steps/s, {r['examples_per_s']:.0f} ex/s, {r['gflop_per_step']:.2f} GFLOP, MFU {100*r['mfu']:.1f} %, compile {r['compile_s']:.1f} s\")" "$out/$name.json"
}
run tutorial --config configs/musegan_tutorial.py
run jsb --config configs/jsb_musegan.py
run lpd5 --config configs/musegan_lpd5.py
run lpd5_bf16 --config configs/musegan_lpd5.py --config.model.dtype=bfloat16
run jsb_bf16 --config configs/jsb_musegan.py --config.model.dtype=bfloat16
$py scripts/bench_sample.py --reps 3 --run-seconds 2 > "$out/sample.md" && cat "$out/sample.md"
for b in 64 256 1024; do
  run tutorial_b$b --config configs/musegan_tutorial.py --config.train.global_batch=$b
done
