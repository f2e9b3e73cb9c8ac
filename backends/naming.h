// Names in the tree (DESIGN.md §1.4): the folder name of each source and the
// path component of each ref.
//
// A source's folder is its `as=` name, else a default derived from the source
// (DefaultSourceName). Explicit names are kept exactly (two sources may not ask
// for the same one); default names that collide get "-2", "-3"... in
// command-line order, skipping every name already in use. A ref becomes one path
// component through a reversible percent-encoding (EncodeRefName), so any ref
// name BuildKit can store has exactly one folder.
//
// Thread-safety: free functions without state.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "backends/source.h"
#include "core/digest.h"
#include "core/status.h"

namespace bcfs::backends {

// OK when `name` can be a source folder: not empty, not starting with '.'
// (reserved: ".", "..", ".buildcachefs"), no '/' or NUL, at most 255 bytes
// (NAME_MAX). Otherwise kInvalidArgument whose message says what is wrong with
// the quoted name, without context; callers add the source.
Status CheckSourceName(std::string_view name);

// The folder name a source gets without as=:
//   local    basename of src, trailing slashes ignored ("/var/cache/bk/" -> "bk")
//   registry last path component of the repository in ref, without :tag and
//            @digest ("host:5000/a/b/cache:main" -> "cache")
//   s3       bucket ("s3" when bucket= is absent: it then comes from the environment)
//   azblob   container, default "buildkit-cache" (BuildKit's default; the
//            environment override is not consulted)
//   gha      "gha-" + scope, default scope "buildkit"
// The result is not checked: AssignSourceNames refuses an unusable one.
std::string DefaultSourceName(const SourceSpec& spec);

// One folder name per spec, in order. Explicit as= names are reserved first and
// kept as given; default names follow in command-line order: the first keeps its
// name unless an explicit name holds it, later ones get "<name>-2", "<name>-3"...
// (the lowest suffix that no explicit, default or generated name holds).
// kInvalidArgument naming the source (redacted) and the name when a name is
// refused by CheckSourceName, or when two sources give the same as=.
Result<std::vector<std::string>> AssignSourceNames(const std::vector<SourceSpec>& specs);

// A ref as one path component: '%', '/', NUL and a leading '.' become %XX with
// upper-case hex ("feature/x" -> "feature%2Fx", ".hidden" -> "%2Ehidden",
// "a%b" -> "a%25b", "." -> "%2E"); every other byte (UTF-8 included) is kept.
// "" stays "": callers treat an empty ref name as no ref name.
std::string EncodeRefName(std::string_view raw);
// Reverses EncodeRefName: every "%XX" with two hex digits (either case) becomes
// that byte; a '%' not followed by two hex digits is kept as is.
std::string DecodeRefName(std::string_view encoded);

// "@" + the first 12 hex digits of `d`: the name of local index.json entries
// without a ref name, and of digest= refs.
std::string DigestRefName(const Digest& d);

}  // namespace bcfs::backends
