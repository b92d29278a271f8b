#!/usr/bin/env bash
# One process per GPU machine: tpu/multigpu.sh COORDINATOR:PORT NUM_HOSTS HOST_INDEX CONFIG WORKDIR [overrides]
set -euo pipefail
if [ $# -lt 5 ]; then
  echo "usage: $0 COORDINATOR:PORT NUM_HOSTS HOST_INDEX CONFIG WORKDIR [--config.x=...]" >&2
  exit 2
fi
coordinator="$1"; hosts="$2"; index="$3"; config="$4"; workdir="$5"; shift 5
exec jaxgan train --config "$config" --workdir "$workdir" \
  --coordinator "$coordinator" --num-processes "$hosts" --process-id "$index" "$@"
