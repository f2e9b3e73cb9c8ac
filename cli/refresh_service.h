// The mount daemon's refresh (DESIGN.md §1.6): re-reads every source's refs
// on a timer (`refresh_interval`, `--refresh-interval`, `-o refresh=`) and
// on demand (SIGHUP), through tree::Tree::Refresh, and says what each run did
// to a callback (the sd_notify STATUS= line and the log).
//
// Thread-safety: RunNow and SetInterval may be called from any thread (runs
// are serialized by the tree); Start/Stop from the thread that owns it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/status.h"
#include "tree/tree.h"

namespace bcfs::cli {

// "refresh 3: 1 added, 0 removed, 2 changed" (+ "; failed: <errors>").
std::string DescribeRefresh(const tree::RefreshReport& report);

class RefreshService {
 public:
  // `interval` 0 = only on demand. `done` (may be empty) hears of every
  // timer run (RunNow's caller gets its own report).
  RefreshService(tree::Tree& tree, std::chrono::nanoseconds interval,
                 std::function<void(const tree::RefreshReport&)> done);
  ~RefreshService();
  RefreshService(const RefreshService&) = delete;
  RefreshService& operator=(const RefreshService&) = delete;

  Status Start();
  void Stop();
  // One refresh now; the timer starts over.
  tree::RefreshReport RunNow();
  // A new interval (0 = off), counted from now.
  void SetInterval(std::chrono::nanoseconds interval);

 private:
  void Loop();

  tree::Tree& tree_;
  std::function<void(const tree::RefreshReport&)> done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::nanoseconds interval_;           // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_;  // GUARDED_BY(mu_)
  bool stop_ = false;                           // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace bcfs::cli
