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
 *     one row pitch, weight (C, KH * KW), one contiguous loop per tap over a whole plane (rows of 16 or more
 *     output pixels; a strided layer is first split into its stride phases, so each tap reads one phase plane at
 *     stride 1), or channels-last tensors, weight (KH, KW, C), the innermost loop over channels (few-pixel maps).
 * The Python side (functional/_adder_native.py) builds the layouts, pads the input and compiles this file once per
 * machine; the only memory allocated here is each thread's staging buffer of the depthwise plane kernels. Every
 * kernel is defined for float and for double (the `_f32` and `_f64` suffixes), and parallelised with OpenMP over
 * independent output rows (or channels: the depthwise dW and plane kernels).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
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

/* The parameters of both general dX kernels (one signature for the Python side's ctypes declaration). */
#define GENERAL_INPUT_GRAD_PARAMS(T)                                                                                \
    const T *restrict x, const T *restrict wt, const T *restrict gr, T *restrict dx, i64 N, i64 H, i64 W, i64 C,    \
    i64 Ho, i64 Wo, i64 O, i64 KH, i64 KW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw, i64 G, int exact,       \
    int nthreads

/* dX as a gather over channels-last tensors (x, dx: (N, H, W, CIN), gr: (N, Ho, Wo, COUT)): for every input
   pixel q (dq zeroed, xq its input channels) and every tap (ki, kj) of an output pixel that reads q (gp its
   output channels), run the body. Each dx element is written by one thread in a fixed order. */
