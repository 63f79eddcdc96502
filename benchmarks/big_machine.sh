#!/usr/bin/env bash
# Issue 11's checks on a many-core machine with one CUDA GPU, in one run of under 10 minutes:
# the learner on cuda against SB3, trained steps/s of 14 x 32 CartPole with the learner on cuda
# and on cpu, time to 475 and trained steps/s against the number of workers, the image env.
#
# Usage, from the repository root (results.md and logs.txt go to $OUT, default /tmp/aiorl-big):
#     bash benchmarks/big_machine.sh           # issue 11: the learner (~9 minutes; the last steps may not fit)
#     bash benchmarks/big_machine.sh atari     # issue 15: Pong from EnvPool, CUDA learner (~8 minutes)
#
# A machine without gymnasium & co. (the lent H200 has torch, numpy, uvloop, click, rich,
# pytest): first download the wheels on a machine with pip access, into .whl/ (ignored by git):
#     for p in gymnasium==1.4.0 farama-notifications==0.0.4 aiomultiprocess==0.9.1 tomli-w==1.2.0 \
#              stable-baselines3==2.9.2 pytest-asyncio==1.5.0; do
#         python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#             --platform manylinux_2_28_x86_64 -d .whl "$p"; done
# then carry .whl along; this script installs them into /tmp/site when .whl/ exists.
# For `atari` add EnvPool and what it imports, and its Atari ROMs only (envpool_assets is 92 MB,
# mostly other simulators, and a device run carries at most 64 MiB; the ROMs are 0.6 MB), as a
# plain package folder that this script copies into /tmp/site:
#     for p in envpool==1.2.5 optree==0.20.0 dm-env==1.6 packaging==25.0; do ...the same download...; done
#     python3 - <<'PY'   # from a machine where envpool_assets is installed
#     import envpool_assets, pathlib, shutil
#     root, to = pathlib.Path(envpool_assets.__file__).parent, pathlib.Path(".whl/site/envpool_assets")
#     to.mkdir(parents=True, exist_ok=True)
#     shutil.copy(root / "__init__.py", to)
#     shutil.copytree(root / "atari", to / "atari", dirs_exist_ok=True)
#     PY
# Every step has its own time limit, so one slow step cannot take the rest down with it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/aiorl-big}"
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    if [ -d .whl/site ]; then cp -r .whl/site/. /tmp/site/; fi  # packages carried as folders (Atari ROMs)
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
started=$SECONDS
step() {  # step NAME SECONDS COMMAND...: run it with a time limit; tables to results.md, the rest to logs.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s, at $((SECONDS - started))s)" | tee -a "$OUT/results.md" "$OUT/logs.txt"
    timeout "$limit" "$@" >"$OUT/$name.out" 2>>"$OUT/logs.txt"
    echo "   exit $? after $((SECONDS - started))s" | tee -a "$OUT/results.md"
    cat "$OUT/$name.out" >>"$OUT/results.md"
    cat "$OUT/$name.out"
    rm -f "$OUT/$name.out"  # a device run brings back at most 8 files
}
{
    nproc
    python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no cuda')"
} | tee "$OUT/results.md"

if [ "${1:-learner}" = atari ]; then
    cd benchmarks
    # Pong preset's APPO, 8 EnvPool games per worker, learner on cuda (compiles at its first update, ~14 s).
    # The return reached after 4 minutes with 14 workers, then 2 workers for the scaling ratio.
    step pong_14_workers 330 python3 scaling.py --tasks pong --workers 14 --seconds 240 --device cuda --seeds 1 \
        --quiet-wait 0
    step pong_2_workers 120 python3 scaling.py --tasks pong --workers 2 --seconds 60 --device cuda --seeds 1 \
        --quiet-wait 0
    # Native vector envs (EnvPool, gymnasium's vectorized CartPole) as each of 14 workers' env, against
    # 14 processes stepping one alone at once and EnvPool alone with 14 threads: how they scale with workers.
    step vector_14_workers 90 python3 throughput.py --vector-only --workers 14 --repeats 2 --seconds 4
    echo "total $((SECONDS - started))s" | tee -a "$OUT/results.md"
    exit 0
fi

# Timings below are from an H200 with 16 cores and torch 2.11 (2026-11-30); the whole script took ~7 minutes.
step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider tests/test_learner.py tests/test_acting.py tests/test_frames.py \
    -k "cuda or gpu" -rs  # ~50 s
cd benchmarks
# Most wanted first (a run past the call's limit keeps what it wrote): steps added 2026-12-02.
# Workers acting on the GPU (worker_device="cuda"): issue 11's 40k trained steps/s for images.
step image_worker_gpu 90 python3 scaling.py --tasks image --device cuda --worker-device cuda --workers 2 14 \
    --seconds 8 --seeds 2 --quiet-wait 0
# Time to 475 with a CUDA learner, uncompiled (compiling takes ~14 s): does 14 workers' bigger batch save time?
step scaling_cartpole_cuda 60 python3 scaling.py --tasks cartpole --device cuda --no-compile --workers 2 14 --seeds 2 \
    --quiet-wait 0
# PPO only (the trainer's default; APPO's step is the same loss): eager, compiled, compiled with CUDA graphs, the
# CPU's written-out step compiled on the GPU (added 2026-12-03: enable it on CUDA if it wins), SB3.
step learner 100 python3 learner.py --devices cuda --algos ppo --mlp-batches 14336 --cnn-batches 3584 --repeats 5
# A CUDA learner compiles at its first update (~14 s): the warm-up waits for two updates.
step trained_cuda 70 python3 trained_throughput.py --workers 14 --device cuda --seconds 4 --repeats 3 --warmup 5
step trained_cuda_eager 45 python3 trained_throughput.py --workers 14 --device cuda --seconds 4 --repeats 2 \
    --option "algo=PPO(compile=False)"
step trained_cpu 45 python3 trained_throughput.py --workers 14 --device cpu --seconds 4 --repeats 2
# Time to 475 as a user scales the CartPole preset (learner on the CPU, the default device; one torch
# thread for the default MLP since 2026-12-02, see learner_threads.py): ~30 s.
step scaling_cartpole 50 python3 scaling.py --tasks cartpole --workers 1 2 4 8 14 --seeds 1 --quiet-wait 0
step scaling_image 90 python3 scaling.py --tasks image --device cuda --workers 2 14 --seconds 8 --seeds 2 --quiet-wait 0
# Learner placement: the default MLP's CPU learner takes 1 thread since 2026-12-02; try 8.
step trained_cpu_8_threads 45 python3 trained_throughput.py --workers 14 --device cpu --seconds 4 --repeats 2 \
    --option learner_threads=8
# A learner thread's extra torch threads with and without the main thread's OpenMP pool (~1 minute).
step learner_threads 75 python3 learner_threads.py --threads 2 8 14 --mlp-batches 2048 14336 --repeats 3
echo "total $((SECONDS - started))s" | tee -a "$OUT/results.md"
