// Fused CPU kernels of the batch-norm training step with an L1 (or L2) dispersion.
//
// Built by l1bn/sw/bn_fast.py with the system C++ compiler into a plain shared library (no torch
// headers: seconds to compile) and called through ctypes. OpenMP comes from the libgomp that torch
// has already loaded, so these kernels share torch's thread pool.
//
// Math (per channel c over its m values; c1 = sqrt(pi/2)):
//   forward   mu = mean(x);  d = x - mu;  s = mean(|d|) (L1) or mean(d*d) (L2)
//             sigma = c1*s + eps (L1) or sqrt(s + eps) (L2);  y = d * (w/sigma) + b
//   backward  sdy = sum(dy), sdd = sum(dy*d), ssg = sum(sign(d))           (one pass)
//             dw = sdd/sigma,  db = sdy
//             L1: dx = a*dy + ks*sign(d) + b0,  a = w/sigma, ks = -c1*a*mean(dy*xhat),
//                 b0 = -a*mean(dy) - ks*mean(sign(d))                         (one pass)
//             L2: dx = a*dy + kd*d + b0,  kd = -a*mean(dy*xhat)/sigma,  b0 = -a*mean(dy)
// Range BN (l1bn_range_forward/_backward, sigma = C(n) * (max - min) + eps): forward one read for
// sum, max and min + one read/write for y; backward one read for sum(dy), sum(dy*d) and the counts
// of values equal to max / min, one for dx (see "range BN" below).
// Passes over memory: forward 3 reads + 1 write (per channel, so passes 2 and 3 hit the cache for
// channel slices up to the L2 size), backward 2 reads of (x, dy) + 1 write.
// Storage dtypes: float32, float64, bfloat16 (as uint16). Statistics: float32 arithmetic with
// float32 blocks of <= 1024 values summed into double (float32/bfloat16 input), float64 for float64.
// Layouts: NCS (contiguous (N, C, S), S = spatial size) and MC (channels innermost: channels_last
// or (N, C), M = N * S rows of C). NCS with S >= kSegment runs per channel (parallel over
// channels); smaller S and MC run as rows of channel groups (parallel over rows, per-thread
// partial sums), see fwd_rows.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#else  // a compiler without OpenMP: one thread
inline int omp_get_thread_num() { return 0; }
inline int omp_get_num_threads() { return 1; }
#endif

namespace {

// sqrt(pi / 2): l1bn.spec.intmath.C_SQRT_PI_2, passed by bn_fast.py as -DL1BN_C_SQRT_PI_2=... so the
// constant is defined once (the fallback literal is the same float64)
#ifndef L1BN_C_SQRT_PI_2
#define L1BN_C_SQRT_PI_2 1.2533141373155003
#endif
constexpr double kC1 = L1BN_C_SQRT_PI_2;
constexpr int64_t kBlock = 1024;             // values per float32 partial sum
constexpr int64_t kGrain = 32768;            // fewer values than this: one thread
constexpr int64_t kSegment = 128;            // NCS with S >= this: per-channel segments

enum Norm { L1 = 0, L2 = 1 };

inline float bf16_to_f32(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t q = (u >> 16) | 0x40u;
  return uint16_t(((u & 0x7fffffffu) > 0x7f800000u) ? q : r);
}

template <class S> struct Cvt;
template <> struct Cvt<float> {
  using A = float;
  static inline float ld(float v) { return v; }
  static inline float st(float v) { return v; }
};
template <> struct Cvt<double> {
  using A = double;
  static inline double ld(double v) { return v; }
  static inline double st(double v) { return v; }
};
template <> struct Cvt<uint16_t> {
  using A = float;
  static inline float ld(uint16_t v) { return bf16_to_f32(v); }
  static inline uint16_t st(float v) { return f32_to_bf16(v); }
};

template <class A> inline A sgn(A d) { return A(d > A(0)) - A(d < A(0)); }

template <int NORM, class A> inline A disp(A d) {
  if constexpr (NORM == L1) return std::abs(d); else return d * d;
}

template <int NORM, class A> inline A sigma_of(A s, double eps) {
  if constexpr (NORM == L1) return A(kC1) * s + A(eps); else return std::sqrt(s + A(eps));
}

// ---------------------------------------------------------------- contiguous segments (NCS)

template <class S> double seg_sum(const S* p, int64_t n) {
  using A = typename Cvt<S>::A;
  double tot = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    A acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = i0; i < i1; ++i) acc += Cvt<S>::ld(p[i]);
    tot += double(acc);
  }
  return tot;
}

template <int NORM, class S> double seg_disp(const S* p, int64_t n, typename Cvt<S>::A mu) {
  using A = typename Cvt<S>::A;
  double tot = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    A acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = i0; i < i1; ++i) acc += disp<NORM>(Cvt<S>::ld(p[i]) - mu);
    tot += double(acc);
  }
  return tot;
}

