#include "cli/refresh_service.h"

#include <system_error>

#include "core/log.h"

namespace bcfs::cli {

std::string DescribeRefresh(const tree::RefreshReport& report) {
  std::string out = "refresh " + std::to_string(report.generation) + ": " +
                    std::to_string(report.added) + " added, " + std::to_string(report.removed) +
                    " removed, " + std::to_string(report.changed) + " changed";
  for (size_t i = 0; i < report.errors.size(); ++i) {
    out += (i == 0 ? "; failed: " : "; ") + report.errors[i];
  }
  return out;
}

RefreshService::RefreshService(tree::Tree& tree, std::chrono::nanoseconds interval,
                               std::function<void(const tree::RefreshReport&)> done)
    : tree_(tree), done_(std::move(done)), interval_(interval) {}

RefreshService::~RefreshService() { Stop(); }

Status RefreshService::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    next_ = std::chrono::steady_clock::now() + interval_;
  }
  try {
    thread_ = std::thread([this] { Loop(); });
  } catch (const std::system_error& e) {
    return InternalError(std::string("start the refresh thread: ") + e.what());
  }
  return OkStatus();
}

void RefreshService::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RefreshService::RunSoon(std::function<void(const tree::RefreshReport&)> then) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    requested_ = true;
    if (then) waiting_.push_back(std::move(then));
  }
  cv_.notify_all();
}

void RefreshService::SetInterval(std::chrono::nanoseconds interval) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    interval_ = interval;
    next_ = std::chrono::steady_clock::now() + interval_;
  }
  cv_.notify_all();
}

void RefreshService::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    if (!requested_ && interval_.count() <= 0) {
      cv_.wait(lock);
      continue;
    }
    if (!requested_ && std::chrono::steady_clock::now() < next_) {
      cv_.wait_until(lock, next_);
      continue;
    }
    requested_ = false;
    std::vector<std::function<void(const tree::RefreshReport&)>> waiting;
    waiting.swap(waiting_);
    next_ = std::chrono::steady_clock::now() + interval_;
    lock.unlock();
    tree::RefreshReport report = tree_.Refresh();
    LOG_INFO(DescribeRefresh(report));
    if (waiting.empty() && done_) done_(report);
    for (const auto& then : waiting) then(report);
    lock.lock();
  }
}

}  // namespace bcfs::cli