#define FOR_EACH_GATHERED_TAP(T, CIN, COUT, ...)                                                                    \
    _Pragma("omp parallel for collapse(2) schedule(static) num_threads(nthreads)")                                  \
    for (i64 n = 0; n < N; ++n) {                                                                                   \
        for (i64 qh = 0; qh < H; ++qh) {                                                                            \
            for (i64 qw = 0; qw < W; ++qw) {                                                                        \
                const T *xq = x + ((n * H + qh) * W + qw) * (CIN);                                                  \
                T *restrict dq = dx + ((n * H + qh) * W + qw) * (CIN);                                              \
                for (i64 c = 0; c < (CIN); ++c) dq[c] = 0;                                                          \
                for (i64 ki = 0; ki < KH; ++ki) {                                                                   \
                    const i64 nh = qh + ph - ki * dh;                                                               \
                    if (nh < 0 || nh % sh || nh / sh >= Ho) continue;                                               \
                    for (i64 kj = 0; kj < KW; ++kj) {                                                               \
                        const i64 nw = qw + pw - kj * dw;                                                           \
                        if (nw < 0 || nw % sw || nw / sw >= Wo) continue;                                           \
                        const T *gp = gr + ((n * Ho + nh / sh) * Wo + nw / sw) * (COUT);                            \
                        __VA_ARGS__                                                                                 \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }

#define DEFINE_ADDER_KERNELS(T, SUFFIX, ABS, FMA)                                                                   \
                                                                                                                    \
static inline T sign_##SUFFIX(T d) { return (T)((d > 0) - (d < 0)); }                                               \
                                                                                                                    \
/* x: (N, Hp, Wp, C) padded, wt: (G, KH, KW, CG, OG), y: (N, Ho, Wo, O). */                                         \
void adder_forward_nhwc_##SUFFIX(const T *restrict x, const T *restrict wt, T *restrict y,                          \
                                 i64 N, i64 Hp, i64 Wp, i64 C, i64 Ho, i64 Wo, i64 O, i64 KH, i64 KW,               \
                                 i64 sh, i64 sw, i64 dh, i64 dw, i64 G, int nthreads) {                             \
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
/* x: (N, H, W, C) unpadded, wt: (G, KH, KW, CG, OG), g: (N, Ho, Wo, O), dx: (N, H, W, C). */                       \
void adder_input_grad_nhwc_##SUFFIX(GENERAL_INPUT_GRAD_PARAMS(T)) {                                                 \
    const i64 CG = C / G, OG = O / G;                                                                               \
    FOR_EACH_GATHERED_TAP(T, C, O,                                                                                  \
        for (i64 g = 0; g < G; ++g) {                                                                               \
            const T *gg = gp + g * OG;                                                                              \
            const T *wr = wt + ((g * KH + ki) * KW + kj) * CG * OG;                                                 \
            for (i64 c = 0; c < CG; ++c) {                                                                          \
                const T xv = xq[g * CG + c];                                                                        \
                const T *w = wr + c * OG;                                                                           \
                T s = 0;                                                                                            \
                if (exact) {                                                                                        \
                    for (i64 o = 0; o < OG; ++o) s += gg[o] * sign_##SUFFIX(w[o] - xv);                             \
                } else {                                                                                            \
                    _Pragma("omp simd reduction(+:s)")                                                              \
                    for (i64 o = 0; o < OG; ++o) {                                                                  \
                        T d = w[o] - xv;                                                                            \
                        CLAMP_UNIT(T, d);                                                                           \
                        s += gg[o] * d;                                                                             \
                    }                                                                                               \
                }                                                                                                   \
                dq[g * CG + c] += s;                                                                                \
            }                                                                                                       \
        })                                                                                                          \
}                                                                                                                   \
                                                                                                                    \
/* dX with the input channels of a group as the vectorised inner loop (groups of 8 or more input channels):         \
   wt: (G, KH, KW, OG, CG); otherwise as adder_input_grad_nhwc. */                                                  \
void adder_input_grad_nhwc_cvec_##SUFFIX(GENERAL_INPUT_GRAD_PARAMS(T)) {                                            \
    const i64 CG = C / G, OG = O / G;                                                                               \
    FOR_EACH_GATHERED_TAP(T, C, O,                                                                                  \
        for (i64 g = 0; g < G; ++g) {                                                                               \
            const T *xg = xq + g * CG;                                                                              \
            T *restrict dg = dq + g * CG;                                                                           \
            const T *wr = wt + ((g * KH + ki) * KW + kj) * OG * CG;                                                 \
            for (i64 o = 0; o < OG; ++o) {                                                                          \
                const T gv = gp[g * OG + o];                                                                        \
                const T *w = wr + o * CG;                                                                           \
                if (exact) {                                                                                        \
                    for (i64 c = 0; c < CG; ++c) dg[c] += gv * sign_##SUFFIX(w[c] - xg[c]);                         \
                } else {                                                                                            \
                    _Pragma("omp simd")                                                                             \
                    for (i64 c = 0; c < CG; ++c) {                                                                  \
                        T d = w[c] - xg[c];                                                                         \
                        CLAMP_UNIT(T, d);                                                                           \
                        dg[c] = FMA(gv, d, dg[c]);  /* not gv * d: see CLAMP_UNIT */                                \
                    }                                                                                               \
                }                                                                                                   \
            }                                                                                                       \
        })                                                                                                          \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise layers with wide rows run one channel at a time on flattened phase planes staged in a per-thread       \
   buffer (it stays in cache). A stride-s input is split into s_h * s_w phase planes, plane (a, b) holding the      \
   pixels at rows a, a + s_h, ... and columns b, b + s_w, ..., so that every tap reads one plane at stride 1 and is \
   one contiguous loop of L elements over rows laid with one pitch (columns past the valid width are scratch). The  \
   caller computes each tap's plane and flat offset. Stride 1 is the case of one plane. */                          \
/* Copies between an image (H, W) and its phase planes (sh * sw planes of (height, pitch)): into the planes when    \
   `to_planes` is set (the caller zeroes them first), back into the image otherwise (the scratch is dropped). */    \
static void copy_phases_##SUFFIX(T *restrict image, T *restrict planes, i64 H, i64 W, i64 sh, i64 sw, i64 height,   \
                                 i64 pitch, int to_planes) {                                                        \
    for (i64 r = 0; r < H; ++r) {                                                                                   \
        T *restrict row = image + r * W;                                                                            \
        for (i64 b = 0; b < sw; ++b) {                                                                              \
            T *restrict part = planes + (((r % sh) * sw + b) * height + r / sh) * pitch;                            \
            if (sw == 1) {                                                                                          \
                memcpy(to_planes ? part : row, to_planes ? row : part, sizeof(T) * W);                              \
            } else if (to_planes) {                                                                                 \
                for (i64 q = b, j = 0; q < W; q += sw, ++j) part[j] = row[q];                                       \
            } else {                                                                                                \
                for (i64 q = b, j = 0; q < W; q += sw, ++j) row[q] = part[j];                                       \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
}                                                                                                                   \
                                                                                                                    \
/* g (Ho, Wo) placed at (top, left) of a zero frame (height, pitch); parts falling outside are cropped. */          \
static void frame_##SUFFIX(const T *restrict g, i64 Ho, i64 Wo, i64 top, i64 left, i64 height, i64 pitch,           \
                           T *restrict dst) {                                                                       \
    memset(dst, 0, sizeof(T) * height * pitch);                                                                     \
    const i64 q0 = left < 0 ? -left : 0, q1 = Wo < pitch - left ? Wo : pitch - left;                                \
    if (q1 <= q0) return;                                                                                           \
    for (i64 p = top < 0 ? -top : 0; p < Ho && p + top < height; ++p)                                               \
        memcpy(dst + (p + top) * pitch + q0 + left, g + p * Wo + q0, sizeof(T) * (q1 - q0));                        \
}                                                                                                                   \
                                                                                                                    \
/* x: (N, C, Hp, Wp) padded, w: (C, K), y: (N, C, Ho, Wo); planes of (Hq, Wq). Returns -1 if out of memory. */      \
int adder_forward_depthwise_planes_##SUFFIX(const T *restrict x, const T *restrict w,                               \
                                            const i64 *restrict tap_plane,                                          \
                                            const i64 *restrict tap_offset, T *restrict y, i64 N, i64 C, i64 Hp,    \
                                            i64 Wp, i64 sh, i64 sw, i64 Hq, i64 Wq, i64 Ho, i64 Wo, i64 K,          \
                                            int nthreads) {                                                         \
    const i64 plane = Hq * Wq, L = (Ho - 1) * Wq + Wo;                                                              \
    int failed = 0;                                                                                                 \
    _Pragma("omp parallel num_threads(nthreads)")                                                                   \
    {                                                                                                               \
        T *stage = malloc(sizeof(T) * (sh * sw * plane + Ho * Wq));                                                 \
        if (!stage) failed = 1;                                                                                     \
        _Pragma("omp for collapse(2) schedule(static)")                                                             \
        for (i64 n = 0; n < N; ++n) {                                                                               \
            for (i64 c = 0; c < C; ++c) {                                                                           \
                if (!stage) continue;                                                                               \
                T *restrict xs = stage, *restrict ys = stage + sh * sw * plane;                                     \
                memset(xs, 0, sizeof(T) * sh * sw * plane);                                                         \
                copy_phases_##SUFFIX((T *)(x + (n * C + c) * Hp * Wp), xs, Hp, Wp, sh, sw, Hq, Wq, 1);              \
                memset(ys, 0, sizeof(T) * Ho * Wq);                                                                 \
                for (i64 k = 0; k < K; ++k) {                                                                       \
                    const T wv = w[c * K + k];                                                                      \
                    const T *xk = xs + tap_plane[k] * plane + tap_offset[k];                                        \
                    _Pragma("omp simd")                                                                             \
                    for (i64 i = 0; i < L; ++i) ys[i] -= ABS(xk[i] - wv);                                           \
                }                                                                                                   \
                for (i64 oh = 0; oh < Ho; ++oh)                                                                     \
                    memcpy(y + ((n * C + c) * Ho + oh) * Wo, ys + oh * Wq, sizeof(T) * Wo);                         \
            }                                                                                                       \
        }                                                                                                           \
        free(stage);                                                                                                \
    }                                                                                                               \
    return failed ? -1 : 0;                                                                                         \
}                                                                                                                   \
                                                                                                                    \
