#pragma once
// An explicit plugin registry: each plugin is added by a call in one place (for trainers,
// trainers/register_all.cpp), never by static initialisers, so what exists is visible and the
// order is deterministic.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace aln {

template <typename Interface, typename... Args>
class Registry {
 public:
  using Factory = std::function<std::unique_ptr<Interface>(Args...)>;

  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // Registering the same name twice is a programming error, reported as a Status.
  absl::Status add(const std::string& name, Factory factory, std::string description = "") {
    if (factories_.count(name) != 0) {
      return absl::AlreadyExistsError(absl::StrCat(kind_, " '", name, "' is registered twice"));
    }
    factories_.emplace(name, Entry{std::move(factory), std::move(description)});
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Interface>> create(const std::string& name, Args... args) const {
    auto it = factories_.find(name);
    if (it == factories_.end()) {
      return absl::NotFoundError(
          absl::StrCat("unknown ", kind_, " '", name, "'; known: ", absl::StrJoin(names(), ", ")));
    }
    return it->second.factory(std::forward<Args>(args)...);
  }

  bool contains(const std::string& name) const { return factories_.count(name) != 0; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [name, entry] : factories_) out.push_back(name);
    return out;
  }

  std::string description(const std::string& name) const {
    auto it = factories_.find(name);
    return it == factories_.end() ? std::string() : it->second.description;
  }

 private:
  struct Entry {
    Factory factory;
    std::string description;
  };
  std::string kind_;
  std::map<std::string, Entry> factories_;
};

}  // namespace aln
