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
// partial sums), see Rows.
// Structure: one driver per layout and direction (fwd_ncs, fwd_rows, bwd_ncs, bwd_rows) runs the
// passes that every dispersion shares (the affine pass, the dx pass, the per-channel and per-row
// bookkeeping); a policy per dispersion (DispFwd / DispBwd for L1 and L2, RangeFwd / RangeBwd)
// supplies the statistics and the dx terms.

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

// The per-segment reductions (seg_reduce, seg_bsums, seg_sum_mm, seg_rsums) stay out of
// line: inlined into different callers GCC contracts their multiply-adds into FMAs differently,
// which moves float32 sums by an ulp; out of line they are the same code for every caller.
#if defined(__GNUC__)
#define L1BN_NOINLINE __attribute__((noinline))
#else
#define L1BN_NOINLINE
#endif

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

// sum of f(value) over a segment: compute-dtype partial sums of kBlock values, added in double
template <class S, class F> L1BN_NOINLINE double seg_reduce(const S* p, int64_t n, F f) {
  using A = typename Cvt<S>::A;
  double tot = 0;
  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int64_t i1 = std::min(n, i0 + kBlock);
    A acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = i0; i < i1; ++i) acc += f(Cvt<S>::ld(p[i]));
    tot += double(acc);
  }
  return tot;
}

template <class A> struct Value {
  A operator()(A v) const { return v; }
};
template <int NORM, class A> struct Dev {  // |v - mu| or (v - mu)^2
  A mu;
  A operator()(A v) const { return disp<NORM>(v - mu); }
};

template <class S> double seg_sum(const S* p, int64_t n) { return seg_reduce(p, n, Value<typename Cvt<S>::A>{}); }

template <int NORM, class S> double seg_disp(const S* p, int64_t n, typename Cvt<S>::A mu) {
  return seg_reduce(p, n, Dev<NORM, typename Cvt<S>::A>{mu});
}

template <class S> void seg_affine(const S* p, S* q, int64_t n, typename Cvt<S>::A mu,
                                   typename Cvt<S>::A scale, typename Cvt<S>::A shift) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) q[i] = Cvt<S>::st((Cvt<S>::ld(p[i]) - mu) * scale + shift);
}