template <class S> void seg_affine(const S* p, S* q, int64_t n, typename Cvt<S>::A mu,
                                   typename Cvt<S>::A scale, typename Cvt<S>::A shift) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) q[i] = Cvt<S>::st((Cvt<S>::ld(p[i]) - mu) * scale + shift);
}

// sums of dy, dy*d and sign(d) over one segment, added to the three totals
template <class S> void seg_bsums(const S* dy, const S* x, int64_t n, typename Cvt<S>::A mu,
                                  double& tdy, double& tdd, double& tsg) {
  using A = typename Cvt<S>::A;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    A a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a1, a2, a3)
    for (int64_t i = i0; i < i1; ++i) {
      const A g = Cvt<S>::ld(dy[i]);
      const A d = Cvt<S>::ld(x[i]) - mu;
      a1 += g;
      a2 += g * d;
      a3 += sgn(d);
    }
    tdy += double(a1);
    tdd += double(a2);
    tsg += double(a3);
  }
}

template <int NORM, class S>
void seg_dx(const S* dy, const S* x, S* dx, int64_t n, typename Cvt<S>::A mu, typename Cvt<S>::A a,
            typename Cvt<S>::A k, typename Cvt<S>::A b0) {
  using A = typename Cvt<S>::A;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A d = Cvt<S>::ld(x[i]) - mu;
    const A t = (NORM == L1) ? sgn(d) : d;
    dx[i] = Cvt<S>::st(a * Cvt<S>::ld(dy[i]) + k * t + b0);
  }
}

// per-channel backward coefficients from the three sums
template <int NORM, class A> struct BCoef {
  A a, k, b0, dw, db;
  BCoef(double sdy, double sdd, double ssg, double m, A sigma, A w) {
    const double inv = 1.0 / double(sigma);
    const double mdy = sdy / m, mdx = sdd * inv / m;  // mean(dy), mean(dy * xhat)
    const double aa = double(w) * inv;
    double kk, bb;
    if constexpr (NORM == L1) {
      kk = -kC1 * aa * mdx;
      bb = -aa * mdy - kk * (ssg / m);
    } else {
      kk = -aa * mdx * inv;
      bb = -aa * mdy;
    }
    a = A(aa);
    k = A(kk);
    b0 = A(bb);
    dw = A(sdd * inv);
    db = A(sdy);
  }
};

template <int NORM, class S>
int fwd_ncs(const S* x, S* y, const typename Cvt<S>::A* w, const typename Cvt<S>::A* b,
            typename Cvt<S>::A* mu_out, typename Cvt<S>::A* s_out, int64_t N, int64_t C, int64_t HW,
            double eps, int nt) {
  using A = typename Cvt<S>::A;
  const double m = double(N) * double(HW);
  int bad = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(| : bad) if (nt > 1 && N * C * HW >= kGrain)
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += seg_sum(x + (n * C + c) * HW, HW);
    if (!std::isfinite(acc)) bad = 1;
    const A mu = A(acc / m);
    double acc2 = 0;
    for (int64_t n = 0; n < N; ++n) acc2 += seg_disp<NORM>(x + (n * C + c) * HW, HW, mu);
    const A s = A(acc2 / m);
    const A sigma = sigma_of<NORM>(s, eps);
    const A scale = (w ? w[c] : A(1)) / sigma;
    const A shift = b ? b[c] : A(0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      seg_affine(x + o, y + o, HW, mu, scale, shift);
    }
    mu_out[c] = mu;
    s_out[c] = s;
  }
  return bad;
}

template <int NORM, class S>
void bwd_ncs(const S* dy, const S* x, const typename Cvt<S>::A* w, const typename Cvt<S>::A* mu_in,
             const typename Cvt<S>::A* s_in, S* dx, typename Cvt<S>::A* dw, typename Cvt<S>::A* db,
             int64_t N, int64_t C, int64_t HW, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const double m = double(N) * double(HW);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && N * C * HW >= kGrain)
  for (int64_t c = 0; c < C; ++c) {
    const A mu = mu_in[c];
    double sdy = 0, sdd = 0, ssg = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      seg_bsums(dy + o, x + o, HW, mu, sdy, sdd, ssg);
    }
    const BCoef<NORM, A> k(sdy, sdd, ssg, m, sigma_of<NORM>(s_in[c], eps), w ? w[c] : A(1));
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      seg_dx<NORM>(dy + o, x + o, dx + o, HW, mu, k.a, k.k, k.b0);
    }
    dw[c] = k.dw;
    db[c] = k.db;
  }
}

