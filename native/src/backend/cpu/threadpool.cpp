#include "threadpool.h"

#include <algorithm>
#include <chrono>
#include <string>

#include "rustasr/engine.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define RUSTASR_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define RUSTASR_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define RUSTASR_CPU_RELAX() ((void)0)
#endif

namespace rustasr {
namespace cpu {

namespace {
// > 0 while this thread runs a piece of some pool's job: a parallel_for from there runs inline.
thread_local int tl_in_job = 0;

// How long a worker (and the caller, waiting for workers) spins before sleeping.
constexpr auto kSpin = std::chrono::microseconds(20);

struct InJob {
  InJob() { ++tl_in_job; }
  ~InJob() { --tl_in_job; }
};
}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads > kMaxThreads) {
    throw Error(ErrorCode::kInvalidArgument,
                "threads must be at most " + std::to_string(kMaxThreads) + ", got " + std::to_string(threads));
  }
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  size_ = threads;
  try {
    workers_.reserve(static_cast<size_t>(threads - 1));
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_main(); });
  } catch (const std::exception& e) {
    // The OS refused a thread (limits): stop the ones started (a destructor would not run) and report it.
    shutdown();
    throw Error(ErrorCode::kInternal, "cannot start " + std::to_string(threads) + " threads: " + e.what());
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

void ThreadPool::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::run_chunks(Job& job) {
  InJob guard;
  for (;;) {
    const int64_t c = job.next.fetch_add(1, std::memory_order_relaxed);
    if (c >= job.chunks) break;
    const int64_t b = job.n * c / job.chunks;
    const int64_t e = job.n * (c + 1) / job.chunks;
    if (b >= e) continue;
    try {
      (*job.fn)(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lk(job.err_mu);
      if (!job.error) job.error = std::current_exception();
    }
  }
}

void ThreadPool::worker_main() {
  uint64_t seen = 0;
  for (;;) {
    // Brief spin: back-to-back jobs (one decode step issues hundreds) skip the sleep/wake round trip.
    const auto t0 = std::chrono::steady_clock::now();
    while (generation_.load(std::memory_order_acquire) == seen) {
      for (int i = 0; i < 64; ++i) RUSTASR_CPU_RELAX();
      if (std::chrono::steady_clock::now() - t0 > kSpin) break;
    }
    Job* job = nullptr;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || generation_.load(std::memory_order_relaxed) != seen; });
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      job = job_;
    }
    run_chunks(*job);
    if (job->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lk(mu_);
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain,
                              int64_t chunks) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (chunks <= 0) chunks = size_;
  chunks = std::min(chunks, (n + grain - 1) / grain);
  if (chunks <= 1 || workers_.empty() || tl_in_job > 0) {
    fn(0, n);
    return;
  }

  std::lock_guard<std::mutex> call_lock(call_mu_);
  Job job;
  job.fn = &fn;
  job.n = n;
  job.chunks = chunks;
  job.pending.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = &job;
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();

  run_chunks(job);

  // Wait for every worker to leave the job (it lives on this stack).
  const auto t0 = std::chrono::steady_clock::now();
  while (job.pending.load(std::memory_order_acquire) != 0) {
    for (int i = 0; i < 16; ++i) RUSTASR_CPU_RELAX();
    if (std::chrono::steady_clock::now() - t0 > kSpin) {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return job.pending.load(std::memory_order_acquire) == 0; });
      break;
    }
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = nullptr;
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace cpu
}  // namespace rustasr
