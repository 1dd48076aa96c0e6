// Telling when a child has exited, and reaping it.
//
// Either way the watcher owns one descriptor that becomes readable when the child has exited:
//  - a pidfd (the normal path);
//  - or, where pidfds are unavailable (ENOSYS, EPERM) or disabled with
//    CHILDPROC_EXIT_WATCH=sigchld, an eventfd that the SIGCHLD hub's thread signals when
//    waitid(P_PID, WNOWAIT) shows the child exited.
// Detection never reaps: reaping happens on the owner's executor through reap(), so kill() on the
// same executor can never signal a pid that was reaped and reused in between.
#pragma once

#include "unique_fd.hpp"

#include <childproc/exit_status.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <cstdint>
#include <sys/types.h>
#include <system_error>

namespace childproc::detail::posix {

class exit_watcher {
public:
  // Takes the pidfd when valid; otherwise registers the pid with the SIGCHLD hub.
  // Throws std::system_error when neither is possible (no eventfd could be made).
  exit_watcher(const boost::asio::any_io_executor& ex, pid_t pid, unique_fd pidfd);
  ~exit_watcher();
  exit_watcher(const exit_watcher&) = delete;
  exit_watcher& operator=(const exit_watcher&) = delete;

  bool uses_pidfd() const noexcept { return uses_pidfd_; }

  // Waits until the child has exited (not reaped yet); completes on the executor. The handler
  // gets a boost::system::error_code (operation_aborted when the watcher is destroyed).
  template <class Handler>
  void async_wait_exit(Handler&& handler) {
    fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                   std::forward<Handler>(handler));
  }

  // Reaps the child without blocking. Returns false while it is still running; `unknown` in the
  // status means someone else reaped it (ECHILD). With keep_zombie, reads the status but leaves
  // the child a zombie (WNOWAIT), so its pid (and the group id it leads) cannot be reused until
  // reap_zombie(); exited() is then true and reaped() false.
  bool try_reap(exit_status& status, bool keep_zombie = false) noexcept;
  void reap_zombie() noexcept;
  bool exited() const noexcept { return exited_; }

  // Sends a signal: pidfd_send_signal, or kill() while the pid is still ours (not reaped).
  // Returns 0 or an errno value.
  int send_signal(int signal) noexcept;

  bool reaped() const noexcept { return reaped_; }

  // Called by the owner when it goes away before the child was reaped: the SIGCHLD hub takes
  // over the reaping so no zombie is left.
  void orphan() noexcept;

private:
  pid_t pid_;
  bool uses_pidfd_ = false;
  bool reaped_ = false;
  bool exited_ = false;
  std::uint64_t hub_registration_ = 0;
  boost::asio::posix::stream_descriptor fd_;

public:
  // Whether the child has exited (or was reaped by anyone): a peek that never reaps.
  bool has_exited() const noexcept;
};

// Whether the pidfd path is enabled (CHILDPROC_EXIT_WATCH=sigchld disables it, for tests).
bool pidfd_enabled() noexcept;

} // namespace childproc::detail::posix
