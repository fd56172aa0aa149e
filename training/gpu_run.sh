#!/usr/bin/env bash
# Full-size training and GPU-only evaluation on one GPU inside a fixed wall-time budget.
#
#   SOURCE=../shared/data OUT=out MINUTES=8.5 bash training/gpu_run.sh
#
# Side by side on the one GPU: the diffusion model at the seed's width (most of the
# budget), and DCGAN B and A (150 epochs, a snapshot every 10). Then, still on the GPU:
# the DCGAN snapshot to ship is chosen by the HOG rule, the digits are evaluated
# with 400-step DDPM and the few-step sampler (100 per digit), and the report's digit
# figures are drawn. A short preflight of every step on a slice comes first, so a
# broken environment fails in seconds rather than after the budget. Each part's
# checkpoint is packed into OUT as soon as it is trained, so a run cut off later
# still returns it.
#
# This trains the diffusion model from scratch. To continue the shipped one instead
# (--init-from, the UNet alone, its lineage in the card), use training/gpu_ddpm.sh.
#
# Measured on one H200 (torch 2.11, bf16): the diffusion model trains at about 7.6
# steps/s of 512 images alone, and at half that while the two DCGANs share the GPU;
# a DCGAN epoch takes about 1.2 s; 400-step DDPM sampling of 500 digits with
# guidance takes about 90 s in fp32.
#
# Environment:
#   SOURCE   raw datasets (the data README's layout): mnist/ and bsds500/ for ddpm;
#            celeba/ for dcgan (skipped when absent)
#   OUT      where checkpoints, archives and logs go (default runs/gpu): 7 files, each
#            under 16 MiB (the full-size UNet is three fp16 shards)
#   MINUTES  whole budget, data build and evaluation included (default 9)
#   EVAL_MINUTES  part of it kept for the evaluation after training (default 3.5)
#   CKPT_IN  folder holding the evaluation classifier (digit-classifier.*) and
#            metrics.json to merge into (default checkpoints)
#   DATA     where the datasets are built (default data/gpu/hw2_data)
#   WORK     run folders and checkpoints before packing (default runs/gpu-work-<time>)
#   LIMIT    images per split (rehearsals on a CPU only)
#   PYTHON   interpreter (default python3)
#   DDPM_EXTRA, DCGAN_EXTRA  flags appended to those training commands (a CPU rehearsal
#            shrinks the nets: DDPM_EXTRA="--base-channels 8 --batch-size 32")
#   EVAL_EXTRA, REPORT_EXTRA  flags appended to the digit evaluation and figures
#            (a rehearsal: "--per-digit 2 --ddpm-per-digit 0" and "--digit-sampler ddim")
#   WHEELS   folder of wheels to install first for packages the machine lacks
#            (diffusers, ema-pytorch, importlib-metadata, lazy-importer, dlib-bin)
# Several GPUs: LAUNCH="torchrun --nproc_per_node=8 -m" trains the diffusion model with
# DDP (through accelerate); the DCGANs and the evaluation stay on one process each.
set -uo pipefail
cd "$(dirname "$0")/.."
SOURCE=${SOURCE:-../shared/data}
OUT=${OUT:-runs/gpu}
MINUTES=${MINUTES:-9}
EVAL_MINUTES=${EVAL_MINUTES:-3.5}
CKPT_IN=${CKPT_IN:-checkpoints}
DATA=${DATA:-data/gpu/hw2_data}
PY=${PYTHON:-python3}
LAUNCH=${LAUNCH:-"$PY -m"}
LIMIT_ARGS=()
[ -n "${LIMIT:-}" ] && LIMIT_ARGS=(--limit "$LIMIT")
# Relative, so the commands recorded in the model cards hold no machine's paths.
WORK=${WORK:-runs/gpu-work-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$WORK"
. training/gpu_common.sh  # run folders, wheels, log and pack helpers

faces=1
[ -d "$SOURCE/celeba" ] || { faces=0; echo "no $SOURCE/celeba: DCGAN skipped"; }
only=mnistm; [ $faces = 1 ] && only=mnistm,faces
log "building $only from $SOURCE"
$PY -m training.data --source "$SOURCE" --out "$DATA" --only "$only" --workers "$(nproc)" --no-verify "${LIMIT_ARGS[@]}" 2>&1 | tail -n 6 | tee "$LOGS/data.log"
[ -d "$DATA/digits/mnistm" ] || { echo "data build failed"; exit 4; }

log "preflight: every step on a slice"
PRE=$WORK/pre
mkdir -p "$PRE/ckpt"
cp "$CKPT_IN"/digit-classifier.* "$PRE/ckpt/"
(
  $PY -m training ddpm --data "$DATA" --checkpoint-dir "$PRE/ckpt" --out "$PRE/ddpm" --limit 512 --batch-size 256 ${DDPM_EXTRA:-} --max-steps 2 &&
  $PY -m training.evaluate digits --data "$DATA" --checkpoint-dir "$PRE/ckpt" --per-digit 2 --ddpm-per-digit 1 --out "$PRE/digits" &&
  $PY -m training.report --parts digits --digit-sampler ddim --checkpoint-dir "$PRE/ckpt" --out "$PRE/report"
) >"$LOGS/preflight-ddpm.log" 2>&1 &
pre_ddpm=$!
pre_faces=0
if [ $faces = 1 ]; then
  (
    $PY -m training dcgan --data "$DATA" --variant A --checkpoint-dir "$PRE/ckpt" --out "$PRE/dcgan" --limit 256 --epochs 1 --snapshot-every 1 ${DCGAN_EXTRA:-} &&
    $PY -m training.evaluate faces-snapshots --variant A --run "$PRE/dcgan" --checkpoint-dir "$PRE/ckpt" --n 16 --workers 2
  ) >"$LOGS/preflight-dcgan.log" 2>&1 &
  pre_faces=$!
fi
ok=1
wait $pre_ddpm || { ok=0; echo "preflight ddpm FAILED:"; tail -n 30 "$LOGS/preflight-ddpm.log"; }
if [ $pre_faces != 0 ]; then
  wait $pre_faces || { faces=0; echo "preflight dcgan FAILED (DCGAN skipped):"; tail -n 30 "$LOGS/preflight-dcgan.log"; }
fi
if [ $ok = 0 ]; then
  (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs) ; exit 5
fi
log "preflight passed"

ddpm_minutes=$(minus "$(left)" "$EVAL_MINUTES")
log "ddpm for $ddpm_minutes min"
$LAUNCH training ddpm --data "$DATA" --checkpoint-dir "$CKPT" --out "$WORK/runs/ddpm" "${LIMIT_ARGS[@]}" \
  --epochs 200 --batch-size 512 --lr 4e-4 --warmup-steps 500 --ema-decay 0.9995 --sample-every 2000 \
  ${DDPM_EXTRA:-} --max-minutes "$ddpm_minutes" 2>&1 | quiet >"$LOGS/ddpm.log" &
ddpm=$!

if [ $faces = 1 ]; then
  # The snapshot choice runs while the diffusion model still trains.
  dcgan_minutes=$(minus "$ddpm_minutes" 1.2)
  dcgan_jobs=()
  for v in B A; do
    (
      $PY -m training dcgan --data "$DATA" --variant $v --checkpoint-dir "$CKPT" --out "$WORK/runs/dcgan-$v" "${LIMIT_ARGS[@]}" \
        --epochs 150 --snapshot-every 10 ${DCGAN_EXTRA:-} --max-minutes "$dcgan_minutes" &&
      $PY -m training.evaluate faces-snapshots --variant $v --run "$WORK/runs/dcgan-$v" --checkpoint-dir "$CKPT" \
        --n 500 --seed 1 --workers 6
    ) 2>&1 | quiet >"$LOGS/dcgan-$v.log" &
    dcgan_jobs+=($!)
  done
  wait "${dcgan_jobs[@]}"
  tail -n 3 "$LOGS"/dcgan-*.log
  pack dcgan.tar "$CKPT" $(cd "$CKPT" && ls dcgan-*.json dcgan-*.safetensors 2>/dev/null)
fi

wait $ddpm || echo "ddpm run FAILED"
tail -n 2 "$LOGS/ddpm.log"
if ls "$CKPT"/ddpm-digits.json >/dev/null 2>&1; then
  # A full-size checkpoint is three fp16 shards under the size limit: each travels alone,
  # and the card goes out before the evaluation, which may run past the budget.
  cp "$CKPT"/ddpm-digits-0*.safetensors "$OUT"/ 2>/dev/null || cp "$CKPT"/ddpm-digits.safetensors "$OUT"/
  pack ddpm-card.tar "$CKPT" $(cd "$CKPT" && ls ddpm-digits.json ddpm-digits.safetensors.index.json 2>/dev/null)
  log "evaluating digits"
  cp "$CKPT_IN"/digit-classifier.* "$CKPT/"
  cp "$CKPT_IN"/metrics.json "$CKPT/" 2>/dev/null || true
  $PY -m training.evaluate digits --data "$DATA" --checkpoint-dir "$CKPT" --per-digit 100 --ddpm-per-digit 100 \
    --batch 1000 --out "$WORK/eval_digits" ${EVAL_EXTRA:-} 2>&1 | tee "$LOGS/eval-digits.log" | grep -v '^ \|^{\|^}'
  $PY -m training.report --parts digits --checkpoint-dir "$CKPT" --out "$WORK/report" ${REPORT_EXTRA:-} 2>&1 | tail -n 1
  # The same archive again, now with the evaluated card and metrics.
  pack ddpm-card.tar "$CKPT" $(cd "$CKPT" && ls ddpm-digits.json ddpm-digits.safetensors.index.json digit-classifier.json metrics.json 2>/dev/null)
  # Generated digits (<digit>_<NNN>.png per sampler) and the report's digit figures.
  (cd "$WORK" && tar -czf "$OUT/eval_digits.tar.gz" eval_digits report) || true
fi
(cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs runs/*/log.jsonl runs/*/samples 2>/dev/null) || true
log "done; files in $OUT:"
ls -la "$OUT"
