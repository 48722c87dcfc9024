#!/usr/bin/python3
"""Independent numpy reference of the DeepSeek-V3.2 forward pass (prefill of one sequence).

Oracle of the golden-model tests.  It follows DESIGN.md section 4 and DeepSeek's official
inference/model.py of DeepSeek-V3.2-Exp (Nov-2025 Hugging Face version), and shares no code
with the C engine.  numpy only.

  ref_model.py --model DIR --tokens 1,2,3 --numerics exact|faithful --out OUTDIR [--force FORCEDIR]
  ref_model.py --selftest

Numerics modes
  exact     FP8 weights dequantized; everything else in float64; no activation quantization,
            no bf16 rounding, no FP8 round trip of the latent, unquantized indexer q/k.
  faithful  the reference's rounding points: act_quant before every FP8 linear, per-128-block
            fp32 accumulation, bf16 GEMM outputs and residual stream, FP8 latent, FP8 indexer
            q/k, bf16 attention scores/probabilities.  Every individual dot product / sum is
            computed in float64 and rounded once to fp32 (i.e. the correctly rounded fp32
            result; a GPU's summation order can differ from it by an ulp).

See README.md in this folder for the output formats.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

F32 = np.float32
F64 = np.float64
QBLOCK = 128
E4M3_MAX = 448.0


# ----------------------------------------------------------------------------------------
# number formats

def bf16_round(x):
    """Round to bfloat16 (nearest, ties to even); returns float32 holding bf16 values."""
    a = np.ascontiguousarray(np.asarray(x, dtype=F32))
    b = a.view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    out = b.astype(np.uint32).view(F32)
    nan = np.isnan(a)
    if nan.any():
        out = out.copy()
        out[nan] = np.nan
    return out


def _e4m3_table():
    t = np.zeros(256, dtype=F32)
    for c in range(256):
        s = -1.0 if c & 0x80 else 1.0
        e = (c >> 3) & 0xF
        m = c & 7
        if e == 15 and m == 7:
            v = np.nan
        elif e == 0:
            v = s * m * 2.0 ** -9
        else:
            v = s * (1 + m / 8.0) * 2.0 ** (e - 7)
        t[c] = v
    return t


E4M3_DECODE = _e4m3_table()


def e4m3_round(v):
    """Round finite values (|v| <= 448 expected) to e4m3fn, nearest-even, subnormals included.
    Returns the rounded values in float32 (exactly representable)."""
    v64 = np.asarray(v, dtype=F64)
    _, ex = np.frexp(v64)                 # v = m * 2^ex, m in [0.5, 1)
    e = np.maximum(ex - 1, -6)            # floor(log2|v|), clamped to min normal exponent
    q = np.ldexp(1.0, e - 3)              # quantum: 3 mantissa bits
    r = np.rint(v64 / q) * q              # exact scaling by powers of two; rint = ties-to-even
    r = np.clip(r, -E4M3_MAX, E4M3_MAX)
    return r.astype(F32)


def pow2_ceil_scale(r):
    """2^ceil(log2(r)) computed from r's fp32 bits, as the official fast_round_scale."""
    bits = np.ascontiguousarray(np.asarray(r, dtype=F32)).view(np.uint32)
    exp = ((bits >> 23) & 0xFF).astype(np.int64)
    man = bits & 0x7FFFFF
    k = exp - 127 + (man != 0).astype(np.int64)
    return np.ldexp(F32(1.0), k).astype(F32)


def act_quant(x):
    """Per-128-value blockwise quantization of the last dim (ue8m0 scales).
    x: float32 array [..., K].  Returns (codes float32 e4m3 values [..., K], scales [..., nb])."""
    x = np.asarray(x, dtype=F32)
    K = x.shape[-1]
    nb = (K + QBLOCK - 1) // QBLOCK
    pad = nb * QBLOCK - K
    xp = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), F32)], -1) if pad else x
    xb = xp.reshape(x.shape[:-1] + (nb, QBLOCK))
    amax = np.maximum(np.abs(xb).max(-1), F32(1e-4)).astype(F32)
    r = (amax * F32(1.0 / 448.0)).astype(F32)
    s = pow2_ceil_scale(r)
    y = (xb / s[..., None]).astype(F32)
    y = np.clip(y, F32(-E4M3_MAX), F32(E4M3_MAX))
    codes = e4m3_round(y).reshape(xp.shape)[..., :K]
    return np.ascontiguousarray(codes), s


def act_dequant(codes, s):
    K = codes.shape[-1]
    srep = np.repeat(s, QBLOCK, axis=-1)[..., :K]
    return (codes * srep).astype(F32)


def dot_f32(a, b):
    """a @ b with each result computed in float64 and rounded once to fp32."""
    return (np.asarray(a, F64) @ np.asarray(b, F64)).astype(F32)


# ----------------------------------------------------------------------------------------
# checkpoint

