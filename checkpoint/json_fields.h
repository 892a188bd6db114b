// Reading JSON files whose errors name the file and the field: "config.json: field 'hidden_size'
// is "64" (a string), expected an integer" instead of nlohmann's bare type_error.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace titan {

// The parsed file; a missing file or invalid JSON is an error naming `path`.
template <class Json = nlohmann::json>
Json read_json_file(const std::string& path);

// Fields of one object, `where` naming the file (and the object's path within it) in errors.
class JsonFields {
 public:
  JsonFields(const nlohmann::json& object, std::string file, std::string prefix = "");

  // Present and not null.
  bool has(const std::string& key) const;
  // The field, which must be present and not null.
  const nlohmann::json& need(const std::string& key) const;
  template <class T>
  T need_as(const std::string& key) const {
    return as<T>(key, need(key));
  }
  // The field as T, or `fallback` when absent or null (HF configs write null for "unset").
  template <class T>
  T get(const std::string& key, T fallback) const {
    return has(key) ? as<T>(key, object_.at(key)) : fallback;
  }
  // A nested object's fields, its keys named "outer.inner" in errors.
  JsonFields nested(const std::string& key) const;
  // "file: field 'prefix.key'", for errors the caller raises about a field's value.
  std::string name(const std::string& key) const;

 private:
  template <class T>
  T as(const std::string& key, const nlohmann::json& v) const;
  const nlohmann::json& object_;
  std::string file_;
  std::string prefix_;
};

}  // namespace titan