// sums of dy, dy*d and sign(d) over one segment, added to the three totals
template <class S> L1BN_NOINLINE void seg_bsums(const S* dy, const S* x, int64_t n, typename Cvt<S>::A mu,
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


// ---------------------------------------------------------------- range BN
// sigma = cn * (max - min) + eps, cn = C(n) from the caller (l1bn.spec.intmath.range_scale).
// forward   pass 1: sum, max and min together (the max and min do not need mu);
//           pass 2: y = (x - mu) * (w / sigma) + b.  Outputs mu, rs = cn * (max - min), max, min.
// backward  pass 1: sdy = sum(dy), sdd = sum(dy * d), kmax = #(x == max), kmin = #(x == min);
//           pass 2: dx = a*dy + kx*[x == max] - kn*[x == min] + b0, a = w/sigma, b0 = -a*mean(dy),
//                   k = -cn * a * sdd / sigma, kx = k / kmax, kn = k / kmin.
// Ties: the gradient of max (of min) is split evenly among the values equal to it, as torch
// autograd of amax/amin does; all values equal gives kx = kn and a zero range term.

template <class S> L1BN_NOINLINE void seg_sum_mm(const S* p, int64_t n, double& tot, typename Cvt<S>::A& mx,
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

template <class S> L1BN_NOINLINE void seg_rsums(const S* dy, const S* x, int64_t n, typename Cvt<S>::A mu,
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


// ---------------------------------------------------------------- rows of channel groups
// The tensor as M rows of J = C * G contiguous values, channel c owning columns c*G .. c*G+G-1:
// channels_last / (N, C) is G = 1, M = N * S; a contiguous (N, C, S) with a small S is G = S,
// M = N (short per-channel segments would cost more in horizontal sums than they carry).
// Each thread sums its block of rows into its own per-column float64 arrays (padded against
// false sharing); one thread folds the arrays into per-channel values between passes.

inline int64_t padded(int64_t J) { return (J + 7) / 8 * 8 + 8; }

struct Rows {
  int64_t M, C, G, J, P;  // P: the padded length of one per-thread per-column array
  int T;                  // threads asked for
  double m;               // values per channel
  Rows(int64_t M_, int64_t C_, int64_t G_, int nt)
      : M(M_), C(C_), G(G_), J(C_ * G_), P(padded(C_ * G_)), T((nt > 1 && M_ * C_ * G_ >= kGrain) ? nt : 1),
        m(double(M_) * double(G_)) {}
  int64_t r0(int t, int tn) const { return M * t / tn; }  // thread t of tn: rows [r0, r1)
  int64_t r1(int t, int tn) const { return M * (t + 1) / tn; }
  // K float64 arrays of P values per thread, zeroed
  std::vector<double> parts(int K) const { return std::vector<double>(size_t(T) * K * P, 0.0); }
  // channel c's total of array k (of K per thread) over the tn threads and the channel's G columns
  double fold(const std::vector<double>& part, int tn, int K, int k, int64_t c) const {
    double tot = 0;
    for (int u = 0; u < tn; ++u)
      for (int64_t g = 0; g < G; ++g) tot += part[size_t(u) * K * P + k * P + c * G + g];
    return tot;
  }
  template <class A> void bcast(std::vector<A>& v, int64_t c, A val) const {
    for (int64_t g = 0; g < G; ++g) v[c * G + g] = val;
  }
};

// ---------------------------------------------------------------- the dispersions as policies
// Forward policy: a channel's mean and sigma (it stores its own outputs, mu_out and d_out being
// what the running statistics follow): ncs() from the channel's N segments; rows_stats() runs
// inside the rows driver's parallel region (its passes, barriers and single sections), fills the
// per-column mean and gives each channel's sigma to set(c, sigma). Part: its per-thread arrays.
// Backward policy: Stat, the forward statistics pass 1 and 2 need (of a channel: stat(c); per
// column: the NV vectors of the rows driver); Sums, a channel's pass-1 sums; Coef (from
// BCoef / RCoef) the channel's coefficients of dx; its pass-1 and pass-2 loops for a segment
// (sums_seg, dx_seg) and for one row (sums_row into K arrays, dx_row from NK coefficient vectors).

template <class A> struct Chan {
  A mu, sigma;
  int bad;  // the channel's sum (or range) is not finite
};

// L1 / L2: s = mean(|d|) or mean(d*d); one pass for mu, one for s
template <int NORM, class S> struct DispFwd {
  using A = typename Cvt<S>::A;
  A* mu_out;
  A* d_out;  // s
  double eps;

  struct Part {
    std::vector<double> sum;
    explicit Part(const Rows& R) : sum(R.parts(1)) {}
  };

  Chan<A> ncs(const S* x, int64_t N, int64_t C, int64_t HW, int64_t c, double m) const {
    double acc = 0;
    for (int64_t n = 0; n < N; ++n) acc += seg_sum(x + (n * C + c) * HW, HW);
    const int bad = !std::isfinite(acc);
    const A mu = A(acc / m);
    double acc2 = 0;
    for (int64_t n = 0; n < N; ++n) acc2 += seg_disp<NORM>(x + (n * C + c) * HW, HW, mu);
    const A s = A(acc2 / m);
    mu_out[c] = mu;
    d_out[c] = s;
    return {mu, sigma_of<NORM>(s, eps), bad};
  }

  template <class Set>
  void rows_stats(const Rows& R, const S* x, Part& part, int t, int tn, std::vector<A>& mu, int& bad,
                  Set&& set) const {
    const int64_t r0 = R.r0(t, tn), r1 = R.r1(t, tn), J = R.J;
    double* acc = part.sum.data() + size_t(t) * R.P;
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) acc[j] += double(Cvt<S>::ld(p[j]));
    }
#pragma omp barrier
#pragma omp single
    {
      for (int64_t c = 0; c < R.C; ++c) {
        const double tot = R.fold(part.sum, tn, 1, 0, c);
        if (!std::isfinite(tot)) bad = 1;
        mu_out[c] = A(tot / R.m);
        R.bcast(mu, c, mu_out[c]);
      }
      std::fill(part.sum.begin(), part.sum.end(), 0.0);
    }
    const A* mv = mu.data();
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * J;
#pragma omp simd
      for (int64_t j = 0; j < J; ++j) acc[j] += double(disp<NORM>(Cvt<S>::ld(p[j]) - mv[j]));
    }
#pragma omp barrier
#pragma omp single
    for (int64_t c = 0; c < R.C; ++c) {
      const A s = A(R.fold(part.sum, tn, 1, 0, c) / R.m);
      set(c, sigma_of<NORM>(s, eps));
      d_out[c] = s;
    }
  }
};

