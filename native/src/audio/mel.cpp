// Whisper / transformers 4.57 log-mel; see mel.h for the definition and the input-length rules.
#include "mel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include <rustasr/engine.h>

namespace rustasr {

namespace {

constexpr double kPi = 3.14159265358979323846264338327950288;

[[noreturn]] void invalid(const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "mel: " + what); }

// Slaney mel scale, as transformers.audio_utils.hertz_to_mel / mel_to_hertz (mel_scale="slaney").
double hertz_to_mel(double hz) {
  const double min_log_hertz = 1000.0, min_log_mel = 15.0, logstep = 27.0 / std::log(6.4);
  if (hz >= min_log_hertz) return min_log_mel + std::log(hz / min_log_hertz) * logstep;
  return 3.0 * hz / 200.0;
}

double mel_to_hertz(double mel) {
  const double min_log_hertz = 1000.0, min_log_mel = 15.0, logstep = std::log(6.4) / 27.0;
  if (mel >= min_log_mel) return min_log_hertz * std::exp(logstep * (mel - min_log_mel));
  return 200.0 * mel / 3.0;
}

// numpy.linspace(start, stop, num) (endpoint=True): i * step + start, last element exactly stop.
std::vector<double> linspace(double start, double stop, int num) {
  std::vector<double> y(static_cast<size_t>(num));
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i) y[static_cast<size_t>(i)] = i * step + start;
  y.back() = stop;
  return y;
}

inline void cmul(double ar, double ai, double br, double bi, double& r, double& i) {
  r = ar * br - ai * bi;
  i = ar * bi + ai * br;
}

}  // namespace

