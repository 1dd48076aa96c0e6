// The helper's modes for the exit watcher and the SIGCHLD hub (tests/test_exit_watcher.cpp).
// The hub, signal dispositions and rlimits are process-wide and made once, so each scenario runs
// in a fresh helper process and prints what it observes, one line per observation.
#pragma once

#include <childproc/spawn.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "proc_stat.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <string>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace watcher_modes {

using namespace std::chrono_literals;
namespace stdio = childproc::stdio;

inline void print(const std::string& line) {
  const std::string text = line + "\n";
  [[maybe_unused]] ssize_t n = ::write(1, text.data(), text.size());
}

// The pids of this process's children, running or zombie (from /proc).
inline std::vector<pid_t> children() {
  std::vector<pid_t> pids;
  for (const auto& [pid, state] : proc::children_of(::getpid()))
    pids.push_back(pid);
  return pids;
}

// Kills and reaps every child left (the scenario's own cleanup); returns how many there were.
inline int kill_children() {
  const auto pids = children();
  for (pid_t pid : pids) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  return static_cast<int>(pids.size());
}

// Every slot on /dev/null through an fd opened now, so that the launch itself opens no fd.
inline childproc::spawn_options quiet_options() {
  static const int dev_null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  return {.stdio = {stdio::fd(dev_null), stdio::fd(dev_null), stdio::fd(dev_null)}};
}

// Spawns with the error_code form, runs the events, and prints "ec=<n> events=<...>".
inline void spawn_and_report(const char* self, std::vector<std::string> args) {
  boost::asio::io_context io;
  std::error_code ec;
  std::string events;
  auto child = childproc::spawn(io, self, std::move(args), quiet_options(), ec);
  if (!ec) {
    child.on_spawn([&] { events += "spawn "; });
    child.on_error([&](const childproc::process_error& e) {
      events += "error:" + std::to_string(e.code().value()) + " ";
    });
    child.on_close([&](std::optional<int> code, auto) {
      events += "close:" + (code ? std::to_string(*code) : std::string("-"));
    });
  }
  io.run();
  print("ec=" + std::to_string(ec.value()) + " events=" + events);
}

// Makes only `free_fds` more descriptors fit (counting the holes below the limit).
inline void limit_fds_to(int free_fds) {
  rlim_t limit = 0;
  for (int seen = 0; seen < free_fds; ++limit)
    if (::fcntl(static_cast<int>(limit), F_GETFD) < 0)
      ++seen;
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = limit;
  ::setrlimit(RLIMIT_NOFILE, &rl);
}

// watch-no-fd: (SIGCHLD mode, hub not made yet) two free fds: the hub's self-pipe fits, the
// eventfd does not.
inline int watch_no_fd(const char* self) {
  boost::asio::io_context io;
  boost::asio::steady_timer reactor_made(io); // the io_context's own fds exist before the limit
  quiet_options();
  rlimit saved{};
  ::getrlimit(RLIMIT_NOFILE, &saved);
  limit_fds_to(2);
  spawn_and_report(self, {"sleep", "2000"});
  ::setrlimit(RLIMIT_NOFILE, &saved);
  print("children=" + std::to_string(kill_children()));
  return 0;
}

// Limits the address space to what is mapped now plus 4 MiB: a thread's 8 MiB stack cannot be
// mapped, small allocations still can.
inline rlimit limit_address_space() {
  rlimit saved{};
  ::getrlimit(RLIMIT_AS, &saved);
  long pages = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld", &pages) != 1)
      pages = 0;
    std::fclose(f);
  }
  rlimit rl = saved;
  rl.rlim_cur =
      static_cast<rlim_t>(pages) * static_cast<rlim_t>(::sysconf(_SC_PAGESIZE)) + (4u << 20);
  ::setrlimit(RLIMIT_AS, &rl);
  return saved;
}

inline std::string sigchld_disposition() {
  struct sigaction current {};
  ::sigaction(SIGCHLD, nullptr, &current);
  if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_DFL)
    return "default";
  if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_IGN)
    return "ignore";
  return "handler";
}

// A child of our own (not the library's) that exits at once, reaped here.
inline void fork_and_reap_own_child() {
  const pid_t own = ::fork();
  if (own == 0)
    ::_exit(0);
  ::waitpid(own, nullptr, 0);
}

// Drops an io_context while its child runs: the child becomes an orphan of the library.
inline pid_t orphan_a_child(const char* self) {
  boost::asio::io_context io;
  auto child = childproc::spawn(io, self, {"sleep", "300"}, quiet_options());
  return child.pid().value_or(-1);
}

// hub-thread-fails: (SIGCHLD mode) the hub's thread cannot start at the first spawn.
inline int hub_thread_fails(const char* self) {
  boost::asio::io_context warm_up;
  boost::asio::steady_timer reactor_made(warm_up);
  const rlimit saved = limit_address_space();
  spawn_and_report(self, {"exit", "0"});
  ::setrlimit(RLIMIT_AS, &saved);
  print("sigchld=" + sigchld_disposition() + " children=" + std::to_string(kill_children()));
  spawn_and_report(self, {"exit", "5"});
  fork_and_reap_own_child(); // a SIGCHLD through the hub's handler
  print("survived");
  return 0;
}