// ---------------------------------------------------------------- rows of channel groups
// The tensor as M rows of J = C * G contiguous values, channel c owning columns c*G .. c*G+G-1:
// channels_last / (N, C) is G = 1, M = N * S; a contiguous (N, C, S) with a small S is G = S,
// M = N (short per-channel segments would cost more in horizontal sums than they carry).
// Each thread sums its block of rows into its own per-column float64 array (padded against
// false sharing); one thread folds the arrays into per-channel values between passes.

inline int64_t padded(int64_t J) { return (J + 7) / 8 * 8 + 8; }

template <int NORM, class S>
int fwd_rows(const S* x, S* y, const typename Cvt<S>::A* w, const typename Cvt<S>::A* b,
             typename Cvt<S>::A* mu_out, typename Cvt<S>::A* s_out, int64_t M, int64_t C, int64_t G,
             double eps, int nt) {
  using A = typename Cvt<S>::A;
  const int64_t J = C * G;
  const int T = (nt > 1 && M * J >= kGrain) ? nt : 1;
  const int64_t P = padded(J);
  const double m = double(M) * double(G);
  std::vector<double> part(size_t(T) * P, 0.0);
  std::vector<A> mu(J), scale(J), shift(J);
  int bad = 0;
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t r0 = M * t / tn, r1 = M * (t + 1) / tn;
    double* acc = part.data() + size_t(t) * P;
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) acc[j] += double(Cvt<S>::ld(p[j]));
    }
#pragma omp barrier
#pragma omp single
    {
      for (int64_t c = 0; c < C; ++c) {
        double tot = 0;
        for (int u = 0; u < tn; ++u)
          for (int64_t g = 0; g < G; ++g) tot += part[size_t(u) * P + c * G + g];
        if (!std::isfinite(tot)) bad = 1;
        mu_out[c] = A(tot / m);
        for (int64_t g = 0; g < G; ++g) mu[c * G + g] = mu_out[c];
      }
      std::fill(part.begin(), part.end(), 0.0);
    }
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) acc[j] += double(disp<NORM>(Cvt<S>::ld(p[j]) - mu[j]));
    }
#pragma omp barrier
#pragma omp single
    for (int64_t c = 0; c < C; ++c) {
      double tot = 0;
      for (int u = 0; u < tn; ++u)
        for (int64_t g = 0; g < G; ++g) tot += part[size_t(u) * P + c * G + g];
      const A s = A(tot / m);
      const A sc = (w ? w[c] : A(1)) / sigma_of<NORM>(s, eps), sh = b ? b[c] : A(0);
      for (int64_t g = 0; g < G; ++g) {
        scale[c * G + g] = sc;
        shift[c * G + g] = sh;
      }
      s_out[c] = s;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
      S* q = y + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) q[j] = Cvt<S>::st((Cvt<S>::ld(p[j]) - mu[j]) * scale[j] + shift[j]);
    }
  }
  return bad;
}

template <int NORM, class S>
void bwd_rows(const S* dy, const S* x, const typename Cvt<S>::A* w, const typename Cvt<S>::A* mu_in,
              const typename Cvt<S>::A* s_in, S* dx, typename Cvt<S>::A* dw, typename Cvt<S>::A* db,
              int64_t M, int64_t C, int64_t G, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const int64_t J = C * G;
  const int T = (nt > 1 && M * J >= kGrain) ? nt : 1;
  const int64_t P = padded(J);
  const double m = double(M) * double(G);
  std::vector<double> part(size_t(T) * 3 * P, 0.0);
  std::vector<A> mu(J), ka(J), kk(J), kb(J);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t g = 0; g < G; ++g) mu[c * G + g] = mu_in[c];
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t r0 = M * t / tn, r1 = M * (t + 1) / tn;
    double* a1 = part.data() + size_t(t) * 3 * P;
    double* a2 = a1 + P;
    double* a3 = a2 + P;
    for (int64_t r = r0; r < r1; ++r) {
      const S* g = dy + r * J;
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) {
        const A gv = Cvt<S>::ld(g[j]);
        const A d = Cvt<S>::ld(p[j]) - mu[j];
        a1[j] += double(gv);
        a2[j] += double(gv * d);
        a3[j] += double(sgn(d));
      }
    }
#pragma omp barrier
#pragma omp single
    for (int64_t c = 0; c < C; ++c) {
      double sdy = 0, sdd = 0, ssg = 0;
      for (int u = 0; u < tn; ++u) {
        const double* q = part.data() + size_t(u) * 3 * P + c * G;
        for (int64_t g = 0; g < G; ++g) {
          sdy += q[g];
          sdd += q[P + g];
          ssg += q[2 * P + g];
        }
      }
      const BCoef<NORM, A> k(sdy, sdd, ssg, m, sigma_of<NORM>(s_in[c], eps), w ? w[c] : A(1));
      for (int64_t g = 0; g < G; ++g) {
        ka[c * G + g] = k.a;
        kk[c * G + g] = k.k;
        kb[c * G + g] = k.b0;
      }
      dw[c] = k.dw;
      db[c] = k.db;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const S* g = dy + r * J;
      const S* p = x + r * J;
      S* q = dx + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) {
        const A d = Cvt<S>::ld(p[j]) - mu[j];
        const A tt = (NORM == L1) ? sgn(d) : d;
        q[j] = Cvt<S>::st(ka[j] * Cvt<S>::ld(g[j]) + kk[j] * tt + kb[j]);
      }
    }
  }
}

