// Session: one segment's audio in, its first token out (Session::start), then one step per token.
//
// start() is the production path of every mode: an offline segment (all audio appended, start once), the
// exact live mode (start again on all audio so far, every chunk: the official streaming loop), and the fast
// live mode (StartOptions::incremental: cached encoder windows and a reused KV prefix; see engine.h).
#include <algorithm>
#include <chrono>
#include <cmath>

#include "residency.h"
#include "session_state.h"

namespace rustasr {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

void Session::State::reset_segment() {
  audio.clear();
  audio.shrink_to_fit();
  audio_offset = audio_total = 0;
  incremental_used = false;
  log_store.clear();
  log_store.shrink_to_fit();
  log_first = log_count = 0;
  log_max = -std::numeric_limits<double>::infinity();
  cached_tokens = cached_frames = 0;
  kv_ids.clear();
  kv_audio_start = -1;
  kv_audio_final = 0;
  embeds.clear();
  embeds.shrink_to_fit();
  mel.clear();
  mel.shrink_to_fit();
}

Session::Session(std::shared_ptr<const Model> model) : model_(std::move(model)) {
  if (!model_) throw Error(ErrorCode::kInvalidArgument, "Session needs a model");
  state_.reset(new State(&model_->backend()));
}

Session::~Session() {
  if (model_) model_->batcher().forget(this);
}

bool Session::cancelled() const { return state_->cancelled.load(std::memory_order_relaxed); }

std::vector<float> Session::mel(const float* samples, size_t n) const {
  const MelExtractor& mel = model_->mel();
  const int64_t frames = mel.frames(n);
  std::vector<float> out(static_cast<size_t>(frames) * static_cast<size_t>(model_->config().audio.num_mel_bins));
  mel.compute(samples, n, out.data());
  return out;
}

void Session::cancel() {
  state_->cancelled.store(true);
  model_->batcher().wake();  // a step waiting for its batch leaves
}

void Session::append_audio(const float* samples, size_t n) {
  if (n == 0) return;
  if (samples == nullptr) throw Error(ErrorCode::kInvalidArgument, "append_audio: null samples");
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(samples[i]))
      throw Error(ErrorCode::kInvalidArgument,
                  "non-finite sample at index " + std::to_string(state_->audio_total + static_cast<int64_t>(i)));
  state_->audio.insert(state_->audio.end(), samples, samples + n);
  state_->audio_total += static_cast<int64_t>(n);
}

void Session::append_audio(std::vector<float>&& samples) {
  if (!state_->audio.empty()) {
    append_audio(samples.data(), samples.size());
    return;
  }
  const float* x = samples.data();
  for (size_t i = 0; i < samples.size(); ++i)
    if (!std::isfinite(x[i]))
      throw Error(ErrorCode::kInvalidArgument,
                  "non-finite sample at index " + std::to_string(state_->audio_total + static_cast<int64_t>(i)));
  state_->audio_total += static_cast<int64_t>(samples.size());
  state_->audio = std::move(samples);
}

namespace {
// Audio an incremental segment keeps behind its cached windows, for truncate_audio(): 16 s, or one attention
// window when that is longer.
int64_t keep_behind_samples(const Model& m) {
  const int64_t window = (m.attention_window() / m.tokens_per_chunk()) * m.chunk_frames() * m.mel().params().hop;
  return std::max<int64_t>(window, int64_t(16) * m.mel().params().sample_rate);
}
}  // namespace

void Session::truncate_audio(int64_t n) {
  State& S = *state_;
  if (n < 0) throw Error(ErrorCode::kInvalidArgument, "truncate_audio: negative length");
  if (n >= S.audio_total) return;
  const Model& m = *model_;
  const MelExtractor& mx = m.mel();
  const int64_t hop = mx.params().hop, half_fft = mx.params().n_fft / 2;
  const int64_t W = m.attention_window();
  const int64_t window_frames = (W / m.tokens_per_chunk()) * m.chunk_frames();
  const int64_t Tf = mx.final_frames(static_cast<size_t>(n));
  const int64_t cached_frames = std::min(S.cached_frames, (Tf / window_frames) * window_frames);
  if (std::max<int64_t>(0, cached_frames * hop - half_fft) < S.audio_offset)
    throw Error(ErrorCode::kInvalidArgument, "truncate_audio: the cut lies before the audio this segment kept");
  S.audio.resize(static_cast<size_t>(n - S.audio_offset));
  S.audio_total = n;
  S.cached_frames = cached_frames;
  S.cached_tokens = (cached_frames / window_frames) * W;
  // The next start() recomputes the final frames from the first uncached one (the running maximum stays).
  S.log_store.clear();
  S.log_first = cached_frames;
  S.log_count = 0;
  S.kv_audio_final = std::min(S.kv_audio_final, S.cached_tokens);
}

