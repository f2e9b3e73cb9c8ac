// GC filters in containerd's filter syntax (FORMATS.md §8.3), over the fields
// a remote-cache store has (DESIGN.md §3):
//
//   selectors := selector ("," selector)*        commas AND
//   selector  := field [op value]                no op: a presence test
//   op        := "==" | "!=" | "~="              "~=" is an unanchored regexp search
//   value     := Go-quoted "…" | [^\s,]+          "~=" also takes /…/ and |…|
//
//   field        value / presence
//   source       a source name that lists the item (any of them); present when one does
//   ref          a ref name that reaches the item (any of them); present when one does
//   role         layer | config | manifest | derived; always present
//   mediatype    the media type; present when known
//   until        command line only: a Go duration that becomes the keep duration
//   unused-for   deprecated synonym of until (buildx)
//
// Multi-valued fields: `==` and `~=` hold when some value does, `!=` when none
// does. As in containerd, `!=` holds for an absent field and `~=` then matches
// against "". `type` is refused: BuildKit record types do not exist in a remote
// cache. Only when a policy comes from a pasted buildkitd.toml
// ([[worker.oci.gcpolicy]]) is `type` accepted, as a field no item has, so
// that file loads as is (its type filters then select nothing, which is what
// they select in a store without such records), with a warning.
//
// Regexps use std::regex (ECMAScript), not Go's RE2: the common subset
// (classes, anchors, alternation, repetition) behaves the same; RE2-only
// syntax such as `(?i)` is refused as a bad regexp.
//
// Strings combine differently by origin: a policy's `filters` list ORs its
// strings (buildkitd.toml, containerd ParseAll); repeated `--filter` flags AND
// (buildx joins them into one string).
//
// Thread-safety: a Filter is immutable after parsing; Matches may be called
// from several threads at once.
#pragma once

#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "gc/item.h"
#include "gc/units.h"

namespace bcfs::gc {

enum class FilterField : uint8_t { kSource, kRef, kRole, kMediaType, kType };
enum class FilterOp : uint8_t { kPresent, kEqual, kNotEqual, kMatches };

struct Selector {
  FilterField field = FilterField::kSource;
  FilterOp op = FilterOp::kPresent;
  std::string value;                     // unquoted
  std::shared_ptr<const std::regex> re;  // set for kMatches
  bool Matches(const Item& item) const;
};

// Where filter text comes from; it decides which fields and operators pass.
enum class FilterDialect : uint8_t {
  kPolicy,        // our [[gc.policy]] filters: containerd syntax, our fields
  kBuildkitToml,  // [[worker.*.gcpolicy]]: as kPolicy, and `type` selects nothing (warned)
  kCommandLine,   // --filter: also `key=value` (buildx: "=="), until= / unused-for=
};

// An OR of ANDs of selectors. The empty filter (and an empty string in a
// list) matches everything.
class Filter {
 public:
  Filter() = default;
  bool Matches(const Item& item) const;
  bool MatchesEverything() const;
  // The AND groups, ORed; for tests and messages.
  const std::vector<std::vector<Selector>>& alternatives() const { return alternatives_; }

 private:
  friend class FilterBuilder;
  std::vector<std::vector<Selector>> alternatives_;
};

// A policy's `filters` list (strings ORed, commas AND). On success, *warnings
// (when not null) gets one line per `type` selector accepted in
// kBuildkitToml. Errors are kInvalidArgument and quote the offending string:
// `filter "role==blob": role "blob" is not one of layer, config, manifest, derived`.
// `until`/`unused-for` are refused here: a policy says keepDuration.
Result<Filter> ParsePolicyFilters(const std::vector<std::string>& strings, FilterDialect dialect,
                                  std::vector<std::string>* warnings = nullptr);

// Repeated --filter flags, ANDed as buildx does. `until=<dur>` or
// `unused-for=<dur>` (Go duration, one of them, once) becomes keep_duration
// (0 when absent), as buildx's toBuildkitPruneInfo does.
struct CommandLineFilter {
  Filter filter;
  DurationNs keep_duration = 0;
};
Result<CommandLineFilter> ParseCommandLineFilters(const std::vector<std::string>& flags);

}  // namespace bcfs::gc
