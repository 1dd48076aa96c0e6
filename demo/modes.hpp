// The modes of the demo: where /heavy-task is computed (a backend), and how each mode's server is
// started (a deployment). Adding a mode is one entry of modes().
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace demo {

namespace asio = boost::asio;

/// Where /heavy-task's computation runs.
class heavy_backend {
public:
  virtual ~heavy_backend() = default;
  /// heavy_computation(n) somewhere; the reply's body.
  virtual asio::awaitable<boost::json::object> run(std::int64_t n) = 0;
  /// Lets running work finish and releases the workers.
  virtual asio::awaitable<void> close() { co_return; }
};

/// What every mode is given.
struct mode_config {
  std::int64_t n = 0;  ///< heavy_computation's size
  int worker_nice = 0; ///< the nice increment of the workers (processes and threads)
};

/// The backends by mode name: "inline", "fork", "pool", "threads". Throws std::invalid_argument
/// for another name.
std::unique_ptr<heavy_backend> make_backend(std::string_view name, asio::io_context& io,
                                            const mode_config& config);
/// The names make_backend knows, in the demo's order.
const std::vector<std::string>& backend_names();

/// A running server of one mode: the port the load client drives, and how to stop it.
class deployment {
public:
  virtual ~deployment() = default;
  virtual unsigned short port() const = 0;
  /// The peak resident sets of the worker processes that serve (the cluster's), in KiB; 0 for
  /// a server in this process.
  virtual std::size_t workers_peak_rss_kb() const { return 0; }
  /// Stops accepting, closes the connections, lets the workers finish and end.
  virtual asio::awaitable<void> stop() = 0;
};

struct mode {
  std::string name;
  std::string description;
  /// Not empty: the mode cannot run yet, and why (it is still listed in the table).
  std::string pending;
  /// The heavy task runs on the loop that answers /health (inline, and each cluster worker's).
  bool work_on_loop = false;
  /// Starts the mode's server on 127.0.0.1, port 0.
  std::function<std::unique_ptr<deployment>(asio::io_context& io, const mode_config& config)> start;
};

/// The argument that starts this binary as a worker of the cluster mode; the next one is the
/// heavy task's size.
inline constexpr const char* cluster_worker_flag = "--cluster-worker";

/// A worker of the cluster mode: the whole server (heavy task inline) on the cluster's port,
/// until the primary disconnects it. Returns the exit status.
int run_cluster_worker(std::int64_t n);

/// Every mode of the demo, in the order of the table.
const std::vector<mode>& modes();

} // namespace demo