// range: sigma = cn * (max - min) + eps; the sum, max and min in one pass
template <class S> struct RangeFwd {
  using A = typename Cvt<S>::A;
  A* mu_out;
  A* d_out;  // rs = cn * (max - min)
  A* mx_out;
  A* mn_out;
  double cn, eps;

  struct Part {
    std::vector<double> sum;
    std::vector<A> hi, lo;
    explicit Part(const Rows& R)
        : sum(R.parts(1)), hi(size_t(R.T) * R.P, -std::numeric_limits<A>::infinity()),
          lo(size_t(R.T) * R.P, std::numeric_limits<A>::infinity()) {}
  };

  Chan<A> finish(int64_t c, double tot, double m, A mx, A mn) const {
    const A mu = A(tot / m);
    const A rs = (mx - mn) * A(cn);
    mu_out[c] = mu;
    d_out[c] = rs;
    mx_out[c] = mx;
    mn_out[c] = mn;
    return {mu, rs + A(eps), !std::isfinite(tot) || !std::isfinite(rs)};
  }

  Chan<A> ncs(const S* x, int64_t N, int64_t C, int64_t HW, int64_t c, double m) const {
    double acc = 0;
    A mx = -std::numeric_limits<A>::infinity(), mn = std::numeric_limits<A>::infinity();
    for (int64_t n = 0; n < N; ++n) seg_sum_mm(x + (n * C + c) * HW, HW, acc, mx, mn);
    return finish(c, acc, m, mx, mn);
  }

  template <class Set>
  void rows_stats(const Rows& R, const S* x, Part& part, int t, int tn, std::vector<A>& mu, int& bad,
                  Set&& set) const {
    const int64_t r0 = R.r0(t, tn), r1 = R.r1(t, tn), J = R.J;
    double* acc = part.sum.data() + size_t(t) * R.P;
    A* h = part.hi.data() + size_t(t) * R.P;
    A* l = part.lo.data() + size_t(t) * R.P;
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
    for (int64_t c = 0; c < R.C; ++c) {
      A mx = -std::numeric_limits<A>::infinity(), mn = std::numeric_limits<A>::infinity();
      for (int u = 0; u < tn; ++u)
        for (int64_t g = 0; g < R.G; ++g) {
          const size_t o = size_t(u) * R.P + c * R.G + g;
          mx = std::max(mx, part.hi[o]);
          mn = std::min(mn, part.lo[o]);
        }
      const Chan<A> ch = finish(c, R.fold(part.sum, tn, 1, 0, c), R.m, mx, mn);
      if (ch.bad) bad = 1;
      R.bcast(mu, c, ch.mu);
      set(c, ch.sigma);
    }
  }
};

