/*
 * AdderNet convolution kernels for the CPU, shape-generic (docs/algorithms.md §2).
 *
 *   forward  Y[n,o,p]  = -sum_{c,k} |Xpad[n,c,s*p + d*k] - W[o,c,k]|                  (AdderNet eq. 2)
 *   dX       dX[n,c,q] =  sum_{o,k,p: s*p + d*k = q + pad} g[n,o,p] * phi(W[o,c,k] - X[n,c,q])   (eqs. 5, 6)
 *   dW (depthwise)      =  sum_{n,p} g[n,c,p] * (Xpad[n,c,s*p + d*k] - W[c,k])           (full-precision, eq. 6)
 *
 * phi = hardtanh, or sign when `exact` is set (the true derivative). Zero padding counts as x = 0.
 *
 * Two layouts, one per kind of layer:
 *   - general layers (any groups with more than one input or output channel per group): channels-last tensors
 *     (N, H, W, C) and the weight as (G, KH, KW, CG, OG); the innermost loop runs over the contiguous output
 *     channels of a group, so it vectorises with one input value broadcast;
 *   - depthwise layers (one input and one output channel per group): either channels-first planes flattened with
 *     the padded row pitch, weight (C, KH, KW), one contiguous loop per tap over a whole plane (stride 1, wide
 *     rows), or channels-last tensors, weight (KH, KW, C), the innermost loop over channels (strided layers and
 *     few-pixel maps).
 * The Python side (functional/_adder_native.py) builds the layouts, pads the input and compiles this file once per
 * machine; nothing here allocates memory. Every kernel is defined for float and for double (the `_f32` and `_f64`
 * suffixes), and parallelised with OpenMP over independent output rows (or channels, for the depthwise dW).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

/* HardTanh in place, written as two selects: GCC 12 if-converts (vectorises) this form, not a nested conditional
   or an inline function returning one, and not when the result is then multiplied by a loop-invariant scalar
   (it folds the product into the branches): there the product is written as an fma. A loop left scalar here runs
   with mispredicted branches, measured 20-50x slower. */
#define CLAMP_UNIT(T, d) d = d > (T)1 ? (T)1 : d; d = d < (T)-1 ? (T)-1 : d

/* Output channels of one group accumulated together in the general forward (kept in vector registers): tiles of
   32, 16 or 8 (constant trip counts), the last one narrower when the group's width is not a multiple of 8. */
#define OUT_TILE 32

static inline int64_t tile_width(int64_t left) { return left >= 32 ? 32 : left >= 16 ? 16 : left >= 8 ? 8 : left; }

/* acc[0:TW] += |x_c - W[c, 0:TW]| over the CG input channels of one tap (xr, wr, CG, OG in scope). */
#define TILE_ACCUMULATE(T, ABS, TW)                                                                                 \
    for (i64 c = 0; c < CG; ++c) {                                                                                  \
        const T xv = xr[c];                                                                                         \
        const T *w = wr + c * OG;                                                                                   \
        _Pragma("omp simd")                                                                                         \
        for (i64 o = 0; o < (TW); ++o) acc[o] += ABS(xv - w[o]);                                                    \
    }

#define DEFINE_ADDER_KERNELS(T, SUFFIX, ABS, FMA)                                                                   \
                                                                                                                    \
static inline T sign_##SUFFIX(T d) { return (T)((d > 0) - (d < 0)); }                                                \
                                                                                                                    \
