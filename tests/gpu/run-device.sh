#!/bin/bash
# Builds and runs everything the CUDA backend has on a machine with a GPU, in one go, with
# nothing but a compiler and CUDA: no configure, none of the daemon's Debian libraries
# (jansson, liburing, msgpack, pcre2, systemd). It compiles straight from kernels/,
# tests/gpu/ and kernels/dev/:
#   - the CPU reference backend (kernels/cpu) and the backend loader (kernels/backend_plugin.c)
#   - the plugin dsv32-backend-cuda.so (nvcc, sm_90a + compute_90 PTX, warnings as errors)
#   - the GPU tests (tests/gpu/test-gpu-*.c: test-gpu-ops, the conformance program, links the
#     op families' tests in) and the CPU-side tests of this directory
#   - the harnesses (kernels/dev/*.cu)
# then runs every test (a skip for lack of a GPU counts as a failure here) and the harnesses
# at the 671B shapes, then decode and an 8K-token prefill on v32-layers:8 (the 671B widths,
# weights made on the device by the fill_random op: no checkpoint on disk) and weight streaming
# from the page cache (a checkpoint dsv32-mkmodel writes) when a configured build is there
# (dsv32-run, tests/bench/bench-{decode,prefill,load}), and writes under $OUT (default ./device-out):
#   report.txt   summary: device, toolchain, per-test result and time, harness table
#   results.csv  kind,name,variant,shape,ms,value,unit,ceiling_name,ceiling,fraction,err,status
#   build.log    compiler output, resource usage (registers, spills) of every kernel
#   tests.log    the tests' output      harness.log  the harnesses' output
# Exit status: 0 when everything built, passed and validated; 1 otherwise.
#
# Usage: tests/gpu/run-device.sh [--build-only] [--quick] [--jobs N]
#   --build-only  build everything, then run the CPU-side tests and check that the GPU
#                 tests and harnesses skip cleanly (exit 77) when no GPU is present
#   --quick       fewer harness shapes (for a short lease)
# Environment: OUT, BUILD (build directory, default /tmp/dsv32-device-build), NVCC, CC, CXX,
# TEST_TIMEOUT (seconds per test, default 400), HARNESS_TIMEOUT (default 300), DSV32_RUN (a
# dsv32-run built with ./configure, default the tree's own: prefill and batch-1 decode) and
# DSV32_BENCH_DECODE (tests/bench/bench-decode of such a build: decode at batch 1/16/64 and
# contexts 4K/32K/128K against the bandwidth roofline), DSV32_BENCH_PREFILL (bench-prefill:
# 8K tokens against the FP8 GEMM rate), DSV32_BENCH_LOAD and DSV32_MKMODEL (bench-load: weight
# streaming from the page cache against the pinned host-to-device rate; LOAD_PRESET the
# checkpoint it writes, default m474).
set -u -o pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$PWD/device-out}
BUILD=${BUILD:-/tmp/dsv32-device-build}
CC=${CC:-gcc}
CXX=${CXX:-g++}
JOBS=$(nproc 2>/dev/null || echo 4)
BUILD_ONLY=0
QUICK=0
while [ $# -gt 0 ]; do
        case "$1" in
        --build-only) BUILD_ONLY=1 ;;
        --quick) QUICK=1 ;;
        --jobs) shift; JOBS=$1 ;;
        -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
        esac
        shift
done
TEST_TIMEOUT=${TEST_TIMEOUT:-400}
HARNESS_TIMEOUT=${HARNESS_TIMEOUT:-300}

mkdir -p "$OUT" "$BUILD"/obj "$BUILD"/bin "$BUILD"/tests/gpu
REPORT=$OUT/report.txt CSV=$OUT/results.csv BLOG=$OUT/build.log TLOG=$OUT/tests.log HLOG=$OUT/harness.log
: >"$REPORT"; : >"$BLOG"; : >"$TLOG"; : >"$HLOG"
echo "kind,name,variant,shape,ms,value,unit,ceiling_name,ceiling,fraction,err,status" >"$CSV"
FAILED=0
say() { echo "$@" | tee -a "$REPORT"; }
fail() { say "FAIL: $*"; FAILED=1; }

# ---------------------------------------------------------------- toolchain
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
        fail "no nvcc (set NVCC)"
        exit 1
