#include "checkpoint/json_fields.h"

#include <fstream>
#include <stdexcept>

namespace titan {
namespace {

using Err = std::runtime_error;

const char* kind(const nlohmann::json& v) {
  if (v.is_boolean()) return "true or false";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  if (v.is_object()) return "an object";
  return "null";
}

template <class T>
bool fits(const nlohmann::json& v);
template <>
bool fits<int64_t>(const nlohmann::json& v) {
  return v.is_number_integer();
}
template <>
bool fits<double>(const nlohmann::json& v) {
  return v.is_number();
}
template <>
bool fits<bool>(const nlohmann::json& v) {
  return v.is_boolean();
}
template <>
bool fits<std::string>(const nlohmann::json& v) {
  return v.is_string();
}
template <>
bool fits<std::vector<int64_t>>(const nlohmann::json& v) {
  if (!v.is_array()) return false;
  for (const auto& e : v)
    if (!e.is_number_integer()) return false;
  return true;
}

template <class T>
const char* wanted();
template <>
const char* wanted<int64_t>() {
  return "an integer";
}
template <>
const char* wanted<double>() {
  return "a number";
}
template <>
const char* wanted<bool>() {
  return "true or false";
}
template <>
const char* wanted<std::string>() {
  return "a string";
}
template <>
const char* wanted<std::vector<int64_t>>() {
  return "a list of integers";
}

}  // namespace

template <class Json>
Json read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Err("cannot read " + path);
  try {
    return Json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Err(path + ": not valid JSON (" + e.what() + ")");
  }
}
template nlohmann::json read_json_file<nlohmann::json>(const std::string&);
template nlohmann::ordered_json read_json_file<nlohmann::ordered_json>(const std::string&);

JsonFields::JsonFields(const nlohmann::json& object, std::string file, std::string prefix)
    : object_(object), file_(std::move(file)), prefix_(std::move(prefix)) {
  if (!object_.is_object())
    throw Err(file_ + ": " + (prefix_.empty() ? std::string("the file") : "field '" + prefix_.substr(0, prefix_.size() - 1) + "'") +
              " is " + kind(object_) + ", expected an object");
}

bool JsonFields::has(const std::string& key) const { return object_.contains(key) && !object_.at(key).is_null(); }

const nlohmann::json& JsonFields::need(const std::string& key) const {
  if (!has(key)) throw Err(name(key) + " is missing");
  return object_.at(key);
}

JsonFields JsonFields::nested(const std::string& key) const { return JsonFields(need(key), file_, prefix_ + key + "."); }

std::string JsonFields::name(const std::string& key) const { return file_ + ": field '" + prefix_ + key + "'"; }

template <class T>
T JsonFields::as(const std::string& key, const nlohmann::json& v) const {
  if (fits<T>(v)) return v.get<T>();
  std::string shown = v.dump();
  if (shown.size() > 40) shown = shown.substr(0, 37) + "...";
  throw Err(name(key) + " is " + shown + " (" + kind(v) + "), expected " + wanted<T>());
}
template int64_t JsonFields::as<int64_t>(const std::string&, const nlohmann::json&) const;
template double JsonFields::as<double>(const std::string&, const nlohmann::json&) const;
template bool JsonFields::as<bool>(const std::string&, const nlohmann::json&) const;
template std::string JsonFields::as<std::string>(const std::string&, const nlohmann::json&) const;
template std::vector<int64_t> JsonFields::as<std::vector<int64_t>>(const std::string&, const nlohmann::json&) const;

}  // namespace titan
