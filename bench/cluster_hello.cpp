// The cluster workload's server (bench/cluster_load.py loads it with wrk): a hello-world Beast
// server on childproc::cluster, the same handler as bench/cluster.js (Node's cluster with
// node:http). The primary forks the workers (this binary) on 127.0.0.1, port 0 unless --port is
// given, and prints `ready <port>` once every worker reported `listening`; SIGTERM or SIGINT shuts
// the cluster down gracefully (every worker disconnected and reaped), then it exits 0.
//
// Usage: childproc_bench_cluster [--workers N] [--scheduling shared|reuse_port|round_robin]
//                                [--port P]
#include <childproc/cluster.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::use_awaitable;

struct settings {
  std::size_t workers = 1;
  childproc::scheduling scheduling = childproc::scheduling::shared;
  unsigned short port = 0;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(::stderr,
               "childproc_bench_cluster: %s\nusage: childproc_bench_cluster [--workers N] "
               "[--scheduling shared|reuse_port|round_robin] [--port P]\n",
               why);
  std::exit(2);
}

settings parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc)
      usage("an option without its value");
    const std::string_view value = argv[++i];
    if (arg == "--workers") {
      s.workers = std::strtoul(argv[i], nullptr, 10);
      if (s.workers == 0)
        usage("--workers must be at least 1");
    } else if (arg == "--scheduling") {
      if (value == "shared")
        s.scheduling = childproc::scheduling::shared;
      else if (value == "reuse_port")
        s.scheduling = childproc::scheduling::reuse_port;
      else if (value == "round_robin")
        s.scheduling = childproc::scheduling::round_robin;
      else
        usage("unknown scheduling");
    } else if (arg == "--port") {
      s.port = static_cast<unsigned short>(std::strtoul(argv[i], nullptr, 10));
    } else {
      usage("unknown option");
    }
  }
  return s;
}

// node:http's `res.end('hello world')` with a text/plain Content-Type: one request after the other
// on a keep-alive connection, until the client closes it or the worker is disconnected (then the
// response says Connection: close, so that the worker can exit).
asio::awaitable<void> session(tcp::socket socket, childproc::cluster_listener& listener) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request<http::string_body> req;
    auto [read_ec, n] =
        co_await http::async_read(stream, buffer, req, asio::as_tuple(use_awaitable));
    if (read_ec)
      break;
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/plain");
    res.body() = "hello world";
    res.keep_alive(req.keep_alive() && listener.is_open());
    res.prepare_payload();
    auto [write_ec, m] = co_await http::async_write(stream, res, asio::as_tuple(use_awaitable));
    if (write_ec || !res.keep_alive())
      break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> accept_loop(childproc::cluster_listener& listener) {
  for (;;) {
    auto [ec, socket] = co_await listener.async_accept(asio::as_tuple(use_awaitable));
    if (ec)
      co_return; // closed: the primary disconnected this worker
    asio::co_spawn(listener.get_executor(), session(std::move(socket), listener), asio::detached);
  }
}

// One thread per worker, as a Node worker has one event loop.
int worker(const tcp::endpoint& at) {
  asio::io_context io(1);
  auto listener = childproc::cluster::listen(io, at);
  asio::co_spawn(io, accept_loop(listener), asio::detached);
  io.run(); // until the primary disconnects this worker and its connections end
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const auto s = parse(argc, argv);
  const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), s.port);
  if (childproc::cluster::is_worker())
    return worker(at);

  asio::io_context io(1);
  childproc::cluster primary(io, {.workers = s.workers,
                                  .scheduling = s.scheduling,
                                  .endpoint = at,
                                  .autorestart = false}); // a worker lost is a failed run
  std::size_t listening = 0;
  int status = 0;
  primary.on_listening([&](const childproc::cluster_worker&, const tcp::endpoint& where) {
    if (++listening == s.workers) {
      std::printf("ready %u\n", static_cast<unsigned>(where.port()));
      std::fflush(::stdout);
    }
  });
  bool stopping = false;
  primary.on_exit([&](const childproc::cluster_worker& w, auto code, auto signal) {
    if (stopping)
      return;
    std::fprintf(::stderr, "childproc_bench_cluster: worker %u exited (code %d, signal %d)\n",
                 w.id(), code.value_or(-1), signal.value_or(0));
    status = 1;
  });
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (ec)
      return;
    stopping = true;
    primary.async_shutdown([&](boost::system::error_code) { io.stop(); });
  });
  primary.start();
  io.run(); // until the shutdown has reaped every worker
  return status;
}
