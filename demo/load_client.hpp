// The demo's load client: concurrent /heavy-task requests while /health is probed, each on its
// own keep-alive connection, from a thread of its own (so that a blocked server cannot delay the
// client's clock). Loopback only, bounded in time and in count.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

namespace demo {

struct load_options {
  unsigned short port = 0;
  /// Connections sending /heavy-task one after another.
  std::size_t heavy_connections = 4;
  /// No /heavy-task is sent after this long (those running finish).
  std::chrono::milliseconds duration{10000};
  /// Nor after this many.
  std::size_t max_heavy_requests = 2000;
  /// The pause between two /health probes (one connection, one probe at a time).
  std::chrono::milliseconds probe_interval{5};
};

struct load_result {
  std::size_t heavy_completed = 0;
  std::size_t errors = 0;
  /// From the first request to the last /heavy-task reply.
  double seconds = 0;
  std::vector<double> heavy_ms;  ///< each /heavy-task's latency
  std::vector<double> health_ms; ///< each /health probe's latency
};

/// Drives 127.0.0.1:options.port until the load is over; returns what it measured. Each
/// /heavy-task connection first sends one unmeasured request (the workers start meanwhile).
load_result run_load(const load_options& options);

} // namespace demo
