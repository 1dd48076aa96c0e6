// spawn_sync(): Node's spawnSync result, input, timeout and max_buffer.
#include "common.hpp"

#include <chrono>
#include <csignal>

using namespace std::chrono_literals;

TEST_CASE("spawn_sync returns pid, output and status", "[spawn_sync]") {
  auto r = childproc::spawn_sync("/bin/sh", {"-c", "echo out; echo err >&2; exit 3"});
  CHECK(r.pid);
  CHECK(r.out == "out\n");
  CHECK(r.err == "err\n");
  CHECK(r.status == 3);
  CHECK_FALSE(r.signal);
  CHECK_FALSE(r.error); // a non-zero exit is not an error here, as in Node
  CHECK(test::reaped(*r.pid));
}

TEST_CASE("spawn_sync feeds input to stdin", "[spawn_sync]") {
  std::string input(300000, 'q');
  input += "end";
  auto r = childproc::spawn_sync(test::helper, {"cat"}, {.input = input});
  CHECK(r.out == input);
  CHECK(r.status == 0);
}

TEST_CASE("spawn_sync input to a child that never reads is not an error", "[spawn_sync]") {
  auto r = childproc::spawn_sync(test::helper, {"exit", "0"}, {.input = std::string(1 << 20, 'x')});
  CHECK(r.status == 0);
  CHECK_FALSE(r.error);
}

TEST_CASE("spawn_sync timeout kills with kill_signal and reports ETIMEDOUT", "[spawn_sync]") {
  const auto start = std::chrono::steady_clock::now();
  childproc::spawn_sync_options o;
  o.timeout = 100ms;
  auto r = childproc::spawn_sync(test::helper, {"sleep", "10000"}, o);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK((r.error && r.error->code() == std::errc::timed_out));
  CHECK(r.signal == SIGTERM);
  CHECK_FALSE(r.status);
}

TEST_CASE("spawn_sync max_buffer: exactly max_buffer passes, one more is ENOBUFS",
          "[spawn_sync][max_buffer]") {
  childproc::spawn_sync_options o;
  o.max_buffer = 5;
  auto exact = childproc::spawn_sync(test::helper, {"echo", "12345"}, o);
  CHECK_FALSE(exact.error);
  CHECK(exact.out == "12345");
  auto over = childproc::spawn_sync(test::helper, {"echo", "123456"}, o);
  CHECK((over.error && over.error->code() == std::errc::no_buffer_space));
  CHECK(over.out == "123456"); // what was read is kept, as in Node
}

TEST_CASE("spawn_sync max_buffer kills a child that keeps writing", "[spawn_sync][max_buffer]") {
  childproc::spawn_sync_options o;
  o.max_buffer = 1024 * 1024;
  auto r = childproc::spawn_sync("yes", {}, o);
  CHECK((r.error && r.error->code() == std::errc::no_buffer_space));
  CHECK(r.signal == SIGTERM);
  CHECK(r.out.value().size() > o.max_buffer);
}

TEST_CASE("spawn_sync of a missing program puts ENOENT in the result", "[spawn_sync][errors]") {
  auto r = childproc::spawn_sync("childproc-no-such-program");
  CHECK((r.error && r.error->code() == std::errc::no_such_file_or_directory));
  CHECK_FALSE(r.pid);
  CHECK_FALSE(r.status);
}

TEST_CASE("spawn_sync throws, or sets ec, for a bad cwd", "[spawn_sync][errors]") {
  childproc::spawn_sync_options o;
  o.cwd = "/no/such/dir";
  CHECK_THROWS_AS(childproc::spawn_sync(test::helper, {"cwd"}, o), childproc::process_error);
  std::error_code ec;
  auto r = childproc::spawn_sync(test::helper, {"cwd"}, o, ec);
  CHECK(ec == std::errc::no_such_file_or_directory);
  CHECK_FALSE(r.pid);
}

// Before the fix: out held 1884160 and 7458816 bytes when kill_after's SIGKILL finally came
// (the pipes were read on past the limit; without kill_after, for ever: +2 GiB in 4 s).
TEST_CASE("spawn_sync stops reading past max_buffer when the child survives kill_signal",
          "[spawn_sync][max_buffer]") {
  const auto start = std::chrono::steady_clock::now();
  // The child ignores SIGTERM and SIGPIPE and keeps running after its writes fail: kill_after.
  auto stubborn = childproc::spawn_sync(test::helper, {"stubborn-flood", "wait"},
                                        {.kill_after = 500ms, .max_buffer = 1024});
  CHECK(std::chrono::steady_clock::now() - start < 30s);
  CHECK((stubborn.error && stubborn.error->code() == std::errc::no_buffer_space));
  CHECK(stubborn.out.value().size() > 1024);
  CHECK(stubborn.out.value().size() <=
        1024 + 256 * 1024); // what was read, at most one read past it
  CHECK(stubborn.signal == SIGKILL);
  // The pipes are closed: the child's next write fails with EPIPE.
  auto told = childproc::spawn_sync(test::helper, {"stubborn-flood", "exit"},
                                    {.kill_after = 2s, .max_buffer = 1024});
  CHECK((told.error && told.error->code() == std::errc::no_buffer_space));
  CHECK(told.status == EPIPE);
  CHECK(told.out.value().size() <= 1024 + 256 * 1024);
}
