// The exit watcher and the SIGCHLD hub (the fallback where pidfds cannot be used).
//
// The hub is process-wide and created on first use: a SIGCHLD handler that chains whatever
// handler the application had installed before, a self-pipe, and one background thread that, on
// each wake-up (and at least once a second while it has work, in case every thread blocks
// SIGCHLD), polls only the pids it was given: with WNOWAIT for watched children (the owner reaps
// them on its executor) and with a real wait for orphans. It never calls waitpid(-1).
#include "exit_watcher.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <new>
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
std::atomic<int> hub_wake_fd{-1}; // write end of the hub's self-pipe; set before the handler

void on_sigchld(int sig, siginfo_t* info, void* context);

bool is_hub_handler(const struct sigaction& action) noexcept {
  return (action.sa_flags & SA_SIGINFO) && action.sa_sigaction == on_sigchld;
}

// With SIG_IGN or SA_NOCLDWAIT the kernel reaps every child as it exits.
bool kernel_reaps(const struct sigaction& action) noexcept {
  return (action.sa_flags & SA_NOCLDWAIT) ||
         (!(action.sa_flags & SA_SIGINFO) && action.sa_handler == SIG_IGN);
}

bool kernel_reaps_children() noexcept {
  struct sigaction current {};
  return ::sigaction(SIGCHLD, nullptr, &current) == 0 && kernel_reaps(current);
}

void wake_hub() noexcept {
  const int fd = hub_wake_fd.load(std::memory_order_relaxed);
  if (fd >= 0) {
    char byte = 0;
    [[maybe_unused]] ssize_t n = ::write(fd, &byte, 1);
  }
}

void on_sigchld(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  // Stops and continues (reported when the application asked for them) are no exits.
  if (!info || (info->si_code != CLD_STOPPED && info->si_code != CLD_CONTINUED))
    wake_hub();
  if (previous_sigchld_action.sa_flags & SA_SIGINFO) {
    if (previous_sigchld_action.sa_sigaction)
      previous_sigchld_action.sa_sigaction(sig, info, context);
  } else if (previous_sigchld_action.sa_handler != SIG_DFL &&
             previous_sigchld_action.sa_handler != SIG_IGN) {
    previous_sigchld_action.sa_handler(sig);
  }
  errno = saved_errno;
}