fi
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
CUDA_LIB=
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" "$CUDA_HOME/targets/x86_64-linux/lib" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
        if ls "$d"/libcublasLt.so* >/dev/null 2>&1 && ls "$d"/libcudart.so* >/dev/null 2>&1; then
                CUDA_LIB=$d
                break
        fi
done
if [ -z "$CUDA_LIB" ]; then
        CUDA_LIB=$(dirname "$(find / -name 'libcublasLt.so*' -not -path '*/proc/*' 2>/dev/null | head -1)" 2>/dev/null)
fi
CUDA_LIBS="-L$CUDA_LIB -Wl,-rpath,$CUDA_LIB -lcudart -lcublasLt -lcublas"
say "dsv32d CUDA backend: device run $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "source $SRC, build $BUILD, output $OUT"
say "nvcc: $("$NVCC" --version | tail -2 | head -1)"
say "host compilers: $($CC --version | head -1); $($CXX --version | head -1)"
say "CUDA libraries: $CUDA_LIB"
if command -v nvidia-smi >/dev/null 2>&1; then
        say "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | head -2)"
else
        say "GPU: no nvidia-smi"
fi

# ---------------------------------------------------------------- build
cat >"$BUILD/config.h" <<'EOF'
/* config.h for builds without configure (tests/gpu/run-device.sh) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#define PACKAGE "dsv32d"
#define PACKAGE_VERSION "device-run"
#define VERSION "device-run"
#define HAVE_CUDA 1
EOF
WERROR=${WERROR:--Werror}
set_flags() {
        WARN="-Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Wvla $WERROR"
        CFLAGS_ALL="-std=gnu11 -g -O2 -fopenmp -pthread $WARN -I$BUILD -I$SRC"
        NVCC_ARCH="-gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90"
        if [ -n "$WERROR" ]; then
                NVCC_WARN="-Werror all-warnings -Xcompiler -Wall,-Wextra,-Werror,-Wno-missing-field-initializers,-Wno-unused-parameter"
                CXX_WERROR=-Werror
        else
                NVCC_WARN="-Xcompiler -Wall,-Wextra,-Wno-missing-field-initializers,-Wno-unused-parameter"
                CXX_WERROR=
        fi
        NVFLAGS="-std=c++17 -O3 $NVCC_ARCH $NVCC_WARN -I$SRC -I$BUILD"
}
set_flags

# jobs file: one command per line, run in parallel (each with its own log, appended to
# build.log in order); any failure fails the build
run_jobs() {
        local list=$1 rc=0 logs=$BUILD/joblogs
        rm -rf "$logs"
        mkdir -p "$logs"
        nl -ba -w1 -s' ' "$list" | LOGS=$logs xargs -d '\n' -P "$JOBS" -n 1 bash -c \
                'n=${1%% *}; cmd=${1#* }; { echo "\$ $cmd"; eval "$cmd"; } >"$LOGS/$n.log" 2>&1 || { echo "BUILD FAILED: $cmd" >>"$LOGS/$n.log"; exit 255; }' _ || rc=1
        for f in $(ls "$logs" | sort -n); do
                cat "$logs/$f" >>"$BLOG"
        done
        return $rc
}
write_jobs() {
        J=$BUILD/jobs.txt
        : >"$J"
        CPU_OBJS=
        # the CPU backend's sources as kernels/local.mk lists them, with its flags
        for f in $(sed -n '/^libdsv32kernels_la_SOURCES/,/^$/p' "$SRC/kernels/local.mk" | grep -o 'kernels/cpu/[a-z0-9_]*\.c' | sed 's|kernels/cpu/||; s|\.c$||'); do
                echo "$CC $CFLAGS_ALL -O3 -fopenmp-simd -ffp-contract=off -c $SRC/kernels/cpu/$f.c -o $BUILD/obj/cpu_$f.o" >>"$J"
                CPU_OBJS="$CPU_OBJS $BUILD/obj/cpu_$f.o"
        done
        echo "$CC $CFLAGS_ALL -c $SRC/daemon/util.c -o $BUILD/obj/util.o" >>"$J"
        echo "$CC $CFLAGS_ALL -c $SRC/daemon/runtime/sampler.c -o $BUILD/obj/sampler.o" >>"$J"
        echo "$CC $CFLAGS_ALL -DDSV_PLUGIN_DIR='\"\"' -DDSV_PLUGIN_BUILDDIR='\"$BUILD\"' -c $SRC/kernels/backend_plugin.c -o $BUILD/obj/backend_plugin.o" >>"$J"
        PLUGIN_OBJS=
        for f in backend_cuda elementwise norm linear kv indexer mla moe sample fill; do
                echo "$NVCC $NVFLAGS -Xcompiler -fPIC,-fvisibility=hidden -Xptxas -v -c $SRC/kernels/cuda/$f.cu -o $BUILD/obj/cuda_$f.o" >>"$J"
                PLUGIN_OBJS="$PLUGIN_OBJS $BUILD/obj/cuda_$f.o"
        done
        for h in fp8_gemm indexer_scores topk mla_decode; do
                echo "$NVCC $NVFLAGS -c $SRC/kernels/dev/$h.cu -o $BUILD/obj/dev_$h.o" >>"$J"
        done
        # test-gpu-ops: the conformance program, the op families' tests linked in (GT_CONFORMANCE)
        OP_FAMILIES="test-gpu-elementwise test-gpu-norm test-gpu-linear test-gpu-kv test-gpu-indexer test-gpu-mla test-gpu-moe test-gpu-sample"
        TESTS_C="test-cuda-plan test-backend-plugin test-gpu-backend test-gpu-ops test-gpu-sample"
        for t in $TESTS_C; do
                def=
                [ "$t" = test-gpu-ops ] && def=-DGT_CONFORMANCE
                echo "$CC $CFLAGS_ALL $def -c $SRC/tests/gpu/$t.c -o $BUILD/obj/$t.o" >>"$J"
        done
        OPS_OBJS=
        for t in $OP_FAMILIES; do
                echo "$CC $CFLAGS_ALL -DGT_CONFORMANCE -c $SRC/tests/gpu/$t.c -o $BUILD/obj/ops-$t.o" >>"$J"
                OPS_OBJS="$OPS_OBJS $BUILD/obj/ops-$t.o"
        done
        echo "$CXX -std=gnu++17 -g -O2 -ffp-contract=off -fno-strict-aliasing -fopenmp -Wall -Wextra $CXX_WERROR -Wno-missing-field-initializers -Wno-unused-parameter -Wno-unknown-pragmas -I$SRC/tests/gpu/emu -I$BUILD -I$SRC -c $SRC/tests/gpu/test-cuda-emu.cc -o $BUILD/obj/test-cuda-emu.o" >>"$J"
        echo "$CC $CFLAGS_ALL -fPIC -shared -o $BUILD/tests/gpu/dsv32-backend-fake.so $SRC/tests/gpu/fake_plugin.c" >>"$J"
        echo "$CC $CFLAGS_ALL -fPIC -shared -DDSV_FAKE_BAD_ABI -o $BUILD/tests/gpu/dsv32-backend-badabi.so $SRC/tests/gpu/fake_plugin.c" >>"$J"
        echo "$CC $CFLAGS_ALL -fPIC -shared -DDSV_FAKE_SECOND -o $BUILD/tests/gpu/dsv32-backend-fake2.so $SRC/tests/gpu/fake_plugin.c" >>"$J"
        # the CPU emulation of the plugin (tests/gpu/emu/local.mk): test-backend-plugin checks
        # that auto never picks it and that --backend cuda names it
        EMU_CXXFLAGS="-std=gnu++17 -g -O2 -fPIC -fvisibility=hidden -ffp-contract=off -fno-strict-aliasing -Wall -Wextra $CXX_WERROR -Wno-missing-field-initializers -Wno-unused-parameter -Wno-unknown-pragmas -I$SRC/tests/gpu/emu -I$SRC -I$BUILD"
        EMU_OBJS=
        mkdir -p "$BUILD/tests/gpu/emu/obj"
        for f in backend_cuda elementwise norm linear kv indexer mla moe sample fill; do
                echo "perl $SRC/tests/gpu/emu/cu2cc.pl $SRC/kernels/cuda/$f.cu $BUILD/tests/gpu/emu/obj/$f.cc && $CXX $EMU_CXXFLAGS -c -o $BUILD/tests/gpu/emu/obj/$f.o $BUILD/tests/gpu/emu/obj/$f.cc" >>"$J"
                EMU_OBJS="$EMU_OBJS $BUILD/tests/gpu/emu/obj/$f.o"
        done
        for f in runtime blas; do
                echo "$CXX $EMU_CXXFLAGS -c -o $BUILD/tests/gpu/emu/obj/$f.o $SRC/tests/gpu/emu/$f.cc" >>"$J"
                EMU_OBJS="$EMU_OBJS $BUILD/tests/gpu/emu/obj/$f.o"
        done
}

T0=$(date +%s)
BUILD_OK=1
J=$BUILD/jobs.txt
write_jobs
if ! run_jobs "$J"; then
        # a newer compiler's new warning must not cost the device session: report it, then
        # build again without -Werror and run everything anyway
        fail "the build with warnings as errors failed (first errors below); building again without -Werror"
        grep -B2 -A8 -m3 "error" "$BLOG" | head -40 | tee -a "$REPORT"
        WERROR=
        set_flags
        write_jobs
        run_jobs "$J" || BUILD_OK=0
fi
if [ $BUILD_OK = 1 ]; then
        : >"$J"
        echo "$CXX -shared -Wl,--no-undefined -Wl,-soname,dsv32-backend-cuda.so -o $BUILD/dsv32-backend-cuda.so $PLUGIN_OBJS $CUDA_LIBS" >>"$J"
        echo "$CXX -shared -Wl,--no-undefined -Wl,-soname,dsv32-backend-cuda.so -pthread -o $BUILD/tests/gpu/emu/dsv32-backend-cuda.so $EMU_OBJS" >>"$J"
        for h in fp8_gemm indexer_scores topk mla_decode; do
                echo "$CXX -o $BUILD/bin/$h $BUILD/obj/dev_$h.o $CUDA_LIBS" >>"$J"
        done
        LOADER="$BUILD/obj/backend_plugin.o $CPU_OBJS $BUILD/obj/util.o"
        for t in $TESTS_C; do
                extra=
                [ "$t" = test-gpu-sample ] && extra=$BUILD/obj/sampler.o
                [ "$t" = test-gpu-ops ] && extra="$OPS_OBJS $BUILD/obj/sampler.o"
                echo "$CC -fopenmp -pthread -o $BUILD/bin/$t $BUILD/obj/$t.o $extra $LOADER -ldl -lm" >>"$J"
        done
        echo "$CXX -fopenmp -pthread -o $BUILD/bin/test-cuda-emu $BUILD/obj/test-cuda-emu.o $LOADER -ldl -lm" >>"$J"
        run_jobs "$J" || BUILD_OK=0
fi
say "build: $([ $BUILD_OK = 1 ] && echo ok || echo FAILED) in $(( $(date +%s) - T0 )) s (details: build.log)"
if [ $BUILD_OK = 0 ]; then
        grep -B2 -A12 -m5 "error\|BUILD FAILED" "$BLOG" | head -60 | tee -a "$REPORT"
        exit 1
fi
{
        echo "== machine code in the plugin"
        CUOBJDUMP=$(command -v cuobjdump || echo "$CUDA_HOME/bin/cuobjdump")
        "$CUOBJDUMP" --list-elf "$BUILD/dsv32-backend-cuda.so" 2>&1 | head -20 || true
        "$CUOBJDUMP" --list-ptx "$BUILD/dsv32-backend-cuda.so" 2>&1 | head -5 || true
        echo "== kernels with spills or a stack frame"
        grep -B1 "bytes stack frame" "$BLOG" | grep -v '^--' | paste - - | grep -v " 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads" | head -40 || true
} >>"$BLOG" 2>&1

# ---------------------------------------------------------------- run
export top_builddir=$BUILD top_srcdir=$SRC DSV32_BACKEND_PATH=$BUILD OMP_NUM_THREADS=${OMP_NUM_THREADS:-$JOBS}
[ $BUILD_ONLY = 0 ] && export DSV32_REQUIRE_GPU=1
run_test() { # name: runs bin/name, records the result
        local t=$1 s rc status
        s=$(date +%s.%N)
        echo "=== $t" >>"$TLOG"
        timeout "$TEST_TIMEOUT" "$BUILD/bin/$t" >>"$TLOG" 2>&1
        rc=$?
        local secs
        secs=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        case $rc in
        0) status=pass ;;
        77) status=skip ;;
        124|137) status=timeout ;;
        *) status=fail ;;
        esac
        echo "test,$t,,,$secs,,,,,,,$status" >>"$CSV"
        printf '  %-24s %-8s %7.1f s\n' "$t" "$status" "$secs" | tee -a "$REPORT"
        if [ $BUILD_ONLY = 1 ]; then
                case "$t" in
                test-cuda-plan|test-backend-plugin|test-cuda-emu) [ $rc = 0 ] || FAILED=1 ;;
                *) [ $rc = 77 ] || [ $rc = 0 ] || FAILED=1 ;;
                esac
        else
                [ $rc = 0 ] || FAILED=1
        fi
}
say "tests:"
for t in test-cuda-emu $TESTS_C; do
        run_test "$t"
done

say "harnesses:"
run_harness() { # name args...: appends its CSV rows
        local h=$1 rc
        shift
        echo "=== $h $*" >>"$HLOG"
        timeout "$HARNESS_TIMEOUT" "$BUILD/bin/$h" --csv "$BUILD/$h.csv" "$@" >>"$HLOG" 2>&1
        rc=$?
        if [ -f "$BUILD/$h.csv" ]; then
                sed 's/^/harness,/' "$BUILD/$h.csv" >>"$CSV"
                rm -f "$BUILD/$h.csv"
        fi
        if [ $BUILD_ONLY = 1 ]; then
                [ $rc = 77 ] || [ $rc = 0 ] || { fail "$h exited $rc"; }
        else
                [ $rc = 0 ] || fail "$h exited $rc (see harness.log)"
        fi
        return 0
}
if [ $QUICK = 1 ]; then
        run_harness fp8_gemm --reps 10 --shape 1,1536,7168 --shape 64,7168,16384 --shape 4096,7168,16384 --shape 4096,24576,1536
else
        run_harness fp8_gemm
fi
CEIL=$(grep '^harness,fp8_gemm,ceiling' "$CSV" | awk -F, '{print $6}' | paste -sd, -)
if [ -n "$CEIL" ] && [ "$(echo "$CEIL" | tr ',' '\n' | wc -l)" = 3 ]; then
        export DSV_CEILINGS=$(echo "$CEIL" | awk -F, '{printf "copy=%s,bf16=%s,fp8=%s", $1, $2, $3}')
fi
if [ $QUICK = 1 ]; then
        run_harness indexer_scores --reps 10 --case 1,131072,0 --case 64,131072,0 --case 64,131072,1
        run_harness topk --reps 10 --case 1,131072 --case 64,131072 --case 64,1048576
        run_harness mla_decode --reps 10 --case 64,32768 --case 128,32768
else
        run_harness indexer_scores
        run_harness topk
        run_harness mla_decode
fi
# decode on the 671B widths with no checkpoint on disk: v32-layers:8 (3 dense + 5 MoE layers of
# the real model) made in device memory by the plugin's fill_random op. Needs a dsv32-run built
# with ./configure (the daemon's libraries: jansson, liburing): $DSV32_RUN or the tree's own;
# batch 1, contexts 4K and 32K (a prompt of 2-character ids on the command line: 128K does not
# fit in one argument). Figures, not tests.
DSV32_RUN=${DSV32_RUN:-$SRC/dsv32-run}
say "decode (dsv32-run --backend cuda --model v32-layers:8, batch 1):"
if [ $BUILD_ONLY = 1 ]; then
        say "  skipped (--build-only)"
elif ! "$DSV32_RUN" --version >/dev/null 2>&1; then
        say "  skipped: no runnable dsv32-run at $DSV32_RUN (build the tree with ./configure && make, or set DSV32_RUN)"
else
        ctxs="4096 32768"
        [ $QUICK = 1 ] && ctxs=4096
        for ctx in $ctxs; do
                toks=$(seq 0 $((ctx - 1)) | awk '{ printf "%s%d", (NR > 1 ? "," : ""), 1 + $1 % 9 }')
                echo "=== decode v32-layers:8 context $ctx" >>"$HLOG"
                DSV32_BACKEND_PATH=$BUILD timeout "$HARNESS_TIMEOUT" "$DSV32_RUN" --backend cuda --model v32-layers:8 \
                        --tokens "$toks" --generate 64 --stats >>"$HLOG" 2>"$BUILD/decode.err"
                rc=$?
                cat "$BUILD/decode.err" >>"$HLOG"
                line=$(grep '^prefill:' "$BUILD/decode.err")
                if [ $rc != 0 ] || [ -z "$line" ]; then
                        fail "decode v32-layers:8 context $ctx: exit $rc (see harness.log)"
                        continue
                fi
                # "prefill: N tokens in S s (R tok/s); decode: M tokens in S s (R tok/s), P passes"
                ms=$(sed -E 's/.*decode: ([0-9]+) tokens in ([0-9.]+) s.*/\1 \2/' <<<"$line" | awk '{ if ($1 > 0) printf "%.3f", 1000 * $2 / $1 }')
                pre=$(sed -E 's/^prefill: [0-9]+ tokens in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/' <<<"$line")
                echo "bench,decode,v32-layers:8,b1_ctx$ctx,$ms,,ms/token,,,,,ok" >>"$CSV"
                echo "bench,prefill,v32-layers:8,ctx$ctx,,$pre,tok/s,,,,,ok" >>"$CSV"
                say "  context $ctx: $ms ms/token decode, prefill $pre tok/s ($(grep '^load:' "$BUILD/decode.err" | head -1))"
        done
