#!/usr/bin/python3
"""Compare two forward-pass output directories (format: see README.md in this folder).

  compare.py A_DIR B_DIR [--logits-atol X] [--logits-rtol X] [--layers-atol X]
             [--layers-rtol X] [--require-selections-equal] [--report-only]

A directory needs logits.f32 and meta.json (or pass --T/--vocab for a bare logits file);
layers.f32, topk.i32 and experts.i32 are compared when both sides have them.

Pass/fail (exit 0 / 1):
  logits:  max|A-B| <= logits_atol + logits_rtol * max|A|      (defaults 1e-5, 1e-4)
  layers:  max|A-B| <= layers_atol + layers_rtol * max|A_layer| per layer
                                                              (defaults 1e-5, 1e-4)
  --require-selections-equal: every token's top-k set and expert set must be equal.
The defaults suit `exact` mode against another exact implementation (observed: ~3e-7
relative on the tiny and small test models).  `faithful` runs agree only up to rounding
ties: one bf16 tie resolved differently (e.g. rsqrt rounding) can flip an FP8 code, which
moves that token's K/V and so every later token by ~1e-2 relative, and can flip a
selection.  Compare faithful runs with forced selections and per-layer teacher forcing
(ref_model.py --force DIR --teacher DIR), or statistically (argmax agreement, the count of
positions within tolerance), or with --report-only.
"""

import argparse
import json
import os
import sys

import signal

import numpy as np

signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # quiet when piped into head


def load(d, T=None, V=None):
    out = {}
    meta = {}
    if os.path.isfile(d):            # a bare logits file
        if T is None and V is None:
            raise SystemExit("%s is a file: pass --T or --vocab" % d)
        a = np.fromfile(d, dtype="<f4")
        V = V or a.size // T
        out["logits"] = a.reshape(-1, V)
        return out, {"T": out["logits"].shape[0], "vocab_size": V}
    mp = os.path.join(d, "meta.json")
    if os.path.exists(mp):
        with open(mp) as f:
            meta = json.load(f)
    T = meta.get("T", T)
    V = meta.get("vocab_size", V)
    a = np.fromfile(os.path.join(d, "logits.f32"), dtype="<f4")
    if T is None and V is None:
        raise SystemExit("%s: no meta.json; pass --T or --vocab" % d)
    V = V or a.size // T
    T = T or a.size // V
    out["logits"] = a.reshape(T, V)
    if "n_layers" in meta:
        L, H = meta["n_layers"], meta["hidden"]
        p = os.path.join(d, "layers.f32")
        if os.path.exists(p):
            out["layers"] = np.fromfile(p, dtype="<f4").reshape(L, T, H)
        p = os.path.join(d, "topk.i32")
        if os.path.exists(p):
            out["topk"] = np.fromfile(p, dtype="<i4").reshape(L, T, meta["index_topk"])
        p = os.path.join(d, "experts.i32")
        if os.path.exists(p):
            out["experts"] = np.fromfile(p, dtype="<i4").reshape(L, T, meta["experts_per_tok"])
    return out, meta


def set_diffs(a, b):
    """Per layer: number of tokens whose (set of non-negative ids) differ."""
    L, T, _ = a.shape
    res = []
    for l in range(L):
        n = 0
        first = None
        for t in range(T):
            sa = set(a[l, t][a[l, t] >= 0].tolist())
            sb = set(b[l, t][b[l, t] >= 0].tolist())
            if sa != sb:
                n += 1
                if first is None:
                    first = (t, sorted(sa - sb), sorted(sb - sa))
        res.append((n, first))
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="compare two reference/engine output directories")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--logits-atol", type=float, default=1e-5)
    ap.add_argument("--logits-rtol", type=float, default=1e-4,
                    help="tolerance relative to max|logit| of A")
    ap.add_argument("--layers-atol", type=float, default=1e-5)
    ap.add_argument("--layers-rtol", type=float, default=1e-4,
                    help="tolerance relative to max|value| of A's layer")
    ap.add_argument("--require-selections-equal", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--T", type=int, help="prompt length, for a directory/file without meta.json")
    ap.add_argument("--vocab", type=int, help="vocab size, for a directory/file without meta.json")
    args = ap.parse_args(argv)

    A, ma = load(args.a, args.T, args.vocab)
    B, mb = load(args.b, args.T or ma.get("T"), args.vocab or ma.get("vocab_size"))
    ok = True
    la, lb = A["logits"], B["logits"]
    if la.shape != lb.shape:
        print("logits shape differs: %s vs %s" % (la.shape, lb.shape))
        return 0 if args.report_only else 1
    if ma.get("tokens") and mb.get("tokens") and ma["tokens"] != mb["tokens"]:
        print("warning: the two runs have different prompts")
    d = np.abs(la.astype(np.float64) - lb)
    scale = float(np.abs(la).max()) or 1.0
    i = np.unravel_index(np.argmax(d), d.shape)
    am = int((la.argmax(1) == lb.argmax(1)).sum())
    lim = args.logits_atol + args.logits_rtol * scale
    good = d.max() <= lim
    ok &= good
    npos = int((d.max(1) <= lim).sum())
    print("logits: max|diff| %.3e (rel to max|logit| %.3g: %.3e) at pos %d vocab %d; "
          "argmax agree %d/%d; positions within limit %d/%d; mean|diff| %.3e  [%s, limit %.3e]"
          % (d.max(), scale, d.max() / scale, i[0], i[1], am, la.shape[0], npos, la.shape[0],
             d.mean(), "ok" if good else "FAIL", lim))
    if am < la.shape[0]:
        bad = np.nonzero(la.argmax(1) != lb.argmax(1))[0]
        print("  argmax differs at positions %s" % bad[:20].tolist())

    if "layers" in A and "layers" in B and A["layers"].shape == B["layers"].shape:
        ya, yb = A["layers"], B["layers"]
        for l in range(ya.shape[0]):
            dl = np.abs(ya[l].astype(np.float64) - yb[l])
            sc = float(np.abs(ya[l]).max()) or 1.0
            j = np.unravel_index(np.argmax(dl), dl.shape)
            lim = args.layers_atol + args.layers_rtol * sc
            good = dl.max() <= lim
            ok &= good
            print("layer %2d: max|diff| %.3e (rel %.3e) at pos %d dim %d  [%s]"
                  % (l, dl.max(), dl.max() / sc, j[0], j[1], "ok" if good else "FAIL"))
    elif "layers" in A or "layers" in B:
        print("layers: not compared (missing on one side or shapes differ)")

    for key, what in (("topk", "indexer top-k"), ("experts", "expert")):
        if key in A and key in B and A[key].shape == B[key].shape:
            res = set_diffs(A[key], B[key])
            tot = sum(n for n, _ in res)
            desc = ", ".join("L%d:%d" % (l, n) for l, (n, _) in enumerate(res))
            print("%s sets differing (tokens per layer): %s" % (what, desc))
            for l, (n, first) in enumerate(res):
                if first:
                    print("  layer %d first at pos %d: only A %s, only B %s" % (l, *first))
            if args.require_selections_equal and tot:
                ok = False
        elif args.require_selections_equal:
            print("%s: not available on both sides" % what)
            ok = False

    print("RESULT: %s" % ("ok" if ok else "FAIL"))
    if args.report_only:
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
