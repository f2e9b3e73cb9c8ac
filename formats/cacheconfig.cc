#include "formats/cacheconfig.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

namespace bcfs::formats {
namespace {

std::string At(std::string_view path, size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

Status CorruptAt(std::string_view doc, std::string_view path, std::string_view problem) {
  return CorruptError(std::string(doc) + ": field \"" + std::string(path) +
                      "\": " + std::string(problem));
}

Result<const Json*> ArrayField(const FieldReader& r, std::string_view key) {
  const Json* v = r.Find(key);
  if (v != nullptr && !v->is_array()) {
    return r.Error(key, std::string(JsonTypeName(*v)) + ", want an array");
  }
  return v;
}

Result<CacheLayer> ParseLayer(const Json& j, std::string_view doc, const std::string& path) {
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, path));
  FieldReader r(j, std::string(doc), path);
  CacheLayer l;
  BCFS_ASSIGN_OR_RETURN(auto blob, r.DigestField("blob", true));
  l.blob = *blob;
  BCFS_ASSIGN_OR_RETURN(auto parent, r.Int("parent"));
  l.parent = parent.value_or(0);
  if (l.parent < -1) return r.Error("parent", std::to_string(l.parent) + " is below -1");
  if (const Json* a = r.Find("annotations")) {
    BCFS_RETURN_IF_ERROR(ExpectObject(*a, doc, r.FieldPath("annotations")));
    FieldReader ar(*a, std::string(doc), r.FieldPath("annotations"));
    LayerAnnotations an;
    BCFS_ASSIGN_OR_RETURN(an.media_type, ar.String("mediaType", false));
    BCFS_ASSIGN_OR_RETURN(auto diff, ar.DigestField("diffID", false));
    if (diff) an.diff_id = *diff;
    BCFS_ASSIGN_OR_RETURN(auto size, ar.Int("size"));
    if (size && *size < 0) return ar.Error("size", std::to_string(*size) + " is negative");
    an.size = size.value_or(-1);
    BCFS_ASSIGN_OR_RETURN(an.created_at, ar.Time("createdAt"));
    l.annotations = an;
  }
  return l;
}

Result<CacheRecord> ParseRecord(const Json& j, std::string_view doc, const std::string& path) {
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, path));
  FieldReader r(j, std::string(doc), path);
  CacheRecord rec;
  BCFS_ASSIGN_OR_RETURN(rec.digest, r.String("digest", false));
  BCFS_ASSIGN_OR_RETURN(const Json* results, ArrayField(r, "layers"));
  if (results != nullptr) {
    for (size_t i = 0; i < results->size(); ++i) {
      std::string p = At(r.FieldPath("layers"), i);
      BCFS_RETURN_IF_ERROR(ExpectObject((*results)[i], doc, p));
      FieldReader rr((*results)[i], std::string(doc), p);
      CacheResult res;
      BCFS_ASSIGN_OR_RETURN(auto layer, rr.Int("layer"));
      res.layer = layer.value_or(0);
      BCFS_ASSIGN_OR_RETURN(res.created_at, rr.Time("createdAt"));
      rec.results.push_back(res);
    }
  }
  BCFS_ASSIGN_OR_RETURN(const Json* chains, ArrayField(r, "chains"));
  if (chains != nullptr) {
    for (size_t i = 0; i < chains->size(); ++i) {
      std::string p = At(r.FieldPath("chains"), i);
      BCFS_RETURN_IF_ERROR(ExpectObject((*chains)[i], doc, p));
      FieldReader cr((*chains)[i], std::string(doc), p);
      ChainedResult ch;
      BCFS_ASSIGN_OR_RETURN(const Json* ls, ArrayField(cr, "layers"));
      if (ls != nullptr) {
        for (size_t k = 0; k < ls->size(); ++k) {
          if (!(*ls)[k].is_number_integer()) {
            return CorruptAt(doc, At(cr.FieldPath("layers"), k),
                             std::string(JsonTypeName((*ls)[k])) + ", want an integer");
          }
          ch.layers.push_back((*ls)[k].get<int64_t>());
        }
      }
      BCFS_ASSIGN_OR_RETURN(ch.created_at, cr.Time("createdAt"));
      rec.chains.push_back(std::move(ch));
    }
  }
  BCFS_ASSIGN_OR_RETURN(const Json* inputs, ArrayField(r, "inputs"));
  if (inputs != nullptr) {
    for (size_t s = 0; s < inputs->size(); ++s) {
      std::string sp = At(r.FieldPath("inputs"), s);
      const Json& slot = (*inputs)[s];
      if (!slot.is_array()) {
        return CorruptAt(doc, sp, std::string(JsonTypeName(slot)) + ", want an array");
      }
      std::vector<CacheInput> alts;
      for (size_t t = 0; t < slot.size(); ++t) {
        std::string tp = At(sp, t);
        BCFS_RETURN_IF_ERROR(ExpectObject(slot[t], doc, tp));
        FieldReader ir(slot[t], std::string(doc), tp);
        CacheInput in;
        BCFS_ASSIGN_OR_RETURN(in.selector, ir.String("selector", false));
        BCFS_ASSIGN_OR_RETURN(auto link, ir.Int("link"));
        in.link = link.value_or(0);
        alts.push_back(std::move(in));
      }
      rec.inputs.push_back(std::move(alts));
    }
  }
  return rec;
}

}  // namespace