// L1 / L2 backward: sums of dy, dy*d, sign(d); dx = a*dy + k*t + b0, t = sign(d) (L1) or d (L2)
template <int NORM, class S> struct DispBwd {
  using A = typename Cvt<S>::A;
  using Coef = BCoef<NORM, A>;
  const A* mu_in;
  const A* s_in;
  double eps;
  static constexpr int K = 3, NV = 1, NK = 3;  // pass-1 arrays, statistic and coefficient vectors

  struct Stat {
    A mu;
  };
  struct Sums {
    double dy = 0, dd = 0, sg = 0;
  };
  Stat stat(int64_t c) const { return {mu_in[c]}; }
  void put_stat(const Rows& R, std::vector<A>* v, int64_t c) const { R.bcast(v[0], c, mu_in[c]); }
  Coef coef(const Sums& s, double m, int64_t c, A w) const {
    return Coef(s.dy, s.dd, s.sg, m, sigma_of<NORM>(s_in[c], eps), w);
  }
  Coef coef(const double* s, double m, int64_t c, A w) const {
    return Coef(s[0], s[1], s[2], m, sigma_of<NORM>(s_in[c], eps), w);
  }
  static void put_coef(const Rows& R, std::vector<A>* k, int64_t c, const Coef& q) {
    R.bcast(k[0], c, q.a);
    R.bcast(k[1], c, q.k);
    R.bcast(k[2], c, q.b0);
  }
  static void sums_seg(const S* dy, const S* x, int64_t n, const Stat& st, Sums& s) {
    seg_bsums(dy, x, n, st.mu, s.dy, s.dd, s.sg);
  }
  static void dx_seg(const S* dy, const S* x, S* dx, int64_t n, const Stat& st, const Coef& q) {
    seg_dx<NORM>(dy, x, dx, n, st.mu, q.a, q.k, q.b0);
  }
  static void sums_row(const S* g, const S* p, int64_t J, int64_t P, double* a1, const std::vector<A>* v) {
    double* a2 = a1 + P;
    double* a3 = a2 + P;
    const A* mu = v[0].data();
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
      const A gv = Cvt<S>::ld(g[j]);
      const A d = Cvt<S>::ld(p[j]) - mu[j];
      a1[j] += double(gv);
      a2[j] += double(gv * d);
      a3[j] += double(sgn(d));
    }
  }
  static void dx_row(const S* g, const S* p, S* q, int64_t J, const std::vector<A>* v, const std::vector<A>* k) {
    const A *mu = v[0].data(), *ka = k[0].data(), *kk = k[1].data(), *kb = k[2].data();
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
      const A d = Cvt<S>::ld(p[j]) - mu[j];
      const A tt = (NORM == L1) ? sgn(d) : d;
      q[j] = Cvt<S>::st(ka[j] * Cvt<S>::ld(g[j]) + kk[j] * tt + kb[j]);
    }
  }
};

// range backward: sums of dy, dy*d and the counts of values equal to max / min;
// dx = a*dy + kx*[x == max] - kn*[x == min] + b0
template <class S> struct RangeBwd {
  using A = typename Cvt<S>::A;
  using Coef = RCoef<A>;
  const A* mu_in;
  const A* rs_in;
  const A* mx_in;
  const A* mn_in;
  double cn, eps;
  static constexpr int K = 4, NV = 3, NK = 4;

  struct Stat {
    A mu, mx, mn;
  };
  struct Sums {
    double dy = 0, dd = 0;
    int64_t kx = 0, kn = 0;
  };
  Stat stat(int64_t c) const { return {mu_in[c], mx_in[c], mn_in[c]}; }
  void put_stat(const Rows& R, std::vector<A>* v, int64_t c) const {
    R.bcast(v[0], c, mu_in[c]);
    R.bcast(v[1], c, mx_in[c]);
    R.bcast(v[2], c, mn_in[c]);
  }
  Coef coef(const Sums& s, double m, int64_t c, A w) const {
    return Coef(s.dy, s.dd, s.kx, s.kn, m, cn, rs_in[c] + A(eps), w);
  }
  Coef coef(const double* s, double m, int64_t c, A w) const {
    return Coef(s[0], s[1], int64_t(s[2]), int64_t(s[3]), m, cn, rs_in[c] + A(eps), w);
  }
  static void put_coef(const Rows& R, std::vector<A>* k, int64_t c, const Coef& q) {
    R.bcast(k[0], c, q.a);
    R.bcast(k[1], c, q.kx);
    R.bcast(k[2], c, q.kn);
    R.bcast(k[3], c, q.b0);
  }
  static void sums_seg(const S* dy, const S* x, int64_t n, const Stat& st, Sums& s) {
    seg_rsums(dy, x, n, st.mu, st.mx, st.mn, s.dy, s.dd, s.kx, s.kn);
  }
  static void dx_seg(const S* dy, const S* x, S* dx, int64_t n, const Stat& st, const Coef& q) {
    seg_rdx(dy, x, dx, n, st.mx, st.mn, q.a, q.kx, q.kn, q.b0);
  }
  static void sums_row(const S* g, const S* p, int64_t J, int64_t P, double* a1, const std::vector<A>* v) {
    double* a2 = a1 + P;
    double* a3 = a2 + P;
    double* a4 = a3 + P;
    const A *mu = v[0].data(), *mx = v[1].data(), *mn = v[2].data();
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
      const A gv = Cvt<S>::ld(g[j]);
      const A x = Cvt<S>::ld(p[j]);
      a1[j] += double(gv);
      a2[j] += double(gv * (x - mu[j]));
      a3[j] += double(x == mx[j]);
      a4[j] += double(x == mn[j]);
    }
  }
  static void dx_row(const S* g, const S* p, S* q, int64_t J, const std::vector<A>* v, const std::vector<A>* k) {
    const A *mx = v[1].data(), *mn = v[2].data();
    const A *ka = k[0].data(), *kx = k[1].data(), *kn = k[2].data(), *kb = k[3].data();
#pragma omp simd
    for (int64_t j = 0; j < J; ++j) {
      const A x = Cvt<S>::ld(p[j]);
      q[j] = Cvt<S>::st(ka[j] * Cvt<S>::ld(g[j]) + (A(x == mx[j]) * kx[j] - A(x == mn[j]) * kn[j]) + kb[j]);
    }
  }
};

