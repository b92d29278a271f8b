#!/usr/bin/env bash
# The worker side of tpu/pod.py: it runs on every TPU VM worker (over `gcloud ... ssh`) to set up
# the Python environment, start the run in the background, report on it and stop it.
#
#   worker.sh setup [--python PY] [--venv DIR] [--skip-install] [--extras LIST]
#   worker.sh launch B64CMD     stop what holds the TPU, then start CMD detached (setsid, nohup)
#   worker.sh status            one line: JAXGAN-STATUS host=H ip=IP state=S code=C cmd=HASH | log
#   worker.sh stop [GRACE_S]    SIGTERM the run's process group, SIGKILL after GRACE_S (default 30)
#   worker.sh tail [--follow] [--lines N]
#   worker.sh exec B64CMD       run CMD in the foreground with the environment of a run
#   worker.sh find-python       the interpreter setup would build the venv with (or "uv")
#
# Commands travel base64-encoded, so that no layer of ssh or shell quoting can change them.
# Everything lives under ~/jaxgan: src/ (the code), venv/ (default environment), env.sh (what every
# command here runs with), bin/jaxgan, run/ (pid, worker.log, exit_code of the current run).
set -euo pipefail

ROOT="$HOME/jaxgan"
RUN="$ROOT/run"
# libtpu's lock: a crashed run leaves it behind and the next one cannot open the TPU.
LOCKFILE="${JAXGAN_LIBTPU_LOCKFILE:-/tmp/libtpu_lockfile}"
HOST="$(hostname)"
# The internal address names the worker: gcloud lists the workers' addresses in worker order.
IP="$(hostname -I 2>/dev/null | awk '{print $1}')"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi

die() { echo "jaxgan worker $HOST: $*" >&2; exit 1; }
decode() { printf '%s' "$1" | base64 -d; }
boot_id() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }
hash_of() { sha256sum "$1" | cut -c1-12; }

# The run's pid, if it is alive. The pid file also holds the boot id: after a reboot (host
# maintenance) the same number may belong to an unrelated process.
run_pid() {
  local pid boot
  [ -f "$RUN/pid" ] || return 1
  read -r pid boot < "$RUN/pid" || return 1
  [ "$boot" = "$(boot_id)" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

version_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
# `python -m venv` also needs ensurepip, which Debian ships separately (python3.X-venv).
can_make_venv() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
                    >/dev/null 2>&1; }

# A Python >= 3.11 that can make a venv: TPU VM images (Ubuntu 22.04) have 3.10 only, and
# pyproject.toml requires 3.11, so uv (which downloads a Python) is the usual answer there.
find_python() {
  local p
  for p in python3.13 python3.12 python3.11 python3; do
    if command -v "$p" >/dev/null 2>&1 && can_make_venv "$p"; then command -v "$p"; return 0; fi
  done
  return 1
}

find_uv() {
  if command -v uv >/dev/null 2>&1; then command -v uv; return 0; fi
  if [ -x "$HOME/.local/bin/uv" ]; then echo "$HOME/.local/bin/uv"; return 0; fi
  return 1
}

install_uv() {
  echo "jaxgan worker $HOST: installing uv" >&2
  python3 -m pip install --user --quiet uv >/dev/null 2>&1 \
    || { command -v curl >/dev/null 2>&1 \
         && curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh >/dev/null; } \
    || return 1
  find_uv
}

make_venv() {
  local venv="$1" python="$2" uv
  if [ -n "$python" ] && command -v "$python" >/dev/null 2>&1; then
    version_ok "$python" || die "--python $python is older than 3.11 (pyproject.toml needs >= 3.11)"
    if can_make_venv "$python"; then "$python" -m venv "$venv"; return 0; fi
  elif [ -z "$python" ] && python="$(find_python)"; then
    "$python" -m venv "$venv"
    return 0
  fi
  # No usable interpreter here (or --python is a version like 3.12): uv brings its own.
  uv="$(find_uv || install_uv)" \
    || die "no Python >= 3.11 with venv here, and uv could not be installed"
  "$uv" venv --quiet --seed --python "${python:-3.12}" "$venv"
}

install_jaxgan() {
  local venv="$1" extras="$2" uv
  local target="$ROOT/src${extras:+[$extras]}"
  if uv="$(find_uv)"; then
    "$uv" pip install --quiet --python "$venv/bin/python" -e "$target"
  else
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$target"
  fi
}

cmd_setup() {
  local python="" venv="$ROOT/venv" skip_install=0 extras="tpu"
  while [ $# -gt 0 ]; do
    case "$1" in
      --python) python="$2"; shift 2 ;;
      --venv) venv="$2"; shift 2 ;;
      --skip-install) skip_install=1; shift ;;
      --extras) extras="$2"; shift 2 ;;
      *) die "setup: unknown option $1" ;;
    esac
  done
  venv="${venv/#\~/$HOME}"
  [ -d "$ROOT/src.new" ] || die "setup: no unpacked code in $ROOT/src.new"
  local pid
  if pid="$(run_pid)"; then
    rm -rf "$ROOT/src.new"
    die "a run is active (pid $pid): stop it first (tpu/pod.sh stop)"
  fi
  rm -rf "$ROOT/src"
  mv "$ROOT/src.new" "$ROOT/src"

  if [ "$skip_install" = 1 ]; then
    # An environment that already holds jaxgan's dependencies (a custom image, a shared disk):
    # the code runs from ~/jaxgan/src through PYTHONPATH, nothing is installed.
    [ -x "$venv/bin/python" ] || die "--skip-install: no Python environment at $venv"
    version_ok "$venv/bin/python" || die "--skip-install: $venv/bin/python is older than 3.11"
  else
    [ -x "$venv/bin/python" ] || make_venv "$venv" "$python"
    # Installed in editable mode from ~/jaxgan/src: a new upload needs a new install only when
    # the dependencies (pyproject.toml) or the extras change.
    local want have=""
    want="$(cat "$ROOT/src/pyproject.toml" <(echo "$extras") | sha256sum | cut -c1-16)"
    [ -f "$venv/.jaxgan-installed" ] && have="$(cat "$venv/.jaxgan-installed")"
    if [ "$want" != "$have" ]; then
      install_jaxgan "$venv" "$extras"
      echo "$want" > "$venv/.jaxgan-installed"
    fi
  fi

  # A non-interactive ssh shell reads no profile: every command here sources env.sh instead.
  mkdir -p "$ROOT/bin"
  cat > "$ROOT/bin/jaxgan" <<EOF
