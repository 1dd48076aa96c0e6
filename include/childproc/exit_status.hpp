// How a child ended: Node's (code, signal) pair, plus its resource usage.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace childproc {
inline namespace v1 {

/// CPU time and peak memory of a reaped child, from the kernel's rusage.
struct resource_usage {
  std::chrono::microseconds user_cpu{0};
  std::chrono::microseconds system_cpu{0};
  long max_rss_kib = 0; ///< peak resident set size in KiB
};

/// The end of a child. For a child that was reaped by us, exactly one of `code` and `signal` is
/// set (a child that ran `exit 143` has code 143; one killed by SIGTERM has signal 15). Both are
/// empty, and `unknown` is true, when another part of the program reaped the child first.
struct exit_status {
  std::optional<int> code{};
  std::optional<int> signal{};
  bool core_dumped = false;
  bool unknown = false;
  resource_usage usage{};

  /// True for an exit with code 0.
  bool success() const noexcept { return code && *code == 0; }
};

/// The signal's name without its number, as Node prints it: "SIGTERM"; "SIG<n>" when unnamed.
std::string signal_name(int signal);

/// The number of a signal name ("SIGTERM" or "TERM"). A name that names no signal is
/// errc::unknown_signal (Node's ERR_UNKNOWN_SIGNAL, "Unknown signal: SIGFOO"): thrown as
/// std::system_error, or set in `ec` with 0 returned. Never 0 for success: kill(0) only probes,
/// so a typo must not become signal 0.
int signal_number(std::string_view name);
int signal_number(std::string_view name, std::error_code& ec) noexcept;

} // namespace v1
} // namespace childproc