// ---------------------------------------------------------------- drivers, one per layout and pass

// NCS: channels in parallel; body(c) returns nonzero for a channel that is not finite
template <class F> int per_channel(int64_t C, int64_t total, int nt, F&& body) {
  int bad = 0;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(| : bad) if (nt > 1 && total >= kGrain)
  for (int64_t c = 0; c < C; ++c) bad |= body(c);
  return bad;
}

// f(offset) for each of channel c's N segments of HW values
template <class F> inline void segments(int64_t N, int64_t C, int64_t HW, int64_t c, F&& f) {
  for (int64_t n = 0; n < N; ++n) f((n * C + c) * HW);
}

template <class Pol, class S, class A = typename Cvt<S>::A>
int fwd_ncs(const Pol& pol, const S* x, S* y, const A* w, const A* b, int64_t N, int64_t C, int64_t HW, int nt) {
  const double m = double(N) * double(HW);
  return per_channel(C, N * C * HW, nt, [&](int64_t c) {
    const Chan<A> ch = pol.ncs(x, N, C, HW, c, m);
    const A scale = (w ? w[c] : A(1)) / ch.sigma;
    const A shift = b ? b[c] : A(0);
    segments(N, C, HW, c, [&](int64_t o) { seg_affine(x + o, y + o, HW, ch.mu, scale, shift); });
    return ch.bad;
  });
}

template <class Pol, class S, class A = typename Cvt<S>::A>
int fwd_rows(const Pol& pol, const S* x, S* y, const A* w, const A* b, int64_t M, int64_t C, int64_t G, int nt) {
  const Rows R(M, C, G, nt);
  typename Pol::Part part(R);
  std::vector<A> mu(R.J), scale(R.J), shift(R.J);
  int bad = 0;
#pragma omp parallel num_threads(R.T)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    pol.rows_stats(R, x, part, t, tn, mu, bad, [&](int64_t c, A sigma) {
      R.bcast(scale, c, (w ? w[c] : A(1)) / sigma);
      R.bcast(shift, c, b ? b[c] : A(0));
    });
    const A *mv = mu.data(), *sc = scale.data(), *sh = shift.data();
    const int64_t r0 = R.r0(t, tn), r1 = R.r1(t, tn);
    for (int64_t r = r0; r < r1; ++r) {
      const S* p = x + r * R.J;
      S* q = y + r * R.J;
#pragma omp simd
      for (int64_t j = 0; j < R.J; ++j) q[j] = Cvt<S>::st((Cvt<S>::ld(p[j]) - mv[j]) * sc[j] + sh[j]);
    }
  }
  return bad;
}

template <class Pol, class S, class A = typename Cvt<S>::A>
void bwd_ncs(const Pol& pol, const S* dy, const S* x, const A* w, S* dx, A* dw, A* db, int64_t N, int64_t C,
             int64_t HW, int nt) {
  const double m = double(N) * double(HW);
  per_channel(C, N * C * HW, nt, [&](int64_t c) {
    const typename Pol::Stat st = pol.stat(c);
    typename Pol::Sums sums;
    segments(N, C, HW, c, [&](int64_t o) { Pol::sums_seg(dy + o, x + o, HW, st, sums); });
    const typename Pol::Coef k = pol.coef(sums, m, c, w ? w[c] : A(1));
    segments(N, C, HW, c, [&](int64_t o) { Pol::dx_seg(dy + o, x + o, dx + o, HW, st, k); });
    dw[c] = k.dw;
    db[c] = k.db;
    return 0;
  });
}