template <int NORM, class S>
int fwd_t(int layout, const void* x, void* y, const void* w, const void* b, void* mu, void* s,
          void* run_mean, void* run_s, double factor, int64_t N, int64_t C, int64_t HW, double eps,
          int nt) {
  using A = typename Cvt<S>::A;
  const S* xs = static_cast<const S*>(x);
  S* ys = static_cast<S*>(y);
  const A* ws = static_cast<const A*>(w);
  const A* bs = static_cast<const A*>(b);
  A* mo = static_cast<A*>(mu);
  A* so = static_cast<A*>(s);
  int bad;
  if (layout == 0 && HW >= kSegment)
    bad = fwd_ncs<NORM>(xs, ys, ws, bs, mo, so, N, C, HW, eps, nt);
  else if (layout == 0)
    bad = fwd_rows<NORM>(xs, ys, ws, bs, mo, so, N, C, HW, eps, nt);
  else
    bad = fwd_rows<NORM>(xs, ys, ws, bs, mo, so, N * HW, C, 1, eps, nt);
  // running statistics: r += f * (batch - r), skipped when the batch was not finite
  if (!bad && factor > 0) {
    A* rm = static_cast<A*>(run_mean);
    A* rs = static_cast<A*>(run_s);
    for (int64_t c = 0; c < C; ++c) {
      if (rm) rm[c] += A(factor) * (mo[c] - rm[c]);
      if (rs) rs[c] += A(factor) * (so[c] - rs[c]);
    }
  }
  return bad;
}

template <int NORM, class S>
void bwd_t(int layout, const void* dy, const void* x, const void* w, const void* mu, const void* s,
           void* dx, void* dw, void* db, int64_t N, int64_t C, int64_t HW, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const S* g = static_cast<const S*>(dy);
  const S* xs = static_cast<const S*>(x);
  const A* ws = static_cast<const A*>(w);
  const A* ms = static_cast<const A*>(mu);
  const A* ss = static_cast<const A*>(s);
  S* q = static_cast<S*>(dx);
  A* dws = static_cast<A*>(dw);
  A* dbs = static_cast<A*>(db);
  if (layout == 0 && HW >= kSegment)
    bwd_ncs<NORM>(g, xs, ws, ms, ss, q, dws, dbs, N, C, HW, eps, nt);
  else if (layout == 0)
    bwd_rows<NORM>(g, xs, ws, ms, ss, q, dws, dbs, N, C, HW, eps, nt);
  else
    bwd_rows<NORM>(g, xs, ws, ms, ss, q, dws, dbs, N * HW, C, 1, eps, nt);
}

template <int NORM>
int fwd_n(int dtype, int layout, const void* x, void* y, const void* w, const void* b, void* mu,
          void* s, void* rm, void* rs, double f, int64_t N, int64_t C, int64_t HW, double eps, int nt) {
  switch (dtype) {
    case 0: return fwd_t<NORM, float>(layout, x, y, w, b, mu, s, rm, rs, f, N, C, HW, eps, nt);
    case 1: return fwd_t<NORM, double>(layout, x, y, w, b, mu, s, rm, rs, f, N, C, HW, eps, nt);
    case 2: return fwd_t<NORM, uint16_t>(layout, x, y, w, b, mu, s, rm, rs, f, N, C, HW, eps, nt);
  }
  return -1;
}

template <int NORM>
int bwd_n(int dtype, int layout, const void* dy, const void* x, const void* w, const void* mu,
          const void* s, void* dx, void* dw, void* db, int64_t N, int64_t C, int64_t HW, double eps, int nt) {
  switch (dtype) {
    case 0: bwd_t<NORM, float>(layout, dy, x, w, mu, s, dx, dw, db, N, C, HW, eps, nt); return 0;
    case 1: bwd_t<NORM, double>(layout, dy, x, w, mu, s, dx, dw, db, N, C, HW, eps, nt); return 0;
    case 2: bwd_t<NORM, uint16_t>(layout, dy, x, w, mu, s, dx, dw, db, N, C, HW, eps, nt); return 0;
  }
  return -1;
}