#!/bin/sh
exec "$venv/bin/python" -m jaxgan.cli "\$@"
EOF
  chmod +x "$ROOT/bin/jaxgan"
  cat > "$ROOT/env.sh" <<EOF
# Written by tpu/worker.sh setup: the environment of every jaxgan command on this worker.
export PATH="$ROOT/bin:$venv/bin:\$PATH"
export PYTHONPATH="$ROOT/src\${PYTHONPATH:+:\$PYTHONPATH}"
EOF
  # For people who ssh in by hand (interactive shells read ~/.bashrc).
  if ! grep -qs 'jaxgan/env.sh' "$HOME/.bashrc"; then
    echo '[ -f "$HOME/jaxgan/env.sh" ] && . "$HOME/jaxgan/env.sh"' >> "$HOME/.bashrc"
  fi
  local version
  version="$("$venv/bin/python" -c 'import platform; print(platform.python_version())')"
  echo "JAXGAN-SETUP-OK host=$HOST python=$version"
}

# Processes holding TPU chips (/dev/accel* on v4/v5e, /dev/vfio/* on v5p/v6e): a run started
# by hand, a notebook, a process the last run left behind.
tpu_holders() {
  local devs
  devs="$(ls -d /dev/accel* /dev/vfio/[0-9]* 2>/dev/null || true)"
  [ -n "$devs" ] || return 0
  # shellcheck disable=SC2086
  if command -v lsof >/dev/null 2>&1; then
    $SUDO lsof -t $devs 2>/dev/null | sort -u || true
  else
    $SUDO fuser $devs 2>/dev/null | tr -s ' ' '\n' | grep -E '^[0-9]+$' | sort -u || true
  fi
}

stop_run() {
  local grace="${1:-30}" pid waited=0 holders
  if pid="$(run_pid)"; then
    # The whole process group: the wrapper and everything the command started. SIGTERM first,
    # so that `jaxgan train` saves a checkpoint.
    kill -TERM -- "-$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$grace" ]; do
      sleep 1
      waited=$((waited + 1))
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  holders="$(tpu_holders)"
  if [ -n "$holders" ]; then
    echo "jaxgan worker $HOST: killing stale processes holding the TPU: $holders" >&2
    # shellcheck disable=SC2086
    $SUDO kill -9 $holders 2>/dev/null || true
    for pid in $holders; do tail --pid="$pid" -f /dev/null 2>/dev/null || true; done
  fi
  rm -f "$LOCKFILE" 2>/dev/null || $SUDO rm -f "$LOCKFILE" 2>/dev/null || true
  [ ! -e "$LOCKFILE" ] || die "cannot remove $LOCKFILE"
}

