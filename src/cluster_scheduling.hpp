// The cluster's scheduling modes (internal): what the primary holds for the endpoint and gives
// each worker at launch, and how a worker's listener gets its connections.
//
// A mode is a pair: a primary_scheduler (opens the endpoint, prepares each worker's launch,
// hears which workers listen and which ended) and a worker-side listener state (what
// cluster::listen returns behind cluster_listener). round_robin's primary_scheduler keeps the
// listening socket, accepts, and sends each connection over a worker's channel to a worker of
// the free list that worker_listening / worker_control / worker_gone maintain; its listener
// completes async_accept with the sockets that arrive over the channel.
//
// The primary tells a worker what it needs through its environment:
//   CHILDPROC_CLUSTER_WORKER      the worker's id (1, 2, ...): is_worker()
//   CHILDPROC_CLUSTER_INSTANCE    its slot (0 .. workers-1), PM2's NODE_APP_INSTANCE
//   CHILDPROC_CLUSTER_SCHEDULING  "shared", "reuse_port" or "round_robin"
//   CHILDPROC_CLUSTER_ENDPOINT    "<address> <port>": the endpoint with its port chosen
//   CHILDPROC_CLUSTER_REQUESTED   "<address> <port>": the endpoint as configured (port 0 kept)
//   CHILDPROC_CLUSTER_BACKLOG     the listen backlog (reuse_port: each worker listens itself)
//   CHILDPROC_CLUSTER_LISTEN_FD   shared: the descriptor of the listening socket
#pragma once

#include <childproc/cluster.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/object.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace childproc::detail {

namespace cluster_env {
inline constexpr const char* worker = "CHILDPROC_CLUSTER_WORKER";
inline constexpr const char* instance = "CHILDPROC_CLUSTER_INSTANCE";
inline constexpr const char* scheduling = "CHILDPROC_CLUSTER_SCHEDULING";
inline constexpr const char* endpoint = "CHILDPROC_CLUSTER_ENDPOINT";
inline constexpr const char* requested = "CHILDPROC_CLUSTER_REQUESTED";
inline constexpr const char* backlog = "CHILDPROC_CLUSTER_BACKLOG";
inline constexpr const char* listen_fd = "CHILDPROC_CLUSTER_LISTEN_FD";
} // namespace cluster_env

std::string format_endpoint(const boost::asio::ip::tcp::endpoint& ep);
std::optional<boost::asio::ip::tcp::endpoint> parse_endpoint(const char* text);
const char* scheduling_name(scheduling mode) noexcept;

// What a worker learnt from its environment at its first look (then removed from it, so that
// its own children are no cluster workers).
struct worker_environment {
  bool is_worker = false;
  unsigned id = 0;
  std::size_t slot = 0;
  std::optional<childproc::scheduling> mode;
  std::optional<boost::asio::ip::tcp::endpoint> endpoint;  // port chosen
  std::optional<boost::asio::ip::tcp::endpoint> requested; // as configured
  int backlog = cluster_options{}.backlog;
  int listen_fd = -1;
};
const worker_environment& worker_env() noexcept;

// The primary's side of a mode.
class primary_scheduler {
public:
  virtual ~primary_scheduler() = default;
  // Opens what the primary holds for `requested` before any worker starts; returns the
  // endpoint with its port chosen.
  virtual boost::asio::ip::tcp::endpoint open(const boost::asio::ip::tcp::endpoint& requested,
                                              int backlog, std::error_code& ec) = 0;
  // Adds what a worker needs to its launch (stdio slots, environment).
  virtual void prepare(fork_options& options) = 0;
  // A worker reported `listening` (its channel to the primary); a control message of it that
  // the cluster does not handle ({"cc": kind}); it was disconnected or ended (round_robin: the
  // free list).
  virtual void worker_listening(unsigned /*id*/, const childproc::channel&) {}
  virtual void worker_control(unsigned /*id*/, const boost::json::object& /*control*/) {}
  virtual void worker_gone(unsigned /*id*/) {}
  // Closes what open() made (after the last worker).
  virtual void close() noexcept = 0;
};
// The scheduler of `mode` (its acceptor, for round_robin, on `ex`); nullptr for no mode.
std::unique_ptr<primary_scheduler> make_primary_scheduler(scheduling mode,
                                                          const boost::asio::any_io_executor& ex);
// The cluster's own control message {"cc": kind}.
message control_message(const char* kind);

// The worker's side: what is behind a cluster_listener.
struct cluster_listener_state {
  virtual ~cluster_listener_state() = default;
  virtual void
  accept(std::unique_ptr<completion<boost::system::error_code, boost::asio::ip::tcp::socket>>
             done) = 0;
  virtual boost::asio::ip::tcp::endpoint local_endpoint() const = 0;
  virtual bool is_open() const noexcept = 0;
  // close(): at once. stop(): the primary disconnected this worker; a mode whose socket is the
  // worker's own hands out what is already queued on it first.
  virtual void close() noexcept = 0;
  virtual void stop() noexcept = 0;
  virtual boost::asio::any_io_executor executor() const = 0;
  // round_robin: a connection the primary handed over; false when this listener takes none
  // (another mode, or closed).
  virtual bool take(owned_fd&) { return false; }
  // round_robin: called (outside the listener's lock) when close() closes an open listener.
  virtual void on_close(std::function<void()>) {}
};

// The listener of `env`'s mode (or, outside a cluster, a plain one on `endpoint`).
std::shared_ptr<cluster_listener_state> open_listener(const boost::asio::any_io_executor& ex,
                                                      const worker_environment& env,
                                                      const boost::asio::ip::tcp::endpoint& ep,
                                                      std::error_code& ec);
// A listener closed from the start (listen() after the primary disconnected the worker).
std::shared_ptr<cluster_listener_state> closed_listener(const boost::asio::any_io_executor& ex);

} // namespace childproc::detail
