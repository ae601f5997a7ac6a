// "a, b, c (+N more)": the first `cap` names of a list, for error messages that list missing or
// unexpected tensors (checkpoint loading, training state, ds-convert-fp8).
#pragma once
#include <fmt/format.h>

#include <string>
#include <vector>

namespace ds {

inline std::string name_list(const std::vector<std::string>& v, size_t cap = 20) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < cap; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > cap) s += fmt::format(" (+{} more)", v.size() - cap);
  return s;
}

}  // namespace ds
