#include "cli/lifecycle_util.h"

#include <algorithm>
#include <chrono>
#include <iostream>
#include <set>

#include "backends/naming.h"
#include "core/log.h"

namespace bcfs::cli {

Result<std::vector<NamedSpec>> ParseSources(const std::vector<std::string>& texts) {
  std::vector<backends::SourceSpec> specs;
  for (const auto& t : texts) {
    auto spec = backends::ParseSourceString(t);
    if (!spec.ok()) return spec.status();
    if (!spec->ignored_keys.empty()) {
      std::string keys;
      for (const auto& k : spec->ignored_keys) keys += (keys.empty() ? "" : ", ") + k;
      LOG_WARNING("source " << spec->Redacted() << ": ignoring export-only keys: " << keys);
    }
    specs.push_back(std::move(*spec));
  }
  auto names = backends::AssignSourceNames(specs);
  if (!names.ok()) return names.status();
  std::vector<NamedSpec> out;
  for (size_t i = 0; i < specs.size(); ++i) out.push_back({std::move(specs[i]), (*names)[i]});
  return out;
}

Result<OpenedSource> OpenSource(const NamedSpec& named) {
  auto backend = backends::OpenBackend(named.spec);
  if (!backend.ok()) return backend.status();
  OpenedSource s;
  s.named = named;
  s.backend = std::move(*backend);
  s.info = catalog::ReadSource(*s.backend, named.name,
                               std::string(backends::SourceTypeName(named.spec.type)));
  return s;
}

const char* BlobRoleName(BlobRole role) {
  switch (role) {
    case BlobRole::kManifest:
      return "manifest";
    case BlobRole::kConfig:
      return "config";
    case BlobRole::kLayer:
      return "layer";
  }
  return "?";
}

std::vector<RefBlob> RefBlobs(const catalog::RefInfo& ref) {
  std::vector<RefBlob> out;
  std::set<Digest> seen;
  auto add = [&](const Digest& d, int64_t size, BlobRole role, int64_t pos) {
    if (d.empty() || size < 0 || !seen.insert(d).second) return;
    out.push_back({d, static_cast<uint64_t>(size), role, pos});
  };
  add(ref.descriptor.digest, ref.descriptor.size, BlobRole::kManifest, -1);
  if (ref.shape.empty()) return out;  // unreadable: nothing more is known
  add(ref.config.digest, ref.config.size, BlobRole::kConfig, -1);
  for (const auto& l : ref.layers) {
    if (l.listed) add(l.blob, l.size, BlobRole::kLayer, l.position);
  }
  return out;
}

std::vector<const catalog::RefInfo*> SelectRefs(const catalog::SourceInfo& info,
                                                const std::string& want, bool include_history) {
  std::vector<const catalog::RefInfo*> out;
  auto match = [&](const catalog::RefInfo& r) {
    return want.empty() || r.name == want || backends::EncodeRefName(r.name) == want;
  };
  for (const auto& r : info.refs) {
    if (match(r)) out.push_back(&r);
  }
  if (include_history) {
    for (const auto& r : info.history) {
      if (match(r)) out.push_back(&r);
    }
  }
  return out;
}

store::FetchStream StreamFromBackend(backends::Backend& backend, const Digest& digest) {
  if (!backend.Streams()) return store::FetchStream();
  return [&backend, digest](uint64_t off, uint64_t len, const store::ByteSink& sink) {
    return backend.StreamBlob(digest, off, len, sink);
  };
}

store::FetchRange FetchFromBackend(backends::Backend& backend, const Digest& digest) {
  return [&backend, digest](uint64_t off, std::span<char> out) -> Status {
    size_t done = 0;
    while (done < out.size()) {
      auto n = backend.ReadBlob(digest, off + done, out.subspan(done));
      if (!n.ok()) return n.status();
      if (*n == 0) {
        return CorruptError("blob " + digest.ToString() + " ended at " +
                            std::to_string(off + done) + " bytes, before its descriptor's size");
      }
      done += *n;
    }
    return OkStatus();
  };
}

void PrintColumns(std::ostream& os, const std::vector<std::vector<std::string>>& rows,
                  const std::vector<bool>& right) {
  std::vector<size_t> w;
  for (const auto& r : rows) {
    for (size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      const size_t pad = w[i] - r[i].size();
      const bool last = i + 1 == r.size();
      if (i < right.size() && right[i])
        line += std::string(pad, ' ') + r[i];
      else
        line += r[i] + (last ? "" : std::string(pad, ' '));
      if (!last) line += "  ";
    }
    line.erase(line.find_last_not_of(' ') + 1);
    os << line << "\n";
  }
}

std::string Ago(TimeNs t, TimeNs now) {
  if (t == 0) return "-";
  const int64_t s = (now - t) / 1000000000;
  if (s < 0) return "in the future";
  auto unit = [](int64_t n, const char* name) {
    return std::to_string(n) + " " + name + (n == 1 ? "" : "s") + " ago";
  };
  if (s < 60) return unit(s, "second");
  if (s < 3600) return unit(s / 60, "minute");
  if (s < 86400) return unit(s / 3600, "hour");
  if (s < 86400 * 60) return unit(s / 86400, "day");
  if (s < 86400 * 730) return unit(s / (86400 * 30), "month");
  return unit(s / (86400 * 365), "year");
}

TimeNs NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool ApplyLogLevel(const std::string& command, const std::string& text) {
  log::Level level = log::Level::kWarning;
  if (!text.empty() && !log::ParseLevel(text, &level)) {
    std::cerr << "buildcachefs " << command << ": unknown log level \"" << text << "\"\n";
    return false;
  }
  log::SetLevel(level);
  return true;
}

}  // namespace bcfs::cli
