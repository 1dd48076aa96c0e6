#include "modes.hpp"

#include "heavy_task.hpp"
#include "server.hpp"

#include <childproc/cluster.hpp>
#include <childproc/fork.hpp>
#include <childproc/pool.hpp>

#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace demo {
namespace {

namespace json = boost::json;
using boost::system::error_code;

// The seeds' BAD version: the computation runs on the event loop, and nothing else does meanwhile.
class inline_backend final : public heavy_backend {
public:
  asio::awaitable<json::object> run(std::int64_t n) override {
    co_return heavy_reply(heavy_computation(n), ::getpid());
  }
};

// One forked worker per request, alive until its reply came. (The handler's own type, not
// asio::any_completion_handler: Boost 1.81's recurses without end when it is moved.)
template <class Handler>
struct forked_task {
  childproc::child_process child;
  std::optional<Handler> handler;

  void complete(error_code ec, json::object reply) {
    if (!handler)
      return;
    auto done = [h = std::move(*handler), ec, r = std::move(reply)]() mutable {
      std::move(h)(ec, std::move(r));
    };
    handler.reset();
    asio::post(child.get_executor(), std::move(done));
  }
};

// fork("heavy-worker.js") per request, send {task: "compute", data: n}, reply with its message.
// The worker's handlers hold the task: they are dropped after its `close`, which frees it.
template <class Handler>
void start_forked_task(asio::io_context& io, std::int64_t n, int nice, Handler handler) {
  auto task = std::make_shared<forked_task<Handler>>();
  task->handler.emplace(std::move(handler));
  task->child =
      childproc::fork(io, childproc::self_exe(), {fork_worker_flag, std::to_string(nice)});
  task->child.on_message([task](const childproc::message& message) {
    const auto& answer = message.json().as_object();
    task->complete({}, heavy_reply(answer.at("result").to_number<double>(),
                                   answer.at("pid").to_number<long>()));
    task->child.disconnect(); // the worker's loop ends (the seed kills it instead)
  });
  task->child.on_close([task](std::optional<int>, std::optional<int>) {
    task->complete(make_error_code(boost::system::errc::no_message), {}); // died without a reply
  });
  json::object request;
  request["task"] = "compute";
  request["data"] = n;
  task->child.send(json::value(std::move(request)));
}

class fork_backend final : public heavy_backend {
public:
  fork_backend(asio::io_context& io, int nice) : io_(io), nice_(nice) {}
  asio::awaitable<json::object> run(std::int64_t n) override {
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable),
                                            void(error_code, json::object)>(
        [this, n](auto handler) { start_forked_task(io_, n, nice_, std::move(handler)); },
        asio::use_awaitable);
  }

private:
  asio::io_context& io_;
  int nice_;
};

std::size_t cpus() {
  return std::max(1u, std::thread::hardware_concurrency());
}

// Piscina's pool, over worker processes (this binary, answering with serve()) or threads.
class pool_backend final : public heavy_backend {
public:
  pool_backend(asio::io_context& io, childproc::isolation isolation, int nice)
      : pool_(io, options(isolation, nice)) {}
  asio::awaitable<json::object> run(std::int64_t n) override {
    json::object task;
    task["n"] = n;
    const childproc::message message(json::value(std::move(task)));
    const auto answer = co_await pool_.async_run(message, asio::use_awaitable);
    auto reply = heavy_reply(answer.json().at("result").to_number<double>(),
                             answer.json().at("pid").to_number<long>());
    reply["worker_thread"] = answer.json().at("thread");
    co_return reply;
  }
  asio::awaitable<void> close() override { co_await pool_.async_close(asio::use_awaitable); }

private:
  static childproc::pool_options options(childproc::isolation isolation, int nice) {
    childproc::pool_options options{
        .isolation = isolation, .min_workers = cpus(), .max_workers = cpus()};
    if (isolation == childproc::isolation::process) {
      options.nice = nice;
      return options;
    }
    options.tasks = heavy_tasks();
    options.thread_hooks.on_init = [nice](const childproc::message&) {
      lower_thread_priority(nice);
    };
    return options;
  }
  childproc::pool pool_;
};