cmd_launch() {
  [ $# -eq 1 ] || die "launch: expected one base64 command"
  [ -f "$ROOT/env.sh" ] || die "not set up: run tpu/pod.sh setup first"
  stop_run 30
  mkdir -p "$RUN"
  rm -f "$RUN/pid" "$RUN/exit_code" "$RUN/stopped"
  [ -f "$RUN/worker.log" ] && mv "$RUN/worker.log" "$RUN/worker.log.1"
  decode "$1" > "$RUN/command"
  cat > "$RUN/run.sh" <<'EOF'
RUN="$HOME/jaxgan/run"
echo "$$ $(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)" > "$RUN/pid"
# A SIGTERM (preemption notice, shutdown, tpu/pod.sh stop) means the run did not finish, even
# when the command then exits 0 after saving a checkpoint: the babysitter must run it again.
trap 'touch "$RUN/stopped"' TERM INT
. "$HOME/jaxgan/env.sh"
cd "$HOME/jaxgan/src"
echo "jaxgan worker $(hostname) $(date -u +%FT%TZ): $(cat "$RUN/command")"
bash "$RUN/command"
code=$?
echo "$code" > "$RUN/exit_code.tmp" && mv "$RUN/exit_code.tmp" "$RUN/exit_code"
echo "jaxgan worker $(hostname) $(date -u +%FT%TZ): exited with status $code"
EOF
  setsid nohup bash "$RUN/run.sh" > "$RUN/worker.log" 2>&1 < /dev/null &
  # Started once the wrapper wrote its pid (whatever becomes of it next: status tells).
  local waited=0 pid
  until [ -s "$RUN/pid" ]; do
    [ "$waited" -lt 100 ] || die "the run did not start (see $RUN/worker.log)"
    sleep 0.05
    waited=$((waited + 1))
  done
  read -r pid _ < "$RUN/pid"
  echo "JAXGAN-LAUNCHED host=$HOST pid=$pid log=$RUN/worker.log"
}

cmd_status() {
  local state code="-" cmd="-" last=""
  if run_pid >/dev/null; then state=running
  elif [ -f "$RUN/exit_code" ]; then
    code="$(cat "$RUN/exit_code")"
    state=exited
    [ -e "$RUN/stopped" ] && state=stopped
  elif [ -f "$RUN/pid" ]; then state=dead   # killed (SIGKILL, OOM) or the host rebooted
  else state=none
  fi
  [ -f "$RUN/command" ] && cmd="$(hash_of "$RUN/command")"
  if [ -f "$RUN/worker.log" ]; then
    # Progress bars redraw with \r: the last non-empty piece is what a terminal would show.
    last="$(tail -c 400 "$RUN/worker.log" | tr '\r' '\n' | grep -v '^[[:space:]]*$' \
            | tail -n 1 || true)"
  fi
  echo "JAXGAN-STATUS host=$HOST ip=${IP:--} state=$state code=$code cmd=$cmd | $last"
}

cmd_tail() {
  local follow=0 lines=100 pid
  while [ $# -gt 0 ]; do
    case "$1" in
      --follow) follow=1; shift ;;
      --lines) lines="$2"; shift 2 ;;
      *) die "tail: unknown option $1" ;;
    esac
  done
  [ -f "$RUN/worker.log" ] || die "no run has been launched here"
  if [ "$follow" = 1 ] && pid="$(run_pid)"; then
    exec tail -n "$lines" -F --pid="$pid" "$RUN/worker.log"
  fi
  exec tail -n "$lines" "$RUN/worker.log"
}

cmd_exec() {
  [ $# -eq 1 ] || die "exec: expected one base64 command"
  [ -f "$ROOT/env.sh" ] || die "not set up: run tpu/pod.sh setup first"
  . "$ROOT/env.sh"
  cd "$ROOT/src"
  exec bash -c "$(decode "$1")"
}

case "${1:-}" in
  setup) shift; cmd_setup "$@" ;;
  launch) shift; cmd_launch "$@" ;;
  status) cmd_status ;;
  stop) stop_run "${2:-30}"; echo "JAXGAN-STOPPED host=$HOST" ;;
  tail) shift; cmd_tail "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  find-python) find_python || { find_uv >/dev/null && echo uv; } || echo "uv (to install)" ;;
  *) echo "usage: $0 setup|launch|status|stop|tail|exec|find-python ..." >&2; exit 2 ;;
esac
