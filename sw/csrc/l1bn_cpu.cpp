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
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#else  // a compiler without OpenMP: one thread
inline int omp_get_thread_num() { return 0; }
inline int omp_get_num_threads() { return 1; }
#endif

namespace {

constexpr double kC1 = 1.2533141373155001;  // sqrt(pi / 2)
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

}  // namespace

extern "C" {

// ABI version: bn_fast.py refuses a library whose version differs.
int l1bn_abi_version() { return 2; }

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

}  // extern "C"
