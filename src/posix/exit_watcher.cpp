// The exit watcher and the SIGCHLD hub (the fallback where pidfds cannot be used).
//
// The hub is process-wide and created on first use: a SIGCHLD handler that chains whatever
// handler the application had installed before, a self-pipe, and one background thread that, on
// each wake-up (and at least once a second while it has work, in case every thread blocks
// SIGCHLD), polls only the pids it was given: with WNOWAIT for watched children (the owner reaps
// them on its executor) and with a real wait for orphans. It never calls waitpid(-1).
#include "exit_watcher.hpp"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <vector>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace childproc::detail::posix {
namespace {

struct sigaction previous_sigchld_action;
int hub_wake_fd = -1; // write end of the hub's self-pipe; set once, before the handler

void on_sigchld(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (hub_wake_fd >= 0) {
    char byte = 0;
    [[maybe_unused]] ssize_t n = ::write(hub_wake_fd, &byte, 1);
  }
  if (previous_sigchld_action.sa_flags & SA_SIGINFO) {
    if (previous_sigchld_action.sa_sigaction)
      previous_sigchld_action.sa_sigaction(sig, info, context);
  } else if (previous_sigchld_action.sa_handler != SIG_DFL &&
             previous_sigchld_action.sa_handler != SIG_IGN) {
    previous_sigchld_action.sa_handler(sig);
  }
  errno = saved_errno;
}

class sigchld_hub {
public:
  static sigchld_hub& instance() {
    // Never destroyed: its thread runs until the process ends.
    static sigchld_hub* hub = new sigchld_hub();
    return *hub;
  }

  // Signals `event_fd` once `pid` has exited. Returns a registration id for unwatch().
  std::uint64_t watch(pid_t pid, int event_fd) {
    std::lock_guard lock(mutex_);
    const std::uint64_t id = ++last_id_;
    watched_.emplace(id, watched_child{pid, event_fd});
    wake();
    return id;
  }

  // After this returns, the hub no longer touches the registration's eventfd.
  void unwatch(std::uint64_t id) {
    std::lock_guard lock(mutex_);
    watched_.erase(id);
  }

  // Reaps `pid` whenever it exits.
  void adopt(pid_t pid) {
    std::lock_guard lock(mutex_);
    orphans_.push_back(pid);
    wake();
  }

private:
  struct watched_child {
    pid_t pid;
    int event_fd;
  };

  sigchld_hub() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
      throw std::system_error(errno, std::system_category(), "childproc: SIGCHLD hub pipe");
    read_fd_ = fds[0];
    hub_wake_fd = fds[1];
    struct sigaction action {};
    action.sa_sigaction = on_sigchld;
    action.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
    sigfillset(&action.sa_mask);
    ::sigaction(SIGCHLD, &action, &previous_sigchld_action);
    std::thread([this] { run(); }).detach();
  }

  void wake() noexcept {
    char byte = 0;
    [[maybe_unused]] ssize_t n = ::write(hub_wake_fd, &byte, 1);
  }

  void run() {
    // The hub thread takes no signals: SIGCHLD goes to the application's threads, whose handler
    // wakes us through the pipe.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, nullptr);
    for (;;) {
      bool has_work;
      {
        std::lock_guard lock(mutex_);
        has_work = !watched_.empty() || !orphans_.empty();
      }
      pollfd p{read_fd_, POLLIN, 0};
      ::poll(&p, 1, has_work ? 1000 : -1);
      char buf[256];
      while (::read(read_fd_, buf, sizeof buf) > 0) {
      }
      poll_children();
    }
  }

  void poll_children() {
    std::lock_guard lock(mutex_);
    for (auto it = watched_.begin(); it != watched_.end();) {
      siginfo_t info{};
      int r =
          ::waitid(P_PID, static_cast<id_t>(it->second.pid), &info, WEXITED | WNOHANG | WNOWAIT);
      if ((r == 0 && info.si_pid != 0) || (r < 0 && errno == ECHILD)) {
        std::uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(it->second.event_fd, &one, sizeof one);
        it = watched_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto it = orphans_.begin(); it != orphans_.end();) {
      int status;
      pid_t r = ::waitpid(*it, &status, WNOHANG);
      if (r == *it || (r < 0 && errno == ECHILD))
        it = orphans_.erase(it);
      else
        ++it;
    }
  }

  std::mutex mutex_;
  int read_fd_ = -1;
  std::uint64_t last_id_ = 0;
  std::unordered_map<std::uint64_t, watched_child> watched_;
  std::vector<pid_t> orphans_;
};

int make_eventfd() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    throw std::system_error(errno, std::system_category(), "childproc: eventfd");
  return fd;
}

