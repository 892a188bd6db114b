// Loads reference numbers written by tests/reference/*.py (committed under tests/assets/reference).
#pragma once

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace titan::testing {

inline std::string source_path(const std::string& relative) { return std::string(TITAN_SOURCE_DIR) + "/" + relative; }

inline nlohmann::json load_fixture(const std::string& relative) {
  std::ifstream in(source_path(relative));
  if (!in) throw std::runtime_error("missing fixture " + relative);
  return nlohmann::json::parse(in);
}

}  // namespace titan::testing
