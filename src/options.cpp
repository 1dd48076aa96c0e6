// The parts of the options that need code.
#include <childproc/options.hpp>

#include <algorithm>
#include <cstring>
#include <unordered_set>

extern char** environ;

namespace childproc {
inline namespace v1 {

signal_choice::signal_choice(std::string_view name) noexcept {
  std::error_code ec;
  number_ = signal_number(name, ec); // 0 for an unknown name, which spawn() refuses
  unknown_name_ = static_cast<bool>(ec);
}

env_map::env_map(std::initializer_list<value_type> entries) {
  for (const auto& [name, value] : entries)
    (*this)[name] = value;
}

std::optional<std::string>& env_map::operator[](std::string_view name) {
  auto it = find(name);
  if (it == end())
    it = entries_.insert(end(), {std::string(name), std::nullopt});
  return it->second;
}

std::pair<env_map::iterator, bool> env_map::emplace(std::string name,
                                                    std::optional<std::string> value) {
  if (auto it = find(name); it != end())
    return {it, false};
  return {entries_.insert(end(), {std::move(name), std::move(value)}), true};
}

env_map::iterator env_map::find(std::string_view name) noexcept {
  return std::find_if(begin(), end(), [&](const value_type& e) { return e.first == name; });
}

env_map::const_iterator env_map::find(std::string_view name) const noexcept {
  return std::find_if(begin(), end(), [&](const value_type& e) { return e.first == name; });
}

std::size_t env_map::erase(std::string_view name) {
  auto it = find(name);
  if (it == end())
    return 0;
  entries_.erase(it);
  return 1;
}

env_map current_env() {
  env_map env;
  std::unordered_set<std::string_view> seen; // environ can be long: no linear find per entry
  for (char** p = environ; p && *p; ++p) {
    const char* eq = std::strchr(*p, '=');
    if (!eq || eq == *p)
      continue; // not a variable: spawn() would refuse it, and every inheriting spawn with it
    // The first definition wins, as getenv() sees it; environ's order is kept.
    const std::string_view name(*p, static_cast<std::size_t>(eq - *p));
    if (seen.insert(name).second)
      env.entries_.emplace_back(std::string(name), std::string(eq + 1));
  }
  return env;
}

} // namespace v1
} // namespace childproc