// ---------------------------------------------------------------- range BN
// sigma = cn * (max - min) + eps, cn = C(n) from the caller (l1bn.spec.intmath.range_scale).
// forward   pass 1: sum, max and min together (the max and min do not need mu);
//           pass 2: y = (x - mu) * (w / sigma) + b.  Outputs mu, rs = cn * (max - min), max, min.
// backward  pass 1: sdy = sum(dy), sdd = sum(dy * d), kmax = #(x == max), kmin = #(x == min);
//           pass 2: dx = a*dy + kx*[x == max] - kn*[x == min] + b0, a = w/sigma, b0 = -a*mean(dy),
//                   k = -cn * a * sdd / sigma, kx = k / kmax, kn = k / kmin.
// Ties: the gradient of max (of min) is split evenly among the values equal to it, as torch
// autograd of amax/amin does; all values equal gives kx = kn and a zero range term.

template <class S> void seg_sum_mm(const S* p, int64_t n, double& tot, typename Cvt<S>::A& mx,
                                   typename Cvt<S>::A& mn) {
  using A = typename Cvt<S>::A;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    A acc = 0, hi = mx, lo = mn;
#pragma omp simd reduction(+ : acc) reduction(max : hi) reduction(min : lo)
    for (int64_t i = i0; i < i1; ++i) {
      const A v = Cvt<S>::ld(p[i]);
      acc += v;
      hi = std::max(hi, v);
      lo = std::min(lo, v);
    }
    tot += double(acc);
    mx = hi;
    mn = lo;
  }
}

template <class S> void seg_rsums(const S* dy, const S* x, int64_t n, typename Cvt<S>::A mu,
                                  typename Cvt<S>::A mx, typename Cvt<S>::A mn, double& tdy,
                                  double& tdd, int64_t& kx, int64_t& kn) {
  using A = typename Cvt<S>::A;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    A a1 = 0, a2 = 0;
    int64_t c1 = 0, c2 = 0;
#pragma omp simd reduction(+ : a1, a2, c1, c2)
    for (int64_t i = i0; i < i1; ++i) {
      const A g = Cvt<S>::ld(dy[i]);
      const A v = Cvt<S>::ld(x[i]);
      a1 += g;
      a2 += g * (v - mu);
      c1 += (v == mx);
      c2 += (v == mn);
    }
    tdy += double(a1);
    tdd += double(a2);
    kx += c1;
    kn += c2;
  }
}

template <class S>
void seg_rdx(const S* dy, const S* x, S* dx, int64_t n, typename Cvt<S>::A mx, typename Cvt<S>::A mn,
             typename Cvt<S>::A a, typename Cvt<S>::A kx, typename Cvt<S>::A kn, typename Cvt<S>::A b0) {
  using A = typename Cvt<S>::A;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A v = Cvt<S>::ld(x[i]);
    dx[i] = Cvt<S>::st(a * Cvt<S>::ld(dy[i]) + (A(v == mx) * kx - A(v == mn) * kn) + b0);
  }
}

template <class A> struct RCoef {
  A a, kx, kn, b0, dw, db;
  RCoef(double sdy, double sdd, int64_t cx, int64_t cn_, double m, double cn, A sigma, A w) {
    const double inv = 1.0 / double(sigma);
    const double aa = double(w) * inv;
    const double k = -cn * aa * sdd * inv;
    a = A(aa);
    kx = A(k / double(cx > 0 ? cx : 1));
    kn = A(k / double(cn_ > 0 ? cn_ : 1));
    b0 = A(-aa * sdy / m);
    dw = A(sdd * inv);
    db = A(sdy);
  }
};

template <class S>
int rfwd_ncs(const S* x, S* y, const typename Cvt<S>::A* w, const typename Cvt<S>::A* b,
             typename Cvt<S>::A* mu_out, typename Cvt<S>::A* rs_out, typename Cvt<S>::A* mx_out,
             typename Cvt<S>::A* mn_out, int64_t N, int64_t C, int64_t HW, double cn, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const double m = double(N) * double(HW);
  int bad = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(| : bad) if (nt > 1 && N * C * HW >= kGrain)
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    A mx = -std::numeric_limits<A>::infinity(), mn = std::numeric_limits<A>::infinity();
    for (int64_t n = 0; n < N; ++n) seg_sum_mm(x + (n * C + c) * HW, HW, acc, mx, mn);
    const A mu = A(acc / m);
    const A rs = (mx - mn) * A(cn);
    if (!std::isfinite(acc) || !std::isfinite(rs)) bad = 1;
    const A scale = (w ? w[c] : A(1)) / (rs + A(eps));
    const A shift = b ? b[c] : A(0);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      seg_affine(x + o, y + o, HW, mu, scale, shift);
    }
    mu_out[c] = mu;
    rs_out[c] = rs;
    mx_out[c] = mx;
    mn_out[c] = mn;
  }
  return bad;
}

