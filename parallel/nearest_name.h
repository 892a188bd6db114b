// "Did you mean" hints for a misspelt name: config keys, flags.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace titan {

// Levenshtein distance: insertions, deletions and substitutions of one character each.
size_t edit_distance(const std::string& a, const std::string& b);

// The candidate nearest to `name` (the first of equals); empty when there is none.
std::string nearest_name(const std::string& name, const std::vector<std::string>& candidates);

}  // namespace titan
