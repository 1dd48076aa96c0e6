// What the cluster examples share: a Boost.Beast HTTP/1.1 server written once over
// childproc::cluster_listener (whatever the scheduling), and a small client for the primary's
// demonstration requests.
#pragma once

#include <childproc/cluster.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <functional>
#include <string>
#include <string_view>

namespace cluster_http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

// The application: a target ("/", "/test") to a response body.
using route = std::function<std::string(std::string_view target)>;

// One connection: requests in turn (keep-alive) until the client closes, or the listener did
// (the worker was disconnected: the current response says "Connection: close").
inline awaitable<void> session(tcp::socket socket, childproc::cluster_listener& listener,
                               const route& app) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request<http::string_body> request;
    auto [read_ec, n] =
        co_await http::async_read(stream, buffer, request, asio::as_tuple(use_awaitable));
    if (read_ec)
      break;
    http::response<http::string_body> response{http::status::ok, request.version()};
    response.set(http::field::content_type, "text/plain");
    response.body() = app(request.target());
    response.keep_alive(request.keep_alive() && listener.is_open());
    response.prepare_payload();
    auto [write_ec, m] =
        co_await http::async_write(stream, response, asio::as_tuple(use_awaitable));
    if (write_ec || !response.keep_alive())
      break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// The accept loop: ends when the listener closes.
inline awaitable<void> serve(childproc::cluster_listener& listener, const route& app) {
  for (;;) {
    auto [ec, socket] = co_await listener.async_accept(asio::as_tuple(use_awaitable));
    if (ec)
      co_return;
    asio::co_spawn(listener.get_executor(), session(std::move(socket), listener, app),
                   asio::detached);
  }
}

// The client side: one GET on a connected stream (keep-alive), returning the body.
inline awaitable<std::string> get(beast::tcp_stream& stream, std::string target) {
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, "127.0.0.1");
  request.keep_alive(true);
  co_await http::async_write(stream, request, use_awaitable);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  co_await http::async_read(stream, buffer, response, use_awaitable);
  co_return response.body();
}

inline awaitable<beast::tcp_stream> connect(tcp::endpoint at) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  co_await stream.async_connect(at, use_awaitable);
  co_return stream;
}

// The pid in a body that starts "process <pid> " or ends " from <pid>".
inline long pid_in(std::string_view body) {
  const auto from = body.rfind("from ");
  const auto digits = body.find_first_of("0123456789", from == body.npos ? 0 : from);
  return digits == std::string_view::npos ? 0 : std::stol(std::string(body.substr(digits)));
}

} // namespace cluster_http
