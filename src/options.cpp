// The parts of the options that need code.
#include <childproc/options.hpp>

#include <cstring>

extern char** environ;

namespace childproc {
inline namespace v1 {

signal_choice::signal_choice(std::string_view name) noexcept {
  std::error_code ec;
  number_ = signal_number(name, ec); // 0 for an unknown name, which spawn() refuses
  unknown_name_ = static_cast<bool>(ec);
}

env_map current_env() {
  env_map env;
  for (char** p = environ; p && *p; ++p) {
    const char* eq = std::strchr(*p, '=');
    if (!eq || eq == *p)
      continue; // not a variable: spawn() would refuse it, and every inheriting spawn with it
    // The first definition wins, as getenv() sees it.
    env.emplace(std::string(*p, static_cast<std::size_t>(eq - *p)), std::string(eq + 1));
  }
  return env;
}

} // namespace v1
} // namespace childproc