// One server whose /heavy-task goes to one backend.
class server_deployment final : public deployment {
public:
  server_deployment(asio::io_context& io, const std::string& name, const mode_config& config)
      : backend_(make_backend(name, io, config)),
        server_(io, routes{config.n, {{name, backend_.get()}}, name}, 0) {}
  unsigned short port() const override { return server_.port(); }
  asio::awaitable<void> stop() override {
    server_.close();
    co_await backend_->close();
  }

private:
  std::unique_ptr<heavy_backend> backend_;
  http_server server_;
};

mode server_mode(std::string name, std::string description) {
  auto start = [name](asio::io_context& io,
                      const mode_config& config) -> std::unique_ptr<deployment> {
    return std::make_unique<server_deployment>(io, name, config);
  };
  const bool on_loop = name == "inline";
  return {std::move(name), std::move(description), "", on_loop, std::move(start)};
}

// A process's peak resident set (VmHWM) in KiB, 0 once it is gone.
std::size_t peak_rss_kb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("VmHWM:"))
      return std::stoul(line.substr(6));
  return 0;
}

// Node's cluster: the whole server (this binary, heavy task inline) in one worker per CPU on a
// port they share; this process only supervises.
class cluster_deployment final : public deployment {
public:
  cluster_deployment(asio::io_context& io, const mode_config& config)
      : primary_(
            io, childproc::cluster_options{
                    .workers = cpus(),
                    .args = std::vector<std::string>{cluster_worker_flag, std::to_string(config.n)},
                    // A worker computing /heavy-task accepts nothing meanwhile, where round_robin
                    // (the default) would hand it connections that then wait (docs/cluster.md).
                    .scheduling = childproc::scheduling::shared,
                    .endpoint = {asio::ip::make_address("127.0.0.1"), 0}}) {
    primary_.start(); // the shared socket listens from here on: connections wait in its queue
  }
  unsigned short port() const override { return primary_.endpoint().port(); }
  std::size_t workers_peak_rss_kb() const override {
    std::size_t sum = 0;
    for (const auto& worker : primary_.workers())
      if (worker.pid())
        sum += peak_rss_kb(*worker.pid());
    return sum;
  }
  asio::awaitable<void> stop() override { co_await primary_.async_shutdown(asio::use_awaitable); }

private:
  childproc::cluster primary_;
};

} // namespace

std::unique_ptr<heavy_backend> make_backend(std::string_view name, asio::io_context& io,
                                            const mode_config& config) {
  if (name == "inline")
    return std::make_unique<inline_backend>();
  if (name == "fork")
    return std::make_unique<fork_backend>(io, config.worker_nice);
  if (name == "pool")
    return std::make_unique<pool_backend>(io, childproc::isolation::process, config.worker_nice);
  if (name == "threads")
    return std::make_unique<pool_backend>(io, childproc::isolation::thread, config.worker_nice);
  throw std::invalid_argument("no backend named '" + std::string(name) + "'");
}

const std::vector<std::string>& backend_names() {
  static const std::vector<std::string> names{"inline", "fork", "pool", "threads"};
  return names;
}

int run_cluster_worker(std::int64_t n) {
  asio::io_context io;
  inline_backend backend;
  http_server server(io, routes{n, {{"cluster", &backend}}, "cluster"}, 0);
  io.run(); // until the primary disconnects this worker and its connections end
  return 0;
}

const std::vector<mode>& modes() {
  static const std::vector<mode> all{
      server_mode("inline", "computed on the event loop (the seeds' BAD version)"),
      server_mode("fork", "childproc::fork of a worker per request (the seeds' GOOD version)"),
      server_mode("pool", "childproc::pool of worker processes (Piscina, over processes)"),
      server_mode("threads", "childproc::pool with isolation::thread (worker_threads)"),
      {"cluster",
       "the whole server in a worker per CPU, computed on each worker's loop "
       "(Node's cluster)",
       "", true,
       [](asio::io_context& io, const mode_config& config) -> std::unique_ptr<deployment> {
         return std::make_unique<cluster_deployment>(io, config);
       }},
  };
  return all;
}

} // namespace demo
