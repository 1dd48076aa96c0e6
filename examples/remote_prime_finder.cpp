// The prime finder of pool_prime_finder.cpp, on many hosts: the same kind of worker function and
// async_run calls, with a childproc::remote_pool in place of the childproc::pool. The
// tasks go through a Redis stream to childproc-agent processes, each running this program as its
// pool's worker (`childproc-agent --server ... -- remote_prime_finder --childproc-pool-worker`).
//
//   remote_prime_finder --server HOST:PORT|PATH   against agents already running there
//   remote_prime_finder                            starts a private redis-server and two agents
//                                                  on this machine first (what systemd units do
//                                                  on real hosts: docs/scale-out.md), then stops
//                                                  them
#include <childproc/childproc.hpp>
#include <childproc/remote.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace {

namespace json = boost::json;

bool is_prime(long n) {
  if (n < 2)
    return false;
  for (long i = 2; i * i <= n; ++i)
    if (n % i == 0)
      return false;
  return true;
}

// The worker: the primes of [start, end). It reports its progress every 10 000 numbers.
childproc::message prime_finder(const childproc::message& chunk, childproc::task_context& ctx) {
  const long start = chunk.json().at("start").to_number<long>();
  const long end = chunk.json().at("end").to_number<long>();
  json::array primes;
  for (long i = start; i < end; ++i) {
    if (is_prime(i))
      primes.push_back(i);
    if ((i - start + 1) % 10'000 == 0)
      ctx.progress(json::value{{"checked", i - start + 1}});
  }
  return json::value(std::move(primes));
}

// The caller: one remote task per chunk; `done` gets the sorted primes of 0..limit.
void find_primes(childproc::remote_pool& pool, long limit, long chunks, long& progress_updates,
                 std::function<void(std::vector<long>)> done) {
  struct request {
    std::vector<long> primes;
    long pending;
    std::function<void(std::vector<long>)> done;
  };
  const long chunk_size = (limit + chunks) / chunks; // covers 0..limit inclusive
  auto req = std::make_shared<request>(request{{}, chunks, std::move(done)});
  for (long i = 0; i < chunks; ++i) {
    const long start = i * chunk_size;
    const long end = std::min(start + chunk_size, limit + 1);
    pool.async_run(json::value{{"start", start}, {"end", end}},
                   childproc::run_options{
                       .on_progress = [&](const childproc::message&) { ++progress_updates; }},
                   [req](boost::system::error_code ec, childproc::message primes) {
                     if (ec)
                       throw boost::system::system_error(ec, "prime finder task");
                     for (const auto& p : primes.json().as_array())
                       req->primes.push_back(p.to_number<long>());
                     if (--req->pending == 0) {
                       std::sort(req->primes.begin(), req->primes.end());
                       req->done(std::move(req->primes));
                     }
                   });
  }
}

// A child whose output is kept, for the private cluster below.
struct watched {
  childproc::child_process child;
  std::string out;
  bool closed = false;
  watched(boost::asio::io_context& io, const std::string& program, std::vector<std::string> args)
      : child(childproc::spawn(io, program, std::move(args))) {
    child.out().on_data([this](std::string_view d) { out += d; });
    child.on_close([this](std::optional<int>, std::optional<int>) { closed = true; });
  }
};

// Runs `io` until `done` holds (30 s at most).
bool run_until(boost::asio::io_context& io, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done() && std::chrono::steady_clock::now() < deadline)
    io.run_one_for(std::chrono::milliseconds(50));
  return done();
}

// This machine as a small cluster: a redis-server on a unix socket in a private directory (no
// persistence), and two agents whose local pools run this program as their worker.
class private_cluster {
public:
  explicit private_cluster(boost::asio::io_context& io) : io_(io) {
    char pattern[] = "/tmp/remote-prime-finder-XXXXXX";
    if (::mkdtemp(pattern) == nullptr)
      throw std::system_error(errno, std::generic_category(), "mkdtemp");
    dir_ = pattern;
    socket_ = dir_ + "/redis.sock";
    redis_ = std::make_unique<watched>(
        io, "redis-server",
        std::vector<std::string>{"--port", "0", "--unixsocket", socket_, "--save", "",
                                 "--appendonly", "no", "--dir", dir_});
    if (!run_until(io, [&] { return redis_->out.find("ready to accept") != std::string::npos; }))
      throw std::runtime_error("redis-server did not start: " + redis_->out);
    for (const char* name : {"host-a", "host-b"})
      agents_.push_back(std::make_unique<watched>(
          io, CHILDPROC_AGENT,
          std::vector<std::string>{"--server", socket_, "--consumer", name, "--workers", "2", "--",
                                   childproc::self_exe(), "--childproc-pool-worker"}));
    const bool ready = run_until(io, [&] {
      return std::all_of(agents_.begin(), agents_.end(),
                         [](auto& a) { return a->out.find("ready") != std::string::npos; });
    });
    if (!ready)
      throw std::runtime_error("the agents did not start");
  }
  // SIGTERM: each agent lets its tasks finish, prints "agent NAME: N tasks" and exits.
  ~private_cluster() {
    for (auto& a : agents_)
      a->child.kill(SIGTERM);
    run_until(io_, [&] {
      return std::all_of(agents_.begin(), agents_.end(), [](auto& a) { return a->closed; });
    });
    for (auto& a : agents_)
      if (const auto last = a->out.rfind("agent "); last != std::string::npos)
        fmt::print("{}", a->out.substr(last));
    redis_->child.kill(SIGTERM);
    run_until(io_, [&] { return redis_->closed; });
    std::filesystem::remove_all(dir_);
  }
  const std::string& server() const { return socket_; }

private:
  boost::asio::io_context& io_;
  std::string dir_, socket_;
  std::unique_ptr<watched> redis_;
  std::vector<std::unique_ptr<watched>> agents_;
};

} // namespace

int run(boost::asio::io_context& io, int argc, char** argv);

int main(int argc, char** argv) {
  boost::asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, prime_finder);
  // Caught here, an error unwinds through the private cluster's destructor: its agents and
  // server are stopped and its directory removed.
  try {
    return run(io, argc, argv);
  } catch (const std::exception& e) {
    fmt::print(stderr, "remote_prime_finder: {}\n", e.what());
    return 1;
  }
}

int run(boost::asio::io_context& io, int argc, char** argv) {
  std::optional<private_cluster> cluster;
  std::string server;
  if (argc == 3 && std::string(argv[1]) == "--server") {
    server = argv[2];
  } else {
    cluster.emplace(io);
    server = cluster->server();
  }
  long updates = 0;
  {
    childproc::remote_pool pool(io, {.server = server}); // childproc::pool pool(io, {...});
    bool finished = false;
    find_primes(pool, 100'000, 8, updates, [&](std::vector<long> primes) {
      fmt::print("{{\"count\": {}, \"last\": [{}], \"range\": \"1-100000\"}}\n", primes.size(),
                 primes.empty() ? 0 : primes.back());
      finished = true;
    });
    if (!run_until(io, [&] { return finished; }))
      throw std::runtime_error("the remote tasks did not complete in 30 s");
    fmt::print("8 remote tasks, {} progress messages, {} completed\n", updates,
               pool.stats().completed);
  }
  // (the cluster's destructor prints each agent's task count)
  return 0;
}
