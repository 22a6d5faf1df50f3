// Batched decoding: the decode steps of the sessions of one model that are decoding at the same time run
// together, one pass over the weights per step for all of them (a decode step reads every decoder weight and
// is bound by memory bandwidth, so N sessions stepping together cost little more than one).
//
// A session's step (Session::step_greedy / step) is queued here. If no batch is running, the caller leads:
// it takes the queued steps (at most kMaxRows) and runs them as one step of several rows (Session::step_rows);
// the others wait for their result. Sessions that were in the last batch are waited for a short while (a tenth
// of the last step, at most 2 ms) so that a group decoding in lock-step stays together; a session that does
// not come back in time (it finished, it is prefilling a new segment, its consumer is slow) is left out of the
// batch and simply joins a later one, so joining and leaving never stall the others for longer than that wait.
//
// Results are bit-identical to decoding alone: every op of a step is computed per row with the same
// arithmetic whatever the other rows (the CPU matrix-vector kernels keep one accumulator layout per row,
// see gemv.cpp; attention, RoPE and the KV cache stay per session). Backends that cannot promise this
// (Backend::rows_independent() false: the GPU backends) step each session alone.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <unordered_set>
#include <vector>

#include <rustasr/engine.h>

namespace rustasr {

class StepBatcher {
 public:
  // Rows of one batched step: the matrix-vector kernels serve up to this many rows in one pass over a weight.
  static constexpr int kMaxRows = 4;

  explicit StepBatcher(const Model& model);
  ~StepBatcher();
  StepBatcher(const StepBatcher&) = delete;
  StepBatcher& operator=(const StepBatcher&) = delete;

  // Runs `token` through session `s` (checked by the caller: a valid id, a prefilled session) together with
  // the steps other sessions have queued; returns the argmax id and, when `logits` is given, the logits.
  // Throws what the step throws, or kAborted when `s` is cancelled while it waits.
  int32_t step(Session& s, int32_t token, std::vector<float>* logits);

  // A session that ends: no batch waits for it any more.
  void forget(const Session* s);
  // Wakes waiters (a session was cancelled: its waiting step leaves).
  void wake();

  // Batches run and rows stepped since the model was loaded (tests and the bench).
  int64_t batches() const;
  int64_t rows() const;

 private:
  struct Req {
    Session* session;
    int32_t token;
    std::vector<float>* logits;
    int32_t id = 0;
    bool done = false;
    bool taken = false;
    std::exception_ptr error;
  };

  const Model& model_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Req*> queue_;
  bool running_ = false;
  std::unordered_set<const Session*> expected_;  // the sessions of the last batch
  std::chrono::steady_clock::duration last_step_{0};
  // A fixed wait for the sessions of the last batch instead of a tenth of the last step:
  // $RUSTASR_BATCH_WAIT_US at construction (tests on slow or instrumented builds), else negative (unset).
  std::chrono::steady_clock::duration fixed_wait_{-1};
  int64_t batches_ = 0, rows_ = 0;
  struct Scratch;
  std::unique_ptr<Scratch> scratch_;  // the batched step's activations (used by one batch at a time)
};

}  // namespace rustasr
