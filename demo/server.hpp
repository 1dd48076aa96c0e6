// The demo's HTTP server: Boost.Beast on one io_context (Node's event loop), the seeds' routes.
#pragma once

#include "modes.hpp"

#include <childproc/cluster.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

namespace demo {

/// What the server answers:
///   GET /health              {"status": "ok", "pid"}
///   GET /heavy-task          heavy_computation(n) on the default backend
///   GET /heavy-task/<mode>   the same on that mode's backend
struct routes {
  std::int64_t n = 0;
  std::map<std::string, heavy_backend*, std::less<>> heavy;
  std::string default_mode;
};

/// Listens on 127.0.0.1:port (0: any free port) from construction on, through
/// childproc::cluster::listen: a plain listening socket in a process of its own, the cluster's
/// endpoint in a cluster worker (the same server in every mode). Use it from its io_context's
/// thread; it must outlive that io_context's run().
class http_server {
public:
  http_server(asio::io_context& io, routes routes, unsigned short port);
  unsigned short port() const { return port_; }
  /// Stops accepting and closes every open connection (a request being computed ends there).
  void close();

private:
  using stream = boost::beast::tcp_stream;
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(std::shared_ptr<stream> connection);

  asio::io_context& io_;
  routes routes_;
  childproc::cluster_listener acceptor_;
  unsigned short port_ = 0;
  std::set<std::shared_ptr<stream>> connections_;
};

} // namespace demo
