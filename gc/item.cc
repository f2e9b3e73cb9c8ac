#include "gc/item.h"

namespace bcfs::gc {

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kLayer:
      return "layer";
    case Role::kConfig:
      return "config";
    case Role::kManifest:
      return "manifest";
    case Role::kDerived:
      return "derived";
  }
  return "layer";
}

std::optional<Role> ParseRole(std::string_view name) {
  if (name == "layer") return Role::kLayer;
  if (name == "config") return Role::kConfig;
  if (name == "manifest") return Role::kManifest;
  if (name == "derived") return Role::kDerived;
  return std::nullopt;
}

}  // namespace bcfs::gc