template <class Pol, class S, class A = typename Cvt<S>::A>
void bwd_rows(const Pol& pol, const S* dy, const S* x, const A* w, S* dx, A* dw, A* db, int64_t M, int64_t C,
              int64_t G, int nt) {
  constexpr int K = Pol::K;
  const Rows R(M, C, G, nt);
  std::vector<double> part = R.parts(K);
  std::vector<A> v[Pol::NV], k[Pol::NK];  // per column: the forward statistics, the coefficients
  for (auto& u : v) u.resize(R.J);
  for (auto& u : k) u.resize(R.J);
  for (int64_t c = 0; c < C; ++c) pol.put_stat(R, v, c);
#pragma omp parallel num_threads(R.T)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t r0 = R.r0(t, tn), r1 = R.r1(t, tn);
    double* acc = part.data() + size_t(t) * K * R.P;
    for (int64_t r = r0; r < r1; ++r) Pol::sums_row(dy + r * R.J, x + r * R.J, R.J, R.P, acc, v);
#pragma omp barrier
#pragma omp single
    for (int64_t c = 0; c < C; ++c) {
      double s[K];
      for (int i = 0; i < K; ++i) s[i] = R.fold(part, tn, K, i, c);
      const typename Pol::Coef q = pol.coef(s, R.m, c, w ? w[c] : A(1));
      Pol::put_coef(R, k, c, q);
      dw[c] = q.dw;
      db[c] = q.db;
    }
    for (int64_t r = r0; r < r1; ++r) Pol::dx_row(dy + r * R.J, x + r * R.J, dx + r * R.J, R.J, v, k);
  }
}

// the layouts: NCS with S >= kSegment per channel, other NCS as rows of C groups of S, MC as rows
template <class Pol, class S, class A = typename Cvt<S>::A>
int fwd_any(const Pol& pol, int layout, const S* x, S* y, const A* w, const A* b, int64_t N, int64_t C,
            int64_t HW, int nt) {
  if (layout == 0 && HW >= kSegment) return fwd_ncs(pol, x, y, w, b, N, C, HW, nt);
  if (layout == 0) return fwd_rows(pol, x, y, w, b, N, C, HW, nt);
  return fwd_rows(pol, x, y, w, b, N * HW, C, 1, nt);
}

template <class Pol, class S, class A = typename Cvt<S>::A>
void bwd_any(const Pol& pol, int layout, const S* dy, const S* x, const A* w, S* dx, A* dw, A* db, int64_t N,
             int64_t C, int64_t HW, int nt) {
  if (layout == 0 && HW >= kSegment)
    bwd_ncs(pol, dy, x, w, dx, dw, db, N, C, HW, nt);
  else if (layout == 0)
    bwd_rows(pol, dy, x, w, dx, dw, db, N, C, HW, nt);
  else
    bwd_rows(pol, dy, x, w, dx, dw, db, N * HW, C, 1, nt);
}

// forward + running statistics: r += f * (batch - r) for the mean and the policy's d_out, skipped
// when the batch was not finite
template <class S, class Pol, class A = typename Cvt<S>::A>
int fwd_step(const Pol& pol, int layout, const void* x, void* y, const void* w, const void* b, void* run_mean,
             void* run_d, double factor, int64_t N, int64_t C, int64_t HW, int nt) {
  const int bad = fwd_any(pol, layout, static_cast<const S*>(x), static_cast<S*>(y), static_cast<const A*>(w),
                          static_cast<const A*>(b), N, C, HW, nt);
  if (!bad && factor > 0) {
    A* rm = static_cast<A*>(run_mean);
    A* rd = static_cast<A*>(run_d);
    for (int64_t c = 0; c < C; ++c) {
      if (rm) rm[c] += A(factor) * (pol.mu_out[c] - rm[c]);
      if (rd) rd[c] += A(factor) * (pol.d_out[c] - rd[c]);
    }
  }
  return bad;
}

template <class S, class Pol, class A = typename Cvt<S>::A>
int bwd_step(const Pol& pol, int layout, const void* dy, const void* x, const void* w, void* dx, void* dw,
             void* db, int64_t N, int64_t C, int64_t HW, int nt) {
  bwd_any(pol, layout, static_cast<const S*>(dy), static_cast<const S*>(x), static_cast<const A*>(w),
          static_cast<S*>(dx), static_cast<A*>(dw), static_cast<A*>(db), N, C, HW, nt);
  return 0;
}

