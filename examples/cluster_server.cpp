// The source document's cluster server: the primary forks one worker per CPU, every worker
// serves the same port and answers `process <pid> running on <port>`:
//
//   if (cluster.isPrimary) { os.cpus().forEach(() => cluster.fork()) }
//   else { app.listen(9999, () => console.log(`process ${process.pid} running on 9999`)) }
//
// Run with a port to serve for ever (`cluster_server 9999`); without one (as the test does) it
// takes port 0 on 127.0.0.1, makes a few requests itself, prints what it got and shuts down:
// every answer comes from a worker, and the requests of one keep-alive connection all reach one
// worker. (Under round_robin, the default, connections made one after the other go to the
// workers in turn; under shared they often all reach the same idle worker, the one the kernel
// wakes.)
#include "cluster_http.hpp"

#include <boost/asio/io_context.hpp>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <cstdlib>
#include <set>
#include <unistd.h>

namespace asio = boost::asio;
namespace hr = http_router;
using hr::tcp;

namespace {

int worker(tcp::endpoint at) {
  asio::io_context io;
  auto listener = childproc::cluster::listen(io, at);
  const auto port = listener.local_endpoint().port();
  fmt::print("process {} running on {}\n", ::getpid(), port);
  std::fflush(::stdout);
  auto app = std::make_shared<hr::router>();
  app->get("/", hr::sync([port](hr::context& c) {
             hr::send_text(c, fmt::format("process {} running on {}", ::getpid(), port));
           }));
  asio::co_spawn(io, hr::serve(listener, app), asio::detached);
  io.run(); // until the primary disconnects this worker and its connections end
  return 0;
}

// The demonstration: 6 requests on new connections, then 5 on one keep-alive connection.
asio::awaitable<void> demonstrate(tcp::endpoint at, childproc::cluster& primary) {
  std::set<long> pids;
  for (int i = 0; i < 6; ++i) {
    auto connection = co_await hr::connection::open(at);
    const auto body = (co_await connection.get("/")).body();
    pids.insert(cluster_http::pid_in(body));
    fmt::print("new connection: {}\n", body);
  }
  std::set<long> keep_alive_pids;
  auto connection = co_await hr::connection::open(at);
  for (int i = 0; i < 5; ++i) {
    const auto answer = co_await connection.get("/"); // into a variable: a g++ 12 trap
    keep_alive_pids.insert(cluster_http::pid_in(answer.body()));
  }
  std::set<long> worker_pids;
  for (const auto& w : primary.workers())
    worker_pids.insert(*w.pid());
  bool all_workers = true;
  for (long pid : pids)
    all_workers = all_workers && worker_pids.count(pid);
  fmt::print("{} workers, 6 new connections answered by workers only: {}\n", worker_pids.size(),
             all_workers);
  fmt::print("5 keep-alive requests on one connection reached {} pid: {}\n", keep_alive_pids.size(),
             keep_alive_pids.size() == 1);
  childproc::cluster* c = &primary;
  c->async_shutdown([](boost::system::error_code ec) {
    fmt::print("shutdown: {}\n", ec ? ec.message() : "every worker exited");
  });
}

} // namespace

int main(int argc, char** argv) {
  const bool demo = argc < 2;
  const tcp::endpoint at(asio::ip::make_address(demo ? "127.0.0.1" : "0.0.0.0"),
                         static_cast<unsigned short>(demo ? 0 : std::atoi(argv[1])));
  if (childproc::cluster::is_worker())
    return worker(at);

  asio::io_context io;
  childproc::cluster_options options{.endpoint = at}; // workers: one per CPU
  childproc::cluster primary(io, options);
  std::size_t listening = 0;
  primary.on_listening([&](const childproc::cluster_worker&, const tcp::endpoint& where) {
    if (++listening == primary.workers().size() && demo)
      asio::co_spawn(io, demonstrate(where, primary), asio::detached);
  });
  primary.start();
  io.run();
  return 0;
}
