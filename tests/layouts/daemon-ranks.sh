#!/bin/bash
# dsv32d --ranks N --parallel ep,dp on the CPU (daemon/runtime/ranks.h): on tiny (and small
# with DSV32_RANKS_SMALL=1), 2 and 4 ranks serve the same concurrent clients as one rank with
# the same output, token for token: prompts of different lengths (one to several KV pages, a
# shared prefix for the prefix cache), a session reused across two requests (the second cut
# back into a shared page: a copy-on-write copy), seeded sampling, and a session saved at
# SIGTERM and restored by the next start. ep,dp runs attention data-parallel: each request
# and its session is placed on one rank, whose own pool holds its pages; after the
# concurrent clients ran on more than one rank, dsv32 status lists every rank's pages and
# shows two concurrent generations' pages on two ranks,
# both of session talk's requests ran on one rank and the restored one on the rank its
# pages went to (the log names the rank of each request); after a restart the Loaded line
# lists each rank's pool with the restored sessions' pages that dsv32 session list places
# there. dsv32-openai's /metrics gives each rank's pool under a rank label. A session whose
# rank is full (pinned sessions) moves to the rank with room, with the same output as one
# rank. The start log names each rank's
# experts and weight bytes. A fault injected in one rank's pass (DSV32_TEST_RANK_FAULT=RANK:PASS, tests only)
# gives the client an ERROR naming it and dsv32d exits non-zero within 20 s. Bad settings
# are refused at start with the cause. Speculative decoding (mtp = on) through 2 and 4 ranks
# gives one rank's tokens (ep,tp too). --parallel ep,tp on 2 ranks (attention heads, dense layers and
# lm_head split too) serves the same clients with the same output, and its start log names
# each rank's weight bytes, fewer than an ep,dp rank's. Under ThreadSanitizer (make check-tsan) a report in any log fails.
set -euo pipefail
: "${top_builddir:?}" "${top_srcdir:?}"
NAME=daemon-ranks
DAEMON_ARGS=(--threads 2 --kv-cache-mb 32 --batch-tokens 4096 --snapshot-interval 0)
. "$top_srcdir/tests/daemon-lib.sh"

# the requests: token ids, so that the pages are known. P: 150 tokens (two full pages and a
# partial one). Five clients at once, then, one after the other: a session "other" whose
# prompt maps talk's first page from the prefix cache, and talk again, cut back to 40
# tokens inside that shared page (a copy-on-write copy).
P=$(seq -s, 1 150)
P40=$(seq -s, 1 40)
P100=$(seq -s, 1 100)
clients() { # name: writes $work/$name.out
        local name=$1 s="$work/$1.sock" pids=()
        gen() { "$cli" --socket "$s" generate --ids "$@"; }
        gen --max-tokens 12 --tokens 5,6,7 >"$work/$name.c1" & pids+=($!)
        gen --max-tokens 10 --tokens "$P,200,201" >"$work/$name.c2" & pids+=($!)
        gen --max-tokens 10 --tokens "$P,300" >"$work/$name.c3" & pids+=($!)
        gen --max-tokens 16 --temperature 0.9 --top-p 0.95 --seed 7 --tokens "$(seq -s, 9 40)" >"$work/$name.c4" & pids+=($!)
        gen --max-tokens 8 --session talk --tokens "$P,$(seq -s, 400 409)" >"$work/$name.c5" & pids+=($!)
        for p in "${pids[@]}"; do wait "$p" || bad "$name: a client failed"; done
        gen --max-tokens 6 --session other --tokens "$P100,500" >"$work/$name.c6" || bad "$name: session other failed"
        gen --max-tokens 8 --session talk --tokens "$P40,600" >"$work/$name.c7" || bad "$name: talk's second turn failed"
        "$cli" --socket "$s" session pin talk >/dev/null || bad "$name: session pin"
        cat "$work/$name".c[1-7] >"$work/$name.out"
}

# after a restart: the restored session goes on
restored() { # name
        "$cli" --socket "$work/$1.sock" generate --ids --max-tokens 8 --session talk --tokens "$P40,600,$(seq -s, 700 720)" \
                >"$work/$1.rest" || bad "$1: the request on the restored session failed"
}

