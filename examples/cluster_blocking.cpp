// The source document's blocking route in a cluster:
//
//   app.get("/test", (req, res) => { for (let i = 0; i < 1e10; i++) {} res.send(`test 2 ok from
//   ${process.pid}`) })
//
// A worker busy in that loop blocks only its own connections: new connections reach the other
// workers at once, while a keep-alive connection that belongs to the busy worker waits for it.
// With the `shared` scheduling a busy worker does not accept, so no new connection waits on it.
// (The loop runs for 2 s of wall time here, rather than 1e10 iterations.)
#include "cluster_http.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <unistd.h>

namespace asio = boost::asio;
namespace hr = http_router;
using namespace std::chrono_literals;
using hr::tcp;
using hr::use_awaitable;
using steady = std::chrono::steady_clock;

namespace {

int worker(tcp::endpoint at) {
  asio::io_context io;
  auto listener = childproc::cluster::listen(io, at);
  auto app = std::make_shared<hr::router>();
  app->get("/test", hr::sync([](hr::context& c) {
             const auto end = steady::now() + 2s;
             while (steady::now() < end) {
             } // the CPU loop: nothing else runs in this worker meanwhile
             hr::send_text(c, fmt::format("test 2 ok from {}", ::getpid()));
           }));
  app->get("/", hr::sync([](hr::context& c) {
             hr::send_text(c, fmt::format("process {} running", ::getpid()));
           }));
  asio::co_spawn(io, hr::serve(listener, app), asio::detached);
  io.run();
  return 0;
}

// A GET that records its body and when it was answered (the caller outlives it).
asio::awaitable<void> timed_get(hr::connection& connection, std::string target, std::string& body,
                                steady::time_point& done) {
  body = (co_await connection.get(std::move(target))).body();
  done = steady::now();
}

asio::awaitable<void> demonstrate(tcp::endpoint at, childproc::cluster& primary) {
  // Keep-alive connections until two belong to one worker (there are fewer workers than 8).
  std::vector<hr::connection> streams;
  std::map<long, std::vector<std::size_t>> by_pid;
  long busy = 0;
  while (busy == 0) {
    // Each co_await into a variable, not in an argument list (a g++ 12 trap, docs/design.md).
    auto opened = co_await hr::connection::open(at);
    streams.push_back(std::move(opened));
    const auto answer = co_await streams.back().get("/");
    const long pid = cluster_http::pid_in(answer.body());
    by_pid[pid].push_back(streams.size() - 1);
    if (by_pid[pid].size() == 2)
      busy = pid;
  }
  auto& first = streams[by_pid[busy][0]];
  auto& second = streams[by_pid[busy][1]];
  auto ex = co_await asio::this_coro::executor;

  steady::time_point test_done, keep_alive_done;
  std::string test_body, keep_alive_body;
  asio::co_spawn(ex, timed_get(first, "/test", test_body, test_done), asio::detached);
  asio::steady_timer pause(ex, 200ms); // /test has reached the worker
  co_await pause.async_wait(use_awaitable);
  asio::co_spawn(ex, timed_get(second, "/", keep_alive_body, keep_alive_done), asio::detached);

  std::set<long> answered_by;
  for (int i = 0; i < 5; ++i) {
    auto connection = co_await hr::connection::open(at);
    const auto answer = co_await connection.get("/");
    answered_by.insert(cluster_http::pid_in(answer.body()));
  }
  const auto new_done = steady::now();
  while (keep_alive_done == steady::time_point{} || test_done == steady::time_point{}) {
    pause.expires_after(20ms);
    co_await pause.async_wait(use_awaitable);
  }
  fmt::print("GET /test on pid {}: {}\n", busy, test_body);
  fmt::print("5 new connections while it was busy were answered by other pids: {} (before /test "
             "ended: {})\n",
             answered_by.count(busy) == 0, new_done < test_done);
  fmt::print("a keep-alive connection to pid {} waited for /test: {}\n", busy,
             keep_alive_done >= test_done);
  streams.clear();
  primary.async_shutdown([](boost::system::error_code ec) {
    fmt::print("shutdown: {}\n", ec ? ec.message() : "every worker exited");
  });
}

} // namespace

int main() {
  const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), 0);
  if (childproc::cluster::is_worker())
    return worker(at);

  asio::io_context io;
  // One worker per CPU, and at least two, so that there is another worker to show.
  const std::size_t workers = std::max(2u, std::thread::hardware_concurrency());
  // shared, not the default round_robin: a busy worker then takes no new connection. Under
  // round_robin (Node's default) a worker that acknowledged its last connection before it
  // blocked is handed the next one, which waits for the loop to end.
  childproc::cluster_options options{
      .workers = workers, .scheduling = childproc::scheduling::shared, .endpoint = at};
  childproc::cluster primary(io, options);
  std::size_t listening = 0;
  primary.on_listening([&](const childproc::cluster_worker&, const tcp::endpoint& where) {
    if (++listening == workers)
      asio::co_spawn(io, demonstrate(where, primary), asio::detached);
  });
  primary.start();
  io.run();
  return 0;
}