/* dX of the above on the phase planes (height Hx, pitch) of the unpadded input: with g placed at (top, left) of a  \
   zero frame (Hf, pitch), dX_a[q] = sum over the taps k of plane a of frame[q + off_k] * phi(W_k - X_a[q]).        \
   x, dx: (N, C, H, W), g: (N, C, Ho, Wo). Returns -1 if out of memory. */                                          \
int adder_input_grad_depthwise_planes_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict g,       \
                                               const i64 *restrict tap_plane, const i64 *restrict tap_offset,       \
                                               T *restrict dx, i64 N, i64 C, i64 H, i64 W, i64 sh, i64 sw, i64 Hx,  \
                                               i64 pitch, i64 Ho, i64 Wo, i64 top, i64 left, i64 Hf, i64 K,         \
                                               int exact, int nthreads) {                                           \
    const i64 plane = Hx * pitch, P = sh * sw, L = (Hx - 1) * pitch + (W + sw - 1) / sw;                            \
    int failed = 0;                                                                                                 \
    _Pragma("omp parallel num_threads(nthreads)")                                                                   \
    {                                                                                                               \
        T *stage = malloc(sizeof(T) * (2 * P * plane + Hf * pitch));                                                \
        if (!stage) failed = 1;                                                                                     \
        _Pragma("omp for collapse(2) schedule(static)")                                                             \
        for (i64 n = 0; n < N; ++n) {                                                                               \
            for (i64 c = 0; c < C; ++c) {                                                                           \
                if (!stage) continue;                                                                               \
                T *restrict xs = stage, *restrict ds = stage + P * plane, *restrict gs = stage + 2 * P * plane;     \
                memset(xs, 0, sizeof(T) * P * plane);                                                               \
                copy_phases_##SUFFIX((T *)(x + (n * C + c) * H * W), xs, H, W, sh, sw, Hx, pitch, 1);               \
                frame_##SUFFIX(g + (n * C + c) * Ho * Wo, Ho, Wo, top, left, Hf, pitch, gs);                        \
                memset(ds, 0, sizeof(T) * P * plane);                                                               \
                for (i64 k = 0; k < K; ++k) {                                                                       \
                    const T wv = w[c * K + k];                                                                      \
                    const T *xa = xs + tap_plane[k] * plane, *gk = gs + tap_offset[k];                              \
                    T *restrict da = ds + tap_plane[k] * plane;                                                     \
                    if (exact) {                                                                                    \
                        for (i64 i = 0; i < L; ++i) da[i] += gk[i] * sign_##SUFFIX(wv - xa[i]);                     \
                    } else {                                                                                        \
                        _Pragma("omp simd")                                                                         \
                        for (i64 i = 0; i < L; ++i) {                                                               \
                            T d = wv - xa[i];                                                                       \
                            CLAMP_UNIT(T, d);                                                                       \
                            da[i] += gk[i] * d;                                                                     \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
                copy_phases_##SUFFIX(dx + (n * C + c) * H * W, ds, H, W, sh, sw, Hx, pitch, 0);                     \
            }                                                                                                       \
        }                                                                                                           \
        free(stage);                                                                                                \
    }                                                                                                               \
    return failed ? -1 : 0;                                                                                         \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise, channels-last. x: (N, Hp, Wp, C) padded, w: (KH, KW, C), y: (N, Ho, Wo, C). */                        \
void adder_forward_depthwise_nhwc_##SUFFIX(const T *restrict x, const T *restrict w, T *restrict y,                 \
                                           i64 N, i64 C, i64 Hp, i64 Wp, i64 Ho, i64 Wo, i64 KH, i64 KW,            \
                                           i64 sh, i64 sw, i64 dh, i64 dw, int nthreads) {                          \
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
void adder_input_grad_depthwise_nhwc_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict gr,       \
                                              T *restrict dx, i64 N, i64 C, i64 H, i64 W, i64 Ho, i64 Wo,           \
                                              i64 KH, i64 KW, i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw,       \
                                              int exact, int nthreads) {                                            \
    FOR_EACH_GATHERED_TAP(T, C, C,                                                                                  \
        const T *wr = w + (ki * KW + kj) * C;                                                                       \
        if (exact) {                                                                                                \
            for (i64 c = 0; c < C; ++c) dq[c] += gp[c] * sign_##SUFFIX(wr[c] - xq[c]);                              \
        } else {                                                                                                    \
            _Pragma("omp simd")                                                                                     \
            for (i64 c = 0; c < C; ++c) {                                                                           \
                T d = wr[c] - xq[c];                                                                                \
                CLAMP_UNIT(T, d);                                                                                   \
                dq[c] += gp[c] * d;                                                                                 \
            }                                                                                                       \
        })                                                                                                          \
}                                                                                                                   \
                                                                                                                    \
/* Depthwise full-precision dW, channels-last. x: (N, Hp, Wp, C) padded, w: (KH, KW, C), g: (N, Ho, Wo, C),         \
   out: (KH, KW, C). Each thread owns a block of channels. */                                                       \
void adder_weight_grad_depthwise_nhwc_##SUFFIX(const T *restrict x, const T *restrict w, const T *restrict gr,      \
                                               T *restrict out, i64 N, i64 C, i64 Hp, i64 Wp, i64 Ho, i64 Wo,       \
                                               i64 KH, i64 KW, i64 sh, i64 sw, i64 dh, i64 dw, int nthreads) {      \
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
