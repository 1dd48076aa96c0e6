// The launcher's guarantees that the other files do not reach: CLOEXEC of every library fd, the
// exit watcher modes, and no zombies after failed launches in bulk.
#include "common.hpp"

#include "../src/posix/launcher.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>

namespace stdio = childproc::stdio;

TEST_CASE("every fd the library holds for a running child is close-on-exec", "[launcher]") {
  asio::io_context io;
  const auto before = test::open_fds();
  auto child = childproc::spawn(io, test::helper, {"cat"});
  for (int fd : test::open_fds()) {
    if (std::find(before.begin(), before.end(), fd) != before.end())
      continue;
    INFO("fd " << fd);
    CHECK((::fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  }
  child.in().end();
  io.run();
}

TEST_CASE("the exit watcher mode follows CHILDPROC_EXIT_WATCH", "[launcher]") {
  // With pidfds, a running child holds a pidfd ("anon_inode:[pidfd]"); with the fallback, an
  // eventfd. Either way the exit is seen and reaped.
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"exit", "0"},
                                {.stdio = {stdio::ignore, stdio::ignore, stdio::ignore}});
  const char* mode = std::getenv("CHILDPROC_EXIT_WATCH");
  const std::string expected =
      mode && std::string(mode) == "sigchld" ? "anon_inode:[eventfd]" : "anon_inode:[pidfd]";
  bool found = false;
  for (int fd : test::open_fds()) {
    char target[256] = {};
    ssize_t n =
        ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
    if (n > 0 && std::string(target, static_cast<std::size_t>(n)) == expected)
      found = true;
  }
  CHECK(found);
  std::optional<int> code;
  child.on_exit([&](std::optional<int> c, auto) { code = c; });
  io.run();
  CHECK(code == 0);
}

TEST_CASE("200 failed launches leave no zombie and no fd", "[launcher][errors]") {
  // Process-wide state made on first use, before any launch (the SIGCHLD hub's self-pipe), is
  // not a leak.
  childproc::spawn_sync(test::helper, {"exit", "0"});
  const auto before = test::open_fds().size();
  int errors = 0;
  {
    asio::io_context io;
    for (int i = 0; i < 200; ++i) {
      auto child = childproc::spawn(io, "/nonexistent/program");
      child.on_error([&](const childproc::process_error&) { ++errors; });
    }
    io.run();
  }
  CHECK(errors == 200);
  CHECK(test::zombie_children() == 0);
  CHECK(test::open_fds().size() == before);
}

TEST_CASE("an exec failure that is not an event (ENOTDIR) is thrown and reaped",
          "[launcher][errors]") {
  asio::io_context io;
  std::error_code ec;
  childproc::spawn(io, "/etc/passwd/child", {}, {}, ec);
  CHECK(ec == std::errc::not_a_directory);
  CHECK(test::zombie_children() == 0);
}

// Before the fix: events were {spawn, exit, close}, exit code 127, no error: the error pipe
// landed inside the slot range and the child's dup3 overwrote it.
TEST_CASE("a failed exec is an error whatever the stdio table", "[launcher][errors]") {
  childproc::spawn_options options;
  options.stdio.assign(12, stdio::ignore);
  auto o = test::run("/nonexistent/program", {}, options);
  REQUIRE(o.error.has_value());
  CHECK(o.error->code() == std::errc::no_such_file_or_directory);
  CHECK(o.error->step() == childproc::spawn_step::execve);
  CHECK(std::find(o.events.begin(), o.events.end(), "spawn") == o.events.end());
  CHECK_FALSE(o.exit_code.has_value());
  CHECK(test::zombie_children() == 0);
}

// Before the fix: "50 spawns took 25.1742 s": every fork() of the other thread during a launch
// held the error pipe's write end until its copy exited a second later.
TEST_CASE("spawn never waits for an unrelated process", "[launcher]") {
  std::atomic<bool> stop{false};
  std::vector<pid_t> forked;
  std::thread forker([&] {
    while (!stop) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        const timespec one_second{1, 0};
        ::nanosleep(&one_second, nullptr);
        ::_exit(0);
      }
      if (pid > 0)
        forked.push_back(pid);
      if (forked.size() >= 200) { // keep the number of sleepers bounded
        ::waitpid(forked.front(), nullptr, 0);
        forked.erase(forked.begin());
      }
    }
  });
  const auto start = std::chrono::steady_clock::now();
  {
    asio::io_context io;
    for (int i = 0; i < 50; ++i) {
      auto child = childproc::spawn(io, "/bin/true", {},
                                    {.stdio = {stdio::ignore, stdio::ignore, stdio::ignore}});
      CHECK(child.pid().has_value());
    }
    io.run();
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  stop = true;
  forker.join();
  for (pid_t pid : forked)
    ::waitpid(pid, nullptr, 0);
  INFO("50 spawns took " << std::chrono::duration<double>(elapsed).count() << " s");
  CHECK(elapsed < std::chrono::seconds(10));
  CHECK(test::zombie_children() == 0);
}

