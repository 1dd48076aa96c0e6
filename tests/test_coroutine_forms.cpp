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
