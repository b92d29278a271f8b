#!/usr/bin/env bash
# Cloud TPU slices for jaxgan: tpu/pod.sh create|setup|launch|status|tail|stop|ssh|babysit|delete.
# The work is done by tpu/pod.py (standard library only: any python3 >= 3.8 runs it, no jaxgan
# install needed here); see tpu/README.md.
exec "${PYTHON:-python3}" "$(dirname "$0")/pod.py" "$@"
