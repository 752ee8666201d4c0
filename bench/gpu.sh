#!/usr/bin/env bash
# One measurement on a GPU machine, in one call: install what the machine lacks (wheels carried in .whl/, if
# any), run the tests that have CUDA paths, the evaluation benchmark on CUDA (fp32 / bf16 / compile, with the
# bf16-vs-fp32 agreement check), and `mix` / `study run` on the embedded mini-zoo with --device cuda.
# On a machine without CUDA it says so and runs the CPU parts only (quick sizes).
#
#   bash bench/gpu.sh            # logs go to $OUT (or ./gpu-out)
set -uo pipefail
out=${OUT:-./gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
py=${PYTHON:-python3}

if ! $py -c "import datasets" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# hfsoup itself, without its dependencies (the image has them; nothing can be fetched there).
$py -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    cuda=1; nvidia-smi -L 2>/dev/null
else
    cuda=0; echo "gpu.sh: no CUDA device here: GPU-only steps are skipped (CPU steps run at quick sizes)"
fi
$py -c "import torch, timm, datasets; print('torch', torch.__version__, '| timm', timm.__version__, '| datasets', datasets.__version__)"

step() { echo; echo "=== $1"; }
rc=0
if [ $cuda = 1 ]; then
    step "tests (whole suite, CUDA visible: default device is cuda)"
    timeout 300 $py -m pytest -q -p no:cacheprovider -m "not slow" tests 2>&1 | tee "$out/tests.log" | tail -15 \
        || rc=1
    step "bench_eval on CUDA: 10,000 images (a CIFAR-100 test pass), batch 500"
    $py bench/bench_eval.py --device cuda --images 10000 --batch-size 500 --repeat 3 2>&1 | tee "$out/bench_eval.log" \
        || rc=1
    dev=cuda
else
    step "bench_eval on CPU (quick)"
    $py bench/bench_eval.py --images 64 --repeat 1 --no-compile 2>&1 | tee "$out/bench_eval.log" || rc=1
    dev=cpu
fi

step "hfsoup mix on the mini-zoo, --device $dev --precision auto"
zoo=hfsoup/assets/mini_zoo/branches
tmp=$(mktemp -d)
hfsoup mix $zoo/b024-v1 $zoo/b024-v2 --alpha 0.5 --eval-split test --dataset sklearn:digits --device $dev \
    --precision auto --out "$tmp/soup" -q && $py - "$tmp/soup/soup.json" <<'EOF' || rc=1
import json, sys
soup = json.load(open(sys.argv[1]))
print(json.dumps({k: v for k, v in soup.items() if "precision" in k or k == "results"}, indent=1)[:2000])
EOF

step "hfsoup eval of the 24 mini-zoo branches on digits: fp32 against bf16 (--device $dev)"
for p in fp32 bf16; do
    hfsoup eval $zoo/* --eval-split test --dataset sklearn:digits --device $dev --precision $p -q --json \
        > "$tmp/eval-$p.json" || rc=1
done
$py - "$tmp/eval-fp32.json" "$tmp/eval-bf16.json" <<'PY' || rc=1
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
ra, rb = ({m["name"]: m for m in d["models"]} for d in (a, b))
dacc = max(abs(ra[k]["accuracy"] - rb[k]["accuracy"]) for k in ra)
dloss = max(abs(ra[k]["loss"] - rb[k]["loss"]) / ra[k]["loss"] for k in ra)
print(f"{len(ra)} models: max |accuracy fp32 - bf16| = {100 * dacc:.2f} points, "
      f"max relative loss change = {100 * dloss:.3f} %")
PY

step "hfsoup study run on the mini-zoo, --device $dev"
hfsoup study run hfsoup/assets/mini_zoo --epochs 16-40 --dataset sklearn:digits --device $dev --precision auto \
    --out "$tmp/study" -q 2>&1 | tail -20 || rc=1
rm -rf "$tmp"
exit $rc
