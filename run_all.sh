#!/usr/bin/env bash
# tfquant batch reproduction.
#
#   ./run_all.sh                 main job -> results/default/<experiment>/ (one folder per script):
#                                  1. experiments/ptq_zoo.py: every zoo model x every TFLite variant,
#                                     accuracy / size / latency in LiteRT (ptq_zoo/)
#                                  2. experiments/nvidia_calibration.py: every zoo model x calibrator,
#                                     int8 and int16x8, in LiteRT (nvidia_calibration/)
#                                  3. short versions of the whitepaper tables and the QGT study:
#                                     whitepaper_ptq.py --short, whitepaper_qat.py --short, qgt.py --short
#                                  4. experiments/nvidia_partial.py --short: int8 + k layers float vs
#                                     int16x8, accuracy / size / latency in LiteRT (nvidia_partial/)
#                                  5. aciq.py --short: ACIQ clipping / bit allocation / bias correction (cnn)
#                                  6. short QBitOpt study (per-layer weight bits under a 3-bit budget,
#                                     LiteRT): qbitopt.py --short (qbitopt/)
#                                  7. whitepaper_latency.py --short: the whitepaper's latency table on this
#                                     CPU (keras.applications MobileNet, fp32 / int8 / int16x8, XNNPACK and
#                                     builtin, 1 and 2 threads, speed-ups timed side by side)
#                                  8. python -m tfquant report: results/<run>/report.html (every table,
#                                     Pareto plots also in results/<run>/pareto/, environment, recipes)
#   ./run_all.sh --full          the same with the long schedules (full tables, all models,
#                                full fine-tunes) -> results/full/
#   ./run_all.sh --tests         the test suite (what .ci/run runs; 2 pytest-xdist workers, TFQUANT_TEST_WORKERS=0: one process); installs Debian's chromium
#                                (the report test renders report.html in it) when run as root
#   ./run_all.sh EXPERIMENT ARGS one script of experiments/ with ARGS, e.g.
#                                  ./run_all.sh ptq_zoo --models cnn,vit
#
# Each call first bootstraps, idempotently: a Python 3.11 venv in .venv, the pinned
# requirements (re-installed only when requirements.txt changes), and the Fashion-MNIST IDX
# files from the Debian package dataset-fashion-mnist (installed when running as root).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
FMNIST_DIR="${TFQUANT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"

log() { echo "[run_all] $*" >&2; }

find_python() {
  for py in "${PYTHON:-}" python3.11 python3; do
    [ -n "$py" ] || continue
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

bootstrap_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    py=$(find_python) || { log "error: Python 3.11 not found; install python3.11 (with venv) or set PYTHON=/path/to/python3.11"; exit 1; }
    log "creating venv in .venv with $py"
    "$py" -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements.sha256" want
  want=$(cat requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log "installing pinned requirements into .venv (first run: a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install --quiet -r requirements.txt
    # Packages whose declared pins clash with TF 2.21's but whose used parts run beside it.
    "$VENV/bin/python" -m pip install --quiet --no-deps -r requirements-nodeps.txt
    echo "$want" > "$stamp"
  fi
  # tfquant itself, editable: gives .venv/bin/tfquant (the same CLI as python -m tfquant).
  local pstamp="$VENV/.pyproject.sha256" pwant
  pwant=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$pstamp" ] || [ "$(cat "$pstamp")" != "$pwant" ] || [ ! -x "$VENV/bin/tfquant" ]; then
    log "installing tfquant into .venv (editable; the tfquant command)"
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" >&2 || true
    [ -x "$VENV/bin/tfquant" ] || { log "error: installing tfquant into .venv failed; run '$VENV/bin/python -m pip install --no-deps -e .' to see why"; exit 1; }
    echo "$pwant" > "$pstamp"
  fi
}

bootstrap_data() {
  if [ -f "$FMNIST_DIR/t10k-images-idx3-ubyte.gz" ] || [ -f "$FMNIST_DIR/t10k-images-idx3-ubyte" ]; then
    return 0
  fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    log "error: Fashion-MNIST not found in $FMNIST_DIR; run 'sudo apt-get install dataset-fashion-mnist' or set TFQUANT_FASHION_MNIST_DIR to a folder with the IDX files"
    exit 1
  fi
}

bootstrap_venv
bootstrap_data
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

bootstrap_chromium() {
  # The report test (tests/report) opens report.html in headless Chromium.
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Chromium (Debian package chromium) for the report test"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    log "warning: chromium not found; the report test will fail: run 'sudo apt-get install chromium'"
  fi
}

if [ "${1:-}" = "--tests" ]; then
  shift
  bootstrap_chromium
  # Two worker processes (TFQUANT_TEST_WORKERS; 0 = one process, no xdist), one test file per
  # worker at a time (--dist loadfile: a file's session fixtures are built once per worker).
  workers="${TFQUANT_TEST_WORKERS:-2}"
  if [ "$workers" = "0" ]; then
    exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
  fi
  exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "$workers" --dist loadfile tests "$@"
fi
# The short experiments' flag, and the QAT tables' (its long schedules have their own flag).
size=--short
qat_size=--short
run_name=default
if [ "${1:-}" = "--full" ]; then
  shift
  size=""
  qat_size=--full
  run_name=full
fi
if [ $# -gt 0 ]; then
  script="experiments/${1%.py}.py"
  [ -f "$script" ] || { log "error: no experiment '$1' (choose one of: $(cd experiments && ls *.py | sed 's/\.py$//' | tr '\n' ' ')); or run './run_all.sh' for the main job"; exit 2; }
  shift
  exec "$VENV/bin/python" "$script" "$@"
fi
start=$(date +%s)
run() {
  local t0=$(date +%s)
  "$VENV/bin/python" "experiments/$1.py" --run_name "$run_name" "${@:2}"
  log "$1 finished in $(( $(date +%s) - t0 )) s"
}
run ptq_zoo
run nvidia_calibration
run whitepaper_ptq $size
run whitepaper_qat $qat_size
run qgt $size
run nvidia_partial $size
run aciq $size
run qbitopt $size
run whitepaper_latency $size
"$VENV/bin/python" -m tfquant report "results/$run_name"
log "main job ($run_name) finished in $(( $(date +%s) - start )) s"
