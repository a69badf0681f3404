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
 *   - depthwise layers (one input and one output channel per group): either channels-first tensors (N, C, H, W),
 *     weight (C, KH, KW), the innermost loop over the contiguous output columns (wide stride-1 rows), or
 *     channels-last tensors, weight (KH, KW, C), the innermost loop over channels (strided and few-pixel maps).
 * The Python side (functional/_adder_native.py) builds the layouts, pads the input and compiles this file once per
 * machine; nothing here allocates memory. Every kernel is defined for float and for double (the `_f32` and `_f64`
 * suffixes), and parallelised with OpenMP over independent output rows (or channels, for the depthwise dW).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef int64_t i64;

/* Output channels of one group accumulated together in the general forward (kept in vector registers). */
#define OUT_TILE 32

#define DEFINE_ADDER_KERNELS(T, SUFFIX, ABS)                                                                        \
                                                                                                                    \
static inline T clamp1_##SUFFIX(T d) { return d > (T)1 ? (T)1 : (d < (T)-1 ? (T)-1 : d); }                     \
static inline T phi_##SUFFIX(T d, int exact) { return exact ? (T)((d > 0) - (d < 0)) : clamp1_##SUFFIX(d); }       \
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
                    for (i64 o0 = 0; o0 < OG; o0 += OUT_TILE) {                                                     \
                        const i64 t = OG - o0 < OUT_TILE ? OG - o0 : OUT_TILE;                                      \
                        T acc[OUT_TILE];                                                                            \
                        for (i64 o = 0; o < OUT_TILE; ++o) acc[o] = 0;                                              \
                        for (i64 ki = 0; ki < KH; ++ki) {                                                           \
                            for (i64 kj = 0; kj < KW; ++kj) {                                                       \
                                const T *xr = x + ((n * Hp + oh * sh + ki * dh) * Wp + ow * sw + kj * dw) * C      \
                                              + g * CG;                                                             \
                                const T *wr = wt + ((g * KH + ki) * KW + kj) * CG * OG + o0;                        \
                                if (t == OUT_TILE) {                                                                \
                                    for (i64 c = 0; c < CG; ++c) {                                                  \
                                        const T xv = xr[c];                                                         \
                                        const T *w = wr + c * OG;                                                   \
                                        _Pragma("omp simd")                                                         \
                                        for (i64 o = 0; o < OUT_TILE; ++o) acc[o] += ABS(xv - w[o]);                \
                                    }                                                                               \
                                } else {                                                                            \
                                    for (i64 c = 0; c < CG; ++c) {                                                  \
                                        const T xv = xr[c];                                                         \
                                        const T *w = wr + c * OG;                                                   \
                                        for (i64 o = 0; o < t; ++o) acc[o] += ABS(xv - w[o]);                       \
                                    }                                                                               \
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
                                    for (i64 o = 0; o < OG; ++o) s += gg[o] * phi_##SUFFIX(w[o] - xv, 1);           \
                                } else {                                                                            \
                                    _Pragma("omp simd reduction(+:s)")                                              \
                                    for (i64 o = 0; o < OG; ++o) {                                                  \
                                        const T d = clamp1_##SUFFIX(w[o] - xv);                                     \
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
/* Depthwise. x: (N, C, Hp, Wp) padded, w: (C, KH, KW), y: (N, C, Ho, Wo). */                                      \
void adder_forward_depthwise_##SUFFIX(const T *restrict x, const T *restrict w, T *restrict y,                     \
                                      i64 N, i64 C, i64 Hp, i64 Wp, i64 Ho, i64 Wo, i64 KH, i64 KW,                \
                                      i64 sh, i64 sw, i64 dh, i64 dw, int nthreads) {                             \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 c = 0; c < C; ++c) {                                                                               \
            const T *xc = x + (n * C + c) * Hp * Wp;                                                                \
            const T *wc = w + c * KH * KW;                                                                          \
            T *yc = y + (n * C + c) * Ho * Wo;                                                                      \
            for (i64 oh = 0; oh < Ho; ++oh) {                                                                       \
                T *yr = yc + oh * Wo;                                                                               \
                for (i64 ow = 0; ow < Wo; ++ow) yr[ow] = 0;                                                         \
                for (i64 ki = 0; ki < KH; ++ki) {                                                                   \
                    const T *xr = xc + (oh * sh + ki * dh) * Wp;                                                    \
                    for (i64 kj = 0; kj < KW; ++kj) {                                                               \
                        const T wv = wc[ki * KW + kj];                                                              \
                        const T *xs = xr + kj * dw;                                                                 \
                        if (sw == 1) {                                                                              \
                            _Pragma("omp simd")                                                                     \
                            for (i64 ow = 0; ow < Wo; ++ow) yr[ow] -= ABS(xs[ow] - wv);                             \
                        } else {                                                                                    \
                            for (i64 ow = 0; ow < Wo; ++ow) yr[ow] -= ABS(xs[ow * sw] - wv);                        \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise. x: (N, C, H, W) unpadded, w: (C, KH, KW), g: (N, C, Ho, Wo), dx: (N, C, H, W). */                    \
void adder_input_grad_depthwise_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict gr,          \
                                         T *restrict dx, i64 N, i64 C, i64 H, i64 W, i64 Ho, i64 Wo,               \
                                         i64 KH, i64 KW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw,          \
                                         int exact, int nthreads) {                                               \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 c = 0; c < C; ++c) {                                                                               \
            const T *xc = x + (n * C + c) * H * W;                                                                  \
            const T *gc = gr + (n * C + c) * Ho * Wo;                                                               \
            const T *wc = w + c * KH * KW;                                                                          \
            T *dc = dx + (n * C + c) * H * W;                                                                       \
            for (i64 i = 0; i < H * W; ++i) dc[i] = 0;                                                              \
            for (i64 ki = 0; ki < KH; ++ki) {                                                                       \
                for (i64 kj = 0; kj < KW; ++kj) {                                                                   \
                    const T wv = wc[ki * KW + kj];                                                                  \
                    /* output p and input q = s*p + d*k - pad: loop over p, write the (strided) q */                \
                    for (i64 oh = 0; oh < Ho; ++oh) {                                                               \
                        const i64 qh = oh * sh + ki * dh - ph;                                                      \
                        if (qh < 0 || qh >= H) continue;                                                            \
                        const i64 qw0 = kj * dw - pw;                                                               \
                        i64 lo = 0, hi = Wo;                                                                        \
                        while (lo < hi && qw0 + lo * sw < 0) ++lo;                                                  \
                        while (hi > lo && qw0 + (hi - 1) * sw >= W) --hi;                                           \
                        const T *gr_ = gc + oh * Wo;                                                                \
                        const T *xr = xc + qh * W + qw0;                                                            \
                        T *dr = dc + qh * W + qw0;                                                                  \
                        if (exact) {                                                                                \
                            for (i64 ow = lo; ow < hi; ++ow)                                                        \
                                dr[ow * sw] += gr_[ow] * phi_##SUFFIX(wv - xr[ow * sw], 1);                         \
                        } else if (sw == 1) {                                                                       \
                            _Pragma("omp simd")                                                                     \
                            for (i64 ow = lo; ow < hi; ++ow) {                                                      \
                                const T d = clamp1_##SUFFIX(wv - xr[ow]);                                           \
                                dr[ow] += gr_[ow] * d;                                                              \
                            }                                                                                       \
                        } else {                                                                                    \
                            for (i64 ow = lo; ow < hi; ++ow)                                                        \
                                dr[ow * sw] += gr_[ow] * phi_##SUFFIX(wv - xr[ow * sw], 0);                         \
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
                            for (i64 c = 0; c < C; ++c) dq[c] += gp[c] * phi_##SUFFIX(wr[c] - xq[c], 1);            \
                        } else {                                                                                    \
                            _Pragma("omp simd")                                                                     \
                            for (i64 c = 0; c < C; ++c) {                                                           \
                                const T d = clamp1_##SUFFIX(wr[c] - xq[c]);                                         \
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

DEFINE_ADDER_KERNELS(float, f32, fabsf)
DEFINE_ADDER_KERNELS(double, f64, fabs)
