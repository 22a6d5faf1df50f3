// A fixed-size thread pool for the CPU backend: N-1 worker threads plus the calling thread.
//
// Workers spin for a few microseconds after a job and then sleep on a condition variable, so an idle
// pool (a loaded model doing no work) uses no CPU. Jobs from different calling threads are serialised
// by a mutex (two sessions on one model share the pool safely); a parallel_for issued from inside a job
// (nested) runs inline on the calling thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rustasr {
namespace cpu {

class ThreadPool {
 public:
  // `threads` = total threads including the caller; <= 0 means std::thread::hardware_concurrency().
  // Largest accepted thread count (more is kInvalidArgument, before any thread starts).
  static constexpr int kMaxThreads = 4096;
  // threads <= 0: the hardware concurrency. Throws Error(kInternal) if the OS refuses a thread (those
  // started are stopped first).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return size_; }

  // Calls fn(begin, end) on disjoint ranges that together cover [0, n). The range is cut into `chunks`
  // pieces (0 = one per thread) of at least `grain` items; pieces are handed out dynamically, so more
  // chunks than threads balance uneven work. Returns when every piece is done; rethrows the first
  // exception a piece threw.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1,
                    int64_t chunks = 0);

 private:
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    int64_t n = 0;
    int64_t chunks = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int> pending{0};  // workers that have not finished this job
    std::mutex err_mu;
    std::exception_ptr error;
  };

  void worker_main();
  void shutdown();  // stops and joins every worker (idempotent)
  static void run_chunks(Job& job);

  int size_ = 1;
  std::vector<std::thread> workers_;

  std::mutex call_mu_;  // serialises callers

  std::mutex mu_;  // guards job_, generation_, stop_ for the sleeping path
  std::condition_variable cv_;       // workers wait here for a new job
  std::condition_variable done_cv_;  // the caller waits here for the workers
  Job* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

}  // namespace cpu
}  // namespace rustasr
