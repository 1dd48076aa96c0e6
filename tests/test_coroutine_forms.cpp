// The natural coroutine and executor spellings of spawn and async_exec (issue 9, points 8-9):
// they compile and run under g++ 12 as under clang 14.
#include "common.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

// Before the fix: did not compile ("no matching function for call to 'async_exec(
// boost::asio::io_context::executor_type, ...)'": the executor was taken by lvalue reference).
TEST_CASE("async_exec and async_exec_file take an executor by value", "[exec][coroutines]") {
  asio::io_context io;
  std::vector<std::string> outs;
  const auto record = [&](boost::system::error_code ec, childproc::exec_result r) {
    CHECK_FALSE(ec);
    outs.push_back(r.out);
  };
  childproc::async_exec(io.get_executor(), "echo executor", record);
  childproc::async_exec(asio::make_strand(io), "echo strand", record);
  const std::vector<std::string> args = {"echo", "file"};
  childproc::async_exec_file(io.get_executor(), test::helper, args, record);
  const auto strand = asio::make_strand(io);
  childproc::async_exec_file(strand, test::helper, args, childproc::exec_options{}, record);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto r = co_await childproc::async_exec(co_await asio::this_coro::executor, "echo inline",
                                                asio::use_awaitable);
        outs.push_back(r.out);
      },
      asio::detached);
  io.run();
  std::sort(outs.begin(), outs.end());
  CHECK(outs == std::vector<std::string>{"executor\n", "file", "file", "inline\n", "strand\n"});
}

// Before the fix: aborted under g++ 12 ("free(): invalid pointer"): the `{}` options aggregate
// built inside the co_await was destroyed twice.
TEST_CASE("co_await async_exec with {} for the options runs under g++ 12", "[exec][coroutines]") {
  asio::io_context io;
  std::string out, file_out;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        auto r = co_await childproc::async_exec(ex, "echo hi", {}, asio::use_awaitable);
        out = r.out;
        const std::vector<std::string> args = {"echo", "there"};
        auto f =
            co_await childproc::async_exec_file(ex, test::helper, args, {}, asio::use_awaitable);
        file_out = f.out;
      },
      asio::detached);
  io.run();
  CHECK(out == "hi\n");
  CHECK(file_out == "there");
}

// Before the fix: aborted under g++ 12 ("free(): invalid pointer"): the default argument
// `spawn_options options = {}`, an aggregate built in the co_await's full expression, was
// destroyed twice (the issue saw a hang: what a double free does varies).
TEST_CASE("spawn(co_await this_coro::executor, ...) runs under g++ 12", "[spawn][coroutines]") {
  asio::io_context io;
  std::string out;
  std::optional<int> code;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        const std::vector<std::string> args = {"echo", "inline"};
        auto child = childproc::spawn(co_await asio::this_coro::executor, test::helper, args);
        child.out().on_data([&](std::string_view d) { out += d; });
        auto status = co_await child.async_wait(asio::use_awaitable);
        code = status.code;
        const std::vector<std::string> exit_args = {"exit", "0"};
        auto forked = childproc::fork(co_await asio::this_coro::executor, test::helper, exit_args);
        co_await forked.async_wait(asio::use_awaitable);
      },
      asio::detached);
  io.run();
  CHECK(out == "inline");
  CHECK(code == 0);
}
