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
//
// The server and the client (Beast's reads and writes, the session loop) are compiled once, in
// router.cpp (the library http_router): instantiated in every example, they were most of each
// one's compile time. This header declares them, with Beast's message types only.
#pragma once

#include <childproc/cluster.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
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
void send_json(context& c, const json::value& value, http::status status = http::status::ok);
// res.send(text): a 200 with a text/plain body.
void send_text(context& c, std::string text);

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
  router& use(middleware m);
  // app.use(prefix, router): the mounted router sees the path below the prefix.
  router& use(std::string prefix, std::shared_ptr<router> mounted);
  router& get(std::string path, handler h) { return route(http::verb::get, std::move(path), h); }
  router& post(std::string path, handler h) { return route(http::verb::post, std::move(path), h); }
  router& route(http::verb method, std::string path, handler h);

  // Runs this router's middleware, then the first matching route or mount. False: no match.
  awaitable<bool> dispatch(context& c) const;

private:
  struct entry {
    http::verb method;
    std::string path;
    handler run;
  };
  // Middleware runs only for requests this router can route (a mounted router's only for paths
  // under its prefix, as in Express), so a 404 passes no authentication or logging.
  bool matches_anything(const context& c) const;

  std::vector<middleware> middleware_;
  std::vector<entry> routes_;
  std::vector<std::pair<std::string, std::shared_ptr<router>>> mounts_;
};

// "a=1&b=2" into a map (no percent-decoding: the examples' values are plain).
std::map<std::string, std::string> parse_query(std::string_view q);

// The accept loop, until the acceptor is closed. Each connection serves requests in turn
// (keep-alive) until the client closes it or asks for Connection: close; once the acceptor is
// closed, the current response says Connection: close.
awaitable<void> serve(tcp::acceptor& acceptor, std::shared_ptr<const router> app);
// The same over a cluster worker's listener (whatever the scheduling): the cluster examples.
awaitable<void> serve(childproc::cluster_listener& listener, std::shared_ptr<const router> app);

// An acceptor on 127.0.0.1, port 0: the system picks a free port.
tcp::acceptor listen_loopback(asio::io_context& io);

// The client side: one request on a new connection (Connection: close); the response.
awaitable<response> fetch(tcp::endpoint at, http::verb method, std::string target,
                          std::string body = {},
                          std::vector<std::pair<std::string, std::string>> headers = {});

// A client connection kept alive over several requests (the cluster examples: the requests of
// one connection all reach one worker).
class connection {
public:
  static awaitable<connection> open(tcp::endpoint at);
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  ~connection();

  // One GET on this connection (keep-alive): the response.
  awaitable<response> get(std::string target);

private:
  struct state;
  explicit connection(std::unique_ptr<state> s) noexcept;
  std::unique_ptr<state> state_;
};

// Prints "METHOD target -> status body", as the examples' output.
std::string show(http::verb method, std::string_view target, const response& res);

// Runs `client` against `app` served on 127.0.0.1, port 0 (the port is printed first), then
// closes the server. Returns when the io_context has nothing left (every child reaped).
void run_with_client(asio::io_context& io, std::shared_ptr<const router> app,
                     std::function<awaitable<void>(tcp::endpoint)> client);

} // namespace http_router