Result<std::vector<CacheRecord>> ParseCacheRecords(const Json& array, std::string_view doc,
                                                   std::string_view path) {
  std::vector<CacheRecord> out;
  if (!array.is_array()) {
    return CorruptAt(doc, path, std::string(JsonTypeName(array)) + ", want an array");
  }
  out.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    BCFS_ASSIGN_OR_RETURN(CacheRecord rec, ParseRecord(array[i], doc, At(path, i)));
    out.push_back(std::move(rec));
  }
  return out;
}

Result<CacheConfig> ParseCacheConfig(std::string_view text, std::string_view doc) {
  BCFS_ASSIGN_OR_RETURN(Json j, ParseJson(text, doc));
  BCFS_RETURN_IF_ERROR(ExpectObject(j, doc, ""));
  FieldReader r(j, std::string(doc), "");
  CacheConfig c;
  BCFS_ASSIGN_OR_RETURN(const Json* layers, ArrayField(r, "layers"));
  if (layers != nullptr) {
    c.layers.reserve(layers->size());
    for (size_t i = 0; i < layers->size(); ++i) {
      BCFS_ASSIGN_OR_RETURN(CacheLayer l, ParseLayer((*layers)[i], doc, At("layers", i)));
      c.layers.push_back(std::move(l));
    }
  }
  if (const Json* records = r.Find("records")) {
    BCFS_ASSIGN_OR_RETURN(c.records, ParseCacheRecords(*records, doc, "records"));
  }
  return c;
}

namespace {

// Resolves, once per layer entry, whether the chain of that entry (itself and
// its ancestors) is well formed and which blob of it, if any, the cache lacks:
// linear in the number of layer entries however many records share them.
class LayerResolver {
 public:
  LayerResolver(const CacheConfig& config, const std::function<bool(const Digest&)>& has_blob,
                std::string_view doc)
      : config_(config),
        has_blob_(has_blob),
        doc_(doc),
        state_(config.layers.size(), kNew),
        missing_(config.layers.size(), nullptr) {}

  // nullptr when every blob of the chain of `top` is in the cache, else the
  // topmost missing blob (BuildKit walks down from the top and stops there).
  // kCorrupt for a layer index or parent out of range and for a parent loop.
  Result<const Digest*> Resolve(int64_t top) {
    const int64_t n = static_cast<int64_t>(config_.layers.size());
    if (top < 0 || top >= n) {
      return CorruptError(std::string(doc_) + ": layer index " + std::to_string(top) +
                          " is out of range (" + std::to_string(n) + " layers)");
    }
    path_.clear();
    const Digest* below = nullptr;
    int64_t cur = top;
    for (;;) {
      if (cur == -1) break;
      if (cur < 0 || cur >= n) {
        return CorruptError(std::string(doc_) + ": parent " + std::to_string(cur) +
                            " is out of range (" + std::to_string(n) +
                            " layers) at field \"layers[" + std::to_string(path_.back()) +
                            "].parent\"");
      }
      if (state_[cur] == kDone) {
        below = missing_[cur];
        break;
      }
      if (state_[cur] == kActive) {
        return CorruptError(std::string(doc_) + ": invalid looping layer: field \"layers[" +
                            std::to_string(cur) + "]\" is its own ancestor");
      }
      state_[cur] = kActive;
      path_.push_back(cur);
      cur = config_.layers[cur].parent;
    }
    for (auto it = path_.rbegin(); it != path_.rend(); ++it) {
      const Digest& own = config_.layers[*it].blob;
      if (!has_blob_(own)) below = &own;
      missing_[*it] = below;
      state_[*it] = kDone;
    }
    return below;
  }

 private:
  enum : uint8_t { kNew, kActive, kDone };
  const CacheConfig& config_;
  const std::function<bool(const Digest&)>& has_blob_;
  std::string_view doc_;
  std::vector<uint8_t> state_;
  std::vector<const Digest*> missing_;
  std::vector<int64_t> path_;
};

}  // namespace

std::vector<int64_t> LayerParents(const CacheConfig& config) {
  std::vector<int64_t> parents;
  parents.reserve(config.layers.size());
  for (const auto& l : config.layers) parents.push_back(l.parent);
  return parents;
}