MelExtractor::MelExtractor(const MelParams& p) : params_(p) {
  if (p.n_mels < 1) invalid("n_mels must be >= 1, got " + std::to_string(p.n_mels));
  if (p.n_fft < 2 || p.n_fft % 2 != 0) invalid("n_fft must be even and >= 2, got " + std::to_string(p.n_fft));
  if (p.hop < 1) invalid("hop must be >= 1, got " + std::to_string(p.hop));
  if (p.sample_rate < 2) invalid("sample_rate must be >= 2, got " + std::to_string(p.sample_rate));
  if (!std::isfinite(p.fmin) || !std::isfinite(p.fmax) || p.fmin < 0.0 || p.fmax <= p.fmin)
    invalid("need 0 <= fmin < fmax, got fmin " + std::to_string(p.fmin) + ", fmax " + std::to_string(p.fmax));

  const int N = p.n_fft;
  half_ = N / 2;

  // Periodic Hann window (torch.hann_window(N), periodic=True).
  window_.resize(static_cast<size_t>(N));
  for (int i = 0; i < N; ++i) window_[static_cast<size_t>(i)] = 0.5 - 0.5 * std::cos(2.0 * kPi * i / N);

  // Mixed-radix Stockham plan for the complex FFT of size half_: radices 4, 2, 3, 5, then other primes.
  std::vector<int> radices;
  int rest = half_;
  while (rest % 4 == 0) { radices.push_back(4); rest /= 4; }
  while (rest % 2 == 0) { radices.push_back(2); rest /= 2; }
  for (int f = 3; rest > 1; f += 2) {
    while (rest % f == 0) { radices.push_back(f); rest /= f; }
    if (f * f > rest && rest > 1) { radices.push_back(rest); rest = 1; }
  }
  int n = half_, stride = 1;
  for (int r : radices) {
    Stage st;
    st.radix = r;
    st.m = n / r;
    st.stride = stride;
    st.tw.resize(static_cast<size_t>(2 * st.m * r));
    for (int q = 0; q < st.m; ++q)
      for (int k = 0; k < r; ++k) {
        const double ang = -2.0 * kPi * static_cast<double>((static_cast<int64_t>(q) * k) % n) / n;
        st.tw[static_cast<size_t>(2 * (q * r + k))] = std::cos(ang);
        st.tw[static_cast<size_t>(2 * (q * r + k) + 1)] = std::sin(ang);
      }
    if (r != 2 && r != 3 && r != 4 && r != 5) {
      st.root.resize(static_cast<size_t>(2 * r));
      for (int k = 0; k < r; ++k) {
        st.root[static_cast<size_t>(2 * k)] = std::cos(-2.0 * kPi * k / r);
        st.root[static_cast<size_t>(2 * k + 1)] = std::sin(-2.0 * kPi * k / r);
      }
    }
    stages_.push_back(std::move(st));
    n /= r;
    stride *= r;
  }

  // Real-FFT post-processing twiddles exp(-2 pi i k / N), k = 0..half_.
  post_tw_.resize(static_cast<size_t>(2 * (half_ + 1)));
  for (int k = 0; k <= half_; ++k) {
    post_tw_[static_cast<size_t>(2 * k)] = std::cos(-2.0 * kPi * k / N);
    post_tw_[static_cast<size_t>(2 * k + 1)] = std::sin(-2.0 * kPi * k / N);
  }

  // Filter bank: transformers.audio_utils.mel_filter_bank(n_bins, n_mels, fmin, fmax, sr, "slaney", "slaney")
  // in float64, then rounded to float32 (the torch feature path casts it).
  const int nb = n_bins();
  const std::vector<double> fft_freqs = linspace(0.0, static_cast<double>(p.sample_rate / 2), nb);
  std::vector<double> ff = linspace(hertz_to_mel(p.fmin), hertz_to_mel(p.fmax), p.n_mels + 2);
  for (double& v : ff) v = mel_to_hertz(v);
  filters_.resize(static_cast<size_t>(p.n_mels));
  std::vector<float> row(static_cast<size_t>(nb));
  for (int m = 0; m < p.n_mels; ++m) {
    const size_t mu = static_cast<size_t>(m);
    const double diff_lo = ff[mu + 1] - ff[mu], diff_hi = ff[mu + 2] - ff[mu + 1];
    const double enorm = 2.0 / (ff[mu + 2] - ff[mu]);
    int first = -1, last = -1;
    for (int b = 0; b < nb; ++b) {
      const double f = fft_freqs[static_cast<size_t>(b)];
      const double down = -(ff[mu] - f) / diff_lo;
      const double up = (ff[mu + 2] - f) / diff_hi;
      const double v = std::max(0.0, std::min(down, up)) * enorm;
      row[static_cast<size_t>(b)] = static_cast<float>(v);
      if (row[static_cast<size_t>(b)] != 0.0f) {
        if (first < 0) first = b;
        last = b;
      }
    }
    Filter& flt = filters_[mu];
    flt.first_bin = first < 0 ? 0 : first;
    if (first >= 0)
      for (int b = first; b <= last; ++b) flt.w.push_back(static_cast<double>(row[static_cast<size_t>(b)]));
  }
}

int64_t MelExtractor::frames(size_t n_samples) const {
  return static_cast<int64_t>(n_samples / static_cast<size_t>(params_.hop));
}

size_t MelExtractor::min_samples() const {
  return std::max(static_cast<size_t>(params_.hop), static_cast<size_t>(params_.n_fft / 2 + 1));
}

std::vector<float> MelExtractor::filter_bank() const {
  const int nb = n_bins();
  std::vector<float> out(static_cast<size_t>(params_.n_mels) * static_cast<size_t>(nb), 0.0f);
  for (int m = 0; m < params_.n_mels; ++m) {
    const Filter& f = filters_[static_cast<size_t>(m)];
    for (size_t j = 0; j < f.w.size(); ++j)
      out[static_cast<size_t>(m) * static_cast<size_t>(nb) + static_cast<size_t>(f.first_bin) + j] =
          static_cast<float>(f.w[j]);
  }
  return out;
}