// Installs the hub's handler in front of the application's, keeping the flags that change what
// the application's handler is told (SA_NOCLDSTOP) or how it runs (SA_RESTART, SA_ONSTACK).
// Not over SIG_IGN / SA_NOCLDWAIT (the application wants the kernel to reap; the hub then polls),
// and never over itself.
void install_sigchld_handler() noexcept {
  struct sigaction current {};
  if (::sigaction(SIGCHLD, nullptr, &current) < 0 || kernel_reaps(current) ||
      is_hub_handler(current))
    return;
  const bool app_handler = (current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL;
  previous_sigchld_action = current;
  struct sigaction action {};
  action.sa_sigaction = on_sigchld;
  action.sa_flags =
      SA_SIGINFO | (app_handler ? current.sa_flags & (SA_NOCLDSTOP | SA_RESTART | SA_ONSTACK)
                                : SA_NOCLDSTOP | SA_RESTART);
  sigfillset(&action.sa_mask);
  ::sigaction(SIGCHLD, &action, nullptr);
}

unique_fd make_self_pipe_end(int fd) {
  unique_fd end(above_stdio(fd));
  if (!end)
    throw std::system_error(errno, std::system_category(), "childproc: SIGCHLD hub pipe");
  return end;
}

class sigchld_hub {
public:
  // Made on first use and never destroyed: its thread runs until the process ends. A failed
  // construction leaves nothing behind (no handler, no fd), so the next call tries again.
  static sigchld_hub& instance() {
    static sigchld_hub* hub = new sigchld_hub();
    return *hub;
  }

  // Reserves the slot of a child about to be launched; the hub signals `event_fd` once the
  // child (set by watch()) has exited. Returns the slot's id for watch() and unwatch().
  std::uint64_t reserve(int event_fd) {
    std::lock_guard lock(mutex_);
    const std::uint64_t id = ++last_id_;
    watched_.emplace(id, watched_child{0, event_fd});
    return id;
  }

  void watch(std::uint64_t id, pid_t pid) noexcept {
    {
      std::lock_guard lock(mutex_);
      if (auto it = watched_.find(id); it != watched_.end())
        it->second.pid = pid;
    }
    wake_hub();
  }

  // After this returns, the hub no longer touches the slot's eventfd.
  void unwatch(std::uint64_t id) noexcept {
    std::lock_guard lock(mutex_);
    watched_.erase(id);
  }

  // Reaps `pid` whenever it exits.
  void adopt(pid_t pid) {
    {
      std::lock_guard lock(mutex_);
      orphans_.push_back(pid);
    }
    wake_hub();
  }

private:
  struct watched_child {
    pid_t pid; // 0: reserved, not launched yet
    int event_fd;
  };

  // All or nothing: the thread starts before the handler is installed.
  sigchld_hub() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
      throw std::system_error(errno, std::system_category(), "childproc: SIGCHLD hub pipe");
    unique_fd read_end(fds[0]), write_end(fds[1]);
    read_end = make_self_pipe_end(read_end.release());
    write_end = make_self_pipe_end(write_end.release());
    read_fd_ = read_end.get();
    std::thread([this] { run(); }).detach();
    read_end.release();
    hub_wake_fd.store(write_end.release(), std::memory_order_relaxed);
    install_sigchld_handler();
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
      const pid_t pid = it->second.pid;
      const int r =
          pid == 0 ? 0
                   : ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
      if (pid != 0 && ((r == 0 && info.si_pid != 0) || (r < 0 && errno == ECHILD))) {
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

unique_fd make_eventfd() {
  unique_fd fd(above_stdio(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
  if (!fd)
    throw std::system_error(errno, std::system_category(), "childproc: eventfd");
  return fd;
}

// The kernel has pidfds and waitid(P_PIDFD) (5.4): a pidfd of this process, which is no child
// of itself, gives ECHILD there. Out of fds, the kernel's support is assumed.
bool kernel_has_pidfds() noexcept {
  const long fd = ::syscall(SYS_pidfd_open, ::getpid(), 0);
  if (fd < 0)
    return errno != ENOSYS && errno != EPERM && errno != EINVAL;
  siginfo_t info{};
  const long r = ::syscall(SYS_waitid, P_PIDFD, fd, &info, WEXITED | WNOHANG, nullptr);
  const bool supported = r < 0 && errno == ECHILD;
  ::close(static_cast<int>(fd));
  return supported;
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
  static const bool enabled = [] {
    const char* mode = std::getenv("CHILDPROC_EXIT_WATCH");
    return !(mode && std::strcmp(mode, "sigchld") == 0) && kernel_has_pidfds();
  }();
  return enabled;
}

void kill_and_reap(pid_t pid) noexcept {
  // Not reaped yet, so the pid is still this child's.
  ::kill(pid, SIGKILL);
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED) < 0 && errno == EINTR) {
  }
}

exit_watcher::exit_watcher(const boost::asio::any_io_executor& ex, bool use_pidfd)
    : uses_pidfd_(use_pidfd), fd_(ex) {
  if (use_pidfd)
    return;
  sigchld_hub& hub = sigchld_hub::instance();
  unique_fd event = make_eventfd();
  fd_.assign(event.get());
  event.release();
  hub_registration_ = hub.reserve(fd_.native_handle());
}

exit_watcher::~exit_watcher() {
  if (hub_registration_)
    sigchld_hub::instance().unwatch(hub_registration_);
  // fd_ closes after the hub has let go of it.
}

std::error_code exit_watcher::attach(pid_t pid, unique_fd pidfd) noexcept {
  pid_ = pid;
  if (!uses_pidfd_) {
    sigchld_hub::instance().watch(hub_registration_, pid);
    return {};
  }
  std::error_code result(ENOSYS, std::system_category()); // a pidfd was expected
  try {
    boost::system::error_code ec;
    if (pidfd)
      fd_.assign(pidfd.get(), ec);
    if (pidfd && !ec) {
      pidfd.release();
      return {};
    }
    if (ec)
      result.assign(ec.value(), std::system_category());
  } catch (const std::bad_alloc&) { // the reactor's per-descriptor state
    result.assign(ENOMEM, std::system_category());
  }
  kill_and_reap();
  return result;
}

void exit_watcher::kill_and_reap() noexcept {
  posix::kill_and_reap(pid_);
  reaped_ = exited_ = true;
}

long exit_watcher::wait(siginfo_t& info, int options, rusage* usage) noexcept {
  // The raw waitid takes a rusage; glibc's wrapper does not. The kernel fills it with WNOWAIT
  // too (checked on this machine), so a child kept as a zombie still reports its usage.
  long r;
  do
    r = uses_pidfd_ ? ::syscall(SYS_waitid, P_PIDFD, fd_.native_handle(), &info, options, usage)
                    : ::syscall(SYS_waitid, P_PID, pid_, &info, options, usage);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != ECHILD && uses_pidfd_) {
    // The pidfd form was refused (a seccomp filter, say) without reaping: the pid is still ours.
    do
      r = ::syscall(SYS_waitid, P_PID, pid_, &info, options, usage);
    while (r < 0 && errno == EINTR);
  }
  return r;
}

bool exit_watcher::try_reap(exit_status& status, bool keep_zombie) noexcept {
  if (reaped_)
    return true;
  if (pid_ <= 0)
    return false;
  siginfo_t info{};
  rusage usage{};
  const long r = wait(info, WEXITED | WNOHANG | (keep_zombie ? WNOWAIT : 0), &usage);
  if (r < 0) {
    if (errno != ECHILD)
      return false; // nothing is known: the child may still run
    // Reaped by someone else (a foreign waitpid(-1), SIGCHLD set to SIG_IGN).
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
  wait(info, WEXITED | WNOHANG, nullptr);
  reaped_ = true;
}

int exit_watcher::send_signal(int signal) noexcept {
  if (reaped_ || pid_ <= 0)
    return ESRCH;
  long r = uses_pidfd_ ? ::syscall(SYS_pidfd_send_signal, fd_.native_handle(), signal, nullptr, 0)
                       : ::kill(pid_, signal);
  return r < 0 ? errno : 0;
}

void exit_watcher::orphan() noexcept {
  if (reaped_ || pid_ <= 0)
    return;
  if (hub_registration_) {
    sigchld_hub::instance().unwatch(hub_registration_);
    hub_registration_ = 0;
  }
  exit_status ignored;
  const bool gone = try_reap(ignored) && reaped_;
  reaped_ = true; // no longer ours to reap or signal
  if (gone || kernel_reaps_children())
    return; // nothing left to reap, or the kernel reaps it
  try {
    sigchld_hub::instance().adopt(pid_);
  } catch (...) {
    // No hub could be made (no thread, no fds): the child stays a zombie until this process
    // ends. Nothing was installed, so a later attempt starts from a clean state.
  }
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
