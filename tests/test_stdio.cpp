// stdio: pipes, inherit, ignore, fds, extra slots, and what the child does and does not inherit.
#include "common.hpp"

#include <boost/asio/error.hpp>

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <set>
#include <sstream>

using namespace std::chrono_literals;
namespace stdio = childproc::stdio;

namespace {

std::set<int> parse_fds(const std::string& text) {
  std::set<int> fds;
  std::istringstream in(text);
  for (int fd; in >> fd;)
    fds.insert(fd);
  return fds;
}

} // namespace

TEST_CASE("stdin pipes data to the child and end() gives it EOF", "[stdio]") {
  asio::io_context io;
  test::outcome o;
  auto child = childproc::spawn(io, test::helper, {"cat"});
  test::record(child, o);
  std::error_code first, second;
  child.in().write("hello ", [&](std::error_code ec) { first = ec; });
  child.in().write(std::string(100000, 'z'), [&](std::error_code ec) { second = ec; });
  child.in().end();
  io.run();
  CHECK_FALSE(first);
  CHECK_FALSE(second);
  CHECK(o.out == "hello " + std::string(100000, 'z'));
  CHECK(o.exit_code == 0);
}

// Reads everything from `fd` until EOF.
static std::string slurp(int fd) {
  std::string all;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    all.append(buf, static_cast<std::size_t>(n));
  return all;
}

TEST_CASE("stdout and stderr can be swapped", "[stdio]") {
  // Slot 1 gets the parent's fd 2 and slot 2 the parent's fd 1. The parent's 1 and 2 are
  // pipes for the test, so the output can be checked.
  int out[2], err[2];
  REQUIRE(::pipe(out) == 0);
  REQUIRE(::pipe(err) == 0);
  const int saved1 = ::dup(1), saved2 = ::dup(2);
  ::dup2(out[1], 1);
  ::dup2(err[1], 2);
  ::close(out[1]);
  ::close(err[1]);
  auto swapped = test::run("/bin/sh", {"-c", "echo via-stdout; echo via-stderr >&2"},
                           {.stdio = {stdio::ignore, stdio::fd(2), stdio::fd(1)}});
  ::dup2(saved1, 1);
  ::dup2(saved2, 2);
  ::close(saved1);
  ::close(saved2);
  CHECK(slurp(err[0]) == "via-stdout\n");
  CHECK(slurp(out[0]) == "via-stderr\n");
  ::close(out[0]);
  ::close(err[0]);
  CHECK(swapped.exit_code == 0);
}

TEST_CASE("one fd can fill several slots", "[stdio]") {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  auto o = test::run("/bin/sh", {"-c", "echo a; echo b >&2"},
                     {.stdio = {stdio::ignore, stdio::fd(p[1]), stdio::fd(p[1])}});
  ::close(p[1]);
  CHECK(slurp(p[0]) == "a\nb\n");
  ::close(p[0]);
  CHECK(o.exit_code == 0);
}

TEST_CASE("a child sees none of the parent's non-CLOEXEC fds except those asked for",
          "[stdio][fds]") {
  // Leaky descriptors the parent forgot to mark CLOEXEC.
  int leaky = ::open("/dev/null", O_RDONLY);
  int leaky_pipe[2];
  REQUIRE(::pipe(leaky_pipe) == 0);
  int handed = ::open("/dev/null", O_RDONLY);
  REQUIRE(leaky >= 0);

  // The launcher reads its sweep switch once per process, so the other sweeps (the /proc walk,
  // the walk up to the fd limit) are checked through a helper process: test_launcher.cpp, "the
  // fd sweep works without close_range and without /proc".
  auto o = test::run_helper({"fds"}, {.stdio = {stdio::pipe, stdio::pipe, stdio::pipe,
                                                stdio::ignore, stdio::fd(handed)}});
  CHECK(parse_fds(o.out) == std::set<int>{0, 1, 2, 3, 4});
  ::close(leaky);
  ::close(leaky_pipe[0]);
  ::close(leaky_pipe[1]);
  ::close(handed);
}

TEST_CASE("an extra pipe slot is read by the parent", "[stdio]") {
  asio::io_context io;
  auto child =
      childproc::spawn(io, test::helper, {"write-fd", "3", "on fd three"},
                       {.stdio = {stdio::ignore, stdio::ignore, stdio::ignore, stdio::pipe}});
  std::string got;
  bool closed = false;
  child.stdio(3).on_data([&](std::string_view d) { got += d; });
  child.on_close([&](auto, auto) { closed = true; });
  CHECK(child.has_pipe(3));
  CHECK_FALSE(child.has_pipe(1));
  CHECK_THROWS_AS(child.out(), std::logic_error);
  io.run();
  CHECK(got == "on fd three");
  CHECK(closed);
}