// Stockham autosort, decimation in frequency. Stage with radix p, sub-length n = m * p, stride s:
//   y[s_ + s*(p*q + k)] = (sum_j x[s_ + s*(q + m*j)] * exp(-2 pi i j k / p)) * exp(-2 pi i q k / n).
double* MelExtractor::fft_half(double* a, double* b) const {
  double* src = a;
  double* dst = b;
  for (const Stage& st : stages_) {
    const int p = st.radix, m = st.m, s = st.stride;
    const size_t ms = static_cast<size_t>(m) * static_cast<size_t>(s);  // distance between inputs j and j+1
    for (int q = 0; q < m; ++q) {
      const double* tw = &st.tw[static_cast<size_t>(2 * q * p)];
      const double* in = src + 2 * static_cast<size_t>(s) * static_cast<size_t>(q);
      double* out = dst + 2 * static_cast<size_t>(s) * static_cast<size_t>(p) * static_cast<size_t>(q);
      for (int r = 0; r < s; ++r) {
        const double* x0 = in + 2 * r;
        double* y0 = out + 2 * r;
        const size_t os = 2 * static_cast<size_t>(s);  // distance between outputs k and k+1
        if (p == 4) {
          const double a0r = x0[0], a0i = x0[1];
          const double a1r = x0[2 * ms], a1i = x0[2 * ms + 1];
          const double a2r = x0[4 * ms], a2i = x0[4 * ms + 1];
          const double a3r = x0[6 * ms], a3i = x0[6 * ms + 1];
          const double s02r = a0r + a2r, s02i = a0i + a2i, d02r = a0r - a2r, d02i = a0i - a2i;
          const double s13r = a1r + a3r, s13i = a1i + a3i, d13r = a1r - a3r, d13i = a1i - a3i;
          y0[0] = s02r + s13r;
          y0[1] = s02i + s13i;
          // b1 = d02 - i d13, b2 = s02 - s13, b3 = d02 + i d13
          cmul(d02r + d13i, d02i - d13r, tw[2], tw[3], y0[os], y0[os + 1]);
          cmul(s02r - s13r, s02i - s13i, tw[4], tw[5], y0[2 * os], y0[2 * os + 1]);
          cmul(d02r - d13i, d02i + d13r, tw[6], tw[7], y0[3 * os], y0[3 * os + 1]);
        } else if (p == 2) {
          const double a0r = x0[0], a0i = x0[1], a1r = x0[2 * ms], a1i = x0[2 * ms + 1];
          y0[0] = a0r + a1r;
          y0[1] = a0i + a1i;
          cmul(a0r - a1r, a0i - a1i, tw[2], tw[3], y0[os], y0[os + 1]);
        } else if (p == 5) {
          const double c1 = 0.30901699437494742410, c2 = -0.80901699437494742410;  // cos(2pi/5), cos(4pi/5)
          const double s1 = 0.95105651629515357212, s2 = 0.58778525229247312917;   // sin(2pi/5), sin(4pi/5)
          const double a0r = x0[0], a0i = x0[1];
          const double a1r = x0[2 * ms], a1i = x0[2 * ms + 1];
          const double a2r = x0[4 * ms], a2i = x0[4 * ms + 1];
          const double a3r = x0[6 * ms], a3i = x0[6 * ms + 1];
          const double a4r = x0[8 * ms], a4i = x0[8 * ms + 1];
          const double t1r = a1r + a4r, t1i = a1i + a4i, t2r = a2r + a3r, t2i = a2i + a3i;
          const double t3r = a1r - a4r, t3i = a1i - a4i, t4r = a2r - a3r, t4i = a2i - a3i;
          y0[0] = a0r + t1r + t2r;
          y0[1] = a0i + t1i + t2i;
          const double r1r = a0r + c1 * t1r + c2 * t2r, r1i = a0i + c1 * t1i + c2 * t2i;
          const double r2r = a0r + c2 * t1r + c1 * t2r, r2i = a0i + c2 * t1i + c1 * t2i;
          const double i1r = s1 * t3r + s2 * t4r, i1i = s1 * t3i + s2 * t4i;
          const double i2r = s2 * t3r - s1 * t4r, i2i = s2 * t3i - s1 * t4i;
          // b1 = r1 - i*i1, b4 = r1 + i*i1, b2 = r2 - i*i2, b3 = r2 + i*i2
          cmul(r1r + i1i, r1i - i1r, tw[2], tw[3], y0[os], y0[os + 1]);
          cmul(r2r + i2i, r2i - i2r, tw[4], tw[5], y0[2 * os], y0[2 * os + 1]);
          cmul(r2r - i2i, r2i + i2r, tw[6], tw[7], y0[3 * os], y0[3 * os + 1]);
          cmul(r1r - i1i, r1i + i1r, tw[8], tw[9], y0[4 * os], y0[4 * os + 1]);
        } else if (p == 3) {
          const double h = 0.86602540378443864676;  // sin(2pi/3)
          const double a0r = x0[0], a0i = x0[1];
          const double a1r = x0[2 * ms], a1i = x0[2 * ms + 1];
          const double a2r = x0[4 * ms], a2i = x0[4 * ms + 1];
          const double tr = a1r + a2r, ti = a1i + a2i;
          const double rr = a0r - 0.5 * tr, ri = a0i - 0.5 * ti;
          const double ir = h * (a1r - a2r), ii = h * (a1i - a2i);
          y0[0] = a0r + tr;
          y0[1] = a0i + ti;
          cmul(rr + ii, ri - ir, tw[2], tw[3], y0[os], y0[os + 1]);
          cmul(rr - ii, ri + ir, tw[4], tw[5], y0[2 * os], y0[2 * os + 1]);
        } else {  // generic prime radix, O(p^2)
          const double* root = st.root.data();
          for (int k = 0; k < p; ++k) {
            double sr = 0.0, si = 0.0;
            for (int j = 0; j < p; ++j) {
              const size_t e = static_cast<size_t>((j * k) % p);
              double vr, vi;
              cmul(x0[2 * ms * static_cast<size_t>(j)], x0[2 * ms * static_cast<size_t>(j) + 1], root[2 * e],
                   root[2 * e + 1], vr, vi);
              sr += vr;
              si += vi;
            }
            cmul(sr, si, tw[2 * k], tw[2 * k + 1], y0[os * static_cast<size_t>(k)],
                 y0[os * static_cast<size_t>(k) + 1]);
          }
        }
      }
    }
    std::swap(src, dst);
  }
  return src;
}

