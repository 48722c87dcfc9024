#!/bin/bash
# make bench: speculative decoding with the MTP layer, dsv32-run decode tokens/s with --mtp on
# vs --mtp off in the same run, on the `small` preset with an MTP layer that drafts well
# (dsv32-mkmodel --mtp-predictable) and with a random one (--mtp: drafts almost never right,
# the cost of speculation without its gain). Greedy, faithful numerics, a 64-token prompt and
# 64 generated tokens; each configuration REPS times, interleaved, reported as min-max.
# THREADS=N passes --threads N (on a shared machine, 1 avoids timing the other tenants: the
# verify pass's 2 rows fork OpenMP work that waits for a busy core).
set -euo pipefail
: "${top_builddir:?}"
REPS=${REPS:-3}
GEN=${GEN:-64}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
run="$top_builddir/dsv32-run"
for kind in predictable random; do
        dir="$top_builddir/tests/tmp/bench-small-mtp-$kind"
        if [ ! -f "$dir/model.safetensors.index.json" ]; then
                echo "generating the small checkpoint with a $kind MTP layer in $dir ..."
                opt=--mtp
                [ $kind = predictable ] && opt=--mtp-predictable
                "$top_builddir/dsv32-mkmodel" --preset small $opt --no-tokenizer --out "$dir"
        fi
done
prompt=$(seq -s, 7 97 6200 | cut -d, -f1-64)

# decode tok/s, acceptance and tokens per pass of one run
one() { # dir mtp
        local err
        err=$("$run" --model "$1" --tokens "$prompt" --generate "$GEN" --mtp "$2" "${threads[@]}" --stats 2>&1 >/dev/null)
        local tps acc tpp
        tps=$(sed -n 's/.*decode: .* (\([0-9.]*\) tok\/s).*/\1/p' <<<"$err")
        acc=$(sed -n 's/.*(acceptance \([0-9.]*\)).*/\1/p' <<<"$err")
        tpp=$(sed -n 's/.*, \([0-9.]*\) tokens per pass/\1/p' <<<"$err")
        echo "${tps:-?} ${acc:--} ${tpp:-1.00}"
}

for kind in predictable random; do
        dir="$top_builddir/tests/tmp/bench-small-mtp-$kind"
        off=() on=()
        acc=- tpp=-
        for ((i = 0; i < REPS; i++)); do
                read -r t _ _ < <(one "$dir" off)
                off+=("$t")
                read -r t acc tpp < <(one "$dir" on)
                on+=("$t")
        done
        awk -v kind="$kind" -v acc="$acc" -v tpp="$tpp" -v off="${off[*]}" -v on="${on[*]}" -v gen="$GEN" 'BEGIN {
                n = split(off, a, " "); split(on, b, " ");
                amin = amax = a[1]; bmin = bmax = b[1];
                for (i = 2; i <= n; i++) { if (a[i] < amin) amin = a[i]; if (a[i] > amax) amax = a[i];
                                           if (b[i] < bmin) bmin = b[i]; if (b[i] > bmax) bmax = b[i]; }
                printf "small preset, %s MTP layer, greedy, %d tokens: decode %.1f-%.1f tok/s with --mtp on vs %.1f-%.1f with --mtp off: ratio %.2fx (best vs best); acceptance %s, %s tokens per verify pass\n",
                       kind, gen, bmin, bmax, amin, amax, bmax / amax, acc, tpp }'
done
