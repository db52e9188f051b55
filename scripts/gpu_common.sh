# Sourced by the scripts that run ON the GPU machine (gpu_run.sh, gpu_ab.sh), from the repository
# root: $OUT (default ./gpu-out) with logs under $OUT/logs, `step`, the commit id and GoogleTest
# sources staged by scripts/gpu_prepare.sh, and `build_gpu` (configure + build into build-gpu/).
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT/logs"
export PATH="$PATH:/usr/local/cuda/bin"
status=0
step() {  # step NAME COMMAND...: runs, logs to $OUT/logs/NAME.log, records the result in summary.txt
  local name=$1; shift
  local start=$SECONDS
  if "$@" >"$OUT/logs/$name.log" 2>&1; then
    echo "ok    $name ($((SECONDS - start)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "FAIL  $name ($((SECONDS - start)) s): see logs/$name.log" | tee -a "$OUT/summary.txt"
    tail -n 40 "$OUT/logs/$name.log"
    status=1
  fi
}
[ -f .carry/commit ] && export SAMOYEDS_COMMIT="$(cat .carry/commit)"
build_gpu() {
  local cmake_args=()
  [ -f .carry/googletest/CMakeLists.txt ] && cmake_args=(-DSAMOYEDS_GTEST_SOURCE="$PWD/.carry/googletest")
  [ -f .carry/cudnn-frontend/include/cudnn_frontend.h ] && cmake_args+=(-DSAMOYEDS_CUDNN_FRONTEND_DIR="$PWD/.carry/cudnn-frontend/include")
  [ -f .carry/cudnn/include/cudnn.h ] && cmake_args+=(-DSAMOYEDS_CUDNN_INCLUDE_DIR="$PWD/.carry/cudnn/include")
  step configure cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSAMOYEDS_CUDA=ON "${cmake_args[@]}"
  step build cmake --build build-gpu -j 16
}
# The device tool returns only a few files: the logs travel as one archive.
pack_logs() { (cd "$OUT" && tar czf logs.tgz logs && rm -rf logs); }