serve() { # model-name model ranks [layout]
        local name="$1-$3${4:+-${4/,/}}" n=$3 layout=${4:-ep,dp}
        shift 3
        local args=(--ranks "$n")
        talk_rank=
        [ "$n" -gt 1 ] && args+=(--parallel "$layout")
        rm -rf "$work/state-$name"
        mkdir -p "$work/state-$name"
        start "$name" "$model" "${args[@]}" --state-directory "$work/state-$name" || return 0
        clients "$name"
        [ "$n" -gt 1 ] && [ "$layout" = ep,dp ] && dp_placed "$name"
        stop || bad "$name: dsv32d exit status $? after SIGTERM"
        mv "$work/$name.log" "$work/$name-first.log"
        start "$name" "$model" "${args[@]}" --state-directory "$work/state-$name" || return 0
        grep -q "Session 'talk' of uid [0-9]* restored" "$work/$name.log" || bad "$name: the session was not restored: $(cat "$work/$name.log")"
        [ "$n" -gt 1 ] && [ "$layout" = ep,dp ] && pools_listed "$name"
        restored "$name"
        if [ "$n" -gt 1 ] && [ "$layout" = ep,dp ]; then
                # the restored session runs on the rank its pages were restored onto
                grep -q "Request [0-9]* of uid [0-9]* runs on rank ${talk_rank:-[0-9]*} with session 'talk' ([1-9]" "$work/$name.log" ||
                        bad "$name: the restored session's request is not said to run on rank ${talk_rank:-?} (dsv32 session list's) from its pages: $(grep 'runs on rank' "$work/$name.log")"
        fi
        stop || bad "$name: dsv32d exit status $? after SIGTERM"
}

