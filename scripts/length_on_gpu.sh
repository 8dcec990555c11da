#!/usr/bin/env bash
# The length study's long rows (results/fashion_mnist/length/plan.yaml, issue 20) on a machine with a CUDA
# GPU, in one call of under 10 minutes. JOBS sweeps of the plan share the GPU: the model is small, so one
# process leaves most of the card idle, and the plan's per-run lock gives each sweep the next unclaimed run.
# ONLY names the entries (default: the four 6000-step rows, three seeds each). Each run that finishes writes
# its result JSON and kept backbone; all of them, with the sweeps' logs, come back in one archive,
# $OUT/length_gpu.tar.gz, laid out as the plan's results_dir (the logs in length_on_gpu_logs/). Unpack it in the repository root and commit:
#   tar -xzf length_gpu.tar.gz && squeeze-span report results/fashion_mnist/length/runs \
#       --plan results/fashion_mnist/length/plan.yaml --out results/fashion_mnist/length
# Once a run of some settings has finished on the machine, the sweeps start no run of those settings that
# they expect to outlast LIMIT (sweep --time-limit); a run that LIMIT cuts off all the same is lost, unless the
# script is called again while the machine is warm: its run folder then resumes. Each result records the
# machine it ran on.
#
# Needs what scripts/device_check.sh needs (python3 with a CUDA torch; omegaconf from .device-site), and the
# Fashion-MNIST files, which the GPU machine lacks: copy them into the ignored data/ and carry both.
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#   device: carry [".device-site", "data/fashion-mnist"], command: OUT=$OUT bash scripts/length_on_gpu.sh
# DEVICE=cpu LIMIT=60 PLAN=<a small plan> ONLY=<its entries> rehearses it on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/length_on_gpu}
PLAN=${PLAN:-results/fashion_mnist/length/plan.yaml}
ONLY=${ONLY:-squeeze_6000 vicreg_syn_6000 squeeze_span_6000 vicreg_real_6000}
JOBS=${JOBS:-4}
LIMIT=${LIMIT:-520}  # seconds for the sweeps; the archive is written after them
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-data/fashion-mnist}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/.device-site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2

if ! "$PYTHON" -c "import torch, omegaconf, squeeze_span; assert '$DEVICE' == 'cpu' or torch.cuda.is_available()" \
    2>"$OUT/import.log"; then
    echo "length_on_gpu: needs $PYTHON with a CUDA GPU in torch and the package's dependencies: $(tail -1 "$OUT/import.log")"
    exit 2
fi
if ! ls "$DATA"/train-images-idx3-ubyte* >/dev/null 2>&1; then
    echo "length_on_gpu: no Fashion-MNIST in $DATA: copy /usr/share/datasets/fashion-mnist/*.gz there and carry it"
    exit 2
fi
{ nvidia-smi -L 2>/dev/null; "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    >"$OUT/machine.txt"
cat "$OUT/machine.txt"

# The same plan, reading the carried files: data_root is not part of a result's spec, so these results count as
# the plan's own; the runs and results land where the plan says, so a second call resumes what the first left.
plan=/tmp/length_on_gpu_plan.yaml
"$PYTHON" - "$PLAN" "$DATA" "$plan" <<'EOF'
import os
import sys
import yaml
source, root, target = sys.argv[1:]
with open(source) as file:
    plan = yaml.safe_load(file)
plan["data_root"] = os.path.abspath(root)
with open(target, "w") as file:
    yaml.safe_dump(plan, file, sort_keys=False)
EOF

logs=/tmp/length_on_gpu_logs
mkdir -p "$logs"
read -r -a entries <<<"$ONLY"
for job in $(seq "$JOBS"); do
    timeout "$LIMIT" "$PYTHON" -m squeeze_span.cli sweep "$plan" --only "${entries[@]}" --device "$DEVICE" \
        --time-limit "$(awk "BEGIN { print $LIMIT / 60 }")" \
        --no-progress >>"$logs/sweep_$job.log" 2>&1 &
    sleep 2  # the sweeps claim their first runs in turn
done
wait
grep -h "top-1\|rror" "$logs"/sweep_*.log | sort -u | tee "$OUT/summary.txt"

results=$("$PYTHON" -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['results_dir'])" "$PLAN")
found=()
for entry in "${entries[@]}"; do
    [ -d "$results/$entry" ] && found+=("$results/$entry")
done
tar -czf "$OUT/length_gpu.tar.gz" "${found[@]}" -C /tmp "$(basename "$logs")"
echo "length_on_gpu: $(grep -c "top-1" "$OUT/summary.txt") runs finished; results and logs in $OUT/length_gpu.tar.gz"
