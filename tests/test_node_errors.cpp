// Node's error surface: codes a user can test, error fields, messages, signal names, absent
// streams, stdio forms and the environment's order (issue 10).
#include "common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/system/system_error.hpp>

#include <cerrno>
#include <future>

namespace {

const std::string missing = "/nonexistent/childproc-missing-program";

// What a test records of one boost error_code.
struct seen_code {
  int value = 0;
  std::string category;
  bool is_enoent = false;
};

seen_code seen(const boost::system::error_code& ec) {
  return {ec.value(), ec.category().name(), ec == std::errc::no_such_file_or_directory};
}
seen_code seen(const std::error_code& ec) {
  return {ec.value(), ec.category().name(), ec == std::errc::no_such_file_or_directory};
}

void check_enoent(const seen_code& s) {
  INFO("value " << s.value << " category " << s.category);
  CHECK(s.value == ENOENT);
  CHECK(s.category == "system");
  CHECK(s.is_enoent);
}

} // namespace

// Before the fix: value 1238018002 category std:unknown in the callback, future and awaitable
// forms (Boost 1.81 wraps a std::error_code of std::system_category opaquely).
TEST_CASE("an OS error arrives as its errno in the system category in every form",
          "[node-errors]") {
  asio::io_context io;
  std::vector<seen_code> got;
  childproc::async_exec_file(io, missing, {},
                             [&](boost::system::error_code ec, auto) { got.push_back(seen(ec)); });
  auto child = childproc::spawn(io, missing);
  child.async_wait([&](boost::system::error_code ec, auto) { got.push_back(seen(ec)); });
  auto waited = childproc::spawn(io, missing);
  auto future = waited.async_wait(asio::use_future);
  auto awaited = childproc::spawn(io, missing);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await awaited.async_wait(asio::use_awaitable);
        } catch (const std::system_error& e) {
          got.push_back(seen(e.code()));
        } catch (const boost::system::system_error& e) {
          got.push_back(seen(e.code()));
        }
      },
      asio::detached);
  io.run();
  try {
    future.get();
  } catch (const std::system_error& e) {
    got.push_back(seen(e.code()));
  } catch (const boost::system::system_error& e) {
    got.push_back(seen(e.code()));
  }
  std::error_code sync_ec;
  childproc::exec_file_sync(missing, {}, {}, sync_ec);
  got.push_back(seen(sync_ec));
  got.push_back(seen(childproc::spawn_sync(missing).error));

  REQUIRE(got.size() == 6);
  for (const auto& s : got)
    check_enoent(s);
}

// Before the fix: the callback form gave category "std:unknown" and a value other than
// errc::nonzero_exit; a std code converted to boost was not in "childproc" either.
TEST_CASE("childproc's own codes arrive in the category named childproc in every form",
          "[node-errors]") {
  const int nonzero = static_cast<int>(childproc::errc::nonzero_exit);
  asio::io_context io;
  std::vector<std::pair<int, std::string>> got;
  childproc::async_exec_file(io, test::helper, {"exit", "3"},
                             [&](boost::system::error_code ec, auto) {
                               got.emplace_back(ec.value(), ec.category().name());
                             });
  auto future = childproc::async_exec_file(io, test::helper, {"exit", "3"}, asio::use_future);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        std::vector<std::string> args{"exit", "3"};
        try {
          co_await childproc::async_exec_file(ex, test::helper, args, asio::use_awaitable);
        } catch (const childproc::exec_error& e) {
          got.emplace_back(e.code().value(), e.code().category().name());
        }
      },
      asio::detached);
  io.run();
  try {
    future.get();
  } catch (const childproc::exec_error& e) {
    got.emplace_back(e.code().value(), e.code().category().name());
  }
  std::error_code sync_ec;
  childproc::exec_file_sync(test::helper, {"exit", "3"}, {}, sync_ec);
  got.emplace_back(sync_ec.value(), sync_ec.category().name());

  REQUIRE(got.size() == 4);
  for (const auto& [value, category] : got) {
    CHECK(value == nonzero);
    CHECK(category == "childproc");
  }
  // The same code, seen as either kind, compares equal to the enum.
  boost::system::error_code as_boost = std::error_code(childproc::errc::timed_out);
  CHECK(std::string(as_boost.category().name()) == "childproc");
  CHECK(as_boost == std::errc::timed_out);
  CHECK(std::error_code(as_boost) == childproc::errc::timed_out);
}

// Before the fix: did not compile (no kill(name), no kill_signal by name), and (test_errors)
// signal_number("SIGFOO") returned 0, which kill() takes as a probe that "succeeds".
TEST_CASE("signals by name: kill and kill_signal take Node's names; an unknown name is an error",
          "[node-errors]") {
  std::error_code ec;
  CHECK(childproc::signal_number("SIGTERM", ec) == SIGTERM);
  CHECK_FALSE(ec);
  CHECK(childproc::signal_number("SIGFOO", ec) == 0);
  CHECK(ec == childproc::errc::unknown_signal);
  CHECK(ec == std::errc::invalid_argument);
  CHECK_THROWS_WITH(childproc::signal_number("SIGFOO"), Catch::Contains("Unknown signal: SIGFOO"));

  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"sleep", "10000"});
  CHECK_FALSE(child.kill("SIGFOO", ec));
  CHECK(ec == childproc::errc::unknown_signal);
  CHECK_THROWS_AS(child.kill("SIGFOO"), std::system_error);
  CHECK_FALSE(child.killed()); // nothing was sent, not even a probe
  std::optional<int> signal;
  child.on_exit([&](std::optional<int>, std::optional<int> s) { signal = s; });
  CHECK(child.kill("SIGINT"));
  io.run();
  CHECK(signal == SIGINT);

  asio::io_context io2;
  childproc::spawn_options by_name{.timeout = std::chrono::milliseconds(50),
                                   .kill_signal = "SIGUSR1"};
  auto timed = childproc::spawn(io2, test::helper, {"sleep", "10000"}, by_name);
  std::optional<int> timed_signal;
  timed.on_exit([&](std::optional<int>, std::optional<int> s) { timed_signal = s; });
  io2.run();
  CHECK(timed_signal == SIGUSR1);

  childproc::spawn_options unknown{.kill_signal = "SIGFOO"};
  auto none = childproc::spawn(io2, test::helper, {"exit", "0"}, unknown, ec);
  CHECK(ec == childproc::errc::unknown_signal);
  CHECK_FALSE(none);
}
