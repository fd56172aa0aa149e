# Sourced by gpu_run.sh and gpu_ddpm.sh once OUT, MINUTES, PY and WORK are set: the clock,
# the run folders, wheels for packages the GPU machine lacks, and the log and pack helpers.
start=$(date +%s)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CKPT=$WORK/checkpoints
LOGS=$WORK/logs
mkdir -p "$CKPT" "$LOGS"

if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/$WORK/site" "$WHEELS"/*.whl || exit 3
  export PYTHONPATH="$PWD/$WORK/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1

left() { echo "$MINUTES $start $(date +%s)" | awk '{printf "%.2f", $1 - ($3 - $2) / 60}'; }
minus() { echo "$1 $2" | awk '{v = $1 - $2; printf "%.2f", (v > 0.1 ? v : 0.1)}'; }
log() { echo "=== $(date +%T) [$(left) min left] $*"; }
quiet() { tr '\r' '\n' | grep --line-buffered -v 'it/s[],]\|s/it[],]\|^ *$'; }  # progress bars (with or without a postfix) stay out of the logs
pack() {  # pack <archive> <dir> <files...>: the per-file limit on what comes back is 16 MiB
  local archive=$1 dir=$2; shift 2
  (cd "$dir" && tar -cf "$OUT/$archive" "$@") && echo "packed $archive: $*"
}
