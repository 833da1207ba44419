#!/usr/bin/env bash
# A GPU session's checks in one prepared command: the whole test suite on the device, the
# main example's wall time (GPU cold, GPU with the persistent compilation cache, and the
# same machine's CPU), and the device table. Each part writes under $OUT (the device
# tool's folder; ./gpu-session without it) and appends "part: rc, seconds" to summary.txt.
# A failed part is recorded and the next one still runs.
#
#   PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false benchmarks/gpu_session.sh tests startup
#   PYTHONPATH=$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false benchmarks/gpu_session.sh table
#
# Parts (default: all three, in this order; about 4, 3 and 4 minutes on an H100 with 16
# cores, so a 10-minute call runs "tests startup" and a second call "table"):
#   tests    python -m pytest -n 8, slow tests included (tests.txt, tests.xml); more
#            pytest arguments in $PYTEST_ARGS (a rerun: PYTEST_ARGS="--lf" or a path)
#   startup  benchmarks/startup.py --wall 3 on the GPU, then with a fresh compilation
#            cache (cold, then warm), then with JAX_PLATFORMS=cpu (startup_*.txt)
#   table    benchmarks/device_table.py --budget-s ${TABLE_BUDGET_S:-200}
#            (results_device.md: copy it to benchmarks/ and commit it)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-session}
mkdir -p "$out"
parts=${*:-tests startup table}
{
  nvidia-smi 2>&1 || echo "no nvidia-smi"
  python -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__); print(jax.devices())"
  # what the dev and examples extras bring: a missing one fails tests for that reason only
  python - <<'PY'
import importlib
for name in ["numpy", "tqdm", "chex", "hypothesis", "xdist", "safetensors", "sklearn", "matplotlib"]:
    try:
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except ImportError:
        print(f"{name} MISSING")
PY
} > "$out/device.txt" 2>&1
cat "$out/device.txt"

for part in $parts; do
  start=$(date +%s)
  case "$part" in
    tests)
      # worksteal, not CI's loadfile: with 8 workers the largest file (tests/test_docs.py,
      # about 3 minutes of CPU here, on one worker) would set the wall time
      timeout 480 python -m pytest -q -n 8 --dist worksteal -p no:cacheprovider \
        --junitxml="$out/tests.xml" --durations=25 ${PYTEST_ARGS:-} > "$out/tests.txt" 2>&1
      ;;
    startup)
      cache=$(mktemp -d)
      python benchmarks/startup.py --wall 3 > "$out/startup_gpu.txt" 2>&1 &&
        python benchmarks/startup.py --wall 3 --cache "$cache" > "$out/startup_gpu_cache.txt" 2>&1 &&
        JAX_PLATFORMS=cpu python benchmarks/startup.py --wall 3 > "$out/startup_cpu.txt" 2>&1
      ;;
    table)
      python benchmarks/device_table.py --budget-s "${TABLE_BUDGET_S:-200}" \
        --out "$out/results_device.md" > "$out/table.txt" 2>&1
      ;;
    *)
      echo "gpu_session.sh: unknown part '$part' (tests, startup, table)" >&2
      exit 2
      ;;
  esac
  rc=$?
  echo "$part: rc=$rc, $(($(date +%s) - start)) s" | tee -a "$out/summary.txt"
  if [ "$part" = tests ]; then tail -n 3 "$out/tests.txt"; fi
done
