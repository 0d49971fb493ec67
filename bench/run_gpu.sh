#!/usr/bin/env bash
# The GPU pass: one call of at most 9 minutes on a lent GPU machine (H200, torch + triton preinstalled, 16 cores,
# no network), as prioritized, time-boxed stages. Each stage runs under `timeout` with its own cap, never past
# the pass's overall budget, and writes <stage>.json (status, exit code, seconds) and <stage>.log to
# bench/results/gpu-pass/ the moment it ends; the whole folder is copied to $OUT/gpu-pass/ (when $OUT is set)
# after every stage, so a stage cut off by its limit (or the machine's) loses nothing that finished before it.
# The last stage prints a summary table of every stage and its headline numbers.
#
#   bash bench/run_gpu.sh              # the pass (budget 510 s; GPU_PASS_BUDGET=seconds to change it)
#   bash bench/run_gpu.sh --dry-run    # any machine, seconds: list the stages and check the script, every
#                                      # script and test file it names and every flag it passes (--help)
#   bash bench/run_gpu.sh --only build,tests   # a subset of the stages, in pass order
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --only) ONLY=",$2,"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run_gpu.sh: unknown argument $1 (allowed: --dry-run, --only STAGES)" >&2; exit 2 ;;
  esac
  shift
done

PY=${PYTHON:-python3}
RESULTS=${GPU_PASS_RESULTS:-bench/results/gpu-pass}
BUDGET=${GPU_PASS_BUDGET:-510}   # seconds for the whole pass: 9 minutes less start-up and copying back
RESERVE=15                       # kept for the summary stage
START=$(date +%s)
# The GPU tests: the cuda and triton backends of every op (test ids carry the backend name).
GPU_TEST_FILES="tests/test_depthwise.py tests/test_distill.py tests/test_models.py"
[ -f tests/test_bn_act.py ] && GPU_TEST_FILES="$GPU_TEST_FILES tests/test_bn_act.py"
GPU_TEST_K="cuda or triton"

# ---- the stages, in priority order: name, cap in seconds, command --------------------------------------------
NAMES=(); CAPS=(); CMDS=()
stage() { NAMES+=("$1"); CAPS+=("$2"); CMDS+=("$3"); }

stage env 20 "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; \
$PY -c 'import torch, triton; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"gpu\", torch.cuda.get_device_name(0))'"
stage build 240 "CUDA_HOME=\${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=\${TORCH_CUDA_ARCH_LIST:-9.0} \
DEPS_FAST_BUILD_CUDA=1 MAX_JOBS=\${MAX_JOBS:-16} $PY -m pip install -q --no-build-isolation --no-deps -e . && \
$PY -c 'import deps_fast; r = deps_fast.available_backends(\"cuda\"); print(r); assert r[\"cuda\"] is None and r[\"triton\"] is None'"
stage tests 150 "$PY -m pytest -q -p no:cacheprovider -rfE $GPU_TEST_FILES -k '$GPU_TEST_K' --junitxml=$RESULTS/tests.xml"
stage bench-depthwise 60 "$PY bench/bench_depthwise.py --quick --repeats 20 --out $RESULTS/bench-depthwise"
stage bench-distill 40 "$PY bench/bench_distill.py --repeats 20 --out $RESULTS/bench-distill"
if [ -f bench/bench_bn_act.py ]; then
  stage bench-bn-act 40 "$PY bench/bench_bn_act.py --out $RESULTS/bench-bn-act"
fi
stage bench-step 75 "$PY bench/bench_step.py --repeats 10 --out $RESULTS/bench-step"
stage savings 120 "$PY bench/bench_gpu_hours.py --budget-scales 0.003,0.006 --seeds 0 --out $RESULTS/savings \
-- --calib-images 500"
stage summary $RESERVE "$PY bench/gpu_summary.py $RESULTS"

selected() { [ -z "$ONLY" ] || [ "$1" = summary ] || [[ "$ONLY" == *",$1,"* ]]; }