# data-parallel attention, after the clients: two concurrent generations hold pages on two
# ranks at once (dsv32 status lists every rank's pool), the clients ran on more than one rank,
# the start log says how attention runs, and session talk's two requests ran on one rank
# (the log names the rank of every request)
dp_placed() { # name
        local name=$1 st ranks busy=0 g1 g2
        # two long generations at once: while they run, their pages are on two ranks
        "$cli" --socket "$work/$name.sock" generate --ids --max-tokens 1500 --tokens 5,6,7 >/dev/null & g1=$!
        "$cli" --socket "$work/$name.sock" generate --ids --max-tokens 1500 --tokens 8,9,10 >/dev/null & g2=$!
        for _ in $(seq 100); do
                st=$("$cli" --socket "$work/$name.sock" status) || bad "$name: dsv32 status failed"
                busy=$(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$st" | awk '{ split($3, p, "/"); if (p[1] > 0) k++ } END { print k + 0 }')
                [ "$busy" -ge 2 ] && break
                sleep 0.05
        done
        wait "$g1" && wait "$g2" || bad "$name: a long generation failed"
        [ "$busy" -ge 2 ] || bad "$name: two concurrent generations never held pages on two ranks: $st"
        grep -q "attention data-parallel" <<<"$st" || bad "$name: dsv32 status does not say attention is data-parallel: $st"
        ranks=$(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$st" | wc -l)
        [ "$ranks" -eq "$n" ] || bad "$name: dsv32 status lists the pages of $ranks ranks, not $n: $st"
        # the five concurrent clients ran on more than one rank
        [ "$(grep -o "runs on rank [0-9]*" "$work/$name.log" | sort -u | wc -l)" -ge 2 ] ||
                bad "$name: every request ran on one rank: $(grep 'runs on rank' "$work/$name.log")"
        grep -q "attention data-parallel: each sequence and its session placed on one rank" "$work/$name.log" ||
                bad "$name: the start log does not say attention is data-parallel: $(grep Ranks "$work/$name.log")"
        local talk
        talk=$(grep -o "runs on rank [0-9]* with session 'talk'" "$work/$name.log" | sort | uniq -c)
        [ "$(wc -l <<<"$talk")" -eq 1 ] && [ "$(awk '{ print $1 }' <<<"$talk")" -eq 2 ] ||
                bad "$name: session talk's two requests did not run on one rank: $talk"
        echo "$name: pages (used/free/cached) $(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$st" | tr '\n' ' '); talk: $talk"
}

# data-parallel attention, after a restart: the "Loaded" line lists each rank's pool, whose
# pages in use are those of the restored sessions on it, as dsv32 session list gives their
# ranks (RANK column and --json's rank) and pages; the request on talk then runs on talk's rank
pools_listed() { # name
        local name=$1 loaded list rows k want got
        loaded=$(grep -o "in each rank's own pool (used/free/cached pages):.*" "$work/$name.log") ||
                { bad "$name: the Loaded line does not list the ranks' pools: $(grep Loaded "$work/$name.log")"; return; }
        [ "$(grep -o "rank [0-9]* [0-9]*/[0-9]*/[0-9]*" <<<"$loaded" | wc -l)" -eq "$n" ] ||
                bad "$name: the Loaded line does not list $n pools: $loaded"
        list=$("$cli" --socket "$work/$name.sock" session list --json) || bad "$name: dsv32 session list failed"
        rows=$(grep -o '"name":"[a-z]*".*"kv_pages":[0-9]*.*"rank":[0-9]*' <<<"$list" |
                sed 's/.*"name":"\([a-z]*\)".*"kv_pages":\([0-9]*\).*"rank":\([0-9]*\).*/\1 \2 \3/')
        [ "$(wc -l <<<"$list")" -ge 2 ] && [ "$(wc -l <<<"$rows")" -eq "$(wc -l <<<"$list")" ] ||
                bad "$name: not every restored session has a rank in dsv32 session list --json: $list"
        for k in $(seq 0 $((n - 1))); do
                want=$(awk -v k="$k" '$3 == k { p += $2 } END { print p + 0 }' <<<"$rows")
                got=$(grep -o "rank $k [0-9]*/" <<<"$loaded" | awk '{ print $3 }' | tr -d /)
                [ "$got" = "$want" ] || bad "$name: rank $k's pool: ${got:-?} pages in use at start, its restored sessions hold $want: $loaded; $list"
        done
        k=$(awk '$1 == "talk" { print $3 }' <<<"$rows")
        "$cli" --socket "$work/$name.sock" session list | grep -Eq "^talk +[0-9]+ +[0-9]+ +$k +[0-9.]+s" ||
                bad "$name: dsv32 session list does not show talk on rank $k: $("$cli" --socket "$work/$name.sock" session list)"
        talk_rank=$k
}

check_model() { # model-name model
        local mname=$1 model=$2 t0
        t0=$(date +%s.%N)
        serve "$mname" "$model" 1
        [ -s "$work/$mname-1.out" ] || bad "$mname: no output from one rank"
        for n in 2 4; do
                serve "$mname" "$model" $n
                cmp -s "$work/$mname-1.out" "$work/$mname-$n.out" ||
                        bad "$mname: $n ranks: $(diff "$work/$mname-1.out" "$work/$mname-$n.out" | head -20)"
                cmp -s "$work/$mname-1.rest" "$work/$mname-$n.rest" ||
                        bad "$mname: $n ranks, restored session: $(cat "$work/$mname-$n.rest") vs $(cat "$work/$mname-1.rest")"
        done
        serve "$mname" "$model" 2 ep,tp
        cmp -s "$work/$mname-1.out" "$work/$mname-2-eptp.out" ||
                bad "$mname: 2 ranks ep,tp: $(diff "$work/$mname-1.out" "$work/$mname-2-eptp.out" | head -20)"
        cmp -s "$work/$mname-1.rest" "$work/$mname-2-eptp.rest" ||
                bad "$mname: 2 ranks ep,tp, restored session: $(cat "$work/$mname-2-eptp.rest") vs $(cat "$work/$mname-1.rest")"
        echo "$mname: 1, 2 and 4 ranks (ep,dp) and 2 ranks (ep,tp) agree ($(tr , ' ' <"$work/$mname-1.out" | wc -w) tokens) in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
}

# one thread: under ThreadSanitizer (make check-tsan) the OpenMP runtime, which it cannot see
# into, would make its generator look racy
OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 5 --out "$work/tiny" >/dev/null
check_model tiny "$work/tiny"
# the plan line: every rank, its experts (tiny: 16) and weight bytes
for r in 0 1 2 3; do
        grep -Eq "rank $r: experts $((r * 4))-$((r * 4 + 3)) of 16, [0-9]+ weight bytes" "$work/tiny-4.log" ||
                bad "the start log does not name rank $r's share: $(grep Ranks "$work/tiny-4.log")"
done
grep -q "Ranks: 4 CPU ranks, layout ep,dp" "$work/tiny-4.log" || bad "no plan line with 4 ranks"
# ep,tp: the layout named, each rank's weights fewer than the same ep,dp rank's
grep -q "Ranks: 2 CPU ranks, layout ep,tp (routed experts in contiguous blocks per rank; attention heads" \
        "$work/tiny-2-eptp-first.log" || bad "no ep,tp plan line: $(grep Ranks "$work/tiny-2-eptp-first.log")"
for r in 0 1; do
        dp=$(grep -o "rank $r: experts [0-9-]* of 16, [0-9]* weight bytes" "$work/tiny-2-first.log" | awk '{ print $7 }')
        tp=$(grep -o "rank $r: experts [0-9-]* of 16, [0-9]* weight bytes" "$work/tiny-2-eptp-first.log" | awk '{ print $7 }')
        [ -n "$tp" ] && [ -n "$dp" ] && [ "$tp" -lt "$dp" ] || bad "ep,tp rank $r holds ${tp:-?} weight bytes, ep,dp ${dp:-?}"
done
grep -q "Ranks:" "$work/tiny-1.log" && bad "one rank logged a plan of ranks"
st=$(start status "$work/tiny" --ranks 3 --parallel ep,dp && "$cli" --socket "$work/status.sock" status; stop || true)
grep -q "ranks:      3 CPU ranks, layout ep,dp" <<<"$st" || bad "dsv32 status does not show the ranks: $st"
# data-parallel attention: three pools of the start log's pages, each listed, the total their sum
pages=$(sed -n 's/.*KV cache \([0-9]*\) pages of [0-9]* tokens.*/\1/p' "$work/status.log" | head -1)
grep -qF "KV pages:   used/free/cached per rank: rank 0 0/$pages/0; rank 1 0/$pages/0; rank 2 0/$pages/0" <<<"$st" ||
        bad "dsv32 status does not list three idle pools of $pages pages: $st"
grep -qF "KV cache 0/$((3 * pages)) pages" <<<"$st" || bad "dsv32 status's KV pages are not three pools': $st"
# the status's weights per rank (3 ranks: 6, 5 and 5 experts): the fewest and the most of the
# start log's per-rank bytes
want=$(grep -o "rank [0-9]*: experts [0-9-]* of [0-9]*, [0-9]* weight bytes" "$work/status.log" |
        awk '{ b = $7; if (min == "" || b < min) min = b; if (b > max) max = b } END { if (min == max) printf "%.1f MB", min / 1e6; else printf "%.1f-%.1f MB", min / 1e6, max / 1e6 }')
grep -q "weights per rank $want" <<<"$st" || bad "dsv32 status's weights per rank are not the log's ($want): $st"
# the plan: the pool's tokens (the start log's pages x page size) per rank, against the context
want=$(sed -n 's/.*KV cache \([0-9]*\) pages of \([0-9]*\) tokens (\([0-9]*\) bytes\/token).*/\1 \2 \3/p' "$work/status.log" | head -1 |
        awk -v ctx="$(sed -n 's/.* context \([0-9]*\),.*/\1/p' <<<"$st")" '{ t = $1 * $2; printf "KV cache %.1f MiB per rank = room for %d tokens: ", t * $3 / 1048576, t;
                if (t >= ctx) printf "the full %d-token context for %d sequence", ctx, int(t / ctx); else printf "one sequence of at most %d tokens (less than the %d-token context)", t, ctx }')
grep -qF "plan:       $want" <<<"$st" || bad "dsv32 status's plan is not the start log's pool ($want): $st"
# dsv32-openai's /metrics over 3 ranks: each rank's pool under a rank label (used + free +
# cached = the pool's pages), the unlabelled totals their sums, and the pages of a session on
# the rank dsv32 session list names (not in `make check-tsan`, which builds dsv32d and dsv32
# only: said, not failed)
if [ ! -x "$top_builddir/dsv32-openai" ]; then
        echo "metrics: not run ($top_builddir/dsv32-openai is not built)"
elif command -v curl >/dev/null && start metrics "$work/tiny" --ranks 3 --parallel ep,dp; then
        "$cli" --socket "$work/metrics.sock" generate --ids --max-tokens 4 --session m --tokens "$P" >/dev/null ||
                bad "metrics: the request on session m failed"
        list=$("$cli" --socket "$work/metrics.sock" session list --json)
        "$top_builddir/dsv32-openai" --listen 127.0.0.1:0 --socket "$work/metrics.sock" 2>"$work/gw.log" &
        gw=$!
        port=
        for _ in $(seq 200); do
                port=$(sed -n 's/.*listening on .*(port \([0-9]*\)).*/\1/p' "$work/gw.log")
                [ -n "$port" ] && break
                sleep 0.05
        done
        curl -s -o "$work/metrics.txt" "http://127.0.0.1:$port/metrics" || bad "metrics: curl /metrics failed: $(cat "$work/gw.log")"
        kill "$gw"
        wait "$gw" || bad "metrics: dsv32-openai exit status $? after SIGTERM"
        "${PYTHON3:-python3}" - "$work/metrics.txt" "$pages" "$list" <<'PY' || bad "metrics: $(grep -v '^#' "$work/metrics.txt" | grep kv_pages)"
import json, re, sys
text, pages, row = open(sys.argv[1]).read(), int(sys.argv[2]), json.loads(sys.argv[3])
v = {}
for line in text.splitlines():
    m = re.fullmatch(r'(dsv32_[a-z_]+)(\{rank="(\d+)"\})? (\S+)', line)
    if m:
        v[(m.group(1), m.group(3))] = float(m.group(4))
    assert not line.startswith("dsv32_rank_kv") or m, "a per-rank line without its rank: " + line
for what in ("used", "free", "cached"):
    assert "# TYPE dsv32_rank_kv_pages_%s gauge" % what in text, "no TYPE for dsv32_rank_kv_pages_" + what
    assert sorted(k for (n, k) in v if n == "dsv32_rank_kv_pages_" + what) == ["0", "1", "2"], what
r = lambda what, k: v[("dsv32_rank_kv_pages_" + what, str(k))]
for k in range(3):
    assert r("used", k) + r("free", k) + r("cached", k) == pages, "rank %d: not a pool of %d pages" % (k, pages)
    assert r("used", k) == (row["kv_pages"] if k == row["rank"] else 0), "rank %d: %g pages used, session m (on rank %d) holds %d" % (k, r("used", k), row["rank"], row["kv_pages"])
assert sum(r("used", k) for k in range(3)) == v[("dsv32_kv_pages_used", None)] > 0
assert "# TYPE dsv32_session_moves_total counter" in text and v[("dsv32_session_moves_total", None)] == 0, "no dsv32_session_moves_total 0"
assert sum(r("cached", k) for k in range(3)) == v[("dsv32_kv_pages_cached", None)]
assert v[("dsv32_kv_pages", None)] == 3 * pages
PY
        stop || bad "metrics: dsv32d exit status $? after SIGTERM"
fi
# a session moves when its rank is full: 2 ranks of P pages each (--kv-cache-mb 1). Session a
# (2 pages) goes to rank 0, b (5 pages) to rank 1, c (P - 5 pages, pinned) to rank 0, whose
# P - 2 pages available beat rank 1's P - 5: rank 0 has 3 pages left. a's next turn needs 7:
# it moves to rank 1 with its pages (logged; dsv32 session list shows it there), reuses its
# history, and every output is one rank's with room for everything (--kv-cache-mb 3)
moving() { # name ranks kv-cache-mb
        local name=$1 n=$2 s="$work/$1.sock" c=$(((p_move - 6) * 64 + 10)) # c: P - 5 pages with its output
        start "$name" "$work/tiny" --ranks "$n" $([ "$n" -gt 1 ] && echo --parallel ep,dp) --kv-cache-mb "$3" || return 0
        gen() { "$cli" --socket "$s" generate --ids "$@"; }
        { gen --max-tokens 4 --session a --tokens "$(seq -s, 1 100)" &&
                gen --max-tokens 4 --session b --tokens "$(seq -s, 1001 1300)" &&
                gen --max-tokens 4 --session c --tokens "$(seq -s, 2001 $((2000 + c)))" &&
                "$cli" --socket "$s" session pin c >/dev/null &&
                gen --max-tokens 8 --session a --tokens "$(seq -s, 1 100),$(seq -s, 3001 3300)"; } >"$work/$name.out" ||
                bad "$name: a client failed: $(tail -5 "$work/$name.log")"
        if [ "$n" -gt 1 ]; then
                grep -q "Session 'a' of uid [0-9]* moves from rank 0 to rank 1: its request [0-9]* needs 5 more KV pages, rank 0 can give 3" \
                        "$work/$name.log" || bad "$name: session a did not move: $(grep -E 'runs on rank|moves' "$work/$name.log")"
                grep -q "runs on rank 1 with session 'a' (100 of its 400 prompt tokens cached there)" "$work/$name.log" ||
                        bad "$name: session a's second turn did not run from its moved pages: $(grep 'runs on rank' "$work/$name.log")"
                "$cli" --socket "$s" session list | grep -Eq "^a +[0-9]+ +7 +1 " ||
                        bad "$name: dsv32 session list does not show a's 7 pages on rank 1: $("$cli" --socket "$s" session list)"
                moves=$("$cli" --socket "$s" status --json |
                        "${PYTHON3:-python3}" -c 'import json, sys; print(json.load(sys.stdin).get("session_moves_total"))')
                [ "$moves" = 1 ] || bad "$name: dsv32 status --json: session_moves_total $moves, not 1"
                st=$("$cli" --socket "$s" status)
                case $st in
                *"sessions moved to another rank: 1"*) ;;
                *) bad "$name: dsv32 status does not count the move: $(echo "$st" | grep 'KV pages')" ;;
                esac
                echo "$name: $(grep -o "Session 'a' of uid [0-9]* moves.*" "$work/$name.log")"
        else
                grep -q "moves from rank" "$work/$name.log" && bad "$name: a session moved with one rank"
        fi
        stop || bad "$name: dsv32d exit status $? after SIGTERM"
}
start probe "$work/tiny" --ranks 2 --parallel ep,dp --kv-cache-mb 1 &&
        p_move=$(sed -n 's/.*KV cache \([0-9]*\) pages of [0-9]* tokens.*/\1/p' "$work/probe.log" | head -1) && stop