TEST_CASE("ignore gives the child /dev/null and inherit the parent's own fd", "[stdio]") {
  auto ignored = test::run_helper({"echo", "lost"}, {.stdio = {stdio::ignore, stdio::ignore}});
  CHECK(ignored.out.empty());
  CHECK(ignored.exit_code == 0);

  int p[2];
  REQUIRE(::pipe(p) == 0);
  const int saved = ::dup(1);
  ::dup2(p[1], 1);
  auto inherited = test::run_helper({"echo", "through the parent's fd 1"},
                                    {.stdio = {stdio::ignore, stdio::inherit}});
  ::dup2(saved, 1);
  ::close(saved);
  ::close(p[1]);
  char buf[64] = {};
  CHECK(std::string(buf, ::read(p[0], buf, sizeof buf)) == "through the parent's fd 1");
  ::close(p[0]);
  CHECK(inherited.exit_code == 0);
}

TEST_CASE("fds handed to the child are blocking while the parent's ends are not", "[stdio]") {
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"fd-info", "0"});
  std::string out;
  child.out().on_data([&](std::string_view d) { out += d; });
  io.run();
  CHECK(out == "open nonblock=0\n");
  CHECK(test::run_helper({"fd-info", "1"}).out == "open nonblock=0\n");
}

TEST_CASE("a child writing 64 MiB on stdout and stderr at once does not deadlock",
          "[stdio][large]") {
  asio::io_context io;
  std::size_t out = 0, err = 0;
  std::optional<int> code;
  constexpr std::size_t size = 64u << 20;
  auto child = childproc::spawn(io, test::helper, {"flood", std::to_string(size)});
  child.out().on_data([&](std::string_view d) { out += d.size(); });
  child.err().on_data([&](std::string_view d) { err += d.size(); });
  child.on_close([&](std::optional<int> c, auto) { code = c; });
  io.run();
  CHECK(out == size);
  CHECK(err == size);
  CHECK(code == 0);
}

TEST_CASE("a stdout nobody reads is still drained, so close comes", "[stdio]") {
  asio::io_context io;
  bool closed = false;
  auto child = childproc::spawn(io, test::helper, {"flood", std::to_string(4u << 20)});
  child.on_close([&](auto, auto) { closed = true; });
  io.run();
  CHECK(closed);
}

TEST_CASE("writing to a child that already exited fails with EPIPE, and the parent lives",
          "[stdio][errors]") {
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"close-in-exit"});
  std::error_code write_error;
  bool wrote = false;
  child.on_exit([&](auto, auto) {
    // The child is gone: its end of the pipe is closed.
    child.in().write(std::string(1 << 20, 'x'), [&](std::error_code ec) {
      wrote = true;
      write_error = ec;
    });
  });
  io.run();
  CHECK(wrote);
  CHECK(write_error == std::errc::broken_pipe);

  // After close, the stream is closed: still EPIPE, reported asynchronously.
  std::error_code late;
  child.in().write("late", [&](std::error_code ec) { late = ec; });
  io.restart();
  io.run();
  CHECK(late == std::errc::broken_pipe);
}

TEST_CASE("the child starts with default signal dispositions and an empty mask", "[stdio]") {
  // The parent ignores SIGUSR1, blocks SIGUSR2 and handles SIGHUP.
  struct sigaction ignore {
  }, handle{}, old_usr1{}, old_hup{};
  ignore.sa_handler = SIG_IGN;
  handle.sa_handler = [](int) {};
  ::sigaction(SIGUSR1, &ignore, &old_usr1);
  ::sigaction(SIGHUP, &handle, &old_hup);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR2);
  ::pthread_sigmask(SIG_BLOCK, &block, &old_mask);

  auto o = test::run_helper({"signals"});

  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGUSR1, &old_usr1, nullptr);
  ::sigaction(SIGHUP, &old_hup, nullptr);
  CHECK(o.out == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_CASE("pipe_size sets the capacity of the library's pipes", "[stdio]") {
  CHECK(test::run_helper({"pipe-size", "1"}, {.pipe_size = 1024 * 1024}).out == "1048576\n");
  CHECK(test::run_helper({"pipe-size", "1"}).out == "65536\n");
  asio::io_context io;
  std::error_code ec;
  childproc::spawn(io, test::helper, {"exit", "0"}, {.pipe_size = std::size_t(1) << 40}, ec);
  CHECK(ec == childproc::errc::invalid_argument);
}

// Before the fix: the chunk read "aaaa..." after the nested exec_sync (its output, read into the
// same per-thread buffer), not "outer chunk".
TEST_CASE("a data handler may run exec_sync and its own chunk stays intact", "[stdio][events]") {
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"echo", "outer chunk"});
  std::string before, after, nested;
  child.out().on_data([&](std::string_view chunk) {
    before.assign(chunk);
    nested = childproc::exec_sync(test::helper + " out 100000").out;
    after.assign(chunk);
  });
  io.run();
  CHECK(before == "outer chunk");
  CHECK(after == before);
  CHECK(nested.size() == 100000);
}