// Before the fix: PR_GET_DUMPABLE was 0 after the spawn: setuid in a CLONE_VM child ran
// set_dumpable on the memory it shared with the parent.
TEST_CASE("uid and gid leave the parent dumpable", "[launcher][credentials]") {
  if (::geteuid() != 0) {
    WARN("not root: uid/gid change cannot be tested");
    return;
  }
  REQUIRE(::prctl(PR_GET_DUMPABLE) == 1);
  auto o = test::run_helper({"ids"}, {.uid = 65534, .gid = 65534});
  const int dumpable = ::prctl(PR_GET_DUMPABLE);
  ::prctl(PR_SET_DUMPABLE, 1); // whatever happened, the other tests see a dumpable process
  CHECK(o.out == "65534 65534\n");
  CHECK(o.exit_code == 0);
  CHECK(dumpable == 1);
}

// Before the fix: the sleeper was still alive 10 s after its parent died: the credential change
// cleared the parent-death signal set before it.
TEST_CASE("kill_on_parent_death holds with uid and gid", "[launcher][credentials][lifetime]") {
  if (::geteuid() != 0) {
    WARN("not root: uid/gid change cannot be tested");
    return;
  }
  auto r = childproc::spawn_sync(test::helper, {"spawn-sleeper-as", "65534"});
  REQUIRE(r.status == 0);
  INFO("helper printed: " << r.out.value_or(""));
  const pid_t sleeper = std::stoi(r.out.value());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (test::alive(sleeper) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const bool survived = test::alive(sleeper);
  if (survived)
    ::kill(sleeper, SIGKILL);
  CHECK_FALSE(survived);
}

// Before the fix: "first 12", "second 12": the thread's stack holder was constructed once, and a
// failed mmap stayed failed for the life of the thread.
TEST_CASE("a failed stack mmap is retried on the next launch", "[launcher][errors]") {
  auto r = childproc::spawn_sync(test::helper, {"stack-retry"});
  if (r.out == "skip\n") {
    WARN("under a sanitizer: RLIMIT_AS cannot be lowered to the current size");
    return;
  }
  CHECK(r.out == "first 12\nsecond 0\nexit 0\n");
  CHECK(r.status == 0);
}

// Before the fix: "error close_fds 9" for "limit" (the switch forcing the state where neither
// close_range nor /proc works: the child had no method left, so every spawn failed).
TEST_CASE("the fd sweep works without close_range and without /proc", "[launcher][fds]") {
  for (const char* sweep : {"close_range", "proc", "limit"}) {
    INFO("CHILDPROC_CLOSE_FDS=" << sweep);
    auto r = childproc::spawn_sync(test::helper, {"spawn-fds"},
                                   {.env_overrides = {{"CHILDPROC_CLOSE_FDS", sweep}}});
    CHECK(r.out == "0\n1\n2\n");
    CHECK(r.status == 0);
  }
}

// Before the fix: passed only thanks to the error pipe, which took fd 0 during the clone; once
// the pipe was gone, the pidfd landed in fd 0 ("fd0 open").
TEST_CASE("the pidfd never takes the application's free fd 0", "[launcher][fds]") {
  // In pidfd mode (the exit watcher's fds are another test's business).
  auto r = childproc::spawn_sync(test::helper, {"pidfd-fd0"},
                                 {.env_overrides = {{"CHILDPROC_EXIT_WATCH", std::nullopt}}});
  CHECK(r.out == "fd0 closed\nexit 0\n");
  CHECK(r.status == 0);
}

// execvp's order: every PATH entry in turn, a trailing slash not doubled, an empty entry (leading,
// inner or trailing) as the current directory; a name with a slash is not searched.
TEST_CASE("the PATH search tries each entry in order, an empty one as the current directory",
          "[launcher]") {
  using childproc::detail::posix::exec_candidates;
  CHECK(exec_candidates("tool", std::string(":/a:/b/::c:")) ==
        std::vector<std::string>{"tool", "/a/tool", "/b/tool", "tool", "c/tool", "tool"});
  CHECK(exec_candidates("tool", std::string("/only")) == std::vector<std::string>{"/only/tool"});
  CHECK(exec_candidates("./tool", std::string("/a:/b")) == std::vector<std::string>{"./tool"});
  const auto unset = exec_candidates("tool", std::nullopt); // confstr(_CS_PATH): /bin:/usr/bin
  REQUIRE_FALSE(unset.empty());
  CHECK(unset.front() == "/bin/tool");
}
