#!/usr/bin/env bash
# Create a Cloud TPU pod, install jaxgan on every worker, run the same train command on all.
set -euo pipefail
: "${TPU:?set TPU (name)}" "${ZONE:?set ZONE}"
ACCEL="${ACCEL:-v5litepod-16}"
RUNTIME="${RUNTIME:-v2-alpha-tpuv5-lite}"
ssh_all() { gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$1"; }

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$TPU" --zone "$ZONE" --accelerator-type "$ACCEL" \
      --version "$RUNTIME" ${SPOT:+--spot} ;;
  install)
    # Copies this checkout to every worker and installs it with the TPU build of JAX.
    tar czf /tmp/jaxgan-src.tgz --exclude=.venv --exclude=runs --exclude=.git -C "$(dirname "$0")/.." .
    gcloud compute tpus tpu-vm scp /tmp/jaxgan-src.tgz "$TPU":~/ --zone "$ZONE" --worker=all
    ssh_all "mkdir -p jaxgan && tar xzf jaxgan-src.tgz -C jaxgan && pip install -e 'jaxgan[tpu]'" ;;
  train)
    shift
    config="$1"; workdir="$2"; shift 2
    ssh_all "cd jaxgan && jaxgan train --config $config --workdir $workdir --distributed $*" ;;
  delete)
    gcloud compute tpus tpu-vm delete "$TPU" --zone "$ZONE" --quiet ;;
  *)
    echo "usage: TPU=.. ZONE=.. $0 create|install|train CONFIG WORKDIR [--config.x=..]|delete" >&2
    exit 2 ;;
esac
