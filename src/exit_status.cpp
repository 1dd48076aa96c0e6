// Signal names, as Node prints and accepts them.
#include <childproc/error.hpp>
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

int signal_number(std::string_view name, std::error_code& ec) noexcept {
  ec.clear();
  std::string_view bare = name;
  if (bare.substr(0, 3) == "SIG")
    bare.remove_prefix(3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    if (abbrev && bare == abbrev)
      return sig;
  }
  ec = make_error_code(errc::unknown_signal); // never 0: kill(0) would only probe
  return 0;
}

int signal_number(std::string_view name) {
  std::error_code ec;
  const int sig = signal_number(name, ec);
  if (ec)
    throw std::system_error(ec, "Unknown signal: " + std::string(name)); // Node's message
  return sig;
}

} // namespace v1
} // namespace childproc