class Checkpoint:
    def __init__(self, d):
        self.dir = d
        with open(os.path.join(d, "config.json")) as f:
            self.cfg = json.load(f)
        idx = os.path.join(d, "model.safetensors.index.json")
        if os.path.exists(idx):
            with open(idx) as f:
                wm = json.load(f)["weight_map"]
            files = sorted(set(wm.values()))
        else:
            files = sorted(x for x in os.listdir(d) if x.endswith(".safetensors"))
        self.tensors = {}
        self._mm = {}
        for fn in files:
            path = os.path.join(d, fn)
            with open(path, "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                hdr = json.loads(f.read(n))
            mm = np.memmap(path, dtype=np.uint8, mode="r")
            self._mm[fn] = mm
            base = 8 + n
            for name, info in hdr.items():
                if name == "__metadata__":
                    continue
                b, e = info["data_offsets"]
                self.tensors[name] = (fn, info["dtype"], tuple(info["shape"]), base + b, base + e)

    def has(self, name):
        return name in self.tensors

    def raw(self, name):
        fn, dt, shape, b, e = self.tensors[name]
        return dt, shape, self._mm[fn][b:e]

    def get(self, name, expect=None):
        """Tensor as float32 (F8_E4M3 decoded to its e4m3 values, no scale)."""
        if name not in self.tensors:
            raise KeyError("tensor %s missing from checkpoint %s" % (name, self.dir))
        dt, shape, buf = self.raw(name)
        if expect is not None and tuple(shape) != tuple(expect):
            raise ValueError("tensor %s: expected shape %s, found %s" % (name, expect, shape))
        if dt == "F8_E4M3":
            a = E4M3_DECODE[np.frombuffer(buf, dtype=np.uint8)]
        elif dt == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(F32)
        elif dt == "F32":
            a = np.frombuffer(buf, dtype="<f4").astype(F32)
        elif dt == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(F32)
        else:
            raise ValueError("tensor %s: unsupported dtype %s" % (name, dt))
        return a.reshape(shape)

    def dtype(self, name):
        return self.tensors[name][1]


class Linear:
    """A linear layer's weight: either FP8 codes + block scales, or a plain (bf16/f32) matrix."""

    def __init__(self, ck, name, out_f, in_f):
        w = ck.get(name + ".weight", (out_f, in_f))
        self.out_f, self.in_f = out_f, in_f
        self.fp8 = ck.dtype(name + ".weight") == "F8_E4M3"
        if self.fp8:
            sn = name + ".weight_scale_inv"
            ns = ((out_f + QBLOCK - 1) // QBLOCK, (in_f + QBLOCK - 1) // QBLOCK)
            self.codes = w
            self.scale = ck.get(sn, ns).astype(F32)
            self.row_scale = np.repeat(self.scale, QBLOCK, axis=0)[:out_f]      # [out, nKb]
        else:
            self.w = w
        self._deq = None

    def dequant64(self):
        if self._deq is None:
            if self.fp8:
                s = np.repeat(self.row_scale, QBLOCK, axis=1)[:, :self.in_f]
                self._deq = self.codes.astype(F64) * s.astype(F64)
            else:
                self._deq = self.w.astype(F64)
        return self._deq

    # exact mode
    def exact(self, x):
        return np.asarray(x, F64) @ self.dequant64().T

    # faithful mode: bf16 input, bf16 output
    def faithful(self, x):
        x = np.asarray(x, F32)
        if not self.fp8:
            # F.linear in bf16: fp32 accumulation, bf16 output
            return bf16_round(dot_f32(x, self.w.T))
        codes, a_s = act_quant(x)
        K = self.in_f
        nkb = (K + QBLOCK - 1) // QBLOCK
        acc = np.zeros(x.shape[:-1] + (self.out_f,), F32)
        for kb in range(nkb):
            sl = slice(kb * QBLOCK, min(K, (kb + 1) * QBLOCK))
            d = dot_f32(codes[..., sl], self.codes[:, sl].T)
            sc = (a_s[..., kb:kb + 1] * self.row_scale[:, kb]).astype(F32)
            acc = (acc + (d * sc).astype(F32)).astype(F32)
        return bf16_round(acc)


# ----------------------------------------------------------------------------------------
# model

class Config:
    def __init__(self, c):
        g = c.get
        self.dim = c["hidden_size"]
        self.n_layers = c["num_hidden_layers"]
        self.n_dense = g("first_k_dense_replace", 0)
        self.n_heads = c["num_attention_heads"]
        self.q_lora = c["q_lora_rank"]
        self.kv_lora = c["kv_lora_rank"]
        self.nope = c["qk_nope_head_dim"]
        self.rope = c["qk_rope_head_dim"]
        self.v_dim = c["v_head_dim"]
        self.inter = c["intermediate_size"]
        self.moe_inter = c["moe_intermediate_size"]
        self.n_experts = c["n_routed_experts"]
        self.n_shared = g("n_shared_experts", 1) or 0
        self.topk_experts = c["num_experts_per_tok"]
        self.n_group = g("n_group", 1) or 1
        self.topk_group = g("topk_group", 1) or 1
        self.route_scale = float(g("routed_scaling_factor", 1.0))
        self.norm_topk = bool(g("norm_topk_prob", True))
        self.theta = float(g("rope_theta", 10000.0))
        self.eps = float(g("rms_norm_eps", 1e-6))
        self.vocab = c["vocab_size"]
        self.idx_heads = c["index_n_heads"]
        self.idx_dim = c["index_head_dim"]
        self.idx_topk = c["index_topk"]
        rs = g("rope_scaling") or {}
        self.yarn = (rs.get("type", rs.get("rope_type")) == "yarn" and float(rs.get("factor", 1.0)) > 1.0)
        self.factor = float(rs.get("factor", 1.0))
        self.orig = float(rs.get("original_max_position_embeddings", 4096))
        self.beta_fast = float(rs.get("beta_fast", 32))
        self.beta_slow = float(rs.get("beta_slow", 1))
        mscale = float(rs.get("mscale", 1.0))
        self.mscale_all_dim = float(rs.get("mscale_all_dim", mscale))
        self.softmax_scale = (self.nope + self.rope) ** -0.5
        if self.yarn:
            m = 0.1 * self.mscale_all_dim * math.log(self.factor) + 1.0
            self.softmax_scale = self.softmax_scale * m * m


def rope_tables(cfg, T):
    """cos/sin [T, r/2] in fp32 (angle = fp32(pos) * fp32 freq, as the reference)."""
    r = cfg.rope
    half = r // 2
    base = cfg.theta
    ex = (np.arange(0, r, 2, dtype=F32) / F32(r)).astype(F32)
    freqs = (F32(1.0) / np.power(F64(base), ex.astype(F64)).astype(F32)).astype(F32)
    if cfg.yarn:
        def corr_dim(n):
            return r * math.log(cfg.orig / (n * 2 * math.pi)) / (2 * math.log(base))
        low = max(math.floor(corr_dim(cfg.beta_fast)), 0)
        high = min(math.ceil(corr_dim(cfg.beta_slow)), r - 1)
        if low == high:
            high += 0.001
        ramp = ((np.arange(half, dtype=F32) - F32(low)) / F32(high - low)).astype(F32)
        ramp = np.clip(ramp, F32(0), F32(1))
        smooth = (F32(1) - ramp).astype(F32)
        freqs = ((freqs / F32(cfg.factor)).astype(F32) * (F32(1) - smooth)).astype(F32) + \
            (freqs * smooth).astype(F32)
        freqs = freqs.astype(F32)
    ang = (np.arange(T, dtype=F32)[:, None] * freqs[None, :]).astype(F32)
    a64 = ang.astype(F64)
    return np.cos(a64), np.sin(a64)     # float64 of the fp32 angle (rounded to fp32 in faithful)


def apply_rope(x, cos, sin, interleaved, faithful):
    """x [T, ..., r]; cos/sin [T, r/2]. Rotation of pairs (interleaved or half-split)."""
    r = x.shape[-1]
    half = r // 2
    shp = (x.shape[0],) + (1,) * (x.ndim - 2) + (half,)
    if faithful:
        c = cos.astype(F32).astype(F64).reshape(shp)
        s = sin.astype(F32).astype(F64).reshape(shp)
    else:
        c = cos.reshape(shp)
        s = sin.reshape(shp)
    x = np.asarray(x, F64)
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
    else:
        a, b = x[..., :half], x[..., half:]
    ya = a * c - b * s
    yb = a * s + b * c
    y = np.empty_like(x)
    if interleaved:
        y[..., 0::2], y[..., 1::2] = ya, yb
    else:
        y[..., :half], y[..., half:] = ya, yb
    if faithful:
        return bf16_round(y.astype(F32))
    return y


_HAD = {}


def hadamard_matrix(d):
    if d not in _HAD:
        i = np.arange(d)
        pc = np.vectorize(lambda v: bin(v).count("1"))(i[:, None] & i[None, :])
        _HAD[d] = np.where(pc % 2 == 0, 1.0, -1.0).astype(F64)
    return _HAD[d]


def hadamard(x, faithful):
    d = x.shape[-1]
    H = hadamard_matrix(d)
    y = np.asarray(x, F64) @ H          # H symmetric
    if faithful:
        y = (y.astype(F32) * F32(d ** -0.5)).astype(F32)
        return bf16_round(y)
    return y * (d ** -0.5)


class Model:
    def __init__(self, path, mode):
        self.ck = Checkpoint(path)
        self.cfg = Config(self.ck.cfg)
        self.mode = mode
        self.faithful = mode == "faithful"
        self._layer_cache = {}

    # -- small helpers ----------------------------------------------------------------
    def vec(self, name, n=None):
        return self.ck.get(name, None if n is None else (n,)).astype(F32)

    def lin(self, name, out_f, in_f):
        return Linear(self.ck, name, out_f, in_f)

    def linear(self, L, x):
        return L.faithful(x) if self.faithful else L.exact(x)

    def rmsnorm(self, x, w, eps):
        if self.faithful:
            x = np.asarray(x, F32)
            var = (np.square(x.astype(F64)).mean(-1, keepdims=True)).astype(F32)
            rs = (F32(1.0) / np.sqrt((var + F32(eps)).astype(F64))).astype(F32)
            y = (x * rs).astype(F32)
            return bf16_round((w * y).astype(F32))
        x = np.asarray(x, F64)
        var = np.square(x).mean(-1, keepdims=True)
        return w.astype(F64) * (x / np.sqrt(var + eps))

    def layernorm(self, x, w, b, eps=1e-6):
        if self.faithful:
            x64 = np.asarray(x, F32).astype(F64)
            mu = x64.mean(-1, keepdims=True).astype(F32)
            xc = (np.asarray(x, F32) - mu).astype(F32)
            var = np.square(xc.astype(F64)).mean(-1, keepdims=True).astype(F32)
            rs = (F32(1.0) / np.sqrt((var + F32(eps)).astype(F64))).astype(F32)
            y = ((xc * rs).astype(F32) * w).astype(F32)
            return bf16_round((y + b).astype(F32))
        x = np.asarray(x, F64)
        mu = x.mean(-1, keepdims=True)
        var = np.square(x - mu).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w.astype(F64) + b.astype(F64)

    def residual_norm(self, x, residual, w):
        """RMSNorm(x, residual): returns (normed, new residual, fp32/f64 sum)."""
        if self.faithful:
            s = (np.asarray(x, F32) + np.asarray(residual, F32)).astype(F32)
            return self.rmsnorm(s, w, self.cfg.eps), bf16_round(s), s
        s = np.asarray(x, F64) + np.asarray(residual, F64)
        return self.rmsnorm(s, w, self.cfg.eps), s, s

    def softmax_rows(self, s):
        """Softmax over the last dim; -inf entries get 0."""
        if self.faithful:
            s32 = np.asarray(s, F32)
            m = s32.max(-1, keepdims=True)
            e = np.exp((s32 - m).astype(F32).astype(F64)).astype(F32)
            tot = e.astype(F64).sum(-1, keepdims=True).astype(F32)
            return bf16_round((e / tot).astype(F32))
        m = s.max(-1, keepdims=True)
        e = np.exp(s - m)
        return e / e.sum(-1, keepdims=True)

    # -- sublayers --------------------------------------------------------------------
    def indexer(self, p, x, qr, cos, sin, T):
        """Returns index scores [T, T] (causal positions valid; others -inf)."""
        c = self.cfg
        Hi, d, r = c.idx_heads, c.idx_dim, c.rope
        wq_b = self.lin(p + "self_attn.indexer.wq_b", Hi * d, c.q_lora)
        wk = self.lin(p + "self_attn.indexer.wk", d, c.dim)
        knw = self.vec(p + "self_attn.indexer.k_norm.weight", d)
        knb = self.vec(p + "self_attn.indexer.k_norm.bias", d)
        wproj = self.ck.get(p + "self_attn.indexer.weights_proj.weight", (Hi, c.dim)).astype(F32)

        q = self.linear(wq_b, qr).reshape(T, Hi, d)
        q_pe = apply_rope(q[..., :r], cos, sin, interleaved=False, faithful=self.faithful)
        q = np.concatenate([q_pe, q[..., r:]], -1)
        k = self.layernorm(self.linear(wk, x), knw, knb)
        k_pe = apply_rope(k[..., :r], cos, sin, interleaved=False, faithful=self.faithful)
        k = np.concatenate([k_pe, k[..., r:]], -1)
        q = hadamard(q, self.faithful)
        k = hadamard(k, self.faithful)
        causal = np.tril(np.ones((T, T), dtype=bool))
        if self.faithful:
            if d != QBLOCK:
                raise ValueError("faithful indexer needs index_head_dim == 128 (one scale per head)")
            q8, q_s = act_quant(q)            # [T,Hi,d], [T,Hi,1]
            k8, k_s = act_quant(k)            # [T,d],   [T,1]
            w = dot_f32(np.asarray(x, F32), wproj.T)                       # fp32 linear
            w = (w * F32(Hi ** -0.5)).astype(F32)
            w = ((w * q_s[..., 0]).astype(F32) * F32(d ** -0.5)).astype(F32)  # [T,Hi]
            logits = dot_f32(q8.reshape(T * Hi, d), k8.T).reshape(T, Hi, T)   # [t,h,s]
            prod = (np.maximum(logits, F32(0)) * w[:, :, None]).astype(F32)
            sc = prod.astype(F64).sum(1).astype(F32)                       # [t,s]
            sc = (sc * k_s[:, 0][None, :]).astype(F32)
        else:
            w = np.asarray(x, F64) @ wproj.astype(F64).T * (Hi ** -0.5) * (d ** -0.5)
            logits = np.einsum("thd,sd->ths", q, k)
            sc = (np.maximum(logits, 0.0) * w[:, :, None]).sum(1)
        sc = np.where(causal, sc, -np.inf)
        return sc

    def select_topk(self, sc, T):
        K = self.cfg.idx_topk
        out = np.full((T, K), -1, np.int32)
        for t in range(T):
            n = min(K, t + 1)
            order = np.argsort(-sc[t, :t + 1], kind="stable")[:n]
            out[t, :n] = np.sort(order)
        return out

    def mla(self, p, x, cos, sin, T, forced_topk):
        c = self.cfg
        H, nope, r, vd = c.n_heads, c.nope, c.rope, c.v_dim
        wq_a = self.lin(p + "self_attn.q_a_proj", c.q_lora, c.dim)
        wq_b = self.lin(p + "self_attn.q_b_proj", H * (nope + r), c.q_lora)
        wkv_a = self.lin(p + "self_attn.kv_a_proj_with_mqa", c.kv_lora + r, c.dim)
        wkv_b = self.lin(p + "self_attn.kv_b_proj", H * (nope + vd), c.kv_lora)
        wo = self.lin(p + "self_attn.o_proj", c.dim, H * vd)
        qn = self.vec(p + "self_attn.q_a_layernorm.weight", c.q_lora)
        kvn = self.vec(p + "self_attn.kv_a_layernorm.weight", c.kv_lora)

        qr = self.rmsnorm(self.linear(wq_a, x), qn, c.eps)
        q = self.linear(wq_b, qr).reshape(T, H, nope + r)
        q_nope = q[..., :nope]
        q_pe = apply_rope(q[..., nope:], cos, sin, interleaved=True, faithful=self.faithful)
        kv = self.linear(wkv_a, x)
        lat = self.rmsnorm(kv[:, :c.kv_lora], kvn, c.eps)
        if self.faithful:
            lat = bf16_round(act_dequant(*act_quant(lat)))
        k_pe = apply_rope(kv[:, c.kv_lora:], cos, sin, interleaved=True, faithful=self.faithful)

        # indexer -> selection mask
        if forced_topk is not None:
            sel = forced_topk
        else:
            sel = self.select_topk(self.indexer(p, x, qr, cos, sin, T), T)
        mask = np.zeros((T, T), dtype=bool)
        for t in range(T):
            ids = sel[t][sel[t] >= 0]
            mask[t, ids] = True
        mask &= np.tril(np.ones((T, T), dtype=bool))

        if not self.absorbed:
            kvb = self.linear(wkv_b, lat).reshape(T, H, nope + vd)
            k_nope, v = kvb[..., :nope], kvb[..., nope:]
            qf = np.concatenate([q_nope, q_pe], -1)                           # [T,H,D]
            kf = np.concatenate([k_nope, np.broadcast_to(k_pe[:, None, :], (T, H, r))], -1)
            if self.faithful:
                s = bf16_round(np.einsum("thd,shd->hts", qf.astype(F64), kf.astype(F64)).astype(F32))
                s = bf16_round((s * F32(c.softmax_scale)).astype(F32))
            else:
                s = np.einsum("thd,shd->hts", qf, kf) * c.softmax_scale
            s = np.where(mask[None], s, -np.inf)
            pr = self.softmax_rows(s)                                          # [H,T,S]
            if self.faithful:
                o = bf16_round(np.einsum("hts,shd->thd", pr.astype(F64), v.astype(F64)).astype(F32))
            else:
                o = np.einsum("hts,shd->thd", pr, v)
        elif self.faithful:
            # absorbed form as the reference's decode path computes it: kv_b dequantized to
            # bf16 (weight_dequant), and every einsum's output bf16
            W = bf16_round(wkv_b.dequant64().astype(F32)).astype(F64).reshape(H, nope + vd, c.kv_lora)
            W_uk, W_uv = W[:, :nope], W[:, nope:]
            q_c = bf16_round(np.einsum("thn,hnc->thc", np.asarray(q_nope, F64), W_uk).astype(F32))
            sa = bf16_round(np.einsum("thc,sc->hts", q_c.astype(F64), np.asarray(lat, F64)).astype(F32))
            sb = bf16_round(np.einsum("thr,sr->hts", np.asarray(q_pe, F64), np.asarray(k_pe, F64)).astype(F32))
            s = bf16_round((sa + sb).astype(F32))
            s = bf16_round((s * F32(c.softmax_scale)).astype(F32))
            s = np.where(mask[None], s, -np.inf)
            pr = self.softmax_rows(s)
            oc = bf16_round(np.einsum("hts,sc->thc", pr.astype(F64), np.asarray(lat, F64)).astype(F32))
            o = bf16_round(np.einsum("thc,hvc->thv", oc.astype(F64), W_uv).astype(F32))
        else:
            # absorbed form (exact): same math through the latent
            W = wkv_b.dequant64().reshape(H, nope + vd, c.kv_lora)
            W_uk, W_uv = W[:, :nope], W[:, nope:]
            q_c = np.einsum("thn,hnc->thc", q_nope, W_uk)
            s = (np.einsum("thc,sc->hts", q_c, lat) + np.einsum("thr,sr->hts", q_pe, k_pe)) * c.softmax_scale
            s = np.where(mask[None], s, -np.inf)
            pr = self.softmax_rows(s)
            oc = np.einsum("hts,sc->thc", pr, lat)
            o = np.einsum("thc,hvc->thv", oc, W_uv)
        return self.linear(wo, o.reshape(T, H * vd)), sel

    def mlp(self, p, x, inter):
        c = self.cfg
        w1 = self.lin(p + ".gate_proj", inter, c.dim)
        w3 = self.lin(p + ".up_proj", inter, c.dim)
        w2 = self.lin(p + ".down_proj", c.dim, inter)
        return self.ffn_apply(w1, w2, w3, x)

    def ffn_apply(self, w1, w2, w3, x):
        a = self.linear(w1, x)
        b = self.linear(w3, x)
        if self.faithful:
            a64 = a.astype(F64)
            sil = (a64 / (1.0 + np.exp(-a64))).astype(F32)
            h = bf16_round((sil * b).astype(F32))
        else:
            h = a / (1.0 + np.exp(-a)) * b
        return self.linear(w2, h)

    def gate(self, p, x, forced):
        c = self.cfg
        E = c.n_experts
        W = self.ck.get(p + "mlp.gate.weight", (E, c.dim)).astype(F32)
        bias_name = p + "mlp.gate.e_score_correction_bias"
        bias = self.vec(bias_name, E) if self.ck.has(bias_name) else None
        T = x.shape[0]
        if self.faithful:
            lg = dot_f32(np.asarray(x, F32), W.T)
            s = (1.0 / (1.0 + np.exp(-lg.astype(F64)))).astype(F32)
            b = (s + bias).astype(F32) if bias is not None else s
        else:
            lg = np.asarray(x, F64) @ W.astype(F64).T
            s = 1.0 / (1.0 + np.exp(-lg))
            b = s + bias.astype(F64) if bias is not None else s
        if forced is not None:
            ids = np.sort(forced, axis=1).astype(np.int64)
        else:
            ids = np.zeros((T, c.topk_experts), np.int64)
            G = c.n_group
            for t in range(T):
                bt = b[t]
                if G > 1:
                    grp = bt.reshape(G, E // G)
                    if bias is not None:
                        top2 = np.sort(grp, axis=1)[:, ::-1][:, :2]
                        gs = top2[:, 0] + top2[:, 1]
                    else:
                        gs = grp.max(1)
                    keep = np.argsort(-gs, kind="stable")[:c.topk_group]
                    allowed = np.zeros(E, bool)
                    for g in keep:
                        allowed[g * (E // G):(g + 1) * (E // G)] = True
                    bt = np.where(allowed, bt, -np.inf)
                ids[t] = np.sort(np.argsort(-bt, kind="stable")[:c.topk_experts])
        w = np.take_along_axis(s, ids, 1)
        if self.faithful:
            if c.norm_topk:
                w = (w / w.astype(F64).sum(1, keepdims=True).astype(F32)).astype(F32)
            w = (w * F32(c.route_scale)).astype(F32)
        else:
            if c.norm_topk:
                w = w / w.sum(1, keepdims=True)
            w = w * c.route_scale
        return ids, w

    def moe(self, p, x, forced):
        c = self.cfg
        T = x.shape[0]
        ids, w = self.gate(p, x, forced)
        acc_t = F32 if self.faithful else F64
        y = np.zeros((T, c.dim), acc_t)
        for e in np.unique(ids):
            rows, slot = np.nonzero(ids == e)
            ep = p + "mlp.experts.%d" % e
            w1 = self.lin(ep + ".gate_proj", c.moe_inter, c.dim)
            w3 = self.lin(ep + ".up_proj", c.moe_inter, c.dim)
            w2 = self.lin(ep + ".down_proj", c.dim, c.moe_inter)
            out = self.ffn_apply(w1, w2, w3, x[rows])
            y[rows] = (y[rows] + (out * w[rows, slot][:, None]).astype(acc_t)).astype(acc_t)
        if c.n_shared > 0:
            sh = self.mlp(p + "mlp.shared_experts", x, c.n_shared * c.moe_inter)
            y = (y + sh).astype(acc_t)
        if self.faithful:
            y = bf16_round(y)
        return y, ids.astype(np.int32)

    # -- whole model ------------------------------------------------------------------
    def forward(self, tokens, forced_topk=None, forced_experts=None, absorbed=False, teacher=None):
        """teacher: optional float32 [L, T, hidden] residual streams (another run's layers.f32):
        layer l > 0 then starts from teacher[l-1] instead of this run's own layer l-1 output
        (and the head from teacher[L-1]), so that each layer is compared in isolation."""
        c = self.cfg
        self.absorbed = absorbed
        T = len(tokens)
        emb = self.ck.get("model.embed_tokens.weight", (c.vocab, c.dim))
        h = emb[np.asarray(tokens)].astype(F32)
        if not self.faithful:
            h = h.astype(F64)
        cos, sin = rope_tables(c, T)
        layers = np.zeros((c.n_layers, T, c.dim), F32)
        topk = np.full((c.n_layers, T, c.idx_topk), -1, np.int32)
        experts = np.full((c.n_layers, T, c.topk_experts), -1, np.int32)
        residual = None
        for li in range(c.n_layers):
            p = "model.layers.%d." % li
            an = self.vec(p + "input_layernorm.weight", c.dim)
            fn = self.vec(p + "post_attention_layernorm.weight", c.dim)
            if residual is None:
                x, residual = self.rmsnorm(h, an, c.eps), h
            else:
                x, residual, _ = self.residual_norm(h, residual, an)
            ft = forced_topk[li] if forced_topk is not None else None
            a, sel = self.mla(p, x, cos, sin, T, ft)
            topk[li] = sel
            x, residual, _ = self.residual_norm(a, residual, fn)
            if li < c.n_dense:
                h = self.mlp(p + "mlp", x, c.inter)
            else:
                fe = forced_experts[li] if forced_experts is not None else None
                h, ids = self.moe(p, x, fe)
                experts[li] = ids
            if self.faithful:
                layers[li] = (np.asarray(residual, F32) + np.asarray(h, F32)).astype(F32)
            else:
                layers[li] = (residual + h).astype(F32)
            if teacher is not None:
                # the next RMSNorm sees exactly the teacher's fp32 sum
                h = teacher[li].astype(F32 if self.faithful else F64)
                residual = np.zeros_like(h)
        nw = self.vec("model.norm.weight", c.dim)
        x, _, _ = self.residual_norm(h, residual, nw)
        self.hidden = x            # the final normed state: what lm_head sees, what MTP takes
        return self.head(x, "lm_head.weight"), layers, topk, experts

    def head(self, x, name):
        head = self.ck.get(name, (self.cfg.vocab, self.cfg.dim))
        if self.faithful:
            return dot_f32(np.asarray(x, F32), head.T)
        return (np.asarray(x, F64) @ head.astype(F64).T).astype(F32)

    def mtp_forward(self, tokens, hidden, forced_topk=None, forced_experts=None):
        """The multi-token-prediction layer (layer n_layers) over positions 0..T-2: row p takes
        the next token tokens[p+1] and the main model's final normed state hidden[p]:
            x = eh_proj([enorm(embed(t_{p+1})); hnorm(h_p)])   (embedding first, as the
                released weights expect: vLLM deepseek_mtp.py, SGLang deepseek_nextn.py)
            y = block(x)    x is the block's residual (like layer 0); own attention over
                            the MTP rows 0..p
            logits = shared_head.head(shared_head.norm(y))   (the main embedding / lm_head
                            when the checkpoint leaves the layer's copies out)
        Row p's logits are the draft for position p + 2.  Returns logits [T-1, V], the block's
        output stream [1, T-1, D], its selections [1, T-1, K] and experts [1, T-1, k]."""
        c = self.cfg
        li = c.n_layers
        p = "model.layers.%d." % li
        T = len(tokens) - 1
        if T < 1:
            raise ValueError("MTP needs at least two tokens")
        emb_name = p + "embed_tokens.weight" if self.ck.has(p + "embed_tokens.weight") else "model.embed_tokens.weight"
        head_name = p + "shared_head.head.weight" if self.ck.has(p + "shared_head.head.weight") else "lm_head.weight"
        emb = self.ck.get(emb_name, (c.vocab, c.dim))[np.asarray(tokens[1:])].astype(F32)
        e = self.rmsnorm(emb, self.vec(p + "enorm.weight", c.dim), c.eps)
        g = self.rmsnorm(np.asarray(hidden[:T], F32 if self.faithful else F64), self.vec(p + "hnorm.weight", c.dim), c.eps)
        eh = self.lin(p + "eh_proj", c.dim, 2 * c.dim)
        h = self.linear(eh, np.concatenate([e, g], -1))
        cos, sin = rope_tables(c, T)
        self.absorbed = True       # the engine runs every MTP row as a decode step
        an = self.vec(p + "input_layernorm.weight", c.dim)
        fn = self.vec(p + "post_attention_layernorm.weight", c.dim)
        x, residual = self.rmsnorm(h, an, c.eps), h
        if self.faithful:
            residual = bf16_round(residual)
        ft = forced_topk[0] if forced_topk is not None else None
        a, sel = self.mla(p, x, cos, sin, T, ft)
        x, residual, _ = self.residual_norm(a, residual, fn)
        ids = np.full((T, c.topk_experts), -1, np.int32)
        if li < c.n_dense:
            f = self.mlp(p + "mlp", x, c.inter)
        else:
            fe = forced_experts[0] if forced_experts is not None else None
            f, ids = self.moe(p, x, fe)
        y, _, ysum = self.residual_norm(f, residual, self.vec(p + "shared_head.norm.weight", c.dim))
        layers = np.asarray(ysum, F32)[None]
        return self.head(y, head_name), layers, sel[None], ids[None]


# ----------------------------------------------------------------------------------------

def selftest():
    # e4m3: every finite code round-trips; midpoints round to even; subnormals
    vals = E4M3_DECODE[np.isfinite(E4M3_DECODE)]
    assert np.array_equal(e4m3_round(vals), vals)
    pos = np.unique(vals[vals >= 0])
    mids = (pos[:-1].astype(F64) + pos[1:]) / 2
    r = e4m3_round(mids)
    codes = {float(v): i for i, v in enumerate(E4M3_DECODE[:127])}
    for m, q, lo, hi in zip(mids, r, pos[:-1], pos[1:]):
        even = lo if codes[float(lo)] % 2 == 0 else hi
        assert q == even, (m, q, lo, hi)
    assert e4m3_round(np.array([2.0 ** -10]))[0] == 0.0          # half of min subnormal -> 0 (even)
    assert e4m3_round(np.array([1.5 * 2.0 ** -10]))[0] == 2.0 ** -9
    assert e4m3_round(np.array([-3 * 2.0 ** -10]))[0] == -2 * 2.0 ** -9
    # bf16 rounding
    x = np.array([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 1.0 + 2 ** -8 + 2 ** -20], F32)
    assert list(bf16_round(x)) == [1.0, 1.0 + 2 ** -6, 1.0 + 2 ** -7]
    # pow2 scale
    assert pow2_ceil_scale(np.array([1.0, 1.5, 0.75], F32)).tolist() == [1.0, 2.0, 1.0]
    # act_quant round trip of exactly representable data is the identity
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 256)).astype(F32)
    c1, s1 = act_quant(a)
    d1 = act_dequant(c1, s1)
    c2, s2 = act_quant(d1)
    assert np.array_equal(c1, c2) and np.array_equal(s1, s2)
    assert np.max(np.abs(d1 - a) / np.abs(a).max()) < 2 ** -4
    # hadamard orthonormal
    H = hadamard_matrix(128) * 128 ** -0.5
    assert np.allclose(H @ H, np.eye(128))
    print("selftest ok")


def read_i32(path, shape):
    a = np.fromfile(path, dtype="<i4")
    if a.size != int(np.prod(shape)):
        raise ValueError("%s: expected %d int32 values %s, found %d" % (path, np.prod(shape), shape, a.size))
    return a.reshape(shape)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--tokens")
    ap.add_argument("--numerics", choices=["exact", "faithful"], default="exact")
    ap.add_argument("--out")
    ap.add_argument("--force", help="directory with topk.i32 and experts.i32 to use as selections")
    ap.add_argument("--teacher", metavar="DIR",
                    help="per-layer teacher forcing: start each layer l > 0 (and the head) from "
                         "DIR/layers.f32 [l-1] instead of this run's own stream")
    ap.add_argument("--absorbed", action="store_true",
                    help="compute attention in the absorbed/latent form: the decode path (exact: a "
                         "self-check, same math; faithful: the reference's decode rounding points)")
    ap.add_argument("--mtp", action="store_true",
                    help="also run the MTP layer over positions 0..T-2 (next token from the prompt) "
                         "into OUTDIR/mtp/ (same format; with --force, selections from FORCEDIR/mtp/)")
    ap.add_argument("--selftest", action="store_true", help="check number-format helpers and exit")
    args = ap.parse_args(argv)
    if args.selftest:
        selftest()
        return 0
    if not (args.model and args.tokens and args.out):
        ap.error("--model, --tokens and --out are required")
    tokens = [int(t) for t in args.tokens.replace(" ", "").split(",") if t != ""]
    m = Model(args.model, args.numerics)
    c = m.cfg
    T = len(tokens)
    if T == 0:
        ap.error("empty prompt")
    for t in tokens:
        if not 0 <= t < c.vocab:
            ap.error("token %d out of range [0, %d)" % (t, c.vocab))
    ft = fe = None
    if args.force:
        ft = read_i32(os.path.join(args.force, "topk.i32"), (c.n_layers, T, c.idx_topk))
        fe = read_i32(os.path.join(args.force, "experts.i32"), (c.n_layers, T, c.topk_experts))
    teacher = None
    if args.teacher:
        teacher = np.fromfile(os.path.join(args.teacher, "layers.f32"), dtype="<f4")
        if teacher.size != c.n_layers * T * c.dim:
            raise SystemExit("%s/layers.f32: expected [%d, %d, %d] float32" % (args.teacher, c.n_layers, T, c.dim))
        teacher = teacher.reshape(c.n_layers, T, c.dim)
    logits, layers, topk, experts = m.forward(tokens, ft, fe, absorbed=args.absorbed, teacher=teacher)
    os.makedirs(args.out, exist_ok=True)
    logits.astype("<f4").tofile(os.path.join(args.out, "logits.f32"))
    layers.astype("<f4").tofile(os.path.join(args.out, "layers.f32"))
    topk.astype("<i4").tofile(os.path.join(args.out, "topk.i32"))
    experts.astype("<i4").tofile(os.path.join(args.out, "experts.i32"))
    meta = {"T": T, "vocab_size": c.vocab, "n_layers": c.n_layers, "hidden": c.dim,
            "index_topk": c.idx_topk, "experts_per_tok": c.topk_experts,
            "numerics": args.numerics, "tokens": tokens}
    if args.force:
        meta["forced_from"] = os.path.abspath(args.force)
    if args.teacher:
        meta["teacher"] = os.path.abspath(args.teacher)
    with open(os.path.join(args.out, "meta.json"), "w") as f:
        json.dump(meta, f)
    if args.mtp:
        mft = mfe = None
        if args.force:
            fd = os.path.join(args.force, "mtp")
            mft = read_i32(os.path.join(fd, "topk.i32"), (1, T - 1, c.idx_topk))
            mfe = read_i32(os.path.join(fd, "experts.i32"), (1, T - 1, c.topk_experts))
        logits, layers, topk, experts = m.mtp_forward(tokens, m.hidden, mft, mfe)
        od = os.path.join(args.out, "mtp")
        os.makedirs(od, exist_ok=True)
        logits.astype("<f4").tofile(os.path.join(od, "logits.f32"))
        layers.astype("<f4").tofile(os.path.join(od, "layers.f32"))
        topk.astype("<i4").tofile(os.path.join(od, "topk.i32"))
        experts.astype("<i4").tofile(os.path.join(od, "experts.i32"))
        meta = dict(meta, T=T - 1, n_layers=1, mtp_layer=c.n_layers, tokens=tokens[1:])
        with open(os.path.join(od, "meta.json"), "w") as f:
            json.dump(meta, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