// hub-thread-fails-orphan: (pidfd mode) the hub's thread cannot start at the first orphan.
inline int hub_thread_fails_orphan(const char* self) {
  {
    boost::asio::io_context warm_up;
    childproc::spawn(warm_up, self, {"exit", "0"}, quiet_options());
    warm_up.run();
  }
  const rlimit saved = limit_address_space();
  const pid_t first = orphan_a_child(self);
  ::setrlimit(RLIMIT_AS, &saved);
  print("sigchld=" + sigchld_disposition());
  const pid_t second = orphan_a_child(self);
  // The hub reaps the second orphan once it exits.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(second), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  print(std::string("second orphan reaped=") + (errno == ECHILD ? "yes" : "no"));
  fork_and_reap_own_child();
  print("survived");
  ::waitpid(first, nullptr, 0);
  return 0;
}

std::atomic<int> stops_seen{0};

// stop-reports: an application handler that wants CLD_STOPPED still gets it once the hub exists.
inline int stop_reports(const char* self) {
  struct sigaction app {};
  app.sa_sigaction = [](int, siginfo_t* info, void*) {
    if (info->si_code == CLD_STOPPED)
      ++stops_seen;
  };
  app.sa_flags = SA_SIGINFO | SA_RESTART;
  ::sigaction(SIGCHLD, &app, nullptr);
  orphan_a_child(self); // makes the hub in either mode
  const pid_t own = ::fork();
  if (own == 0)
    for (;;) // stops again after each SIGCONT
      ::raise(SIGSTOP);
  // A SIGCHLD still pending (the orphan's) absorbs the stop's: signals do not queue. So the
  // child is continued every 500 ms until a stop has been heard (seen lost once under TSan).
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (int i = 1; stops_seen == 0 && std::chrono::steady_clock::now() < deadline; ++i) {
    std::this_thread::sleep_for(10ms);
    if (i % 50 == 0)
      ::kill(own, SIGCONT);
  }
  print("stopped seen=" + std::string(stops_seen > 0 ? "yes" : "no"));
  ::kill(own, SIGKILL);
  ::waitpid(own, nullptr, 0);
  return 0;
}

// sigchld-ignored: with SIGCHLD set to SIG_IGN, the library leaves it so: the kernel keeps
// reaping the application's own children.
inline int sigchld_ignored(const char* self) {
  std::signal(SIGCHLD, SIG_IGN);
  orphan_a_child(self);
  spawn_and_report(self, {"exit", "0"});
  const pid_t own = ::fork();
  if (own == 0)
    ::_exit(0);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (::kill(own, 0) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  print("sigchld=" + sigchld_disposition() +
        " own child reaped by the kernel=" + (::kill(own, 0) < 0 ? "yes" : "no"));
  ::waitpid(own, nullptr, WNOHANG);
  return 0;
}

// Makes waitid(P_PIDFD, ...) fail with EPERM from now on (a seccomp filter).
inline bool refuse_waitid_on_pidfds() {
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_waitid, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0])),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 3 /* P_PIDFD */, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog program{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         ::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) == 0;
}

// waitid-fails: (pidfd mode) a waitid error other than ECHILD is no exit.
inline int waitid_fails(const char* self) {
  spawn_and_report(self, {"exit", "0"}); // the exit-watch mode is chosen before the filter
  if (!refuse_waitid_on_pidfds())
    return print("no seccomp"), 0;
  boost::asio::io_context io;
  auto child = childproc::spawn(io, self, {"exit", "3"}, quiet_options());
  std::string seen;
  child.on_exit([&](std::optional<int> code, auto) {
    seen = code ? "code=" + std::to_string(*code) : std::string("no code");
  });
  io.run();
  const auto st = child.status();
  print(seen + (st && st->unknown ? " unknown" : ""));
  return 0;
}

// The number of pidfds this process holds.
inline int open_pidfds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  while (dirent* e = ::readdir(d)) {
    char target[256] = {};
    const std::string link = "/proc/self/fd/" + std::string(e->d_name);
    if (::readlink(link.c_str(), target, sizeof target - 1) > 0 &&
        std::strcmp(target, "anon_inode:[pidfd]") == 0)
      ++n;
  }
  ::closedir(d);
  return n;
}

// exit-watch-read-once: (pidfd mode) CHILDPROC_EXIT_WATCH set after the first spawn changes
// nothing.
inline int exit_watch_read_once(const char* self) {
  spawn_and_report(self, {"exit", "0"});
  ::setenv("CHILDPROC_EXIT_WATCH", "sigchld", 1);
  boost::asio::io_context io;
  auto child = childproc::spawn(io, self, {"sleep", "200"}, quiet_options());
  print("pidfds while running=" + std::to_string(open_pidfds()));
  io.run();
  return 0;
}

// Returns the mode's exit code, or -1 when `mode` is none of these.
inline int run(const std::string& mode, const char* self) {
  if (mode == "watch-no-fd")
    return watch_no_fd(self);
  if (mode == "hub-thread-fails")
    return hub_thread_fails(self);
  if (mode == "hub-thread-fails-orphan")
    return hub_thread_fails_orphan(self);
  if (mode == "stop-reports")
    return stop_reports(self);
  if (mode == "sigchld-ignored")
    return sigchld_ignored(self);
  if (mode == "waitid-fails")
    return waitid_fails(self);
  if (mode == "exit-watch-read-once")
    return exit_watch_read_once(self);
  return -1;
}

} // namespace watcher_modes
