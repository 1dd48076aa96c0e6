// The main demo: the seeds' thesis, measured. A Boost.Beast HTTP server on one io_context (Node's
// event loop) serves /health and /heavy-task; the demo drives it with its own load client in each
// mode (the heavy task on the loop, in a forked worker per request, in a process pool, in a thread
// pool; the cluster once it exists) and reports /heavy-task's throughput, /health's latency and
// the server's memory. `--serve <port>` runs the server alone, for curl. See docs/demo.md.
#include "heavy_task.hpp"
#include "load_client.hpp"
#include "modes.hpp"
#include "report.hpp"
#include "server.hpp"

#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <time.h>

namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;

struct options {
  std::optional<unsigned short> serve_port;
  std::string serve_mode = "pool";
  std::chrono::milliseconds task_time{30};
  int worker_nice = 10;
  demo::load_options load{.duration = std::chrono::seconds(10)};
  fs::path out = "build/demo";
};

constexpr const char* usage =
    "usage: childproc_demo [--short] [--seconds S] [--task-ms MS] [--connections N]\n"
    "                      [--worker-nice N] [--out DIR]\n"
    "       childproc_demo --serve PORT [--mode inline|fork|pool|threads] [--task-ms MS]\n"
    "                      [--worker-nice N]\n";

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc)
        throw std::invalid_argument(std::string(arg) + " needs a value");
      return argv[++i];
    };
    if (arg == "--short")
      o.load.duration = std::chrono::seconds(2), o.task_time = std::chrono::milliseconds(20);
    else if (arg == "--seconds")
      o.load.duration = std::chrono::milliseconds(std::stoi(value()) * 1000);
    else if (arg == "--task-ms")
      o.task_time = std::chrono::milliseconds(std::stoi(value()));
    else if (arg == "--connections")
      o.load.heavy_connections = std::max(1, std::stoi(value()));
    else if (arg == "--worker-nice")
      o.worker_nice = std::stoi(value());
    else if (arg == "--out")
      o.out = value();
    else if (arg == "--serve")
      o.serve_port = static_cast<unsigned short>(std::stoi(value()));
    else if (arg == "--mode")
      o.serve_mode = value();
    else
      throw std::invalid_argument("unknown argument " + std::string(arg));
  }
  return o;
}

// The peak resident set of this process since the last reset (VmHWM), in kB.
std::size_t peak_rss_kb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("VmHWM:"))
      return std::stoul(line.substr(6));
  return 0;
}
void reset_peak_rss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

void fill(demo::mode_row& row, demo::load_result result) {
  row.heavy_completed = result.heavy_completed;
  row.errors = result.errors;
  row.heavy_per_second = result.seconds > 0 ? result.heavy_completed / result.seconds : 0;
  row.heavy = demo::summarize(std::move(result.heavy_ms));
  row.health = demo::summarize(std::move(result.health_ms));
}

// Starts the mode's server, drives it from a client thread, stops it once the load is over.
demo::mode_row run_mode(const demo::mode& mode, const demo::mode_config& config,
                        demo::load_options load) {
  demo::mode_row row;
  row.name = mode.name;
  row.description = mode.description;
  row.pending = mode.pending;
  row.work_on_loop = mode.work_on_loop;
  if (!mode.pending.empty())
    return row;
  asio::io_context io;
  const auto server = mode.start(io, config);
  load.port = server->port();
  reset_peak_rss();
  demo::load_result result;
  std::thread client([&] {
    result = demo::run_load(load);
    asio::post(io, [&] {
      row.parent_rss_kb = peak_rss_kb() + server->workers_peak_rss_kb();
      asio::co_spawn(io, server->stop(), asio::detached);
    });
  });
  try {
    io.run();
  } catch (...) {
    client.join();
    throw;
  }
  client.join();
  fill(row, std::move(result));
  return row;
}

double thread_cpu_ms() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return now.tv_sec * 1e3 + now.tv_nsec / 1e6;
}