template <class S>
void rbwd_ncs(const S* dy, const S* x, const typename Cvt<S>::A* w, const typename Cvt<S>::A* mu_in,
              const typename Cvt<S>::A* rs_in, const typename Cvt<S>::A* mx_in,
              const typename Cvt<S>::A* mn_in, S* dx, typename Cvt<S>::A* dw, typename Cvt<S>::A* db,
              int64_t N, int64_t C, int64_t HW, double cn, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const double m = double(N) * double(HW);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && N * C * HW >= kGrain)
  for (int64_t c = 0; c < C; ++c) {
    const A mu = mu_in[c], mx = mx_in[c], mn = mn_in[c];
    double sdy = 0, sdd = 0;
    int64_t kx = 0, kn = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      seg_rsums(dy + o, x + o, HW, mu, mx, mn, sdy, sdd, kx, kn);
    }
    const RCoef<A> k(sdy, sdd, kx, kn, m, cn, rs_in[c] + A(eps), w ? w[c] : A(1));
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      seg_rdx(dy + o, x + o, dx + o, HW, mx, mn, k.a, k.kx, k.kn, k.b0);
    }
    dw[c] = k.dw;
    db[c] = k.db;
  }
}

// rows of channel groups (see fwd_rows): per-thread per-column sums (float64), max and min
template <class S>
int rfwd_rows(const S* x, S* y, const typename Cvt<S>::A* w, const typename Cvt<S>::A* b,
              typename Cvt<S>::A* mu_out, typename Cvt<S>::A* rs_out, typename Cvt<S>::A* mx_out,
              typename Cvt<S>::A* mn_out, int64_t M, int64_t C, int64_t G, double cn, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const int64_t J = C * G;
  const int T = (nt > 1 && M * J >= kGrain) ? nt : 1;
  const int64_t P = padded(J);
  const double m = double(M) * double(G);
  const A inf = std::numeric_limits<A>::infinity();
  std::vector<double> part(size_t(T) * P, 0.0);
  std::vector<A> hi(size_t(T) * P, -inf), lo(size_t(T) * P, inf);
  std::vector<A> mu(J), scale(J), shift(J);
  int bad = 0;
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t r0 = M * t / tn, r1 = M * (t + 1) / tn;
    double* acc = part.data() + size_t(t) * P;
    A* h = hi.data() + size_t(t) * P;
    A* l = lo.data() + size_t(t) * P;
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) {
        const A v = Cvt<S>::ld(p[j]);
        acc[j] += double(v);
        h[j] = std::max(h[j], v);
        l[j] = std::min(l[j], v);
      }
    }
#pragma omp barrier
#pragma omp single
    for (int64_t c = 0; c < C; ++c) {
      double tot = 0;
      A mx = -inf, mn = inf;
      for (int u = 0; u < tn; ++u)
        for (int64_t g = 0; g < G; ++g) {
          const size_t o = size_t(u) * P + c * G + g;
          tot += part[o];
          mx = std::max(mx, hi[o]);
          mn = std::min(mn, lo[o]);
        }
      const A mc = A(tot / m);
      const A rs = (mx - mn) * A(cn);
      if (!std::isfinite(tot) || !std::isfinite(rs)) bad = 1;
      const A sc = (w ? w[c] : A(1)) / (rs + A(eps)), sh = b ? b[c] : A(0);
      for (int64_t g = 0; g < G; ++g) {
        mu[c * G + g] = mc;
        scale[c * G + g] = sc;
        shift[c * G + g] = sh;
      }
      mu_out[c] = mc;
      rs_out[c] = rs;
      mx_out[c] = mx;
      mn_out[c] = mn;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
      S* q = y + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) q[j] = Cvt<S>::st((Cvt<S>::ld(p[j]) - mu[j]) * scale[j] + shift[j]);
    }
  }
  return bad;
}

template <class S>
void rbwd_rows(const S* dy, const S* x, const typename Cvt<S>::A* w, const typename Cvt<S>::A* mu_in,
               const typename Cvt<S>::A* rs_in, const typename Cvt<S>::A* mx_in,
               const typename Cvt<S>::A* mn_in, S* dx, typename Cvt<S>::A* dw, typename Cvt<S>::A* db,
               int64_t M, int64_t C, int64_t G, double cn, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const int64_t J = C * G;
  const int T = (nt > 1 && M * J >= kGrain) ? nt : 1;
  const int64_t P = padded(J);
  const double m = double(M) * double(G);
  std::vector<double> part(size_t(T) * 4 * P, 0.0);  // sum dy, sum dy*d, #max, #min
  std::vector<A> mu(J), mx(J), mn(J), ka(J), kx(J), kn(J), kb(J);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t g = 0; g < G; ++g) {
      mu[c * G + g] = mu_in[c];
      mx[c * G + g] = mx_in[c];
      mn[c * G + g] = mn_in[c];
    }
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t r0 = M * t / tn, r1 = M * (t + 1) / tn;
    double* a1 = part.data() + size_t(t) * 4 * P;
    double* a2 = a1 + P;
    double* a3 = a2 + P;
    double* a4 = a3 + P;
    for (int64_t r = r0; r < r1; ++r) {
      const S* g = dy + r * J;
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) {
        const A gv = Cvt<S>::ld(g[j]);
        const A v = Cvt<S>::ld(p[j]);
        a1[j] += double(gv);
        a2[j] += double(gv * (v - mu[j]));
        a3[j] += double(v == mx[j]);
        a4[j] += double(v == mn[j]);
      }
    }
