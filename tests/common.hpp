// Shared by the test files: the helper's path, running a child to its close, fd and zombie
// checks.
#pragma once

#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include "helpers/proc_stat.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <optional>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace asio = boost::asio;

namespace test {

inline const std::string helper = CHILDPROC_TEST_HELPER;

// Runs `io` one handler at a time until `pred` holds; false when `bound` passed first (a
// generous upper bound, never a timing assertion).
template <class Pred>
bool run_until(asio::io_context& io, Pred pred,
               std::chrono::seconds bound = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    io.run_one_for(std::chrono::milliseconds(50));
    if (io.stopped())
      io.restart();
  }
  return true;
}

// The same, until `flag` is set.
inline bool run_until(asio::io_context& io, const bool& flag,
                      std::chrono::seconds bound = std::chrono::seconds(60)) {
  return run_until(
      io, [&] { return flag; }, bound);
}

// True under ASan or TSan (their runtimes reserve address space and hold freed memory).
constexpr bool sanitized =
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    true;
#else
    false;
#endif

// Everything observable about one child run to its close event.
struct outcome {
  std::vector<std::string> events; // "spawn", "exit", "close", "error", "out", "err"
  std::string out, err;
  std::optional<int> exit_code, exit_signal, close_code, close_signal;
  std::optional<childproc::process_error> error;
};

// Attaches recorders to every event of `child`.
inline void record(childproc::child_process& child, outcome& o) {
  child.on_spawn([&] { o.events.push_back("spawn"); });
  child.on_exit([&](std::optional<int> c, std::optional<int> s) {
    o.events.push_back("exit");
    o.exit_code = c;
    o.exit_signal = s;
  });
  child.on_close([&](std::optional<int> c, std::optional<int> s) {
    o.events.push_back("close");
    o.close_code = c;
    o.close_signal = s;
  });
  child.on_error([&](const childproc::process_error& e) {
    o.events.push_back("error");
    o.error = e;
  });
  if (child.has_pipe(1))
    child.out().on_data([&](std::string_view d) {
      if (o.events.empty() || o.events.back() != "out")
        o.events.push_back("out");
      o.out += d;
    });
  if (child.has_pipe(2))
    child.err().on_data([&](std::string_view d) { o.err += d; });
}

// Spawns, records and runs the io_context until everything is done.
inline outcome run(std::string file, std::vector<std::string> args,
                   childproc::spawn_options options = {}) {
  asio::io_context io;
  outcome o;
  auto child = childproc::spawn(io, std::move(file), std::move(args), std::move(options));
  record(child, o);
  io.run();
  return o;
}

inline outcome run_helper(std::vector<std::string> args, childproc::spawn_options options = {}) {
  return run(helper, std::move(args), std::move(options));
}

// The descriptors open in this process.
inline std::vector<int> open_fds() {
  std::vector<int> fds;
  DIR* d = ::opendir("/proc/self/fd");
  const int self = ::dirfd(d);
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.' && std::atoi(e->d_name) != self)
      fds.push_back(std::atoi(e->d_name));
  ::closedir(d);
  return fds;
}

// True when `pid` is no child of ours any more (reaped, not a zombie).
inline bool reaped(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) < 0 &&
         errno == ECHILD;
}

// Waits (up to a generous bound) until `pid` is reaped; returns whether it was.
inline bool wait_reaped(pid_t pid, std::chrono::seconds bound = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!reaped(pid) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return reaped(pid);
}

// True while `pid` exists and is not a zombie.
inline bool alive(pid_t pid) {
  const auto line = proc::read_stat(pid);
  return line && line->state != 'Z' && line->state != 'X';
}

// The number of zombie children of this process.
inline int zombie_children() {
  int zombies = 0;
  for (const auto& [pid, state] : proc::children_of(::getpid()))
    zombies += state == 'Z';
  return zombies;
}

} // namespace test
