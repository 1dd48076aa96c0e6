// Seed 000, "cluster & fork", in a single process: the blocking /test route holds the only
// event loop, so every other request waits until its loop ends (cluster_blocking.cpp shows the
// cluster's answer: other workers serve them).
//
//   app.get("/test", (req, res) => {
//     for (let i = 0; i < 1e10; i++) {}          // blocks the event loop
//     res.send(`test ok from ${process.pid}`)
//   })
//
// The server runs on the main thread; the client on its own thread, so that it can send /health
// while the server is stuck in /test. The handler says when its loop has started; /health is sent
// then, and the server can only run it once /test's loop has ended. (The two replies reach the
// client in either order: they leave the server microseconds apart.)
#include "http/router.hpp"

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <future>
#include <string>
#include <thread>
#include <unistd.h>

namespace hr = http_router;

int main() {
  boost::asio::io_context server_io;
  std::promise<void> test_started;
  std::vector<std::string> handled; // in the order the server ran them
  auto app = std::make_shared<hr::router>();
  app->get("/test", hr::sync([&](hr::context& c) {
             handled.push_back("/test started");
             test_started.set_value();
             volatile long long sum = 0; // the blocking loop (1e9 rather than 1e10)
             for (long long i = 0; i < 1'000'000'000; ++i)
               sum = sum + i;
             handled.push_back("/test ended");
             c.res.body() = fmt::format("test ok from {}", ::getpid());
           }));
  app->get("/health", hr::sync([&](hr::context& c) {
             handled.push_back("/health (sent while /test ran)");
             c.res.body() = "ok";
           }));

  auto acceptor = hr::listen_loopback(server_io);
  const auto at = acceptor.local_endpoint();
  fmt::print("listening on 127.0.0.1:{}\n", at.port());
  hr::asio::co_spawn(server_io, hr::serve(acceptor, app), hr::asio::detached);

  std::thread client([&] {
    boost::asio::io_context io;
    auto keep_running = boost::asio::make_work_guard(io); // until /health is on its way
    auto get = [&](std::string target) -> hr::awaitable<void> {
      const auto res = co_await hr::fetch(at, hr::http::verb::get, target);
      fmt::print("GET {} -> {}\n", target, res.body());
    };
    hr::asio::co_spawn(io, get("/test"), hr::asio::detached);
    std::thread waiter([&, started = test_started.get_future()]() mutable {
      started.wait(); // /test's loop runs on the server's only thread
      hr::asio::co_spawn(io, get("/health"), hr::asio::detached);
      keep_running.reset();
    });
    io.run();
    waiter.join();
    hr::asio::post(server_io, [&] { acceptor.close(); });
  });
  server_io.run();
  client.join();
  fmt::print("the server handled: {}\n", fmt::join(handled, ", "));
}
