#!/usr/bin/env bash
# Full-size training on one GPU inside a fixed wall-time budget, in order of value:
# the diffusion model (most of the time), then DCGAN A and B, then the evaluation
# classifier and the DANN runs. Each part's checkpoints are packed into OUT as soon
# as that part finishes, so a run cut off early still returns what was done.
#
#   SOURCE=path/to/raw/data OUT=out MINUTES=9 bash training/gpu_run.sh
#
# Environment:
#   SOURCE   raw datasets (the layout of the data README): mnist/ and bsds500/ for
#            ddpm, classifier and dann; celeba/ for dcgan; svhn/ and usps/ for dann
#   OUT      where packed checkpoints and logs go (default runs/gpu)
#   MINUTES  whole budget, data build included (default 9)
#   PARTS    which parts, in order (default "ddpm dcgan classifier dann")
#   LIMIT    images per split (rehearsals on a CPU only)
#   PYTHON   interpreter (default python3)
#   WHEELS   folder of wheels to install first for packages the machine lacks
#            (diffusers, ema-pytorch, importlib-metadata)
# Several GPUs: set LAUNCH="torchrun --nproc_per_node=8 -m" (DDP through accelerate).
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${SOURCE:-../shared/data}
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-9}
PARTS=${PARTS:-"ddpm dcgan classifier dann"}
PY=${PYTHON:-python3}
LAUNCH=${LAUNCH:-"$PY -m"}
LIMIT_ARGS=()
[ -n "${LIMIT:-}" ] && LIMIT_ARGS=(--limit "$LIMIT")
start=$(date +%s)
mkdir -p "$OUT"
WORK=$(mktemp -d)
DATA=$WORK/hw2_data
CKPT=$WORK/checkpoints
LOGS=$WORK/logs
mkdir -p "$CKPT" "$LOGS"

if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$WHEELS"/*.whl
  export PYTHONPATH="$WORK/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1

left() { echo "$MINUTES $start $(date +%s)" | awk '{printf "%.2f", $1 - ($3 - $2) / 60}'; }
share() { echo "$(left) $1" | awk '{v = $1 * $2; printf "%.2f", (v > 0.1 ? v : 0.1)}'; }
pack() {  # pack <name> <files...>: one archive per part, under the 16 MiB per-file limit
  local name=$1; shift
  (cd "$CKPT" && tar -cf "$OUT/$name.tar" "$@") && echo "packed $name: $*"
}
log() { echo "=== $(date +%T) [$(left) min left] $*"; }

needs=()
for p in $PARTS; do
  case $p in
    ddpm|classifier) needs+=(mnistm) ;;
    dcgan) needs+=(faces) ;;
    dann) needs+=(mnistm svhn usps) ;;
  esac
done
only=$(printf '%s\n' "${needs[@]}" | sort -u | paste -sd, -)
log "building $only from $SOURCE"
$PY -m training.data --source "$SOURCE" --out "$DATA" --only "$only" --workers "$(nproc)" --no-verify "${LIMIT_ARGS[@]}" 2>&1 | tail -n 8 | tee "$LOGS/data.log"

common=(--data "$DATA" --checkpoint-dir "$CKPT" "${LIMIT_ARGS[@]}")
for part in $PARTS; do
  case $part in
    ddpm)
      log "ddpm"
      $LAUNCH training ddpm "${common[@]}" --out "$WORK/runs/ddpm" --epochs 200 --batch-size 256 --lr 4e-4 \
        --warmup-steps 500 --ema-decay 0.9995 --max-minutes "$(share 0.62)" 2>&1 | tr '\r' '\n' | grep -v 'it/s\]' | tee "$LOGS/ddpm.log" | tail -n 3
      # A 15.7M-parameter fp16 UNet is two 15 MiB shards: each travels as its own file.
      cp "$CKPT"/ddpm-digits-0*.safetensors "$OUT"/ 2>/dev/null || cp "$CKPT"/ddpm-digits.safetensors "$OUT"/
      pack ddpm-meta $(cd "$CKPT" && ls ddpm-digits.json ddpm-digits.safetensors.index.json 2>/dev/null)
      ;;
    dcgan)
      for v in B A; do
        log "dcgan $v"
        $LAUNCH training dcgan "${common[@]}" --variant $v --out "$WORK/runs/dcgan-$v" --epochs 500 \
          --max-minutes "$(share 0.3)" 2>&1 | tr '\r' '\n' | grep -v 'it/s\]' | tee "$LOGS/dcgan-$v.log" | tail -n 2
      done
      pack dcgan dcgan-A.json dcgan-A.safetensors dcgan-B.json dcgan-B.safetensors
      ;;
    classifier)
      log "classifier"
      $LAUNCH training classifier "${common[@]}" --out "$WORK/runs/classifier" --epochs 5 --batch-size 512 --lr 4e-3 \
        --max-minutes "$(share 0.15)" 2>&1 | tr '\r' '\n' | grep -v 'it/s\]' | tee "$LOGS/classifier.log" | tail -n 1
      pack classifier digit-classifier.json digit-classifier.safetensors
      ;;
    dann)
      runs=("svhn dann improved" "usps dann improved" "svhn dann plain" "usps dann plain"
            "svhn source_only improved" "usps source_only improved" "svhn target_only improved" "usps target_only improved")
      for i in "${!runs[@]}"; do
        read -r tgt mode recipe <<<"${runs[$i]}"
        log "dann $tgt $mode $recipe"
        $LAUNCH training dann "${common[@]}" --target "$tgt" --mode "$mode" --recipe "$recipe" --out "$WORK/runs/dann-$i" \
          --epochs 30 --batch-size 128 --lr 2e-4 --max-minutes "$(share "$(awk -v n=$(( ${#runs[@]} - i )) 'BEGIN{print 0.95/n}')")" \
          2>&1 | tr '\r' '\n' | grep -v 'it/s\]' | tee "$LOGS/dann-$tgt-$mode-$recipe.log" | tail -n 1
      done
      pack dann $(cd "$CKPT" && ls dann-*.json dann-*.safetensors)
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
(cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs runs/*/log.jsonl runs/*/samples 2>/dev/null) || true
log "done; files in $OUT:"
ls -la "$OUT"
