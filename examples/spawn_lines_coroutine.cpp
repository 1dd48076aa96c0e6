// Reads a child's output line by line in a coroutine (Node: for await (const line of
// readline.createInterface({input: child.stdout}))).
#include <childproc/childproc.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <fmt/format.h>

namespace asio = boost::asio;

asio::awaitable<void> number_lines() {
  auto ex = co_await asio::this_coro::executor; // on its own line (g++ 12, see docs/spawn.md)
  auto child = childproc::spawn(ex, "printf", {"alpha\\nbeta\\ngamma"});
  int count = 0;
  for (;;) {
    auto [ec, line] =
        co_await childproc::async_read_line(child.out(), asio::as_tuple(asio::use_awaitable));
    if (ec)
      break; // asio::error::eof: the last line ("gamma", without '\n') came before it
    fmt::print("line {}: {}\n", ++count, line);
  }
  auto status = co_await child.async_wait(asio::use_awaitable);
  fmt::print("{} lines, exit code {}\n", count, status.code.value_or(-1));
}

int main() {
  asio::io_context io;
  asio::co_spawn(io, number_lines(), asio::detached);
  io.run();
}
