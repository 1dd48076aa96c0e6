// The demo's report: one row per mode, printed as a table, written as JSON and plotted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace demo {

/// Latencies in milliseconds.
struct latency {
  std::size_t count = 0;
  double p50 = 0, p99 = 0, max = 0;
};
latency summarize(std::vector<double> samples_ms);

struct mode_row {
  std::string name;
  std::string description;
  std::string pending;       ///< not empty: the mode did not run
  bool work_on_loop = false; ///< the heavy task ran on a loop that answers /health
  std::size_t heavy_completed = 0;
  std::size_t errors = 0;
  double heavy_per_second = 0;
  latency heavy;
  latency health;
  /// The peak resident set of the processes that serve during the run: the server's (with the
  /// load client's thread), or the cluster's primary and workers.
  std::size_t parent_rss_kb = 0;
};

struct run_info {
  std::int64_t n = 0;      ///< heavy_computation's size
  double task_ms = 0;      ///< the CPU time one takes here, measured
  double task_wall_ms = 0; ///< and its wall time when measured
  std::size_t cpus = 0;
  std::size_t heavy_connections = 0;
  double seconds_per_mode = 0;
  int worker_nice = 0; ///< the workers' nice increment
};

/// The table, as Markdown (so that it can be pasted as it is).
std::string format_table(const std::vector<mode_row>& rows);
/// One sentence saying what the rows show, computed from them.
std::string conclusion(const std::vector<mode_row>& rows);
/// /health p99 inline over the worst p99 of the modes that ran with workers (0 if unknown).
double health_p99_ratio(const std::vector<mode_row>& rows);

/// Writes dir/results.json.
void write_json(const std::filesystem::path& file, const run_info& info,
                const std::vector<mode_row>& rows, const std::string& sentence);
/// Writes dir/demo.dat, dir/demo.gp and, with gnuplot, dir/demo.png. Returns what it did (or
/// why there is no plot), for the demo's output.
std::string write_plot(const std::filesystem::path& dir, const run_info& info,
                       const std::vector<mode_row>& rows);

} // namespace demo
