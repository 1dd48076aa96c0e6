#include "report.hpp"

#include <childproc/spawn.hpp>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <system_error>

namespace demo {
namespace {

namespace json = boost::json;

std::string format_ms(double ms) {
  if (ms < 10)
    return fmt::format("{:.2f} ms", ms);
  if (ms < 100)
    return fmt::format("{:.1f} ms", ms);
  return fmt::format("{:.0f} ms", ms);
}

const mode_row* find_row(const std::vector<mode_row>& rows, const std::string& name) {
  const auto found =
      std::find_if(rows.begin(), rows.end(), [&](const mode_row& r) { return r.name == name; });
  return found == rows.end() ? nullptr : &*found;
}

// The modes that ran with their work off the loop, and measured something.
std::vector<const mode_row*> worker_rows(const std::vector<mode_row>& rows) {
  std::vector<const mode_row*> ran;
  for (const auto& row : rows)
    if (!row.work_on_loop && row.pending.empty() && row.health.count > 0)
      ran.push_back(&row);
  return ran;
}

json::object latency_json(const latency& l) {
  json::object out;
  out["count"] = l.count;
  out["p50_us"] = std::llround(l.p50 * 1000);
  out["p99_us"] = std::llround(l.p99 * 1000);
  out["max_us"] = std::llround(l.max * 1000);
  return out;
}

json::object row_json(const mode_row& row) {
  json::object out;
  out["mode"] = row.name;
  out["description"] = row.description;
  if (!row.pending.empty()) {
    out["pending"] = row.pending;
    return out;
  }
  out["work_on_loop"] = row.work_on_loop;
  out["heavy_completed"] = row.heavy_completed;
  out["heavy_per_second"] = std::round(row.heavy_per_second * 10) / 10;
  out["heavy_latency"] = latency_json(row.heavy);
  out["health_latency"] = latency_json(row.health);
  out["parent_rss_kb"] = row.parent_rss_kb;
  out["errors"] = row.errors;
  return out;
}

std::string gnuplot_script(const std::filesystem::path& dir, const run_info& info) {
  return fmt::format(
      R"gp(set terminal pngcairo size 1100,440 font "sans,10"
set output '{0}/demo.png'
set multiplot layout 1,2 title "childproc demo: /heavy-task ({1:.0f} ms of CPU) under {2} concurrent connections, {3} CPUs"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid ytics
set logscale y
set yrange [0.05:*]
set ylabel "/health latency under load (ms, log scale)"
set key top right
plot '{0}/demo.dat' using 2:xtic(1) title 'p50', '' using 3 title 'p99', '' using 4 title 'max'
unset logscale y
set yrange [0:*]
set ylabel "/heavy-task requests per second"
plot '{0}/demo.dat' using 5:xtic(1) title 'throughput' fc rgb '#44aa77'
unset multiplot
)gp",
      dir.string(), info.task_ms, info.heavy_connections, info.cpus);
}

void write_file(const std::filesystem::path& file, const std::string& text) {
  std::ofstream out(file);
  out << text;
  if (!out.flush())
    throw std::runtime_error("cannot write " + file.string());
}

} // namespace

latency summarize(std::vector<double> samples) {
  latency l;
  l.count = samples.size();
  if (samples.empty())
    return l;
  std::sort(samples.begin(), samples.end());
  const auto at = [&](double q) {
    return samples[std::min(samples.size() - 1, static_cast<std::size_t>(q * samples.size()))];
  };
  l.p50 = at(0.50);
  l.p99 = at(0.99);
  l.max = samples.back();
  return l;
}

std::string format_table(const std::vector<mode_row>& rows) {
  std::string table = "| mode | /heavy-task computed | /heavy-task req/s | /health p50 | "
                      "/health p99 | /health max | parent RSS |\n"
                      "|---|---|---:|---:|---:|---:|---:|\n";
  for (const auto& row : rows) {
    if (!row.pending.empty()) {
      table += fmt::format("| {} | {} | {} | | | | |\n", row.name, row.description, row.pending);
      continue;
    }
    table +=
        fmt::format("| {} | {} | {:.1f} | {} | {} | {} | {:.1f} MB |\n", row.name, row.description,
                    row.heavy_per_second, format_ms(row.health.p50), format_ms(row.health.p99),
                    format_ms(row.health.max), row.parent_rss_kb / 1024.0);
  }
  return table;
}

double health_p99_ratio(const std::vector<mode_row>& rows) {
  const mode_row* inline_row = find_row(rows, "inline");
  const auto workers = worker_rows(rows);
  if (inline_row == nullptr || inline_row->health.count == 0 || workers.empty())
    return 0;
  double worst = 0;
  for (const mode_row* row : workers)
    worst = std::max(worst, row->health.p99);
  return worst > 0 ? inline_row->health.p99 / worst : 0;
}

