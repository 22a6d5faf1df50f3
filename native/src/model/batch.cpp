// StepBatcher: see batch.h.
#include "batch.h"

#include <algorithm>
#include <cstdlib>

#include "model.h"
#include "session_state.h"

namespace rustasr {

struct StepBatcher::Scratch {
  Session::State state;
  explicit Scratch(Backend* be) : state(be) {}
};

StepBatcher::StepBatcher(const Model& model) : model_(model), scratch_(new Scratch(&model.backend())) {
  // $RUSTASR_BATCH_WAIT_US: microseconds a batch leader waits for the sessions of the last batch (0 .. 10 s),
  // in place of a tenth of the last step. For tests under sanitizers, emulators and coverage builds, where a
  // step's bookkeeping between two steps can exceed the normal wait; a group in lock-step still starts as soon
  // as all of it has queued.
  if (const char* env = std::getenv("RUSTASR_BATCH_WAIT_US")) {
    char* end = nullptr;
    const long long us = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && us >= 0 && us <= 10'000'000) fixed_wait_ = std::chrono::microseconds(us);
  }
}

StepBatcher::~StepBatcher() = default;

void StepBatcher::forget(const Session* s) {
  std::lock_guard<std::mutex> lk(mu_);
  expected_.erase(s);
  cv_.notify_all();
}

void StepBatcher::wake() {
  std::lock_guard<std::mutex> lk(mu_);
  cv_.notify_all();
}

int64_t StepBatcher::batches() const {
  std::lock_guard<std::mutex> lk(mu_);
  return batches_;
}

int64_t StepBatcher::rows() const {
  std::lock_guard<std::mutex> lk(mu_);
  return rows_;
}

BatchStats batch_stats(const Model& model) {
  BatchStats b;
  b.batches = model.batcher().batches();
  b.rows = model.batcher().rows();
  return b;
}

int32_t StepBatcher::step(Session& s, int32_t token, std::vector<float>* logits) {
  Req req{&s, token, logits, 0, false, false, nullptr};
  std::unique_lock<std::mutex> lk(mu_);
  queue_.push_back(&req);
  cv_.notify_all();
  for (;;) {
    if (req.done) {
      if (req.error) std::rethrow_exception(req.error);
      return req.id;
    }
    if (!req.taken && s.cancelled()) {
      queue_.erase(std::find(queue_.begin(), queue_.end(), &req));
      throw Error(ErrorCode::kAborted, "the session was cancelled");
    }
    if (running_) {
      cv_.wait(lk);
      continue;
    }
    // Lead a batch. Sessions of the last batch that have not queued their next step yet are waited for a
    // little (a tenth of the last step, 0.1 .. 2 ms): a group decoding in lock-step stays together.
    running_ = true;
    const auto budget = fixed_wait_.count() >= 0
                            ? fixed_wait_
                            : std::clamp<std::chrono::steady_clock::duration>(
                                  last_step_ / 10, std::chrono::microseconds(100), std::chrono::milliseconds(2));
    const auto deadline = std::chrono::steady_clock::now() + budget;
    auto missing = [&] {
      if (static_cast<int>(queue_.size()) >= kMaxRows) return false;
      for (const Session* e : expected_) {
        bool queued = false;
        for (const Req* r : queue_) queued = queued || r->session == e;
        if (!queued) return true;
      }
      return false;
    };
    while (missing() && cv_.wait_until(lk, deadline) != std::cv_status::timeout) {
    }
    // Take up to kMaxRows steps, first come first served (this one always: it is the leader), and never two
    // of one session (it has one step in flight at a time: cannot happen, checked anyway).
    std::vector<Req*> batch{&req};
    for (Req* r : queue_)
      if (r != &req && static_cast<int>(batch.size()) < kMaxRows && !r->session->cancelled()) {
        bool dup = false;
        for (const Req* b : batch) dup = dup || b->session == r->session;
        if (!dup) batch.push_back(r);
      }
    for (Req* r : batch) {
      r->taken = true;
      queue_.erase(std::find(queue_.begin(), queue_.end(), r));
    }
    expected_.clear();
    for (const Req* r : batch) expected_.insert(r->session);
    lk.unlock();

    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Session*> ss;
    std::vector<int32_t> tokens, ids(batch.size());
    std::vector<std::vector<float>*> outs;
    for (const Req* r : batch) {
      ss.push_back(r->session);
      tokens.push_back(r->token);
      outs.push_back(r->logits);
    }
    std::exception_ptr err;
    try {
      Session::step_rows(model_, ss.data(), tokens.data(), static_cast<int>(batch.size()), scratch_->state, ids.data(),
                         outs.data());
    } catch (...) {
      err = std::current_exception();
    }
    const auto took = std::chrono::steady_clock::now() - t0;

    lk.lock();
    last_step_ = took;
    ++batches_;
    rows_ += static_cast<int64_t>(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      batch[i]->id = ids[i];
      batch[i]->error = err;
      batch[i]->done = true;
    }
    running_ = false;
    cv_.notify_all();
  }
}

}  // namespace rustasr
