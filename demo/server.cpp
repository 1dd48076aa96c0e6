#include "server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <exception>
#include <string_view>
#include <unistd.h>

namespace demo {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

response json_response(const request& req, http::status status, const json::object& body) {
  response res{status, req.version()};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(req.keep_alive());
  res.body() = json::serialize(body) + "\n";
  res.prepare_payload();
  return res;
}

response not_found(const request& req, const routes& table) {
  json::array known{"/health", "/heavy-task"};
  for (const auto& [name, backend] : table.heavy)
    known.emplace_back("/heavy-task/" + name);
  json::object body;
  body["error"] = "not found";
  body["routes"] = std::move(known);
  return json_response(req, http::status::not_found, body);
}

// The backend a /heavy-task path names, or null.
heavy_backend* heavy_route(std::string_view path, const routes& table) {
  constexpr std::string_view prefix = "/heavy-task";
  if (!path.starts_with(prefix))
    return nullptr;
  path.remove_prefix(prefix.size());
  if (path.empty())
    path = table.default_mode;
  else if (path.front() == '/')
    path.remove_prefix(1);
  else
    return nullptr;
  const auto found = table.heavy.find(path);
  return found == table.heavy.end() ? nullptr : found->second;
}

asio::awaitable<response> respond(const request& req, const routes& table) {
  const std::string_view path(req.target().data(), req.target().size());
  if (path == "/health") {
    json::object body;
    body["status"] = "ok";
    body["pid"] = ::getpid();
    co_return json_response(req, http::status::ok, body);
  }
  heavy_backend* backend = heavy_route(path.substr(0, path.find('?')), table);
  if (backend == nullptr || req.method() != http::verb::get)
    co_return not_found(req, table);
  std::string failure;
  try {
    const auto body = co_await backend->run(table.n);
    co_return json_response(req, http::status::ok, body);
  } catch (const std::exception& e) {
    failure = e.what(); // a co_await cannot sit in a handler: answer below
  }
  json::object body;
  body["error"] = failure;
  co_return json_response(req, http::status::internal_server_error, body);
}

} // namespace

http_server::http_server(asio::io_context& io, routes table, unsigned short port)
    : io_(io), routes_(std::move(table)),
      acceptor_(childproc::cluster::listen(
          io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port))) {
  port_ = acceptor_.local_endpoint().port();
  asio::co_spawn(io_, accept_loop(), asio::detached);
}

void http_server::close() {
  boost::system::error_code ignored;
  acceptor_.close();
  for (const auto& connection : connections_)
    connection->socket().close(ignored);
  connections_.clear();
}

asio::awaitable<void> http_server::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
    if (ec)
      co_return; // closed
    auto connection = std::make_shared<stream>(std::move(socket));
    connections_.insert(connection);
    asio::co_spawn(io_, session(connection), asio::detached);
  }
}

// One keep-alive connection: requests are answered in order, as Node's http module does.
asio::awaitable<void> http_server::session(std::shared_ptr<stream> connection) {
  beast::flat_buffer buffer;
  for (;;) {
    request req;
    connection->expires_after(std::chrono::seconds(60));
    auto [read_error, read_size] = co_await http::async_read(*connection, buffer, req, use_tuple);
    if (read_error)
      break;
    response res = co_await respond(req, routes_);
    connection->expires_after(std::chrono::seconds(60));
    auto [write_error, written] = co_await http::async_write(*connection, res, use_tuple);
    // A closed listener (the cluster's primary disconnected this worker): the connection ends
    // after its response, so that the worker can exit.
    if (write_error || !res.keep_alive() || !acceptor_.is_open())
      break;
  }
  boost::system::error_code ignored;
  connection->socket().shutdown(tcp::socket::shutdown_send, ignored);
  connections_.erase(connection);
}

} // namespace demo
