// A tiny HTTP dispatcher for the examples, on Boost.Beast: method + path routes, and routers
// mounted at a prefix with their own middleware, as Express's app.use / express.Router.
//
// childproc is not a web framework, and this is not its API: it is the least the seeds' route
// snippets need, kept in the examples. For a real C++ web framework, see README.md here (Crow,
// Drogon, oatpp).
//
// A middleware runs before the routes of its router and returns whether to go on (Express's
// next()); returning false means it has written the response. A handler is a coroutine, so a
// route can await a worker (a fork's reply, a pool task) without blocking the event loop.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace http_router {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

// What a handler sees: the request, the path below the router's mount point, the query.
struct context {
  const request& req;
  std::string_view path;
  std::map<std::string, std::string> query;
  response& res;
};

using middleware = std::function<bool(context&)>;
using handler = std::function<awaitable<void>(context&)>;

// res.json(value): a 200 (or `status`) with a JSON body.
inline void send_json(context& c, const json::value& value,
                      http::status status = http::status::ok) {
  c.res.result(status);
  c.res.set(http::field::content_type, "application/json");
  c.res.body() = json::serialize(value);
}

// A plain function as a handler, for routes that answer at once.
template <class F>
handler sync(F f) {
  return [f = std::move(f)](context& c) -> awaitable<void> {
    f(c);
    co_return;
  };
}

class router {
public:
  router& use(middleware m) {
    middleware_.push_back(std::move(m));
    return *this;
  }
  // app.use(prefix, router): the mounted router sees the path below the prefix.
  router& use(std::string prefix, std::shared_ptr<router> mounted) {
    mounts_.emplace_back(std::move(prefix), std::move(mounted));
    return *this;
  }
  router& get(std::string path, handler h) { return route(http::verb::get, std::move(path), h); }
  router& post(std::string path, handler h) { return route(http::verb::post, std::move(path), h); }
  router& route(http::verb method, std::string path, handler h) {
    routes_.push_back({method, std::move(path), std::move(h)});
    return *this;
  }

  // Runs this router's middleware, then the first matching route or mount. False: no match.
  awaitable<bool> dispatch(context& c) const {
    if (!matches_anything(c))
      co_return false;
    for (const auto& m : middleware_)
      if (!m(c))
        co_return true;
    for (const auto& r : routes_)
      if (r.method == c.req.method() && same_path(r.path, c.path)) {
        co_await r.run(c);
        co_return true;
      }
    for (const auto& [prefix, mounted] : mounts_)
      if (const auto below = below_prefix(prefix, c.path)) {
        context inner{c.req, *below, c.query, c.res};
        if (co_await mounted->dispatch(inner))
          co_return true;
      }
    co_return false;
  }

private:
  struct entry {
    http::verb method;
    std::string path;
    handler run;
  };

  static bool same_path(std::string_view a, std::string_view b) {
    auto trim = [](std::string_view p) { return p.empty() ? std::string_view("/") : p; };
    return trim(a) == trim(b);
  }
  // "/api/users" mounted: "/api/users" and "/api/users/7" are below it, "/api/usersx" is not.
  static std::optional<std::string_view> below_prefix(std::string_view prefix,
                                                      std::string_view path) {
    if (path.substr(0, prefix.size()) != prefix)
      return std::nullopt;
    const auto rest = path.substr(prefix.size());
    if (!rest.empty() && rest.front() != '/')
      return std::nullopt;
    return rest;
  }
  // Middleware runs only for requests this router can route (a mounted router's only for paths
  // under its prefix, as in Express), so a 404 passes no authentication or logging.
  bool matches_anything(const context& c) const {
    for (const auto& r : routes_)
      if (same_path(r.path, c.path))
        return true;
    for (const auto& [prefix, mounted] : mounts_)
      if (below_prefix(prefix, c.path))
        return true;
    return false;
  }

  std::vector<middleware> middleware_;
  std::vector<entry> routes_;
  std::vector<std::pair<std::string, std::shared_ptr<router>>> mounts_;
};

// "a=1&b=2" into a map (no percent-decoding: the examples' values are plain).
inline std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const auto pair = q.substr(0, amp);
    const auto eq = pair.find('=');
    out[std::string(pair.substr(0, eq))] =
        eq == pair.npos ? std::string() : std::string(pair.substr(eq + 1));
    q = amp == q.npos ? std::string_view() : q.substr(amp + 1);
  }
  return out;
}

// One connection, one request (Connection: close): the examples' clients open one per request.
inline awaitable<void> session(tcp::socket socket, std::shared_ptr<router> app) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  request req;
  auto [read_ec, n] = co_await http::async_read(stream, buffer, req, asio::as_tuple(use_awaitable));
  if (read_ec)
    co_return;
  response res{http::status::ok, req.version()};
  const std::string_view target = req.target();
  const auto question = target.find('?');
  context c{req, target.substr(0, question),
            question == target.npos ? std::map<std::string, std::string>{}
                                    : parse_query(target.substr(question + 1)),
            res};
  if (!co_await app->dispatch(c))
    send_json(c, {{"error", "not found"}}, http::status::not_found);
  res.keep_alive(false);
  res.prepare_payload();
  co_await http::async_write(stream, res, asio::as_tuple(use_awaitable));
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// The accept loop, until the acceptor is closed.
inline awaitable<void> serve(tcp::acceptor& acceptor, std::shared_ptr<router> app) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(use_awaitable));
    if (ec)
      co_return;
    asio::co_spawn(acceptor.get_executor(), session(std::move(socket), app), asio::detached);
  }
}

// An acceptor on 127.0.0.1, port 0: the system picks a free port.
inline tcp::acceptor listen_loopback(asio::io_context& io) {
  return tcp::acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
}

// The client side: one request on a new connection; the response.
inline awaitable<response> fetch(tcp::endpoint at, http::verb method, std::string target,
                                 std::string body = {},
                                 std::vector<std::pair<std::string, std::string>> headers = {}) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  co_await stream.async_connect(at, use_awaitable);
  request req{method, target, 11};
  req.set(http::field::host, "127.0.0.1");
  for (const auto& [name, value] : headers)
    req.set(name, value);
  req.body() = std::move(body);
  req.prepare_payload();
  co_await http::async_write(stream, req, use_awaitable);
  beast::flat_buffer buffer;
  response res;
  co_await http::async_read(stream, buffer, res, use_awaitable);
  co_return res;
}

// Prints "METHOD target -> status body", as the examples' output.
inline std::string show(http::verb method, std::string_view target, const response& res) {
  return std::string(http::to_string(method)) + " " + std::string(target) + " -> " +
         std::to_string(res.result_int()) + " " + res.body();
}

// Runs `client` against `app` served on 127.0.0.1, port 0 (the port is printed first), then
// closes the server. Returns when the io_context has nothing left (every child reaped).
template <class Client>
void run_with_client(asio::io_context& io, std::shared_ptr<router> app, Client client) {
  auto acceptor = listen_loopback(io);
  const auto at = acceptor.local_endpoint();
  std::printf("listening on 127.0.0.1:%u\n", unsigned(at.port()));
  std::fflush(nullptr);
  asio::co_spawn(io, serve(acceptor, app), asio::detached);
  asio::co_spawn(
      io,
      [&acceptor, &client, at]() -> awaitable<void> {
        co_await client(at);
        acceptor.close();
      },
      [](std::exception_ptr e) {
        if (e)
          std::rethrow_exception(e);
      });
  io.run();
}

} // namespace http_router
