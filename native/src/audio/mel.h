// Log-mel spectrogram, exactly as transformers 4.57 WhisperFeatureExtractor computes it (torch path, dither 0):
//
//   T = n / hop frames (the centred STFT gives n / hop + 1 frames; the last one is dropped),
//   reflect-pad n_fft / 2 samples on both sides, periodic Hann window of n_fft, |X|^2 (n_fft / 2 + 1 bins),
//   slaney-scale mel filter bank with slaney area normalisation over [fmin, fmax] (built in float64, then
//   rounded to float32, as transformers.audio_utils.mel_filter_bank(..., norm="slaney", mel_scale="slaney")),
//   log10(max(mel, 1e-10)), then max(x, max_over_utterance(x) - 8), then (x + 4) / 4.
//
// The spectrum (real FFT of size n_fft, mixed radix), the power, the filter products and the log are
// computed in float64; only the filter weights are float32 values (as in the reference). Versus the float32
// torch reference this stays within ~5e-5 absolute (the reference's own float32 rounding).
//
// Input length. torch.stft(center=True, pad_mode="reflect") refuses a signal that is not longer than the
// padding (n <= n_fft / 2), so the reference pipeline cannot produce features for such audio; with n < hop
// there would be zero frames. compute() throws Error(kInvalidArgument) in both cases, i.e. it needs
// n >= min_samples() = max(hop, n_fft / 2 + 1) samples (201 for the Whisper defaults). Padding short audio
// (if wanted) is the caller's decision. Non-finite samples also throw kInvalidArgument.
//
// Thread safety: a MelExtractor is immutable after construction; compute() is const, uses only local
// scratch, and may be called from any number of threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rustasr {

struct MelParams {
  int n_mels = 128;          // config: num_mel_bins
  int n_fft = 400;           // must be even
  int hop = 160;
  int sample_rate = 16000;
  double fmin = 0.0;         // Hz
  double fmax = 8000.0;      // Hz (Whisper uses 8000 regardless of the sample rate)
};

class MelExtractor {
 public:
  // Builds the window, the FFT plan and the filter bank. Throws Error(kInvalidArgument) on bad params.
  explicit MelExtractor(const MelParams& params = MelParams());

  const MelParams& params() const { return params_; }
  int n_mels() const { return params_.n_mels; }
  int n_bins() const { return params_.n_fft / 2 + 1; }

  // Number of frames T for n samples: n / hop (no length check; see min_samples()).
  int64_t frames(size_t n_samples) const;
  // Smallest n that compute() accepts: max(hop, n_fft / 2 + 1).
  size_t min_samples() const;

  // x: n samples (float, [-1, 1] scale). out: n_mels * frames(n) floats, row-major [n_mels, T].
  void compute(const float* x, size_t n, float* out) const;
  std::vector<float> compute(const float* x, size_t n) const;

  // The two halves of compute(), for incremental use (live sessions).
  //
  // log_frames: the raw log10 mel values (before the clamp) of frames [t0, t1) of the n-sample signal x, written
  // frame-major: out[(t - t0) * n_mels + m]. Frames whose window reaches past the end of x use the reflect
  // padding, as compute() does; a frame is final (unchanged by appending samples) once final_frames(n) > t.
  // Returns the largest value written (-inf for t0 == t1). Checks length and finiteness as compute() does.
  // x_first: x[0] is sample x_first of the signal (a caller that dropped the start of a long signal); the
  // frames must not read before it.
  double log_frames(const float* x, size_t n, int64_t t0, int64_t t1, float* out, int64_t x_first = 0) const;
  // Frames of an n-sample signal whose STFT window lies wholly inside it (no right reflect padding).
  int64_t final_frames(size_t n) const;
  // The clamp and scale of compute(): v = (max(v, max_log - 8) + 4) / 4, in place.
  static void finish(float* v, size_t count, double max_log);

  // The float32 filter bank, row-major [n_mels, n_bins] (for tests).
  std::vector<float> filter_bank() const;

 private:
  struct Stage {
    int radix;
    int m;                    // sub-length after this stage (n / radix)
    int stride;               // s: product of the radices before this stage
    std::vector<double> tw;   // [m][radix] interleaved re, im: exp(-2 pi i q k / n), n = m * radix
    std::vector<double> root; // radix other than 2/3/4/5 only: exp(-2 pi i r / radix), r < radix
  };
  struct Filter {
    int first_bin;
    std::vector<double> w;    // float32-rounded weights, stored as double
  };

  // In-place-ish complex FFT of size half_ (interleaved re, im): input in a, b is scratch; returns a or b.
  double* fft_half(double* a, double* b) const;

  MelParams params_;
  int half_ = 0;                      // n_fft / 2: complex FFT size
  std::vector<double> window_;        // periodic Hann, n_fft
  std::vector<Stage> stages_;
  std::vector<double> post_tw_;       // exp(-2 pi i k / n_fft), k = 0..half_, interleaved
  std::vector<Filter> filters_;
};

}  // namespace rustasr