exit_status decode(const siginfo_t& info, const rusage& usage) noexcept {
  exit_status status;
  switch (info.si_code) {
  case CLD_EXITED:
    status.code = info.si_status;
    break;
  case CLD_DUMPED:
    status.core_dumped = true;
    [[fallthrough]];
  default: // CLD_KILLED
    status.signal = info.si_status;
    break;
  }
  status.usage.user_cpu = std::chrono::seconds(usage.ru_utime.tv_sec) +
                          std::chrono::microseconds(usage.ru_utime.tv_usec);
  status.usage.system_cpu = std::chrono::seconds(usage.ru_stime.tv_sec) +
                            std::chrono::microseconds(usage.ru_stime.tv_usec);
  status.usage.max_rss_kib = usage.ru_maxrss;
  return status;
}

} // namespace

bool pidfd_enabled() noexcept {
  const char* mode = std::getenv("CHILDPROC_EXIT_WATCH");
  return !(mode && std::strcmp(mode, "sigchld") == 0);
}

exit_watcher::exit_watcher(const boost::asio::any_io_executor& ex, pid_t pid, unique_fd pidfd)
    : pid_(pid), fd_(ex) {
  if (pidfd) {
    uses_pidfd_ = true;
    fd_.assign(pidfd.release());
  } else {
    unique_fd event(make_eventfd());
    hub_registration_ = sigchld_hub::instance().watch(pid, event.get());
    fd_.assign(event.release());
  }
}

exit_watcher::~exit_watcher() {
  if (hub_registration_)
    sigchld_hub::instance().unwatch(hub_registration_);
  // fd_ closes after the hub has let go of it.
}

bool exit_watcher::try_reap(exit_status& status, bool keep_zombie) noexcept {
  if (reaped_)
    return true;
  siginfo_t info{};
  rusage usage{};
  const int options = WEXITED | WNOHANG | (keep_zombie ? WNOWAIT : 0);
  // The raw waitid takes a rusage; glibc's wrapper does not. The kernel fills it with WNOWAIT
  // too (checked on this machine), so a child kept as a zombie still reports its usage.
  long r = uses_pidfd_ ? ::syscall(SYS_waitid, P_PIDFD, fd_.native_handle(), &info, options, &usage)
                       : ::syscall(SYS_waitid, P_PID, pid_, &info, options, &usage);
  if (r < 0) {
    if (errno == EINTR)
      return false;
    // ECHILD: reaped by someone else (a foreign waitpid(-1), SIGCHLD set to SIG_IGN).
    status = exit_status{};
    status.unknown = true;
    reaped_ = exited_ = true;
    return true;
  }
  if (info.si_pid == 0)
    return false;
  status = decode(info, usage);
  exited_ = true;
  reaped_ = !keep_zombie;
  return true;
}

void exit_watcher::reap_zombie() noexcept {
  if (reaped_ || !exited_)
    return;
  siginfo_t info{};
  if (uses_pidfd_)
    ::syscall(SYS_waitid, P_PIDFD, fd_.native_handle(), &info, WEXITED | WNOHANG, nullptr);
  else
    ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG);
  reaped_ = true;
}

int exit_watcher::send_signal(int signal) noexcept {
  if (reaped_)
    return ESRCH;
  long r = uses_pidfd_ ? ::syscall(SYS_pidfd_send_signal, fd_.native_handle(), signal, nullptr, 0)
                       : ::kill(pid_, signal);
  return r < 0 ? errno : 0;
}

void exit_watcher::orphan() noexcept {
  if (reaped_)
    return;
  if (hub_registration_) {
    sigchld_hub::instance().unwatch(hub_registration_);
    hub_registration_ = 0;
  }
  try {
    sigchld_hub::instance().adopt(pid_);
  } catch (...) {
    // No hub could be made (no fds): the child stays a zombie until this process ends.
  }
  reaped_ = true; // no longer ours to reap or signal
}

bool exit_watcher::has_exited() const noexcept {
  if (reaped_ || exited_)
    return true;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) < 0)
    return errno == ECHILD; // reaped elsewhere
  return info.si_pid != 0;
}

} // namespace childproc::detail::posix
