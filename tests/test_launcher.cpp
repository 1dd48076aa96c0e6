// The launcher's guarantees that the other files do not reach: CLOEXEC of every library fd, the
// exit watcher modes, and no zombies after failed launches in bulk.
#include "common.hpp"

#include <cerrno>
#include <cstdlib>
#include <fcntl.h>

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