/* x: (N, Hp, Wp, C) padded, wt: (G, KH, KW, CG, OG), y: (N, Ho, Wo, O). */                                        \
void adder_forward_nhwc_##SUFFIX(const T *restrict x, const T *restrict wt, T *restrict y,                         \
                                 i64 N, i64 Hp, i64 Wp, i64 C, i64 Ho, i64 Wo, i64 O, i64 KH, i64 KW,              \
                                 i64 sh, i64 sw, i64 dh, i64 dw, i64 G, int nthreads) {                           \
    const i64 CG = C / G, OG = O / G;                                                                               \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 oh = 0; oh < Ho; ++oh) {                                                                           \
            for (i64 ow = 0; ow < Wo; ++ow) {                                                                       \
                T *restrict yp = y + ((n * Ho + oh) * Wo + ow) * O;                                                 \
                for (i64 g = 0; g < G; ++g) {                                                                       \
                    for (i64 o0 = 0, t = 0; o0 < OG; o0 += t) {                                                     \
                        t = tile_width(OG - o0);                                                                    \
                        T acc[OUT_TILE];                                                                            \
                        for (i64 o = 0; o < OUT_TILE; ++o) acc[o] = 0;                                              \
                        for (i64 ki = 0; ki < KH; ++ki) {                                                           \
                            for (i64 kj = 0; kj < KW; ++kj) {                                                       \
                                const T *xr = x + ((n * Hp + oh * sh + ki * dh) * Wp + ow * sw + kj * dw) * C + g * CG;\
                                const T *wr = wt + ((g * KH + ki) * KW + kj) * CG * OG + o0;                        \
                                switch (t) {  /* constant trip counts: the accumulators stay in vector registers */ \
                                    case 32: TILE_ACCUMULATE(T, ABS, 32); break;                                    \
                                    case 16: TILE_ACCUMULATE(T, ABS, 16); break;                                    \
                                    case 8: TILE_ACCUMULATE(T, ABS, 8); break;                                      \
                                    default: TILE_ACCUMULATE(T, ABS, t); break;                                     \
                                }                                                                                   \
                            }                                                                                       \
                        }                                                                                           \
                        for (i64 o = 0; o < t; ++o) yp[g * OG + o0 + o] = -acc[o];                                  \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* x: (N, H, W, C) unpadded, wt: (G, KH, KW, CG, OG), g: (N, Ho, Wo, O), dx: (N, H, W, C). */                      \
void adder_input_grad_nhwc_##SUFFIX(const T *restrict x, const T *restrict wt, const T *restrict gr,              \
                                    T *restrict dx, i64 N, i64 H, i64 W, i64 C, i64 Ho, i64 Wo, i64 O,            \
                                    i64 KH, i64 KW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, i64 G,       \
                                    int exact, int nthreads) {                                                    \
    const i64 CG = C / G, OG = O / G;                                                                               \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 qh = 0; qh < H; ++qh) {                                                                            \
            for (i64 qw = 0; qw < W; ++qw) {                                                                        \
                const T *xq = x + ((n * H + qh) * W + qw) * C;                                                      \
                T *dq = dx + ((n * H + qh) * W + qw) * C;                                                           \
                for (i64 c = 0; c < C; ++c) dq[c] = 0;                                                              \
                for (i64 ki = 0; ki < KH; ++ki) {                                                                   \
                    const i64 nh = qh + ph - ki * dh;                                                               \
                    if (nh < 0 || nh % sh) continue;                                                                \
                    const i64 oh = nh / sh;                                                                         \
                    if (oh >= Ho) continue;                                                                         \
                    for (i64 kj = 0; kj < KW; ++kj) {                                                               \
                        const i64 nw = qw + pw - kj * dw;                                                           \
                        if (nw < 0 || nw % sw) continue;                                                            \
                        const i64 ow = nw / sw;                                                                     \
                        if (ow >= Wo) continue;                                                                     \
                        const T *gp = gr + ((n * Ho + oh) * Wo + ow) * O;                                           \
                        for (i64 g = 0; g < G; ++g) {                                                               \
                            const T *gg = gp + g * OG;                                                              \
                            const T *wr = wt + ((g * KH + ki) * KW + kj) * CG * OG;                                 \
                            for (i64 c = 0; c < CG; ++c) {                                                          \
                                const T xv = xq[g * CG + c];                                                        \
                                const T *w = wr + c * OG;                                                           \
                                T s = 0;                                                                            \
                                if (exact) {                                                                        \
                                    for (i64 o = 0; o < OG; ++o) s += gg[o] * sign_##SUFFIX(w[o] - xv);           \
                                } else {                                                                            \
                                    _Pragma("omp simd reduction(+:s)")                                              \
                                    for (i64 o = 0; o < OG; ++o) {                                                  \
                                        T d = w[o] - xv;                                                            \
                                        CLAMP_UNIT(T, d);                                                           \
                                        s += gg[o] * d;                                                             \
                                    }                                                                               \
                                }                                                                                   \
                                dq[g * CG + c] += s;                                                                \
                            }                                                                                       \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* dX with the input channels of a group as the vectorised inner loop (groups of 8 or more input channels):      \
   wt: (G, KH, KW, OG, CG); otherwise as adder_input_grad_nhwc. */                                                 \
void adder_input_grad_nhwc_cvec_##SUFFIX(const T *restrict x, const T *restrict wt, const T *restrict gr,         \
                                         T *restrict dx, i64 N, i64 H, i64 W, i64 C, i64 Ho, i64 Wo, i64 O,       \
                                         i64 KH, i64 KW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, i64 G,  \
                                         int exact, int nthreads) {                                               \
    const i64 CG = C / G, OG = O / G;                                                                               \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 qh = 0; qh < H; ++qh) {                                                                            \
            for (i64 qw = 0; qw < W; ++qw) {                                                                        \
                const T *xq = x + ((n * H + qh) * W + qw) * C;                                                      \
                T *restrict dq = dx + ((n * H + qh) * W + qw) * C;                                                  \
                for (i64 c = 0; c < C; ++c) dq[c] = 0;                                                              \
                for (i64 ki = 0; ki < KH; ++ki) {                                                                   \
                    const i64 nh = qh + ph - ki * dh;                                                               \
                    if (nh < 0 || nh % sh || nh / sh >= Ho) continue;                                               \
                    for (i64 kj = 0; kj < KW; ++kj) {                                                               \
                        const i64 nw = qw + pw - kj * dw;                                                           \
                        if (nw < 0 || nw % sw || nw / sw >= Wo) continue;                                           \
                        const T *gp = gr + ((n * Ho + nh / sh) * Wo + nw / sw) * O;                                 \
                        for (i64 g = 0; g < G; ++g) {                                                               \
                            const T *xg = xq + g * CG;                                                              \
                            T *restrict dg = dq + g * CG;                                                           \
                            const T *wr = wt + ((g * KH + ki) * KW + kj) * OG * CG;                                 \
                            for (i64 o = 0; o < OG; ++o) {                                                          \
                                const T gv = gp[g * OG + o];                                                        \
                                const T *w = wr + o * CG;                                                           \
                                if (exact) {                                                                        \
                                    for (i64 c = 0; c < CG; ++c) dg[c] += gv * sign_##SUFFIX(w[c] - xg[c]);         \
                                } else {                                                                            \
                                    _Pragma("omp simd")                                                             \
                                    for (i64 c = 0; c < CG; ++c) {                                                  \
                                        T d = w[c] - xg[c];                                                         \
                                        CLAMP_UNIT(T, d);                                                           \
                                        dg[c] = FMA(gv, d, dg[c]);  /* not gv * d: see CLAMP_UNIT */                \
                                    }                                                                               \
                                }                                                                                   \
                            }                                                                                       \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise, stride 1, channels-first on flattened planes: the output plane is computed with the padded input's  \
   row pitch Wp, so every tap is one long contiguous loop (L = (Ho - 1) * Wp + Wo elements); the Wp - Wo columns   \
   past each row are scratch the caller drops. x: (N, C, Hp, Wp) padded, w: (C, KH, KW), y: (N, C, Ho, Wp). */      \
void adder_forward_depthwise_flat_##SUFFIX(const T *restrict x, const T *restrict w, T *restrict y,                \
                                           i64 N, i64 C, i64 Hp, i64 Wp, i64 Ho, i64 Wo, i64 KH, i64 KW,           \
                                           i64 dh, i64 dw, int nthreads) {                                        \
    const i64 L = (Ho - 1) * Wp + Wo;                                                                               \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 c = 0; c < C; ++c) {                                                                               \
            const T *xc = x + (n * C + c) * Hp * Wp;                                                                \
            T *restrict yc = y + (n * C + c) * Ho * Wp;                                                             \
            for (i64 i = 0; i < Ho * Wp; ++i) yc[i] = 0;                                                            \
            for (i64 ki = 0; ki < KH; ++ki) {                                                                       \
                for (i64 kj = 0; kj < KW; ++kj) {                                                                   \
                    const T wv = w[(c * KH + ki) * KW + kj];                                                        \
                    const T *xs = xc + ki * dh * Wp + kj * dw;                                                      \
                    _Pragma("omp simd")                                                                             \
                    for (i64 i = 0; i < L; ++i) yc[i] -= ABS(xs[i] - wv);                                           \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise, stride 1, flattened planes (see the forward): with g placed in a zero frame gf of height              \
   H + (KH - 1) * dh and row pitch Wg (the caller builds it), dX[q] = sum_k gf[q + off_k] * phi(W_k - X[q]) with     \
   off_k = (KH - 1 - ki) * dh * Wg + (KW - 1 - kj) * dw. x, dx: (N, C, H, Wg) (columns past W are scratch). */       \
void adder_input_grad_depthwise_flat_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict gf,      \
                                              T *restrict dx, i64 N, i64 C, i64 H, i64 W, i64 Wg, i64 KH, i64 KW,  \
                                              i64 dh, i64 dw, int exact, int nthreads) {                          \
    const i64 L = (H - 1) * Wg + W, Hg = H + (KH - 1) * dh;                                                        \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 c = 0; c < C; ++c) {                                                                               \
            const T *xc = x + (n * C + c) * H * Wg;                                                                 \
            const T *gc = gf + (n * C + c) * Hg * Wg;                                                               \
            T *restrict dc = dx + (n * C + c) * H * Wg;                                                             \
            for (i64 i = 0; i < H * Wg; ++i) dc[i] = 0;                                                             \
            for (i64 ki = 0; ki < KH; ++ki) {                                                                       \
                for (i64 kj = 0; kj < KW; ++kj) {                                                                   \
                    const T wv = w[(c * KH + ki) * KW + kj];                                                        \
                    const T *gs = gc + (KH - 1 - ki) * dh * Wg + (KW - 1 - kj) * dw;                                \
                    if (exact) {                                                                                    \
                        for (i64 i = 0; i < L; ++i) dc[i] += gs[i] * sign_##SUFFIX(wv - xc[i]);                   \
                    } else {                                                                                        \
                        _Pragma("omp simd")                                                                         \
                        for (i64 i = 0; i < L; ++i) {                                                               \
                            T d = wv - xc[i];                                                                       \
                            CLAMP_UNIT(T, d);                                                                       \
                            dc[i] += gs[i] * d;                                                                     \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise, channels-last. x: (N, Hp, Wp, C) padded, w: (KH, KW, C), y: (N, Ho, Wo, C). */                        \
void adder_forward_depthwise_nhwc_##SUFFIX(const T *restrict x, const T *restrict w, T *restrict y,                \
                                           i64 N, i64 C, i64 Hp, i64 Wp, i64 Ho, i64 Wo, i64 KH, i64 KW,           \
                                           i64 sh, i64 sw, i64 dh, i64 dw, int nthreads) {                        \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 oh = 0; oh < Ho; ++oh) {                                                                           \
            for (i64 ow = 0; ow < Wo; ++ow) {                                                                       \
                T *restrict yp = y + ((n * Ho + oh) * Wo + ow) * C;                                                 \
                for (i64 c = 0; c < C; ++c) yp[c] = 0;                                                              \
                for (i64 ki = 0; ki < KH; ++ki) {                                                                   \
                    for (i64 kj = 0; kj < KW; ++kj) {                                                               \
                        const T *xr = x + ((n * Hp + oh * sh + ki * dh) * Wp + ow * sw + kj * dw) * C;              \
                        const T *wr = w + (ki * KW + kj) * C;                                                       \
                        _Pragma("omp simd")                                                                         \
                        for (i64 c = 0; c < C; ++c) yp[c] -= ABS(xr[c] - wr[c]);                                    \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise, channels-last. x: (N, H, W, C), w: (KH, KW, C), g: (N, Ho, Wo, C), dx: (N, H, W, C). */               \
void adder_input_grad_depthwise_nhwc_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict gr,     \
                                              T *restrict dx, i64 N, i64 C, i64 H, i64 W, i64 Ho, i64 Wo,          \
                                              i64 KH, i64 KW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw,     \
                                              int exact, int nthreads) {                                          \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 qh = 0; qh < H; ++qh) {                                                                            \
            for (i64 qw = 0; qw < W; ++qw) {                                                                        \
                const T *xq = x + ((n * H + qh) * W + qw) * C;                                                      \
                T *restrict dq = dx + ((n * H + qh) * W + qw) * C;                                                  \
                for (i64 c = 0; c < C; ++c) dq[c] = 0;                                                              \
                for (i64 ki = 0; ki < KH; ++ki) {                                                                   \
                    const i64 nh = qh + ph - ki * dh;                                                               \
                    if (nh < 0 || nh % sh || nh / sh >= Ho) continue;                                               \
                    for (i64 kj = 0; kj < KW; ++kj) {                                                               \
                        const i64 nw = qw + pw - kj * dw;                                                           \
                        if (nw < 0 || nw % sw || nw / sw >= Wo) continue;                                           \
                        const T *gp = gr + ((n * Ho + nh / sh) * Wo + nw / sw) * C;                                 \
                        const T *wr = w + (ki * KW + kj) * C;                                                       \
                        if (exact) {                                                                                \
                            for (i64 c = 0; c < C; ++c) dq[c] += gp[c] * sign_##SUFFIX(wr[c] - xq[c]);            \
                        } else {                                                                                    \
                            _Pragma("omp simd")                                                                     \
                            for (i64 c = 0; c < C; ++c) {                                                           \
                                T d = wr[c] - xq[c];                                                                \
                                CLAMP_UNIT(T, d);                                                                   \
                                dq[c] += gp[c] * d;                                                                 \
                            }                                                                                       \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise full-precision dW, channels-last. x: (N, Hp, Wp, C) padded, w: (KH, KW, C), g: (N, Ho, Wo, C),       \
   out: (KH, KW, C). Each thread owns a block of channels. */                                                       \
void adder_weight_grad_depthwise_nhwc_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict gr,    \
                                               T *restrict out, i64 N, i64 C, i64 Hp, i64 Wp, i64 Ho, i64 Wo,      \
                                               i64 KH, i64 KW, i64 sh, i64 sw, i64 dh, i64 dw, int nthreads) {    \
    const i64 block = 16;                                                                                           \
    const i64 nblocks = (C + block - 1) / block;                                                                    \
    _Pragma("omp parallel for schedule(static) num_threads(nthreads)")                                              \
    for (i64 b = 0; b < nblocks; ++b) {                                                                             \
        const i64 c0 = b * block, c1 = c0 + block < C ? c0 + block : C;                                             \
        for (i64 k = 0; k < KH * KW; ++k)                                                                           \
            for (i64 c = c0; c < c1; ++c) out[k * C + c] = 0;                                                       \
        for (i64 n = 0; n < N; ++n) {                                                                               \
            for (i64 oh = 0; oh < Ho; ++oh) {                                                                       \
                for (i64 ow = 0; ow < Wo; ++ow) {                                                                   \
                    const T *gp = gr + ((n * Ho + oh) * Wo + ow) * C;                                               \
                    for (i64 ki = 0; ki < KH; ++ki) {                                                               \
                        for (i64 kj = 0; kj < KW; ++kj) {                                                           \
                            const T *xr = x + ((n * Hp + oh * sh + ki * dh) * Wp + ow * sw + kj * dw) * C;          \
                            const T *wr = w + (ki * KW + kj) * C;                                                   \
                            T *orow = out + (ki * KW + kj) * C;                                                     \
                            _Pragma("omp simd")                                                                     \
                            for (i64 c = c0; c < c1; ++c) orow[c] += gp[c] * (xr[c] - wr[c]);                       \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}

DEFINE_ADDER_KERNELS(float, f32, fabsf, __builtin_fmaf)
DEFINE_ADDER_KERNELS(double, f64, fabs, __builtin_fma)
