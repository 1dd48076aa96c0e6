#include "load_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <memory>
#include <string>

namespace demo {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

double ms_since(clock::time_point start) {
  return std::chrono::duration<double, std::milli>(clock::now() - start).count();
}

// One keep-alive connection that sends GETs one at a time.
class connection {
public:
  explicit connection(asio::io_context& io) : stream_(io) {}

  asio::awaitable<bool> connect(unsigned short port) {
    stream_.expires_after(std::chrono::seconds(10));
    const tcp::endpoint server(asio::ip::make_address("127.0.0.1"), port);
    auto [ec] = co_await stream_.async_connect(server, use_tuple);
    co_return !ec;
  }
  /// The request's latency in ms, or a negative number when it failed.
  asio::awaitable<double> get(const char* target) {
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.keep_alive(true);
    const auto start = clock::now();
    stream_.expires_after(std::chrono::seconds(30));
    auto [write_error, written] = co_await http::async_write(stream_, req, use_tuple);
    if (write_error)
      co_return -1.0;
    http::response<http::string_body> res;
    auto [read_error, read] = co_await http::async_read(stream_, buffer_, res, use_tuple);
    if (read_error || res.result() != http::status::ok)
      co_return -1.0;
    co_return ms_since(start);
  }
  void close() {
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

private:
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

struct load_run {
  const load_options& options;
  load_result result;
  clock::time_point start = clock::now();
  std::size_t heavy_sent = 0;
  std::size_t heavy_running = 0; // connections still sending /heavy-task

  bool may_send_heavy() const {
    return clock::now() - start < options.duration && heavy_sent < options.max_heavy_requests;
  }
};

asio::awaitable<void> heavy_loop(load_run& run, connection& link) {
  while (run.may_send_heavy()) {
    ++run.heavy_sent;
    const double latency = co_await link.get("/heavy-task");
    if (latency < 0) {
      ++run.result.errors;
      break;
    }
    run.result.heavy_ms.push_back(latency);
    ++run.result.heavy_completed;
    run.result.seconds = ms_since(run.start) / 1000;
  }
  --run.heavy_running;
}

// Probes /health for as long as a /heavy-task connection is busy.
asio::awaitable<void> probe_loop(load_run& run, connection& link) {
  asio::steady_timer pause(co_await asio::this_coro::executor);
  while (run.heavy_running > 0) {
    const double latency = co_await link.get("/health");
    if (latency < 0) {
      ++run.result.errors;
      co_return;
    }
    run.result.health_ms.push_back(latency);
    pause.expires_after(run.options.probe_interval);
    co_await pause.async_wait(use_tuple);
  }
}

asio::awaitable<void> drive(load_run& run, std::vector<std::unique_ptr<connection>>& links) {
  for (auto& link : links)
    if (!co_await link->connect(run.options.port)) {
      ++run.result.errors;
      co_return;
    }
  // A first, unmeasured /heavy-task on each connection (one after the other: a blocked loop
  // must not fail them): the workers have started and answered before the clock starts.
  for (std::size_t i = 1; i < links.size(); ++i)
    if (co_await links[i]->get("/heavy-task") < 0) {
      ++run.result.errors;
      co_return;
    }
  run.start = clock::now();
  auto executor = co_await asio::this_coro::executor;
  run.heavy_running = links.size() - 1;
  for (std::size_t i = 1; i < links.size(); ++i)
    asio::co_spawn(executor, heavy_loop(run, *links[i]), asio::detached);
  co_await probe_loop(run, *links[0]);
  while (run.heavy_running > 0) { // the probe failed: let the heavy requests end
    asio::steady_timer wait(executor, std::chrono::milliseconds(10));
    co_await wait.async_wait(use_tuple);
  }
  for (auto& link : links)
    link->close();
}

} // namespace

load_result run_load(const load_options& options) {
  asio::io_context io;
  std::vector<std::unique_ptr<connection>> links;
  for (std::size_t i = 0; i < options.heavy_connections + 1; ++i) // links[0] probes /health
    links.push_back(std::make_unique<connection>(io));
  load_run run{options, {}};
  asio::co_spawn(io, drive(run, links), asio::detached);
  io.run();
  return run.result;
}

} // namespace demo