// Before the fix: end() on an idle stream called its handler before returning
// ("ended_inline true").
TEST_CASE("write() and end() never complete from inside the call", "[stdio][events]") {
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"cat"});
  test::outcome o;
  test::record(child, o);
  bool wrote = false, ended = false, late_write = false, late_end = false;
  std::error_code late_write_error;
  child.in().write("x", [&](std::error_code) { wrote = true; });
  CHECK_FALSE(wrote);
  io.run_one(); // `spawn`
  child.in().end([&](std::error_code) { ended = true; });
  const bool ended_inline = ended;
  CHECK_FALSE(ended_inline);
  child.in().write("after end", [&](std::error_code ec) {
    late_write = true;
    late_write_error = ec;
  });
  child.in().end([&](std::error_code) { late_end = true; });
  CHECK_FALSE(late_write);
  CHECK_FALSE(late_end);
  io.run();
  CHECK(wrote);
  CHECK(ended);
  CHECK(late_write);
  CHECK(late_write_error == std::errc::broken_pipe);
  CHECK(late_end);
  CHECK(o.out == "x");

  // On an idle, open stream (nothing queued), end() completes later too.
  asio::io_context io2;
  auto idle = childproc::spawn(io2, test::helper, {"cat"});
  io2.run_one();
  bool idle_ended = false;
  idle.in().end([&](std::error_code) { idle_ended = true; });
  CHECK_FALSE(idle_ended);
  io2.run();
  CHECK(idle_ended);
}

// Before the fix: "EPIPE\nSIGPIPE ignored\n": the library had set SIGPIPE to SIG_IGN for the
// whole process.
TEST_CASE("writing to a child that closed its stdin gives EPIPE without touching the process's "
          "SIGPIPE disposition",
          "[stdio][errors]") {
  // A fresh process with SIGPIPE at SIG_DFL is the parent: a SIGPIPE would kill it (signal 13).
  auto o = test::run_helper({"sigpipe-parent"});
  CHECK(o.exit_signal == std::nullopt);
  CHECK(o.exit_code == 0);
  CHECK(o.out == "EPIPE\nSIGPIPE default\n");
}

// Before the fix: FAILED: CHECK( ec == boost::system::error_code(boost::asio::error::broken_pipe) )
// with expansion: generic:32 == system:32 (a write after the stream closed was generic EPIPE).
TEST_CASE("every EPIPE of a stdin write is in the system category, as Asio's", "[stdio][errors]") {
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"close-in-exit"});
  std::error_code at_exit, after_end;
  child.on_exit([&](auto, auto) {
    child.in().write(std::string(1 << 20, 'x'), [&](std::error_code ec) { at_exit = ec; });
  });
  io.run();
  child.in().write("late", [&](std::error_code ec) { after_end = ec; }); // the stream is closed
  io.restart();
  io.run();
  for (const std::error_code& ec : {at_exit, after_end}) {
    CHECK(ec.value() == EPIPE);
    CHECK(ec.category() == std::system_category());
    CHECK(ec == boost::system::error_code(boost::asio::error::broken_pipe));
  }
}

// Before the fix: FAILED: CHECK( reused == childproc::errc::stdio_from_used ) with expansion:
// system:0 == childproc:21 (the spent spec took b's pipe, which had its fd number).
TEST_CASE("a spent stdio::from spec is refused even when its fd number names another handed-over "
          "pipe",
          "[stdio][pipes]") {
  asio::io_context io;
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  REQUIRE(null_fd > 2);
  const childproc::spawn_options quiet_source{
      .stdio = {stdio::fd(null_fd), stdio::pipe, stdio::fd(null_fd)}};
  auto a = childproc::spawn(io, test::helper, {"echo", "a"}, quiet_source);
  const childproc::stdio_spec spent = stdio::from(a.out());
  const int number = spent.fd;
  const childproc::spawn_options first{.stdio = {spent, stdio::ignore, stdio::ignore}};
  auto first_reader = childproc::spawn(io, "true", {}, first);
  REQUIRE(::fcntl(number, F_GETFD) < 0); // the spec is spent, its number free
  // Every lower number is taken, so b's pipe (the first fd its spawn makes) gets `number`.
  std::vector<int> fillers;
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) != number;)
    fillers.push_back(fd);
  ::close(number);
  auto b = childproc::spawn(io, test::helper, {"echo", "b"}, quiet_source);
  const childproc::stdio_spec handed = stdio::from(b.out());
  for (const int fd : fillers)
    ::close(fd);
  REQUIRE(handed.fd == number);
  std::error_code reused, right_error;
  std::string mistaken_read, right_read;
  const childproc::spawn_options mistaken_options{.stdio = {spent, stdio::pipe, stdio::ignore}};
  auto mistaken = childproc::spawn(io, test::helper, {"cat"}, mistaken_options, reused);
  if (!reused)
    mistaken.out().on_data([&](std::string_view d) { mistaken_read += d; });
  const childproc::spawn_options right_options{.stdio = {handed, stdio::pipe, stdio::ignore}};
  auto right = childproc::spawn(io, test::helper, {"cat"}, right_options, right_error);
  if (!right_error)
    right.out().on_data([&](std::string_view d) { right_read += d; });
  io.run();
  ::close(null_fd);
  CHECK(reused == childproc::errc::stdio_from_used);
  CHECK(mistaken_read.empty());
  CHECK_FALSE(right_error);
  CHECK(right_read == "b");
}
