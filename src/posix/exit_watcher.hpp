// Telling when a child has exited, and reaping it.
//
// Either way the watcher owns one descriptor that becomes readable when the child has exited:
//  - a pidfd (the normal path);
//  - or, where pidfds are unavailable (ENOSYS, EPERM) or disabled with
//    CHILDPROC_EXIT_WATCH=sigchld, an eventfd that the SIGCHLD hub's thread signals when
//    waitid(P_PID, WNOWAIT) shows the child exited.
// Detection never reaps: reaping happens on the owner's executor through reap(), so kill() on the
// same executor can never signal a pid that was reaped and reused in between.
//
// A watcher is made in two steps around the launch: the constructor does everything that can
// fail (before any child exists), attach() takes the pid once the child runs.
#pragma once

#include "unique_fd.hpp"

#include <childproc/exit_status.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <csignal>
#include <cstdint>
#include <sys/resource.h>
#include <sys/types.h>
#include <system_error>

namespace childproc::detail::posix {

class exit_watcher {
public:
  // Before the launch. Without a pidfd: makes the SIGCHLD hub (on first use), an eventfd
  // registered with the executor's reactor, and the hub's slot for the child. Throws
  // std::system_error, boost::system::system_error or std::bad_alloc.
  exit_watcher(const boost::asio::any_io_executor& ex, bool use_pidfd);
  ~exit_watcher();
  exit_watcher(const exit_watcher&) = delete;
  exit_watcher& operator=(const exit_watcher&) = delete;

  bool uses_pidfd() const noexcept { return uses_pidfd_; }

  // After the launch: starts watching `pid`. Cannot fail without a pidfd. A pidfd's
  // registration with the reactor can (it only exists after the clone): the child is then
  // killed and reaped, and the error returned.
  std::error_code attach(pid_t pid, unique_fd pidfd) noexcept;
  // For a failure after attach() but before the owner watches: kills and reaps the child.
  void kill_and_reap() noexcept;

  // Waits until the child has exited (not reaped yet); completes on the executor. The handler
  // gets a boost::system::error_code (operation_aborted when the watcher is destroyed).
  template <class Handler>
  void async_wait_exit(Handler&& handler) {
    fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                   std::forward<Handler>(handler));
  }

  // Reaps the child without blocking. Returns false while it is still running (or while waitid
  // fails otherwise than with ECHILD: nothing is known then); `unknown` in the status means
  // someone else reaped it (ECHILD). With keep_zombie, reads the status but leaves
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
  // over the reaping so no zombie is left. Not when SIGCHLD is ignored (SIG_IGN or
  // SA_NOCLDWAIT): the kernel reaps then. Where the hub cannot be made (no thread, no fds), the
  // child stays a zombie until this process ends.
  void orphan() noexcept;

private:
  long wait(siginfo_t& info, int options, rusage* usage) noexcept;

  pid_t pid_ = 0; // 0 until attach()
  bool uses_pidfd_ = false;
  bool reaped_ = false;
  bool exited_ = false;
  std::uint64_t hub_registration_ = 0;
  boost::asio::posix::stream_descriptor fd_;

public:
  // Whether the child has exited (or was reaped by anyone): a peek that never reaps.
  bool has_exited() const noexcept;
};

// Whether the pidfd path is used: the kernel has pidfds with waitid(P_PIDFD), and
// CHILDPROC_EXIT_WATCH=sigchld (for tests) does not disable it. Decided once per process.
bool pidfd_enabled() noexcept;

// Kills (SIGKILL) and reaps a child that was launched but cannot be watched.
void kill_and_reap(pid_t pid) noexcept;

} // namespace childproc::detail::posix
