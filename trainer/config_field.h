// One row of the config table: section, key, type, default, help. Every other piece of the
// config system (TOML reader, CLI overrides, --help, validation, the dumped config) reads it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "trainer/job_config.h"

namespace titan {

enum class FieldKind { kBool, kInt, kFloat, kStr, kOptInt, kOptFloat, kOptStr, kStrList, kStrLists };

// kNotYet: the key is accepted and validated, but a non-default value is a "not supported yet" error.
enum class Support { kYes, kNotYet };

struct ConfigField {
  std::string section;  // "training" or "training.dataloader"
  std::string key;      // "steps"
  FieldKind kind;
  std::string help;                  // one line
  std::vector<std::string> choices;  // allowed values for kStr/kOptStr/kStrList items; empty = any
  Support support;
  std::function<void*(JobConfig&)> member;  // where the value lives in a JobConfig

  std::string name() const { return section + "." + key; }
  template <class T>
  T& ref(JobConfig& c) const { return *static_cast<T*>(member(c)); }
  template <class T>
  const T& ref(const JobConfig& c) const { return *static_cast<T*>(member(const_cast<JobConfig&>(c))); }
};

template <class T> constexpr FieldKind field_kind_of();
template <> constexpr FieldKind field_kind_of<bool>() { return FieldKind::kBool; }
template <> constexpr FieldKind field_kind_of<int64_t>() { return FieldKind::kInt; }
template <> constexpr FieldKind field_kind_of<double>() { return FieldKind::kFloat; }
template <> constexpr FieldKind field_kind_of<std::string>() { return FieldKind::kStr; }
template <> constexpr FieldKind field_kind_of<std::optional<int64_t>>() { return FieldKind::kOptInt; }
template <> constexpr FieldKind field_kind_of<std::optional<double>>() { return FieldKind::kOptFloat; }
template <> constexpr FieldKind field_kind_of<std::optional<std::string>>() { return FieldKind::kOptStr; }
template <> constexpr FieldKind field_kind_of<std::vector<std::string>>() { return FieldKind::kStrList; }
template <> constexpr FieldKind field_kind_of<std::vector<std::vector<std::string>>>() { return FieldKind::kStrLists; }

// Every field, in section order; the order of --help and of the dumped config.
const std::vector<ConfigField>& config_fields();

}  // namespace titan
