// The mount daemon's side of GC (DESIGN.md §2 "Access", §3): flushes the
// tree's accesses to the index about once a second, and runs the GC runner
// on a timer and right after each remote fetch (so a store that crossed a
// ceiling is brought back under it before the read that crossed it returns).
// Evicted blobs stay in the tree; their kernel cache is invalidated and they
// are fetched again on demand. When pinned content alone exceeds a ceiling,
// new fetches fail with ENOSPC and status.json says why.
//
// Thread-safety: RunNow may be called from any thread (runs are serialized);
// Start/Stop from the thread that owns the service.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gc/policy.h"
#include "gc/runner.h"
#include "index/index.h"
#include "store/content_store.h"
#include "tree/tree.h"

namespace bcfs::cli {

struct GcServiceOptions {
  std::string state_dir;
  std::vector<gc::Policy> policies;   // the effective policies; empty = GC off
  std::chrono::seconds interval{60};  // timer runs; 0 = only after fetches
};

class GcService {
 public:
  GcService(tree::Tree& tree, store::ContentStore* store, GcServiceOptions opts);
  ~GcService();
  GcService(const GcService&) = delete;
  GcService& operator=(const GcService&) = delete;

  // Opens its own index connection, hooks into the tree, starts the thread.
  Status Start();
  // Stops the thread, unhooks, flushes the last accesses.
  void Stop();
  // One GC run now (flushing accesses first).
  Result<gc::GcRun> RunNow();

 private:
  void Loop();
  std::string StatusJson();

  tree::Tree& tree_;
  store::ContentStore* store_;
  const GcServiceOptions opts_;
  std::unique_ptr<index::Index> index_;

  std::mutex run_mu_;  // one run at a time; guards index_ during runs

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // GUARDED_BY(mu_)
  std::thread thread_;

  std::mutex stats_mu_;
  uint64_t runs_ = 0, evicted_ = 0, freed_ = 0;  // GUARDED_BY(stats_mu_)
  uint64_t stored_ = 0;                          // bytes after the last run
  TimeNs last_run_ = 0;
  std::string last_error_, enospc_;
};

}  // namespace bcfs::cli