// What the cluster's row adds: its workers compute on their own loops, so a probe that shares a
// worker with a heavy request waits for it (the seed's "a busy worker blocks its own
// connections").
std::string cluster_clause(const mode_row* cluster, double workers_p99) {
  if (cluster == nullptr || !cluster->pending.empty() || cluster->health.count == 0)
    return "";
  const bool blocked = cluster->health.p99 > 2 * workers_p99;
  return fmt::format(
      " The cluster, with the task on each worker's own loop, served {:.1f} requests/s and "
      "/health p99 was {}{}.",
      cluster->heavy_per_second, format_ms(cluster->health.p99),
      blocked ? ": a worker busy with the task still blocks the connections it holds"
              : ", close to the workers' modes");
}

std::string conclusion(const std::vector<mode_row>& rows) {
  const mode_row* inline_row = find_row(rows, "inline");
  const auto workers = worker_rows(rows);
  const double ratio = health_p99_ratio(rows);
  if (inline_row == nullptr || workers.empty() || ratio == 0)
    return "Not enough modes ran to compare the event loop with workers.";
  std::string names, worst;
  const mode_row* fastest = workers.front();
  double worst_p99 = 0;
  for (const mode_row* row : workers) {
    names += (names.empty() ? "" : ", ") + row->name;
    if (row->health.p99 >= worst_p99)
      worst_p99 = row->health.p99, worst = row->name;
    if (row->heavy_per_second > fastest->heavy_per_second)
      fastest = row;
  }
  const bool faster = fastest->heavy_per_second > 1.2 * inline_row->heavy_per_second;
  const auto throughput =
      faster
          ? fmt::format(", and /heavy-task's throughput rose from {:.1f} to {:.1f} requests/s ({})",
                        inline_row->heavy_per_second, fastest->heavy_per_second, fastest->name)
          : fmt::format("; /heavy-task's throughput did not rise ({:.1f} requests/s inline, {:.1f} "
                        "at best with {}): on this run the CPUs, not the loop, were the limit",
                        inline_row->heavy_per_second, fastest->heavy_per_second, fastest->name);
  return fmt::format(
             "Computed on the event loop, /heavy-task made every /health probe wait behind it ({} "
             "at p99); handed to workers ({}) it left the loop free: /health p99 was at most {} "
             "({}), {:.0f}x lower{}{}.",
             format_ms(inline_row->health.p99), names, format_ms(worst_p99), worst, ratio,
             ratio < 10 ? " (less than the 10x this demo expects: was the machine busy?)" : "",
             throughput) +
         cluster_clause(find_row(rows, "cluster"), worst_p99);
}

void write_json(const std::filesystem::path& file, const run_info& info,
                const std::vector<mode_row>& rows, const std::string& sentence) {
  json::object out;
  out["heavy_task_n"] = info.n;
  out["heavy_task_cpu_ms"] = std::round(info.task_ms * 10) / 10;
  out["heavy_task_wall_ms"] = std::round(info.task_wall_ms * 10) / 10;
  out["worker_nice"] = info.worker_nice;
  out["cpus"] = info.cpus;
  out["heavy_connections"] = info.heavy_connections;
  out["seconds_per_mode"] = info.seconds_per_mode;
  json::array modes;
  for (const auto& row : rows)
    modes.emplace_back(row_json(row));
  out["modes"] = std::move(modes);
  out["health_p99_ratio"] = std::round(health_p99_ratio(rows) * 10) / 10;
  out["conclusion"] = sentence;
  write_file(file, json::serialize(out) + "\n");
}

std::string write_plot(const std::filesystem::path& dir, const run_info& info,
                       const std::vector<mode_row>& rows) {
  std::string data = "# mode health_p50_ms health_p99_ms health_max_ms heavy_per_second\n";
  for (const auto& row : rows)
    if (row.pending.empty())
      data += fmt::format("{} {:.3f} {:.3f} {:.3f} {:.1f}\n", row.name, row.health.p50,
                          row.health.p99, row.health.max, row.heavy_per_second);
  write_file(dir / "demo.dat", data);
  write_file(dir / "demo.gp", gnuplot_script(dir, info));
  std::error_code ec;
  const auto plotted = childproc::spawn_sync("gnuplot", {(dir / "demo.gp").string()}, {}, ec);
  if (ec || (plotted.error && plotted.error->code() == std::errc::no_such_file_or_directory))
    return "gnuplot is not installed (Debian: gnuplot-nox): no plot, the data is in " +
           (dir / "demo.dat").string();
  if (plotted.error || plotted.status != 0)
    return "gnuplot failed: " + plotted.err.value_or("");
  return "plot: " + (dir / "demo.png").string();
}

} // namespace demo
