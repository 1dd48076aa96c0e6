// Signal names, as Node prints them.
#include <childproc/exit_status.hpp>

#include <csignal>
#include <cstring>
#include <string>

namespace childproc {
inline namespace v1 {

std::string signal_name(int signal) {
  if (const char* abbrev = ::sigabbrev_np(signal))
    return std::string("SIG") + abbrev;
  return "SIG" + std::to_string(signal);
}

int signal_number(std::string_view name) noexcept {
  if (name.substr(0, 3) == "SIG")
    name.remove_prefix(3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    if (abbrev && name == abbrev)
      return sig;
  }
  return 0;
}

} // namespace v1
} // namespace childproc