int64_t MelExtractor::final_frames(size_t n) const {
  const int64_t T = frames(n);
  const int64_t reach = static_cast<int64_t>(n) + params_.n_fft / 2 - params_.n_fft;  // last start + hop*t
  if (reach < 0) return 0;
  return std::min<int64_t>(T, reach / params_.hop + 1);
}

double MelExtractor::log_frames(const float* x, size_t n, int64_t t0, int64_t t1, float* out, int64_t x_first) const {
  const int N = params_.n_fft, M = half_, nb = n_bins(), n_mels = params_.n_mels;
  const size_t pad = static_cast<size_t>(N / 2);
  if (n < min_samples()) {
    invalid("audio too short: " + std::to_string(n) + " samples, need at least " + std::to_string(min_samples()) +
            " (one hop of " + std::to_string(params_.hop) + " and more than the n_fft/2 = " + std::to_string(pad) +
            " reflect padding)");
  }
  if (x == nullptr || out == nullptr) invalid("null buffer");
  if (t0 < 0 || t1 < t0 || t1 > frames(n) || x_first < 0) invalid("frame range out of bounds");
  // The lowest sample the frames read: reflected indices near the start are below N/2.
  if (t1 > t0 && std::max<int64_t>(0, t0 * params_.hop - static_cast<int64_t>(pad)) < x_first)
    invalid("frame range reads dropped samples");
  if (t1 > t0) {
    // Only the samples the frames read are checked (the caller appended, and checked, the rest).
    const int64_t lo = std::max<int64_t>(0, t0 * params_.hop - static_cast<int64_t>(pad));
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(n), (t1 - 1) * params_.hop + static_cast<int64_t>(pad) + 1);
    for (int64_t i = lo; i < hi; ++i)
      if (!std::isfinite(x[i - x_first])) invalid("non-finite sample at index " + std::to_string(i));
  }

  std::vector<double> buf(static_cast<size_t>(2 * M)), scratch(static_cast<size_t>(2 * M));
  std::vector<double> power(static_cast<size_t>(nb));
  const double* win = window_.data();
  const double* ptw = post_tw_.data();
  const int64_t ni = static_cast<int64_t>(n);
  double max_log = -std::numeric_limits<double>::infinity();

  for (int64_t t = t0; t < t1; ++t) {
    // Frame t covers padded samples [t*hop, t*hop + N), i.e. original indices start .. start + N - 1.
    const int64_t start = t * params_.hop - static_cast<int64_t>(pad);
    if (start >= 0 && start + N <= ni) {
      const float* xs = x + (start - x_first);
      for (int i = 0; i < N; ++i) buf[static_cast<size_t>(i)] = static_cast<double>(xs[i]) * win[i];
    } else {
      for (int i = 0; i < N; ++i) {
        int64_t j = start + i;
        if (j < 0) j = -j;                   // reflect (edge sample not repeated); valid since n > pad
        else if (j >= ni) j = 2 * (ni - 1) - j;
        buf[static_cast<size_t>(i)] = static_cast<double>(x[j - x_first]) * win[i];
      }
    }
    // Real FFT of size N through a complex FFT of size M = N/2 on z[j] = x[2j] + i x[2j+1].
    const double* Z = fft_half(buf.data(), scratch.data());
    for (int k = 0; k <= M; ++k) {
      const int k1 = (k == M) ? 0 : k;
      const int k2 = (k == 0) ? 0 : M - k;
      const double zr = Z[2 * k1], zi = Z[2 * k1 + 1];
      const double cr = Z[2 * k2], ci = -Z[2 * k2 + 1];  // conj(Z[M-k])
      const double er = 0.5 * (zr + cr), ei = 0.5 * (zi + ci);
      const double orr = 0.5 * (zi - ci), oi = -0.5 * (zr - cr);  // (Z[k] - conj(Z[M-k])) / (2i)
      double wr, wi;
      cmul(orr, oi, ptw[2 * k], ptw[2 * k + 1], wr, wi);
      const double xr = er + wr, xi = ei + wi;
      power[static_cast<size_t>(k)] = xr * xr + xi * xi;
    }
    float* row = out + (t - t0) * n_mels;
    for (int m = 0; m < n_mels; ++m) {
      const Filter& f = filters_[static_cast<size_t>(m)];
      const double* pw = power.data() + f.first_bin;
      double acc = 0.0;
      for (size_t j = 0; j < f.w.size(); ++j) acc += f.w[j] * pw[j];
      const double lg = std::log10(std::max(acc, 1e-10));
      max_log = std::max(max_log, lg);
      row[m] = static_cast<float>(lg);
    }
  }
  return max_log;
}

