#include "cli/gc_service.h"

#include <nlohmann/json.hpp>

#include "core/log.h"
#include "core/metrics.h"
#include "core/paths.h"

namespace bcfs::cli {
namespace {

metrics::Counter* RunsCounter(const char* result) {
  return metrics::Global().GetCounter("buildcachefs_gc_runs_total",
                                      "GC runs of the local store, by result (ok, error).",
                                      {{"result", result}});
}

// Evictions of one place (blob, partial, derived): count and bytes.
struct EvictionCounters {
  metrics::Counter* count;
  metrics::Counter* bytes;
};

EvictionCounters EvictionsOf(gc::Place place) {
  const metrics::Labels labels = {{"place", std::string(gc::PlaceName(place))}};
  return {metrics::Global().GetCounter(
              "buildcachefs_gc_evictions_total",
              "Files GC removed from the local store, by place (blob, partial, derived).", labels),
          metrics::Global().GetCounter(
              "buildcachefs_gc_evicted_bytes_total",
              "Bytes GC freed in the local store, by place (blob, partial, derived).", labels)};
}

}  // namespace

GcService::GcService(tree::Tree& tree, store::ContentStore* store, GcServiceOptions opts)
    : tree_(tree), store_(store), opts_(std::move(opts)) {}

GcService::~GcService() { Stop(); }

Status GcService::Start() {
  // Present from the start, so that a scrape shows zeros rather than nothing.
  RunsCounter("ok");
  RunsCounter("error");
  for (gc::Place p : {gc::Place::kBlob, gc::Place::kPartial, gc::Place::kDerived}) EvictionsOf(p);
  BCFS_ASSIGN_OR_RETURN(index_, index::Index::Open(paths::IndexDb(opts_.state_dir)));
  if (!opts_.policies.empty()) {
    tree_.SetAfterFetch([this] {
      auto run = RunNow();
      if (!run.ok()) LOG_WARNING("gc: " << run.status().message());
    });
  }
  tree_.SetStatusExtra([this] { return StatusJson(); });
  thread_ = std::thread([this] { Loop(); });
  return OkStatus();
}

void GcService::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  tree_.SetAfterFetch(nullptr);
  tree_.SetStatusExtra(nullptr);
  if (Status st = tree_.FlushAccesses(); !st.ok()) LOG_WARNING("accesses: " << st.message());
}

void GcService::Loop() {
  auto next_gc = std::chrono::steady_clock::now() + opts_.interval;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    // Accesses reach the index in batches, about one transaction a second.
    cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    if (stop_) break;
    lock.unlock();
    if (Status st = tree_.FlushAccesses(); !st.ok()) LOG_WARNING("accesses: " << st.message());
    if (!opts_.policies.empty() && opts_.interval.count() > 0 &&
        std::chrono::steady_clock::now() >= next_gc) {
      auto run = RunNow();
      if (!run.ok()) LOG_WARNING("gc: " << run.status().message());
      next_gc = std::chrono::steady_clock::now() + opts_.interval;
    }
    lock.lock();
  }
}

Result<gc::GcRun> GcService::RunNow() {
  std::lock_guard<std::mutex> run_lock(run_mu_);
  if (Status st = tree_.FlushAccesses(); !st.ok()) LOG_WARNING("accesses: " << st.message());
  gc::GcRequest req;
  if (store_ != nullptr) {
    req.layout = &store_->layout();
    req.store = store_;
  }
  req.derived_dir = paths::DerivedDir(opts_.state_dir);
  req.index = index_.get();
  req.index_path = paths::IndexDb(opts_.state_dir);
  req.policies = opts_.policies;
  req.pinned = tree_.PinnedDigests();
  req.now = WallClockNow();
  auto run = gc::RunGc(req);
  std::lock_guard<std::mutex> lock(stats_mu_);
  last_run_ = req.now;
  ++runs_;
  RunsCounter(run.ok() ? "ok" : "error")->Inc();
  if (!run.ok()) {
    last_error_ = run.status().message();
    return run.status();
  }
  std::vector<Digest> gone, gone_derived;
  for (size_t i : run->evicted) {
    const gc::StoredItem& s = run->items[i];
    const EvictionCounters c = EvictionsOf(s.place);
    c.count->Inc();
    c.bytes->Inc(s.item.size);
    if (auto d = Digest::Parse(s.item.digest); d.ok()) {
      (s.place == gc::Place::kDerived ? gone_derived : gone).push_back(*d);
    }
  }
  tree_.Evicted(gone);
  tree_.DerivedEvicted(gone_derived);
  evicted_ += run->evicted.size();
  freed_ += run->bytes_freed;
  stored_ = run->plan.total_before - run->bytes_freed;
  last_error_.clear();
  for (const auto& e : run->errors) last_error_ += (last_error_.empty() ? "" : "; ") + e;
  enospc_ = run->plan.enospc() ? run->plan.over_limits.front().Message() : "";
  tree_.SetFetchBlock(enospc_.empty() ? "" : "no space under the GC limits: " + enospc_);
  if (!enospc_.empty()) LOG_WARNING("gc: " << enospc_ << "; new fetches fail with ENOSPC");
  return run;
}

std::string GcService::StatusJson() {
  nlohmann::ordered_json g;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    g["enabled"] = !opts_.policies.empty();
    g["runs"] = runs_;
    g["last_run"] = last_run_ == 0 ? "" : FormatRfc3339(last_run_);
    g["evicted"] = evicted_;
    g["bytes_freed"] = freed_;
    g["bytes_stored"] = stored_;
    g["last_error"] = last_error_;
    g["enospc"] = enospc_;
  }
  nlohmann::ordered_json out;
  out["gc"] = g;
  return out.dump();
}

}  // namespace bcfs::cli