// The run's parameters, and what one heavy task costs here: CPU time, and wall time now (more
// when other processes share the CPUs).
demo::run_info describe(const options& o, std::int64_t n) {
  demo::run_info info{.n = n,
                      .cpus = std::max(1u, std::thread::hardware_concurrency()),
                      .heavy_connections = o.load.heavy_connections,
                      .seconds_per_mode = o.load.duration.count() / 1000.0,
                      .worker_nice = o.worker_nice};
  const auto cpu_start = thread_cpu_ms();
  const auto start = std::chrono::steady_clock::now();
  volatile double sink = demo::heavy_computation(n);
  (void)sink;
  info.task_wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  info.task_ms = thread_cpu_ms() - cpu_start;
  return info;
}

int run_demo(const options& o) {
  const auto info = describe(o, demo::calibrate(o.task_time));
  fmt::print("childproc demo: a Boost.Beast server on one io_context (the event loop). /heavy-task "
             "is heavy_computation({}), {:.0f} ms of CPU ({:.0f} ms of wall time just now); {} "
             "connections send it for {:.0f} s per mode while /health is probed every {} ms ({} "
             "CPUs, workers at nice +{}).\n",
             info.n, info.task_ms, info.task_wall_ms, info.heavy_connections, info.seconds_per_mode,
             o.load.probe_interval.count(), info.cpus, o.worker_nice);
  std::vector<demo::mode_row> rows;
  for (const auto& mode : demo::modes()) {
    fmt::print("{:8} {}\n", mode.name, mode.pending.empty() ? mode.description : mode.pending);
    std::fflush(stdout);
    rows.push_back(run_mode(mode, {info.n, o.worker_nice}, o.load));
  }
  const auto sentence = demo::conclusion(rows);
  fmt::print("\n{}\n{}\n\n", demo::format_table(rows), sentence);
  fs::create_directories(o.out);
  const auto dir = fs::absolute(o.out);
  demo::write_json(dir / "results.json", info, rows, sentence);
  fmt::print("results: {}\n{}\n", (dir / "results.json").string(),
             demo::write_plot(dir, info, rows));
  return 0;
}

asio::awaitable<void> close_all(std::vector<std::unique_ptr<demo::heavy_backend>>& backends) {
  for (auto& backend : backends)
    co_await backend->close();
}

// A plain server: every backend mounted at /heavy-task/<mode>, the chosen one at /heavy-task.
int run_server(const options& o) {
  asio::io_context io;
  const demo::mode_config config{demo::calibrate(o.task_time), o.worker_nice};
  demo::routes table;
  table.n = config.n;
  table.default_mode = o.serve_mode;
  std::vector<std::unique_ptr<demo::heavy_backend>> backends;
  for (const auto& name : demo::backend_names()) {
    backends.push_back(demo::make_backend(name, io, config));
    table.heavy[name] = backends.back().get();
  }
  if (!table.heavy.contains(o.serve_mode))
    throw std::invalid_argument("no mode named " + o.serve_mode);
  demo::http_server server(io, table, *o.serve_port);
  fmt::print("listening on http://127.0.0.1:{}/ (pid {}): GET /health, /heavy-task ({}), "
             "/heavy-task/inline, /heavy-task/fork, /heavy-task/pool, /heavy-task/threads. "
             "Ctrl-C ends it.\n",
             server.port(), ::getpid(), o.serve_mode);
  std::fflush(stdout);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int) {
    server.close();
    asio::co_spawn(io, close_all(backends), asio::detached);
  });
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (childproc::is_pool_worker()) {
    asio::io_context io;
    return childproc::serve(io, demo::heavy_tasks());
  }
  if (argc > 2 && std::string_view(argv[1]) == demo::fork_worker_flag)
    return demo::run_fork_worker(std::atoi(argv[2]));
  if (childproc::cluster::is_worker() && argc > 2 &&
      std::string_view(argv[1]) == demo::cluster_worker_flag)
    return demo::run_cluster_worker(std::atoll(argv[2]));
  try {
    const auto o = parse(argc, argv);
    return o.serve_port ? run_server(o) : run_demo(o);
  } catch (const std::invalid_argument& e) {
    fmt::print(stderr, "{}\n{}", e.what(), usage);
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "childproc_demo: {}\n", e.what());
    return 1;
  }
}
