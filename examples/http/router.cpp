// The examples' HTTP dispatcher and its Beast server and client, compiled once (router.hpp says
// why).
#include "router.hpp"

#include <childproc/cluster.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <cstdio>
#include <exception>

namespace http_router {

void send_json(context& c, const json::value& value, http::status status) {
  c.res.result(status);
  c.res.set(http::field::content_type, "application/json");
  c.res.body() = json::serialize(value);
}

void send_text(context& c, std::string text) {
  c.res.set(http::field::content_type, "text/plain");
  c.res.body() = std::move(text);
}

namespace {

bool same_path(std::string_view a, std::string_view b) {
  auto trim = [](std::string_view p) { return p.empty() ? std::string_view("/") : p; };
  return trim(a) == trim(b);
}

// "/api/users" mounted: "/api/users" and "/api/users/7" are below it, "/api/usersx" is not.
std::optional<std::string_view> below_prefix(std::string_view prefix, std::string_view path) {
  if (path.substr(0, prefix.size()) != prefix)
    return std::nullopt;
  const auto rest = path.substr(prefix.size());
  if (!rest.empty() && rest.front() != '/')
    return std::nullopt;
  return rest;
}

} // namespace

router& router::use(middleware m) {
  middleware_.push_back(std::move(m));
  return *this;
}

router& router::use(std::string prefix, std::shared_ptr<router> mounted) {
  mounts_.emplace_back(std::move(prefix), std::move(mounted));
  return *this;
}

router& router::route(http::verb method, std::string path, handler h) {
  routes_.push_back({method, std::move(path), std::move(h)});
  return *this;
}

awaitable<bool> router::dispatch(context& c) const {
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

bool router::matches_anything(const context& c) const {
  for (const auto& r : routes_)
    if (same_path(r.path, c.path))
      return true;
  for (const auto& [prefix, mounted] : mounts_)
    if (below_prefix(prefix, c.path))
      return true;
  return false;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
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

namespace {

// One request through the router: its response (404 when nothing matched).
awaitable<response> answer(const router& app, const request& req) {
  response res{http::status::ok, req.version()};
  const std::string_view target = req.target();
  const auto question = target.find('?');
  context c{req, target.substr(0, question),
            question == target.npos ? std::map<std::string, std::string>{}
                                    : parse_query(target.substr(question + 1)),
            res};
  if (!co_await app.dispatch(c))
    send_json(c, {{"error", "not found"}}, http::status::not_found);
  co_return res;
}

// One connection: requests in turn (keep-alive) until the client closes it or asks for
// Connection: close, or the server was closed (`open` says false: the current response says
// Connection: close). The one session loop of the examples, for an acceptor and for a cluster
// worker's listener alike.
template <class Server>
awaitable<void> session(tcp::socket socket, std::shared_ptr<const router> app, Server& server) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    request req;
    auto [read_ec, n] =
        co_await http::async_read(stream, buffer, req, asio::as_tuple(use_awaitable));
    if (read_ec)
      break;
    auto res = co_await answer(*app, req);
    res.keep_alive(req.keep_alive() && server.is_open());
    res.prepare_payload();
    auto [write_ec, m] = co_await http::async_write(stream, res, asio::as_tuple(use_awaitable));
    if (write_ec || !res.keep_alive())
      break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

template <class Server>
awaitable<void> accept_loop(Server& server, std::shared_ptr<const router> app) {
  for (;;) {
    auto [ec, socket] = co_await server.async_accept(asio::as_tuple(use_awaitable));
    if (ec)
      co_return;
    asio::co_spawn(server.get_executor(), session(std::move(socket), app, server), asio::detached);
  }
}

awaitable<response> exchange(beast::tcp_stream& stream, request req) {
  req.set(http::field::host, "127.0.0.1");
  req.prepare_payload();
  co_await http::async_write(stream, req, use_awaitable);
  beast::flat_buffer buffer;
  response res;
  co_await http::async_read(stream, buffer, res, use_awaitable);
  co_return res;
}

} // namespace

awaitable<void> serve(tcp::acceptor& acceptor, std::shared_ptr<const router> app) {
  return accept_loop(acceptor, std::move(app));
}

awaitable<void> serve(childproc::cluster_listener& listener, std::shared_ptr<const router> app) {
  return accept_loop(listener, std::move(app));
}

tcp::acceptor listen_loopback(asio::io_context& io) {
  return tcp::acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
}

awaitable<response> fetch(tcp::endpoint at, http::verb method, std::string target, std::string body,
                          std::vector<std::pair<std::string, std::string>> headers) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  co_await stream.async_connect(at, use_awaitable);
  request req{method, target, 11};
  for (const auto& [name, value] : headers)
    req.set(name, value);
  req.keep_alive(false);
  req.body() = std::move(body);
  co_return co_await exchange(stream, std::move(req));
}

struct connection::state {
  explicit state(asio::any_io_executor ex) : stream(std::move(ex)) {}
  beast::tcp_stream stream;
};

connection::connection(std::unique_ptr<state> s) noexcept : state_(std::move(s)) {}
connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;
connection::~connection() = default;

awaitable<connection> connection::open(tcp::endpoint at) {
  // Every co_await into a variable and no temporary in the co_return: g++ 12 destroyed the
  // stream twice (ASan: heap-use-after-free; docs/design.md, Traps).
  const auto ex = co_await asio::this_coro::executor;
  connection opened(std::make_unique<state>(ex));
  co_await opened.state_->stream.async_connect(at, use_awaitable);
  co_return opened;
}

awaitable<response> connection::get(std::string target) {
  request req{http::verb::get, target, 11};
  req.keep_alive(true);
  co_return co_await exchange(state_->stream, std::move(req));
}

std::string show(http::verb method, std::string_view target, const response& res) {
  return std::string(http::to_string(method)) + " " + std::string(target) + " -> " +
         std::to_string(res.result_int()) + " " + res.body();
}

void run_with_client(asio::io_context& io, std::shared_ptr<const router> app,
                     std::function<awaitable<void>(tcp::endpoint)> client) {
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