// f(S{}) for the storage type of dtype code 0 float32, 1 float64, 2 bfloat16; -1 for another code
template <class F> int by_dtype(int dtype, F&& f) {
  switch (dtype) {
    case 0: return f(float{});
    case 1: return f(double{});
    case 2: return f(uint16_t{});
  }
  return -1;
}

template <class S> using Acc = typename Cvt<S>::A;
template <class S> Acc<S>* as_acc(void* p) { return static_cast<Acc<S>*>(p); }
template <class S> const Acc<S>* as_acc(const void* p) { return static_cast<const Acc<S>*>(p); }

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
  if ((layout != 0 && layout != 1) || (norm != L1 && norm != L2)) return -1;
  return by_dtype(dtype, [&](auto s0) {
    using S = decltype(s0);
    if (norm == L1)
      return fwd_step<S>(DispFwd<L1, S>{as_acc<S>(mu), as_acc<S>(s), eps}, layout, x, y, w, b, run_mean, run_s,
                         factor, N, C, HW, nt);
    return fwd_step<S>(DispFwd<L2, S>{as_acc<S>(mu), as_acc<S>(s), eps}, layout, x, y, w, b, run_mean, run_s,
                       factor, N, C, HW, nt);
  });
}

// Training backward: dx (storage dtype), dw and db (C values of the compute dtype, always written).
int l1bn_backward(int dtype, int layout, int norm, const void* dy, const void* x, const void* w,
                  const void* mu, const void* s, void* dx, void* dw, void* db, int64_t N, int64_t C,
                  int64_t HW, double eps, int nt) {
  if ((layout != 0 && layout != 1) || (norm != L1 && norm != L2)) return -1;
  return by_dtype(dtype, [&](auto s0) {
    using S = decltype(s0);
    if (norm == L1)
      return bwd_step<S>(DispBwd<L1, S>{as_acc<S>(mu), as_acc<S>(s), eps}, layout, dy, x, w, dx, dw, db, N, C, HW,
                         nt);
    return bwd_step<S>(DispBwd<L2, S>{as_acc<S>(mu), as_acc<S>(s), eps}, layout, dy, x, w, dx, dw, db, N, C, HW,
                       nt);
  });
}

// Range-BN training forward (sigma = cn * (max - min) + eps): y, and C values each of mu, rs = cn *
// (max - min), max, min (compute dtype). Running statistics as in l1bn_forward (run_sigma moves
// towards rs). Returns 0, 1 when a channel's sum or range is not finite, -1 on a bad code.
int l1bn_range_forward(int dtype, int layout, const void* x, void* y, const void* w, const void* b,
                       void* mu, void* rs, void* mx, void* mn, void* run_mean, void* run_sigma,
                       double factor, int64_t N, int64_t C, int64_t HW, double cn, double eps, int nt) {
  if (layout != 0 && layout != 1) return -1;
  return by_dtype(dtype, [&](auto s0) {
    using S = decltype(s0);
    return fwd_step<S>(RangeFwd<S>{as_acc<S>(mu), as_acc<S>(rs), as_acc<S>(mx), as_acc<S>(mn), cn, eps}, layout,
                       x, y, w, b, run_mean, run_sigma, factor, N, C, HW, nt);
  });
}

// Range-BN training backward from the forward's mu, rs, max, min: dx, dw, db (always written).
int l1bn_range_backward(int dtype, int layout, const void* dy, const void* x, const void* w,
                        const void* mu, const void* rs, const void* mx, const void* mn, void* dx,
                        void* dw, void* db, int64_t N, int64_t C, int64_t HW, double cn, double eps,
                        int nt) {
  if (layout != 0 && layout != 1) return -1;
  return by_dtype(dtype, [&](auto s0) {
    using S = decltype(s0);
    return bwd_step<S>(RangeBwd<S>{as_acc<S>(mu), as_acc<S>(rs), as_acc<S>(mx), as_acc<S>(mn), cn, eps}, layout,
                       dy, x, w, dx, dw, db, N, C, HW, nt);
  });
}

}  // extern "C"