[ "${p_move:-0}" -ge 12 ] || bad "--kv-cache-mb 1 gives ${p_move:-?} pages per rank: the move test needs 12 (raise it)"
moving move-1 1 3
moving move-2 2 1
if [ -s "$work/move-1.out" ] && cmp -s "$work/move-1.out" "$work/move-2.out"; then
        echo "a session moved to the rank with room: the same $(tr , ' ' <"$work/move-1.out" | wc -w) tokens as one rank"
else
        bad "a moved session: $(diff "$work/move-1.out" "$work/move-2.out" | head -20)"
fi

if [ "${DSV32_RANKS_SMALL:-0}" != 0 ]; then
        "$top_builddir/dsv32-mkmodel" --preset small --seed 5 --out "$work/small" >/dev/null
        check_model small "$work/small"
fi

# speculative decoding through the group: with a predictable MTP layer and mtp = on (two
# drafts a step), 2 and 4 ranks serve the same clients as one rank token for token (seeded
# sampling included), and drafts are accepted (the MTP passes really ran through the ranks)
OMP_NUM_THREADS=1 "$top_builddir/dsv32-mkmodel" --preset tiny --seed 5 --mtp-predictable --out "$work/tiny-mtp" >/dev/null
for spec in 1 2 4 2:ep,tp; do # ranks[:layout] (ep,tp: every follower computes the wanted logits too)
        n=${spec%%:*} layout=ep,dp
        [ "$spec" = "$n" ] || layout=${spec#*:}
        name=mtp-$n${spec#$n}
        name=${name/:/-}
        start "$name" "$work/tiny-mtp" --log-level debug --mtp on --mtp-draft 2 --ranks $n $([ $n -gt 1 ] && echo --parallel $layout) || continue
        clients "$name"
        stop || bad "$name: dsv32d exit status $? after SIGTERM"
        acc=$(grep -o "the MTP layer drafted [0-9]* tokens, [0-9]* accepted" "$work/$name.log" | awk '{ d += $5; a += $7 } END { print d + 0, a + 0 }')
        [ "${acc#* }" -gt 0 ] || bad "mtp on, $spec ranks: no draft accepted (drafted, accepted: $acc)"
        [ $n -eq 1 ] || cmp -s "$work/mtp-1.out" "$work/$name.out" ||
                bad "mtp on, $spec ranks: $(diff "$work/mtp-1.out" "$work/$name.out" | head -20)"
        echo "mtp on, $n ranks ($layout): $(tr , ' ' <"$work/$name.out" | wc -w) tokens; drafted, accepted: $acc"
done

# a fault in one rank: the client gets an ERROR, dsv32d exits non-zero within 20 s
for spec in 1:2 0:3 3:1; do
        f=fault-${spec/:/-} # its own log, for the ThreadSanitizer check at the end
        DSV32_TEST_RANK_FAULT=$spec start "$f" "$work/tiny" --ranks 4 --parallel ep,dp || continue
        set +e
        out=$("$cli" --socket "$work/$f.sock" generate --ids --max-tokens 8 Hello 2>&1)
        rc=$?
        set -e
        [ $rc -ne 0 ] && grep -q "the forward pass failed: the group of 4 ranks is broken: rank ${spec%%:*}: fault injected in pass ${spec##*:}" <<<"$out" ||
                bad "fault $spec: the client got status $rc: $out"
        grep -q "on the device" <<<"$out" && bad "fault $spec: CPU ranks said to fail on a device: $out"
        t0=$SECONDS
        rc=0
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
                bad "fault $spec: dsv32d still runs 20 s after the fault"
        else
                wait "$pid" || rc=$?
                [ $rc -ne 0 ] || bad "fault $spec: dsv32d exited 0"
        fi
        pid=
        grep -q "the group of 4 ranks is broken" "$work/$f.log" || bad "fault $spec: not logged: $(cat "$work/$f.log")"
        echo "fault $spec: client: $out; dsv32d exited $rc after $((SECONDS - t0)) s"
done

# refusals at start
refuse 2 "ranks 2: needs a layout: parallel = ep,dp (--parallel ep,dp) or ep,tp" "$work/tiny" --ranks 2
refuse 2 "parallel tp: this layout is not implemented yet" "$work/tiny" --ranks 2 --parallel tp
refuse 1 "4 attention heads do not split over 3 tensor-parallel ranks" "$work/tiny" --ranks 3 --parallel ep,tp --kv-cache-mb 8
refuse 2 "parallel pp: unknown layout" "$work/tiny" --ranks 2 --parallel pp
refuse 2 "ranks: '0' is not an integer in 1..256" "$work/tiny" --ranks 0
refuse 2 "ranks 2: the ranks are CPU ranks so far" "$work/tiny" --ranks 2 --parallel ep,dp --backend cuda
refuse 2 "several ranks on several nodes" "$work/tiny" --ranks 2 --parallel ep,dp --nodes 2 --coordinator 127.0.0.1:1
refuse 1 "ranks 17: the model has 16 routed experts and a rank owns whole experts: at most 16 ranks" "$work/tiny" \
        --ranks 17 --parallel ep,dp --kv-cache-mb 8

finish
