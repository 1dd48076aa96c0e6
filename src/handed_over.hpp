// The fds stdio::from() handed over: a process-wide registry owns them until a spawn takes them,
// so a spec used twice (or forged) names no fd of ours and is refused instead of closing
// whatever fd has its number now. Each hand-over has a serial token: a spent spec whose number
// the kernel gave to a later hand-over does not have that one's token.
#pragma once

#include "posix/unique_fd.hpp"

#include <childproc/options.hpp>

#include <cstdint>
#include <system_error>
#include <vector>

namespace childproc::detail {

// Records `fd`, which a stream is handing over: the registry owns it from now on. Returns the
// hand-over's token (never 0), which the `from` spec carries.
std::uint64_t register_handed_over(int fd);

// Takes the fds of the table's `from` slots out of the registry: they close with the returned
// handles. A `from` slot whose token and fd are not registered together (a spec a spawn already
// took, or one that no stdio::from() made) sets errc::stdio_from_used; that number is left alone.
std::vector<posix::unique_fd> take_handed_over(const std::vector<stdio_spec>& stdio,
                                               std::error_code& ec);

// Every call that refuses its options before spawning closes the table's handed-over fds, as a
// spawn would have: their writers get EOF or SIGPIPE instead of a pipe open for ever.
void close_handed_over(const std::vector<stdio_spec>& stdio) noexcept;

} // namespace childproc::detail