void MelExtractor::finish(float* v, size_t count, double max_log) {
  const double floor_log = max_log - 8.0;
  for (size_t i = 0; i < count; ++i) {
    const double x = std::max(static_cast<double>(v[i]), floor_log);
    v[i] = static_cast<float>((x + 4.0) / 4.0);
  }
}

void MelExtractor::compute(const float* x, size_t n, float* out) const {
  if (n < min_samples() || x == nullptr || out == nullptr) {
    float dummy = 0.f;
    log_frames(x, n, 0, 0, out ? out : &dummy);  // throws the length / null-buffer error
  }
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) invalid("non-finite sample at index " + std::to_string(i));
  const int64_t T = frames(n);
  const size_t Tu = static_cast<size_t>(T), n_mels = static_cast<size_t>(params_.n_mels);
  std::vector<float> fm(Tu * n_mels);  // frame-major
  const double max_log = log_frames(x, n, 0, T, fm.data());
  for (size_t t = 0; t < Tu; ++t)
    for (size_t m = 0; m < n_mels; ++m) out[m * Tu + t] = fm[t * n_mels + m];
  finish(out, n_mels * Tu, max_log);
}

std::vector<float> MelExtractor::compute(const float* x, size_t n) const {
  const int64_t T = frames(n);
  std::vector<float> out(static_cast<size_t>(params_.n_mels) * static_cast<size_t>(T < 0 ? 0 : T));
  compute(x, n, out.data());
  return out;
}

}  // namespace rustasr