fi
# decode at batch 1 / 16 / 64 and contexts 4K / 32K / 128K (quick: batch 1 at 4K) on
# v32-layers:8, each against the bandwidth roofline of the same run (the bytes a step must
# read over the device's copy bandwidth): tests/bench/bench-decode, built with ./configure
# like dsv32-run ($DSV32_BENCH_DECODE or the tree's own); the context is made by copying one
# prefilled page on the device, not by prefilling it. Combinations whose KV pool does not fit
# beside the weights are skipped (a line says so). Figures, not tests.
DSV32_BENCH_DECODE=${DSV32_BENCH_DECODE:-$SRC/tests/bench/bench-decode}
say "decode vs the roofline (bench-decode --backend cuda --model v32-layers:8):"
if [ $BUILD_ONLY = 1 ]; then
        say "  skipped (--build-only)"
elif [ ! -x "$DSV32_BENCH_DECODE" ]; then
        say "  skipped: no bench-decode at $DSV32_BENCH_DECODE (build the tree with ./configure && make check, or set DSV32_BENCH_DECODE)"
else
        bd_args=(--batch 1 --batch 16 --batch 64 --context 4096 --context 32768 --context 131072 --steps 16)
        [ $QUICK = 1 ] && bd_args=(--batch 1 --context 4096 --steps 8)
        echo "=== bench-decode v32-layers:8 ${bd_args[*]}" >>"$HLOG"
        if DSV32_BACKEND_PATH=$BUILD timeout "$HARNESS_TIMEOUT" "$DSV32_BENCH_DECODE" --backend cuda --model v32-layers:8 \
                "${bd_args[@]}" --csv "$CSV" >"$BUILD/bench-decode.out" 2>&1; then
                sed 's/^/  /' "$BUILD/bench-decode.out" | tee -a "$REPORT"
        else
                fail "bench-decode v32-layers:8: exit $? (see harness.log)"
        fi
        cat "$BUILD/bench-decode.out" >>"$HLOG"