# ---- dry run: list, then check the script and everything it names -----------------------------------------
if [ "$DRY" = 1 ]; then
  bad=0
  bash -n "$0" || bad=1
  echo "GPU pass: budget ${BUDGET}s, results in $RESULTS/ (and \$OUT/gpu-pass/)"
  for i in "${!NAMES[@]}"; do
    printf '  %-2d %-16s cap %4ss  %s\n' "$((i + 1))" "${NAMES[$i]}" "${CAPS[$i]}" "$(echo "${CMDS[$i]}" | tr -s ' \n' ' ' | cut -c1-110)"
  done
  helps=$(mktemp -d)
  for i in "${!NAMES[@]}"; do
    cmd=${CMDS[$i]}
    # every `$PY bench/X.py ...` (and the trainer options after its `--`): the script exists, each flag is in its --help
    for script in $(grep -o 'bench/[a-z_]*\.py' <<<"$cmd" | sort -u); do
      [ -f "$script" ] || { echo "MISSING: $script (stage ${NAMES[$i]})"; bad=1; continue; }
      key=$(basename "$script" .py)
      [ -f "$helps/$key" ] || $PY "$script" --help >"$helps/$key" 2>&1 || { echo "FAILED: $script --help"; cat "$helps/$key"; bad=1; }
      own=${cmd%% -- *}
      for flag in $(grep -o -- ' --[a-z][a-z0-9-]*' <<<"$own" | sort -u); do
        grep -q -- "$flag\b" "$helps/$key" || { echo "UNKNOWN FLAG: $script$flag (stage ${NAMES[$i]})"; bad=1; }
      done
      if [[ "$cmd" == *" -- "* ]]; then
        [ -f "$helps/train" ] || $PY -m deps_fast.train --help >"$helps/train" 2>&1
        for flag in $(grep -o -- ' --[a-z][a-z0-9-]*' <<<"${cmd#* -- }" | sort -u); do
          grep -q -- "$flag\b" "$helps/train" || { echo "UNKNOWN TRAINER FLAG:$flag (stage ${NAMES[$i]})"; bad=1; }
        done
      fi
    done
  done
  for f in $GPU_TEST_FILES; do [ -f "$f" ] || { echo "MISSING: $f"; bad=1; }; done
  n=$($PY -m pytest -q -p no:cacheprovider --collect-only $GPU_TEST_FILES -k "$GPU_TEST_K" 2>&1 | grep -c '::')
  echo "tests stage selects $n tests (-k '$GPU_TEST_K')"
  [ "$n" -gt 0 ] || { echo "the tests stage selects no test"; bad=1; }
  rm -rf "$helps"
  [ "$bad" = 0 ] && echo "dry run OK" || echo "dry run FAILED"
  exit "$bad"
fi

# ---- the pass ------------------------------------------------------------------------------------------------
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1
publish() { if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/gpu-pass" && cp -r "$RESULTS/." "$OUT/gpu-pass/" 2>/dev/null; fi; }
record() {  # name status rc seconds cap
  printf '{"stage": "%s", "status": "%s", "rc": %s, "seconds": %s, "cap_s": %s, "ended": "%s"}\n' \
    "$1" "$2" "$3" "$4" "$5" "$(date -u +%FT%TZ)" >"$RESULTS/$1.json"
}
BUILT=1
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]}; cap=${CAPS[$i]}; cmd=${CMDS[$i]}
  selected "$name" || continue
  left=$((BUDGET - ($(date +%s) - START)))
  [ "$name" = summary ] || left=$((left - RESERVE))
  limit=$(( cap < left ? cap : left ))
  if [ "$BUILT" = 0 ] && [ "$name" != summary ] && [ "$name" != env ]; then
    record "$name" "skipped: the build failed" null 0 "$cap"; echo "== $name: skipped (the build failed)"; publish; continue
  fi
  if [ "$limit" -lt 5 ]; then
    record "$name" "skipped: no time left" null 0 "$cap"; echo "== $name: skipped (${left}s left)"; publish; continue
  fi
  echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s into the pass)"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$RESULTS/$name.log" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) status=ok ;;
    124|137) status="timeout after ${limit}s" ;;
    *) status=failed ;;
  esac
  [ "$name" = build ] && [ "$rc" != 0 ] && BUILT=0
  record "$name" "$status" "$rc" "$dt" "$cap"
  tail -n 4 "$RESULTS/$name.log" | sed 's/^/   /'
  echo "   -> $status (${dt}s)"
  publish
done
[ -f "$RESULTS/summary.md" ] && { echo; cat "$RESULTS/summary.md"; }
echo "pass done after $(( $(date +%s) - START ))s; results in $RESULTS/${OUT:+ and $OUT/gpu-pass/}"
