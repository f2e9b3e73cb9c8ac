// The mount daemon's refresh (DESIGN.md §1.6): re-reads every source's refs
// on a timer (`refresh_interval`, `--refresh-interval`, `-o refresh=`) and
// on demand (SIGHUP), through tree::Tree::Refresh, on a thread of its own (a
// slow or dead server must not hold up the thread that pings systemd's
// watchdog), and says what each run did to a callback and the log.
//
// Thread-safety: RunSoon and SetInterval may be called from any thread;
// Start/Stop from the thread that owns it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/status.h"
#include "tree/tree.h"

namespace bcfs::cli {

// "refresh 3: 1 added, 0 removed, 2 changed" (+ "; failed: <errors>").
std::string DescribeRefresh(const tree::RefreshReport& report);

class RefreshService {
 public:
  // `interval` 0 = only on demand. `done` (may be empty) hears of every
  // timer run that no RunSoon asked for.
  RefreshService(tree::Tree& tree, std::chrono::nanoseconds interval,
                 std::function<void(const tree::RefreshReport&)> done);
  ~RefreshService();
  RefreshService(const RefreshService&) = delete;
  RefreshService& operator=(const RefreshService&) = delete;

  Status Start();
  void Stop();
  // A refresh as soon as the thread is free (the timer starts over then);
  // `then` hears what it did, on the refresh thread. Dropped at Stop.
  void RunSoon(std::function<void(const tree::RefreshReport&)> then);
  // A new interval (0 = off), counted from now.
  void SetInterval(std::chrono::nanoseconds interval);

 private:
  void Loop();

  tree::Tree& tree_;
  std::function<void(const tree::RefreshReport&)> done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::nanoseconds interval_;                                     // GUARDED_BY(mu_)
  std::chrono::steady_clock::time_point next_;                            // GUARDED_BY(mu_)
  bool stop_ = false;                                                     // GUARDED_BY(mu_)
  bool requested_ = false;                                                // GUARDED_BY(mu_)
  std::vector<std::function<void(const tree::RefreshReport&)>> waiting_;  // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace bcfs::cli