fi
# prefill of 8K tokens (quick: 4K) on v32-layers:8: tokens/s and TFLOP/s, set against the FP8
# linear rate the same program measures through the plugin on [T, hidden] x [intermediate,
# hidden]^T, and against the fp8_gemm harness's cuBLASLt ceiling of this run (--gemm-tflops):
# tests/bench/bench-prefill, built with ./configure ($DSV32_BENCH_PREFILL or the tree's own).
DSV32_BENCH_PREFILL=${DSV32_BENCH_PREFILL:-$SRC/tests/bench/bench-prefill}
bench_tool() { # label program args...: runs a benchmark of the configured build into the report
        local label=$1 prog=$2
        shift 2
        say "$label:"
        if [ $BUILD_ONLY = 1 ]; then
                say "  skipped (--build-only)"
                return 0
        elif [ ! -x "$prog" ]; then
                say "  skipped: no $(basename "$prog") at $prog (build the tree with ./configure && make check)"
                return 0
        fi
        echo "=== $(basename "$prog") $*" >>"$HLOG"
        if DSV32_BACKEND_PATH=$BUILD timeout "$HARNESS_TIMEOUT" "$prog" "$@" --csv "$CSV" >"$BUILD/bench.out" 2>&1; then
                sed 's/^/  /' "$BUILD/bench.out" | tee -a "$REPORT"
        else
                fail "$(basename "$prog") $*: exit $? (see harness.log)"
        fi
        cat "$BUILD/bench.out" >>"$HLOG"
}
FP8_TFLOPS=$(sed -n 's/.*fp8=\([0-9.]*\).*/\1/p' <<<"${DSV_CEILINGS:-}")
bp_args=(--backend cuda --model v32-layers:8 --tokens 8192)
[ $QUICK = 1 ] && bp_args=(--backend cuda --model v32-layers:8 --tokens 4096)
[ -n "$FP8_TFLOPS" ] && bp_args+=(--gemm-tflops "$FP8_TFLOPS")
bench_tool "prefill vs the FP8 GEMM rate (bench-prefill ${bp_args[*]})" "$DSV32_BENCH_PREFILL" "${bp_args[@]}"
# weight streaming from the page cache into device memory against the pinned host-to-device
# copy rate of the same run: tests/bench/bench-load on a checkpoint that dsv32-mkmodel writes
# here ($LOAD_PRESET, default m474: 0.54 GB in ~270 reads of 2 MiB, enough for the loader's
# steady state; v32-layers:1, 15 GB, takes minutes to write), read once into the page cache.
DSV32_BENCH_LOAD=${DSV32_BENCH_LOAD:-$SRC/tests/bench/bench-load}
DSV32_MKMODEL=${DSV32_MKMODEL:-$SRC/dsv32-mkmodel}
if [ $BUILD_ONLY = 0 ] && [ -x "$DSV32_BENCH_LOAD" ] && [ -x "$DSV32_MKMODEL" ]; then
        ck_preset=${LOAD_PRESET:-m474}
        rm -rf "$BUILD/ckpt"
        s=$(date +%s.%N)
        if timeout "$HARNESS_TIMEOUT" "$DSV32_MKMODEL" --preset "$ck_preset" --out "$BUILD/ckpt" >>"$HLOG" 2>&1; then
                say "checkpoint $ck_preset written in $(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s ($(du -sh "$BUILD/ckpt" | cut -f1))"
                bench_tool "weight streaming vs the pinned copy rate (bench-load, $ck_preset)" "$DSV32_BENCH_LOAD" \
                        --backend cuda --model "$BUILD/ckpt" --reps 2
        else
                fail "dsv32-mkmodel --preset $ck_preset: exit $? (see harness.log)"
        fi
        rm -rf "$BUILD/ckpt"
else
        say "weight streaming vs the pinned copy rate (bench-load):"
        if [ $BUILD_ONLY = 1 ]; then
                say "  skipped (--build-only)"
        else
                say "  skipped: no bench-load at $DSV32_BENCH_LOAD or no dsv32-mkmodel at $DSV32_MKMODEL (build the tree with ./configure && make check)"
        fi
fi
if [ $BUILD_ONLY = 0 ]; then
        {
                echo
                printf '  %-16s %-26s %-34s %10s %10s %-8s %7s %s\n' harness variant shape ms value unit "%ceil" status
                grep '^harness,' "$CSV" | grep -v ',ceiling,' | awk -F, '{printf "  %-16s %-26s %-34s %10s %10s %-8s %6.1f%% %s\n", $2, $3, $4, $5, $6, $7, 100*$10, $12}'
                echo
                grep ',ceiling,' "$CSV" | awk -F, '{printf "  ceiling %-16s %s %s\n", $4, $6, $7}' | sort -u
        } | tee -a "$REPORT"
fi
say "result: $([ $FAILED = 0 ] && echo PASS || echo FAIL)"
exit $FAILED
