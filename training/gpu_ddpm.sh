#!/usr/bin/env bash
# Continue training the shipped diffusion model on one GPU for one more short run,
# then evaluate it there, all inside one fixed wall-time budget.
#
#   SOURCE=../shared/data OUT=out MINUTES=9 bash training/gpu_ddpm.sh
#
# Only MNIST-M is built from the raw sources; the UNet trains alone (no DCGAN beside
# it, unlike gpu_run.sh) from INIT's weights (`python -m training ddpm --init-from`:
# fresh optimiser, short learning-rate warm-up, the EMA carried on). The new card's
# training.lineage lists every run behind the model and training.total_steps sums
# them, so calls can be chained: ship this call's checkpoint, and the next call
# continues from it. The log prints steps/s and images/s every 30 s, and for the
# first PROFILE_SECONDS a per-phase step timing (plus a torch.profiler table in
# runs/ddpm/profile.txt, in logs.tar.gz). The EMA weights and the card are copied
# into OUT before the evaluation starts, so a call cut off there still returns them.
# Not yet measured on a GPU: gpu_run.sh measured about 7.6 steps/s of 512 images for
# this UNet alone on one H200, so the default budget should give some 2,000 steps.
#
# CPU rehearsal: the shipped model is 64 channels wide, too slow for a CPU, so
# TINY_INIT trains a 2-step checkpoint of that width into the work folder first
# and continues from it instead of INIT (about 1-2 minutes on 2 cores):
#   PYTHON=.venv/bin/python LIMIT=200 MINUTES=2 EVAL_MINUTES=0.7 TINY_INIT=8 DDPM_EXTRA="--batch-size 32" \
#     EVAL_EXTRA="--per-digit 2 --ddpm-per-digit 0" OUT=runs/gpu-ddpm-rehearsal bash training/gpu_ddpm.sh
#
# Environment:
#   SOURCE   raw datasets (the data README's layout): mnist/ and bsds500/
#   OUT      where the checkpoint, archives and logs go (default runs/gpu-ddpm): the
#            fp16 shards (each under 16 MiB), ddpm-card.tar (card, shard index, and
#            after the evaluation digit-classifier.json and metrics.json),
#            eval_digits.tar.gz, logs.tar.gz
#   MINUTES  whole budget, data build and evaluation included (default 9)
#   EVAL_MINUTES  part of it kept for the evaluation after training (default 3.5);
#            the evaluation is stopped when the budget runs out
#   INIT     the checkpoint to continue (default $CKPT_IN/ddpm-digits)
#   TINY_INIT  rehearsals only: a width (e.g. 8); continue from a fresh 2-step
#            checkpoint of that width instead of INIT
#   CKPT_IN  folder holding the evaluation classifier (digit-classifier.*) and
#            metrics.json to merge into (default checkpoints)
#   DATA     where MNIST-M is built (default data/gpu/hw2_data; with LIMIT,
#            data/gpu-limit<LIMIT>/hw2_data, so a slice never replaces a full build)
#   WORK     run folder and checkpoints before packing (default runs/gpu-ddpm-work-<time>);
#            an existing WORK whose training was cut resumes its state.pt
#   LIMIT    images per split (rehearsals only)
#   PROFILE_SECONDS  step-timing profile at the start of training (default 20; 0: off)
#   PYTHON   interpreter (default python3)
#   DDPM_EXTRA  flags appended to the training command; later flags win, e.g. "--lr 2e-4"
#   EVAL_EXTRA  flags appended to `python -m training.evaluate digits`
#   WHEELS   folder of wheels to install first for packages the machine lacks
#   LAUNCH   e.g. "torchrun --nproc_per_node=8 -m" for DDP over several GPUs
set -uo pipefail
cd "$(dirname "$0")/.."
SOURCE=${SOURCE:-../shared/data}
OUT=${OUT:-runs/gpu-ddpm}
MINUTES=${MINUTES:-9}
EVAL_MINUTES=${EVAL_MINUTES:-3.5}
CKPT_IN=${CKPT_IN:-checkpoints}
INIT=${INIT:-$CKPT_IN/ddpm-digits}
DATA=${DATA:-data/gpu${LIMIT:+-limit$LIMIT}/hw2_data}
PROFILE_SECONDS=${PROFILE_SECONDS:-20}
PY=${PYTHON:-python3}
LAUNCH=${LAUNCH:-"$PY -m"}
LIMIT_ARGS=()
[ -n "${LIMIT:-}" ] && LIMIT_ARGS=(--limit "$LIMIT")
# Relative, so the commands recorded in the model card hold no machine's paths.
WORK=${WORK:-runs/gpu-ddpm-work-$(date +%Y%m%d-%H%M%S)}
. training/gpu_common.sh  # run folders, wheels, log and pack helpers
pack_logs() { (cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs runs/*/log.jsonl runs/*/profile.txt runs/*/samples 2>/dev/null) || true; }

log "building mnistm from $SOURCE"
$PY -m training.data --source "$SOURCE" --out "$DATA" --only mnistm --workers "$(nproc)" --no-verify "${LIMIT_ARGS[@]}" 2>&1 | tail -n 4 | tee "$LOGS/data.log"
[ -d "$DATA/digits/mnistm" ] || { echo "data build failed"; pack_logs; exit 4; }

if [ -n "${TINY_INIT:-}" ]; then
  INIT=$WORK/init/ddpm-digits
  log "rehearsal: a 2-step checkpoint of width $TINY_INIT to continue from"
  $PY -m training ddpm --data "$DATA" --checkpoint-dir "$WORK/init" --out "$WORK/runs/init" "${LIMIT_ARGS[@]}" \
    --base-channels "$TINY_INIT" --batch-size 32 --max-steps 2 --sample-every 1000 ${DDPM_EXTRA:-} 2>&1 | quiet >"$LOGS/init.log" \
    || { echo "tiny init FAILED:"; tail -n 30 "$LOGS/init.log"; pack_logs; exit 5; }
fi

ddpm_minutes=$(minus "$(left)" "$EVAL_MINUTES")
log "ddpm for $ddpm_minutes min, from $INIT"
# --resume: a WORK whose training was cut carries on from its state.pt (same lineage), else --init-from.
$LAUNCH training ddpm --data "$DATA" --checkpoint-dir "$CKPT" --out "$WORK/runs/ddpm" "${LIMIT_ARGS[@]}" \
  --init-from "$INIT" --resume --epochs 200 --batch-size 512 --lr 4e-4 --warmup-steps 100 --ema-decay 0.9995 \
  --sample-every 2000 --profile-seconds "$PROFILE_SECONDS" ${DDPM_EXTRA:-} --max-minutes "$ddpm_minutes" 2>&1 | quiet | tee "$LOGS/ddpm.log"
[ "${PIPESTATUS[0]}" = 0 ] || echo "ddpm run FAILED"
if ! [ -f "$CKPT/ddpm-digits.json" ]; then
  pack_logs; log "no checkpoint; logs in $OUT"; exit 6
fi

# A full-size checkpoint is three fp16 shards under the size limit: each travels alone,
# and the card goes out before the evaluation, which may be cut by the budget.
cp "$CKPT"/ddpm-digits-0*.safetensors "$OUT"/ 2>/dev/null || cp "$CKPT"/ddpm-digits.safetensors "$OUT"/
pack ddpm-card.tar "$CKPT" $(cd "$CKPT" && ls ddpm-digits.json ddpm-digits.safetensors.index.json 2>/dev/null)
pack_logs

eval_s=$(echo "$(left)" | awk '{v = $1 * 60 - 10; printf "%d", (v > 30 ? v : 30)}')
log "evaluating digits (stopped after ${eval_s}s)"
cp "$CKPT_IN"/digit-classifier.* "$CKPT/"
cp "$CKPT_IN"/metrics.json "$CKPT/" 2>/dev/null || true
timeout -k 10 "$eval_s" $PY -m training.evaluate digits --data "$DATA" --checkpoint-dir "$CKPT" --per-digit 100 --ddpm-per-digit 100 \
  --batch 1000 --out "$WORK/eval_digits" ${EVAL_EXTRA:-} 2>&1 | quiet | tee "$LOGS/eval-digits.log" | grep -v '^ \|^{\|^}'
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || echo "evaluation FAILED or cut (exit $rc): the weights and card in $OUT are unevaluated"
# The same archive again, now with the evaluated card and metrics.
pack ddpm-card.tar "$CKPT" $(cd "$CKPT" && ls ddpm-digits.json ddpm-digits.safetensors.index.json digit-classifier.json metrics.json 2>/dev/null)
(cd "$WORK" && tar -czf "$OUT/eval_digits.tar.gz" eval_digits 2>/dev/null) || true
pack_logs
grep -h '^\[.*steps/s' "$LOGS/ddpm.log" | tail -n 3
log "done; files in $OUT:"
ls -la "$OUT"