#pragma omp barrier
#pragma omp single
    for (int64_t c = 0; c < C; ++c) {
      double sdy = 0, sdd = 0, cx = 0, cm = 0;
      for (int u = 0; u < tn; ++u) {
        const double* q = part.data() + size_t(u) * 4 * P + c * G;
        for (int64_t g = 0; g < G; ++g) {
          sdy += q[g];
          sdd += q[P + g];
          cx += q[2 * P + g];
          cm += q[3 * P + g];
        }
      }
      const RCoef<A> k(sdy, sdd, int64_t(cx), int64_t(cm), m, cn, rs_in[c] + A(eps), w ? w[c] : A(1));
      for (int64_t g = 0; g < G; ++g) {
        ka[c * G + g] = k.a;
        kx[c * G + g] = k.kx;
        kn[c * G + g] = k.kn;
        kb[c * G + g] = k.b0;
      }
      dw[c] = k.dw;
      db[c] = k.db;
    }
    for (int64_t r = r0; r < r1; ++r) {
      const S* g = dy + r * J;
      const S* p = x + r * J;
      S* q = dx + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) {
        const A v = Cvt<S>::ld(p[j]);
        q[j] = Cvt<S>::st(ka[j] * Cvt<S>::ld(g[j]) + (A(v == mx[j]) * kx[j] - A(v == mn[j]) * kn[j]) + kb[j]);
      }
    }
  }
}

template <class S>
int rfwd_t(int layout, const void* x, void* y, const void* w, const void* b, void* mu, void* rs,
           void* mx, void* mn, void* run_mean, void* run_sigma, double factor, int64_t N, int64_t C,
           int64_t HW, double cn, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const S* xs = static_cast<const S*>(x);
  S* ys = static_cast<S*>(y);
  const A* ws = static_cast<const A*>(w);
  const A* bs = static_cast<const A*>(b);
  A* mo = static_cast<A*>(mu);
  A* ro = static_cast<A*>(rs);
  A* xo = static_cast<A*>(mx);
  A* no = static_cast<A*>(mn);
  int bad;
  if (layout == 0 && HW >= kSegment)
    bad = rfwd_ncs(xs, ys, ws, bs, mo, ro, xo, no, N, C, HW, cn, eps, nt);
  else if (layout == 0)
    bad = rfwd_rows(xs, ys, ws, bs, mo, ro, xo, no, N, C, HW, cn, eps, nt);
  else
    bad = rfwd_rows(xs, ys, ws, bs, mo, ro, xo, no, N * HW, C, 1, cn, eps, nt);
  if (!bad && factor > 0) {
    A* rm = static_cast<A*>(run_mean);
    A* rsg = static_cast<A*>(run_sigma);
    for (int64_t c = 0; c < C; ++c) {
      if (rm) rm[c] += A(factor) * (mo[c] - rm[c]);
      if (rsg) rsg[c] += A(factor) * (ro[c] - rsg[c]);
    }
  }
  return bad;
}

template <class S>
void rbwd_t(int layout, const void* dy, const void* x, const void* w, const void* mu, const void* rs,
            const void* mx, const void* mn, void* dx, void* dw, void* db, int64_t N, int64_t C,
            int64_t HW, double cn, double eps, int nt) {
  using A = typename Cvt<S>::A;
  const S* g = static_cast<const S*>(dy);
  const S* xs = static_cast<const S*>(x);
  const A* ws = static_cast<const A*>(w);
  const A* ms = static_cast<const A*>(mu);
  const A* rss = static_cast<const A*>(rs);
  const A* xm = static_cast<const A*>(mx);
  const A* nm = static_cast<const A*>(mn);
  S* q = static_cast<S*>(dx);
  A* dws = static_cast<A*>(dw);
  A* dbs = static_cast<A*>(db);
  if (layout == 0 && HW >= kSegment)
    rbwd_ncs(g, xs, ws, ms, rss, xm, nm, q, dws, dbs, N, C, HW, cn, eps, nt);
  else if (layout == 0)
    rbwd_rows(g, xs, ws, ms, rss, xm, nm, q, dws, dbs, N, C, HW, cn, eps, nt);
  else
    rbwd_rows(g, xs, ws, ms, rss, xm, nm, q, dws, dbs, N * HW, C, 1, cn, eps, nt);
}

}  // namespace