std::vector<int64_t> ResolvedResult::Layers(const std::vector<int64_t>& parents) const {
  if (explicit_chain) return explicit_layers;
  std::vector<int64_t> chain;
  for (int64_t cur = top;
       cur >= 0 && static_cast<size_t>(cur) < parents.size() && chain.size() <= parents.size();
       cur = parents[cur]) {
    chain.push_back(cur);
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

Result<DecodedConfig> DecodeRecords(const CacheConfig& config,
                                    const std::function<bool(const Digest&)>& has_blob,
                                    std::string_view doc) {
  DecodedConfig out;
  const size_t n = config.records.size();
  LayerResolver resolver(config, has_blob, doc);
  out.records.reserve(n);
  for (size_t j = 0; j < n; ++j) {
    const CacheRecord& rec = config.records[j];
    DecodedRecord dr;
    dr.digest = rec.digest;
    for (size_t s = 0; s < rec.inputs.size(); ++s) {
      if (rec.inputs[s].empty()) {
        return CorruptAt(doc,
                         "records[" + std::to_string(j) + "].inputs[" + std::to_string(s) + "]",
                         "invalid empty input");
      }
      for (size_t t = 0; t < rec.inputs[s].size(); ++t) {
        int64_t link = rec.inputs[s][t].link;
        if (link < 0 || static_cast<size_t>(link) >= n) {
          return CorruptAt(
              doc,
              "records[" + std::to_string(j) + "].inputs[" + std::to_string(s) + "][" +
                  std::to_string(t) + "].link",
              std::to_string(link) + " is out of range (" + std::to_string(n) + " records)");
        }
      }
    }
    dr.inputs = rec.inputs;
    auto drop = [&](const std::string& field, const Digest& blob) {
      out.dropped.push_back("record " + rec.digest + " (" + field + ") dropped: blob " +
                            blob.ToString() + " is not in the cache");
    };
    for (size_t k = 0; k < rec.results.size(); ++k) {
      std::string field = "records[" + std::to_string(j) + "].layers[" + std::to_string(k) + "]";
      auto missing = resolver.Resolve(rec.results[k].layer);
      if (!missing.ok()) return missing.status().WithContext(field);
      if (*missing != nullptr) {
        drop(field, **missing);
        continue;
      }
      ResolvedResult rr;
      rr.top = rec.results[k].layer;
      rr.created_at = rec.results[k].created_at;
      dr.results.push_back(std::move(rr));
    }
    for (size_t k = 0; k < rec.chains.size(); ++k) {
      std::string field = "records[" + std::to_string(j) + "].chains[" + std::to_string(k) + "]";
      const Digest* missing = nullptr;
      for (int64_t li : rec.chains[k].layers) {
        if (li < 0 || static_cast<size_t>(li) >= config.layers.size()) {
          return CorruptAt(doc, field,
                           "layer index " + std::to_string(li) + " is out of range (" +
                               std::to_string(config.layers.size()) + " layers)");
        }
        if (missing == nullptr && !has_blob(config.layers[li].blob)) {
          missing = &config.layers[li].blob;
        }
      }
      if (missing != nullptr) {
        drop(field, *missing);
        continue;
      }
      ResolvedResult rr;
      rr.explicit_chain = true;
      rr.explicit_layers = rec.chains[k].layers;
      rr.created_at = rec.chains[k].created_at;
      dr.results.push_back(std::move(rr));
    }
    out.records.push_back(std::move(dr));
  }
  // A loop among records (through inputs) is an error, as in parse.go.
  std::vector<std::vector<int64_t>> links(n);
  for (size_t j = 0; j < n; ++j) {
    for (const auto& slot : config.records[j].inputs) {
      for (const auto& in : slot) links[j].push_back(in.link);
    }
  }
  std::vector<int> state(n, 0);  // 0 new, 1 on stack, 2 done
  for (size_t start = 0; start < n; ++start) {
    if (state[start] != 0) continue;
    std::vector<std::pair<size_t, size_t>> stack;  // (record, next input index flattened)
    stack.push_back({start, 0});
    state[start] = 1;
    while (!stack.empty()) {
      auto& [rec, next] = stack.back();
      if (next < links[rec].size()) {
        size_t child = static_cast<size_t>(links[rec][next++]);
        if (state[child] == 1) {
          return CorruptError(std::string(doc) + ": invalid loop among records: field \"records[" +
                              std::to_string(child) + "]\" depends on itself");
        }
        if (state[child] == 0) {
          state[child] = 1;
          stack.push_back({child, 0});
        }
      } else {
        state[rec] = 2;
        stack.pop_back();
      }
    }
  }
  return out;
}

}  // namespace bcfs::formats