void Session::reset_audio() { state_->reset_segment(); }

int64_t Session::audio_samples() const { return state_->audio_total; }

StartResult Session::start(const int32_t* head, int64_t n_head, const int32_t* tail, int64_t n_tail,
                           const StartOptions& opt) {
  const Model& m = *model_;
  State& S = *state_;
  S.check_cancel();
  if (n_head < 0 || n_tail < 0 || (n_head > 0 && !head) || (n_tail > 0 && !tail))
    throw Error(ErrorCode::kInvalidArgument, "start: bad prompt pieces");
  BusyScope busy(m);
  const MelExtractor& mx = m.mel();
  const int64_t n_mels = m.config().audio.num_mel_bins;
  const int64_t out_dim = m.config().audio.output_dim;
  const int64_t chunk = m.chunk_frames();
  const int64_t total = S.audio_total;
  if (total < static_cast<int64_t>(mx.min_samples()))
    throw Error(ErrorCode::kInvalidArgument, "mel: audio too short: " + std::to_string(total) +
                                                 " samples, need at least " + std::to_string(mx.min_samples()));
  const int64_t T = mx.frames(static_cast<size_t>(total));
  const int64_t N = m.audio_tokens(T);
  // The prompt: head, one pad per audio token, tail.
  const int32_t pad_id = m.config().audio_token_id;
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(n_head + N + n_tail));
  ids.insert(ids.end(), head, head + n_head);
  ids.insert(ids.end(), static_cast<size_t>(N), pad_id);
  ids.insert(ids.end(), tail, tail + n_tail);
  const int64_t vocab = m.config().text.vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    const bool in_audio = static_cast<int64_t>(i) >= n_head && static_cast<int64_t>(i) < n_head + N;
    if (ids[i] < 0 || ids[i] >= vocab)
      throw Error(ErrorCode::kInvalidArgument, "start: token id " + std::to_string(ids[i]) + " out of range");
    if (!in_audio && ids[i] == pad_id)
      throw Error(ErrorCode::kInvalidArgument, "start: the prompt text holds an audio pad id");
  }
  StartResult r;
  auto t0 = std::chrono::steady_clock::now();

  if (!opt.incremental) {
    if (S.incremental_used)
      throw Error(ErrorCode::kInvalidArgument, "start: this segment was started incrementally; reset_audio() first");
    std::vector<float> melv(static_cast<size_t>(n_mels * T));
    mx.compute(S.audio.data(), S.audio.size(), melv.data());
    r.mel_ms = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    // Stage residency (ModelParams::low_memory), as in encode(). Incremental (live) starts keep both stages
    // resident: they encode a few seconds every chunk, and switching would cost more than it saves.
    StageResidency stage(m, busy.alone());
    stage.before_encode();
    S.embeds.resize(static_cast<size_t>(N * out_dim));
    run_encoder(m, S, melv.data(), T, T, T > chunk, S.embeds.data(), nullptr);
    if (stage.active()) S.release_encoder_scratch();
    stage.after_encode(busy.still_alone());
    r.encoded_tokens = N;
  } else {
    S.incremental_used = true;
    const int64_t hop = mx.params().hop;
    const int64_t half_fft = mx.params().n_fft / 2;
    const int64_t Tf = mx.final_frames(static_cast<size_t>(total));
    const float* x = S.audio.data();
    // Final frames not computed yet go to the log store; the running maximum takes them in.
    const int64_t next = S.log_first + S.log_count;
    if (Tf > next) {
      S.log_store.resize(static_cast<size_t>((S.log_count + Tf - next) * n_mels));
      const double mx_new = mx.log_frames(x, static_cast<size_t>(total), next, Tf,
                                          S.log_store.data() + S.log_count * n_mels, S.audio_offset);
      S.log_max = std::max(S.log_max, mx_new);
      S.log_count += Tf - next;
    }
    // Frames still open at the end (their STFT window reaches past the audio) are computed anew each time.
    const int64_t open0 = std::max(Tf, S.log_first + S.log_count);
    std::vector<float> open(static_cast<size_t>((T - open0) * n_mels));
    double cur_max = S.log_max;
    if (T > open0)
      cur_max = std::max(cur_max, mx.log_frames(x, static_cast<size_t>(total), open0, T, open.data(), S.audio_offset));
    // Encoder input: frames from the first uncached one on, [n_mels, F], clamped by the running maximum.
    const int64_t F = T - S.cached_frames;
    S.mel.resize(static_cast<size_t>(n_mels * F));
    for (int64_t t = S.cached_frames; t < T; ++t) {
      const float* col = t < open0 ? S.log_store.data() + (t - S.log_first) * n_mels : open.data() + (t - open0) * n_mels;
      for (int64_t b = 0; b < n_mels; ++b) S.mel[static_cast<size_t>(b * F + (t - S.cached_frames))] = col[b];
    }
    MelExtractor::finish(S.mel.data(), S.mel.size(), cur_max);
    r.mel_ms = ms_since(t0);
    t0 = std::chrono::steady_clock::now();
    // Encode the uncached tail; its rows follow the cached ones in S.embeds.
    S.embeds.resize(static_cast<size_t>(N * out_dim));
    if (F > 0) run_encoder(m, S, S.mel.data(), F, F, T > chunk, S.embeds.data() + S.cached_tokens * out_dim, nullptr);
    r.encoded_tokens = N - S.cached_tokens;
    // Windows whose frames are all final are complete: cache them (their rows stay where they are).
    const int64_t W = m.attention_window();
    const int64_t window_frames = (W / m.tokens_per_chunk()) * chunk;
    const int64_t complete = Tf / window_frames;
    const int64_t cached_windows = S.cached_frames / window_frames;
    if (complete > cached_windows) {
      S.cached_frames = complete * window_frames;
      S.cached_tokens = complete * W;
      // Drop what the cache covers: log-mel frames, and samples no later frame reads.
      const int64_t drop_frames = S.cached_frames - S.log_first;
      S.log_store.erase(S.log_store.begin(), S.log_store.begin() + drop_frames * n_mels);
      S.log_first = S.cached_frames;
      S.log_count -= drop_frames;
      const int64_t keep_from = std::max<int64_t>(0, S.cached_frames * hop - half_fft - keep_behind_samples(m));
      if (keep_from > S.audio_offset) {
        S.audio.erase(S.audio.begin(), S.audio.begin() + (keep_from - S.audio_offset));
        S.audio_offset = keep_from;
      }
    }
  }
  r.encoder_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();

  const int64_t L = static_cast<int64_t>(ids.size());
  // KV positions to keep: the common prefix of the ids, within the audio rows that were final (cached) when
  // they went into the cache. Offline and exact starts keep nothing.
  int64_t reuse = 0;
  if (opt.incremental && S.kv_audio_start == n_head && !S.kv_ids.empty()) {
    const int64_t common_max = std::min<int64_t>(L, static_cast<int64_t>(S.kv_ids.size()));
    int64_t common = 0;
    while (common < common_max && S.kv_ids[static_cast<size_t>(common)] == ids[static_cast<size_t>(common)]) ++common;
    reuse = std::min(common, n_head + std::min(S.kv_audio_final, N));
  }
  r.token = prefill_from(ids.data(), L, S.embeds.data(), N, reuse, nullptr, nullptr);
  r.prefill_ms = ms_since(t0);
  r.reused_tokens = std::min(reuse, L - 1);
  r.audio_tokens = N;
  r.prompt_tokens = L;
  r.cached_tokens = S.cached_tokens;
  if (opt.incremental) {
    S.kv_ids = std::move(ids);
    S.kv_audio_start = n_head;
    S.kv_audio_final = S.cached_tokens;
  } else {
    S.kv_ids.clear();
    S.kv_audio_start = -1;
    S.kv_audio_final = 0;
  }
  return r;
}

}  // namespace rustasr