extern "C" {

// ABI version: bn_fast.py refuses a library whose version differs.
int l1bn_abi_version() { return 3; }

// the sqrt(pi/2) the L1 kernels use (bn_fast.py checks it against l1bn.spec.intmath.C_SQRT_PI_2)
double l1bn_c_sqrt_pi_2() { return kC1; }

// Training forward. dtype 0 float32, 1 float64, 2 bfloat16; layout 0 NCS, 1 MC; norm 0 L1, 1 L2.
// w, b (may be NULL), mu, s, run_mean, run_s (may be NULL): C values of the compute dtype (float64
// for float64, else float32). With factor > 0 the running statistics move by factor towards the
// batch's mu and s, unless the batch was not finite.
// Returns 0, 1 when a channel sum is not finite (NaN/Inf input), -1 on a bad dtype/norm code.
int l1bn_forward(int dtype, int layout, int norm, const void* x, void* y, const void* w, const void* b,
                 void* mu, void* s, void* run_mean, void* run_s, double factor, int64_t N, int64_t C,
                 int64_t HW, double eps, int nt) {
  if (layout != 0 && layout != 1) return -1;
  if (norm == L1) return fwd_n<L1>(dtype, layout, x, y, w, b, mu, s, run_mean, run_s, factor, N, C, HW, eps, nt);
  if (norm == L2) return fwd_n<L2>(dtype, layout, x, y, w, b, mu, s, run_mean, run_s, factor, N, C, HW, eps, nt);
  return -1;
}

// Training backward: dx (storage dtype), dw and db (C values of the compute dtype, always written).
int l1bn_backward(int dtype, int layout, int norm, const void* dy, const void* x, const void* w,
                  const void* mu, const void* s, void* dx, void* dw, void* db, int64_t N, int64_t C,
                  int64_t HW, double eps, int nt) {
  if (layout != 0 && layout != 1) return -1;
  if (norm == L1) return bwd_n<L1>(dtype, layout, dy, x, w, mu, s, dx, dw, db, N, C, HW, eps, nt);
  if (norm == L2) return bwd_n<L2>(dtype, layout, dy, x, w, mu, s, dx, dw, db, N, C, HW, eps, nt);
  return -1;
}

// Range-BN training forward (sigma = cn * (max - min) + eps): y, and C values each of mu, rs = cn *
// (max - min), max, min (compute dtype). Running statistics as in l1bn_forward (run_sigma moves
// towards rs). Returns 0, 1 when a channel's sum or range is not finite, -1 on a bad code.
int l1bn_range_forward(int dtype, int layout, const void* x, void* y, const void* w, const void* b,
                       void* mu, void* rs, void* mx, void* mn, void* run_mean, void* run_sigma,
                       double factor, int64_t N, int64_t C, int64_t HW, double cn, double eps, int nt) {
  if (layout != 0 && layout != 1) return -1;
  switch (dtype) {
    case 0: return rfwd_t<float>(layout, x, y, w, b, mu, rs, mx, mn, run_mean, run_sigma, factor, N, C, HW, cn, eps, nt);
    case 1: return rfwd_t<double>(layout, x, y, w, b, mu, rs, mx, mn, run_mean, run_sigma, factor, N, C, HW, cn, eps, nt);
    case 2: return rfwd_t<uint16_t>(layout, x, y, w, b, mu, rs, mx, mn, run_mean, run_sigma, factor, N, C, HW, cn, eps, nt);
  }
  return -1;
}

// Range-BN training backward from the forward's mu, rs, max, min: dx, dw, db (always written).
int l1bn_range_backward(int dtype, int layout, const void* dy, const void* x, const void* w,
                        const void* mu, const void* rs, const void* mx, const void* mn, void* dx,
                        void* dw, void* db, int64_t N, int64_t C, int64_t HW, double cn, double eps,
                        int nt) {
  if (layout != 0 && layout != 1) return -1;
  switch (dtype) {
    case 0: rbwd_t<float>(layout, dy, x, w, mu, rs, mx, mn, dx, dw, db, N, C, HW, cn, eps, nt); return 0;
    case 1: rbwd_t<double>(layout, dy, x, w, mu, rs, mx, mn, dx, dw, db, N, C, HW, cn, eps, nt); return 0;
    case 2: rbwd_t<uint16_t>(layout, dy, x, w, mu, rs, mx, mn, dx, dw, db, N, C, HW, cn, eps, nt); return 0;
  }
  return -1;
}

}  // extern "C"
