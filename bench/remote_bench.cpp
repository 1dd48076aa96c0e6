// The remote workload: a task's round trip through Redis Streams, with 1 and 64 tasks in flight,
// measured two ways in one run, interleaved, against a private redis-server this program starts
// on a unix socket (no persistence) and stops at its end:
//   hiredis    the floor: one caller connection XADDs the task and reads its reply stream with
//              a blocking XREAD; 2 consumer threads XREADGROUP, XADD the reply and XACK
//              (../shared/design/anchors-wave2.md, section 4)
//   childproc  remote_pool::async_run of an echo task, served by 2 childproc-agent processes
//              (--workers 1 each) running childproc_bench's "echo" handler
// Every task is a 16-byte bytes message echoed back. BullMQ's side is bench/remote_bullmq.js.
//
// Usage: childproc_bench_remote [quick]
// Output: `<peer> remote <metric> <value> <unit>` with metrics tasks_f<N> (tasks/s), p50_f<N>
// and p99_f<N> (µs), N the tasks in flight: bench/report.py's format.
#include "process_cpu.hpp"

#include <childproc/childproc.hpp>
#include <childproc/remote.hpp>

#include <boost/asio/io_context.hpp>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int consumers = 2; // raw consumer threads, and agents: the same count both sides
constexpr int windows[] = {1, 64};
const std::string payload(16, 'x');

// Thrown, not exit(): the destructors stop the server and the agents and remove the directory.
[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

double us_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::micro>(clock_type::now() - t0).count();
}

// Linear-interpolated percentile, as childproc_bench and the peers compute it.
double pct(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  const double idx = static_cast<double>(v.size() - 1) * p;
  const auto lo = static_cast<std::size_t>(idx);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

// What one mode measured at one window, summed over its interleaved slices.
struct cell {
  std::uint64_t tasks = 0;
  double seconds = 0;
  std::vector<double> latency_us;
  // What the tasks cost: the server's commands and CPU time, and the CPU time of the rest.
  double commands = 0, server_cpu_us = 0, client_cpu_us = 0;
};

void report(const char* peer, int window, const cell& c) {
  std::printf("%s remote tasks_f%d %.6g tasks/s\n", peer, window, c.tasks / c.seconds);
  std::printf("%s remote p50_f%d %.6g us\n", peer, window, pct(c.latency_us, 0.5));
  std::printf("%s remote p99_f%d %.6g us\n", peer, window, pct(c.latency_us, 0.99));
  std::printf("%s remote commands_f%d %.6g commands/task\n", peer, window, c.commands / c.tasks);
  std::printf("%s remote server_cpu_f%d %.6g us/task\n", peer, window, c.server_cpu_us / c.tasks);
  std::printf("%s remote client_cpu_f%d %.6g us/task\n", peer, window, c.client_cpu_us / c.tasks);
  std::fflush(stdout);
}

// A private temporary directory, removed with everything in it.
struct temp_dir {
  std::string path;
  temp_dir() {
    std::string pattern = std::filesystem::temp_directory_path() / "childproc-bench-XXXXXX";
    if (!::mkdtemp(pattern.data()))
      fail("mkdtemp failed");
    path = pattern;
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

// Runs `io` until `done()` or `bound` passed; false on the bound.
bool run_until(asio::io_context& io, const std::function<bool()>& done,
               std::chrono::milliseconds bound) {
  const auto end = clock_type::now() + bound;
  io.restart();
  while (!done()) {
    if (clock_type::now() >= end)
      return false;
    io.run_one_for(10ms);
  }
  return true;
}

// A child whose output is kept (wait_for() looks for its `ready` line); stopped and reaped by
// stop() or the destructor, so that no process outlives the bench.
class watched {
public:
  watched(asio::io_context& io, const std::string& program, std::vector<std::string> args)
      : io_(io), child_(childproc::spawn(io, program, std::move(args))) {
    child_.out().on_data([seen = seen_](std::string_view d) { seen->out += d; });
    child_.err().on_data([seen = seen_](std::string_view d) { seen->err += d; });
    child_.on_close(
        [seen = seen_](std::optional<int>, std::optional<int>) { seen->closed = true; });
  }
  ~watched() { stop(); }
  watched(const watched&) = delete;
  watched& operator=(const watched&) = delete;

  pid_t pid() const { return child_.original_pid().value_or(0); }
  void wait_for(const std::string& word) {
    if (!run_until(
            io_, [&] { return seen_->closed || seen_->out.find(word) != std::string::npos; },
            30s) ||
        seen_->closed)
      fail("a child did not start: " + seen_->out + seen_->err);
  }
  // Asks it to stop (SIGTERM) without waiting: the agents stop together.
  void terminate() {
    if (!seen_->closed && !terminated_)
      child_.kill(SIGTERM);
    terminated_ = true;
  }
  // SIGTERM, then SIGKILL if it has not exited within 10 s; reaped either way.
  void stop() {
    terminate();
    if (!run_until(
            io_, [&] { return seen_->closed; }, 10s))
      child_.kill(SIGKILL);
    run_until(
        io_, [&] { return seen_->closed; }, 10s);
  }

private:
  struct record {
    std::string out, err;
    bool closed = false;
  };
  asio::io_context& io_;
  std::shared_ptr<record> seen_ = std::make_shared<record>();
  childproc::child_process child_;
  bool terminated_ = false;
};

std::unique_ptr<watched> start_server(asio::io_context& io, const temp_dir& dir,
                                      const std::string& socket) {
  auto server = std::make_unique<watched>(
      io, "redis-server",
      std::vector<std::string>{"--port", "0", "--unixsocket", socket, "--save", "", "--appendonly",
                               "no", "--dir", dir.path, "--daemonize", "no"});
  server->wait_for("ready to accept connections");
  return server;
}

std::vector<std::unique_ptr<watched>> start_agents(asio::io_context& io,
                                                   const std::string& socket) {
  std::vector<std::unique_ptr<watched>> agents;
  for (int i = 0; i < consumers; ++i)
    agents.push_back(std::make_unique<watched>(
        io, CHILDPROC_BENCH_AGENT,
        std::vector<std::string>{"--server", socket, "--stream", "bench:tasks", "--consumer",
                                 "agent-" + std::to_string(i), "--workers", "1", "--concurrency",
                                 "32", "--", CHILDPROC_BENCH_WORKER}));
  for (auto& a : agents)
    a->wait_for("ready");
  return agents;
}

// --- raw: hiredis, synchronous, pipelined --------------------------------------------------

using redis_ptr = std::unique_ptr<redisContext, decltype(&redisFree)>;
using reply_ptr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

redis_ptr connect(const std::string& socket) {
  redis_ptr c(redisConnectUnix(socket.c_str()), &redisFree);
  if (!c || c->err)
    fail("cannot connect to " + socket);
  return c;
}

void append(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lengths.push_back(a.size());
  }
  redisAppendCommandArgv(c, static_cast<int>(args.size()), argv.data(), lengths.data());
}

reply_ptr next_reply(redisContext* c) {
  void* r = nullptr;
  if (redisGetReply(c, &r) != REDIS_OK || !r)
    fail(std::string("redis: ") + c->errstr);
  reply_ptr reply(static_cast<redisReply*>(r), &freeReplyObject);
  if (reply->type == REDIS_REPLY_ERROR)
    fail(std::string("redis: ") + reply->str);
  return reply;
}

std::string text(const redisReply* r) {
  return {r->str, r->len};
}

// The value of `field` in a stream entry's [field, value, ...] array.
std::string field(const redisReply* fields, std::string_view name) {
  for (std::size_t i = 0; i + 1 < fields->elements; i += 2)
    if (std::string_view(fields->element[i]->str, fields->element[i]->len) == name)
      return text(fields->element[i + 1]);
  fail("a stream entry without " + std::string(name));
}

// The entries of an XREAD / XREADGROUP reply on one stream (empty on its BLOCK timeout).
std::vector<const redisReply*> entries_of(const redisReply* r) {
  std::vector<const redisReply*> out;
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
    return out;
  const redisReply* list = r->element[0]->element[1];
  for (std::size_t i = 0; i < list->elements; ++i)
    out.push_back(list->element[i]);
  return out;
}

struct raw_streams {
  std::string socket, tasks, group = "raw", replies;
};

// One consumer: reads up to 256 tasks, writes each reply, acknowledges them, all pipelined.
void raw_consumer(const raw_streams& s, const std::string& name, const std::atomic<bool>& stop) {
  auto c = connect(s.socket);
  while (!stop.load(std::memory_order_relaxed)) {
    append(c.get(), {"XREADGROUP", "GROUP", s.group, name, "COUNT", "256", "BLOCK", "20", "STREAMS",
                     s.tasks, ">"});
    const auto got = next_reply(c.get());
    const auto entries = entries_of(got.get());
    if (entries.empty())
      continue;
    std::vector<std::string> ack{"XACK", s.tasks, s.group};
    for (const redisReply* e : entries) {
      const redisReply* fields = e->element[1];
      append(c.get(), {"XADD", field(fields, "reply"), "*", "id", field(fields, "id"), "data",
                       field(fields, "data")});
      ack.push_back(text(e->element[0]));
    }
    append(c.get(), ack);
    for (std::size_t i = 0; i <= entries.size(); ++i)
      next_reply(c.get());
  }
}

// The caller's side of one raw slice: a closed loop of `window` tasks for `slice`.
class raw_caller {
public:
  raw_caller(const raw_streams& s, int window, cell& into)
      : s_(s), c_(connect(s.socket)), window_(window), into_(into) {}

  void run(std::chrono::milliseconds slice) {
    const auto t0 = clock_type::now();
    end_ = t0 + slice;
    for (int i = 0; i < window_; ++i)
      submit();
    while (done_ < next_) {
      append(c_.get(), {"XREAD", "COUNT", "256", "BLOCK", "5000", "STREAMS", s_.replies, last_});
      for (int i = 0; i < pending_adds_; ++i)
        next_reply(c_.get());
      pending_adds_ = 0;
      receive(next_reply(c_.get()));
    }
    into_.seconds += us_since(t0) / 1e6;
    into_.tasks += static_cast<std::uint64_t>(done_);
  }

private:
  void submit() {
    sent_.push_back(clock_type::now());
    append(c_.get(), {"XADD", s_.tasks, "*", "id", std::to_string(next_++), "reply", s_.replies,
                      "data", payload});
    ++pending_adds_;
  }
  void receive(const reply_ptr& got) {
    const auto entries = entries_of(got.get());
    if (entries.empty())
      fail("raw: no reply within 5 s");
    for (const redisReply* e : entries) {
      const auto id = std::stoul(field(e->element[1], "id"));
      into_.latency_us.push_back(us_since(sent_.at(id)));
      last_ = text(e->element[0]);
      ++done_;
      if (clock_type::now() < end_)
        submit();
    }
  }

  const raw_streams& s_;
  redis_ptr c_;
  int window_;
  cell& into_;
  clock_type::time_point end_;
  std::vector<clock_type::time_point> sent_;
  int next_ = 0, done_ = 0, pending_adds_ = 0;
  std::string last_ = "0-0";
};

// The consumer threads of one slice: stopped and joined by the destructor, also when the caller
// failed; a consumer's failure is rethrown by finish().
class consumer_threads {
public:
  explicit consumer_threads(const raw_streams& s) {
    for (int i = 0; i < consumers; ++i)
      threads_.emplace_back([this, &s, i] {
        try {
          raw_consumer(s, std::to_string(i), stop_);
        } catch (...) {
          errors_[i] = std::current_exception();
        }
      });
  }
  ~consumer_threads() { join(); }
  consumer_threads(const consumer_threads&) = delete;
  consumer_threads& operator=(const consumer_threads&) = delete;
  void finish() {
    join();
    for (auto& e : errors_)
      if (e)
        std::rethrow_exception(e);
  }

private:
  void join() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }
  std::atomic<bool> stop_{false};
  std::exception_ptr errors_[consumers];
  std::vector<std::thread> threads_;
};

// One raw slice on fresh streams (so that each starts empty), with its consumers.
void raw_slice(const std::string& socket, int window, std::chrono::milliseconds slice, cell& into) {
  static int serial = 0;
  const std::string tag = std::to_string(++serial);
  const raw_streams s{socket, "raw:tasks:" + tag, "raw", "raw:replies:" + tag};
  auto admin = connect(socket);
  append(admin.get(), {"XGROUP", "CREATE", s.tasks, s.group, "$", "MKSTREAM"});
  next_reply(admin.get());
  {
    consumer_threads threads(s);
    raw_caller(s, window, into).run(slice);
    threads.finish();
  }
  append(admin.get(), {"DEL", s.tasks, s.replies});
  next_reply(admin.get());
}

// --- childproc: remote_pool -----------------------------------------------------------------

// One childproc slice's closed loop. Shared with the completions: a run still in flight when the
// slice failed completes later (pool_closed at destroy()) and must find it, and do nothing.
struct slice_state {
  cell* into = nullptr;
  clock_type::time_point end{};
  int sent = 0, done = 0;
  bool over = false;
  std::string error;
};

void submit(childproc::remote_pool& pool, const std::shared_ptr<slice_state>& st) {
  static const auto task = childproc::message::bytes(payload);
  ++st->sent;
  pool.async_run(
      task, childproc::run_options{.name = "echo"},
      [&pool, st, at = clock_type::now()](boost::system::error_code ec, childproc::message m) {
        if (st->over)
          return;
        ++st->done;
        if (ec || !m.is_bytes() || m.bytes().size() != payload.size()) {
          st->error = ec ? ec.message() : "the echo came back changed";
          return;
        }
        st->into->latency_us.push_back(us_since(at));
        if (clock_type::now() < st->end)
          submit(pool, st);
      });
}

void childproc_slice(asio::io_context& io, childproc::remote_pool& pool, int window,
                     std::chrono::milliseconds slice, cell& into) {
  const auto t0 = clock_type::now();
  auto st = std::make_shared<slice_state>();
  st->into = &into;
  st->end = t0 + slice;
  struct over_at_exit {
    slice_state& s;
    ~over_at_exit() { s.over = true; }
  } guard{*st};
  for (int i = 0; i < window; ++i)
    submit(pool, st);
  const bool drained = run_until(
      io, [&] { return st->done == st->sent || !st->error.empty(); }, slice + 30s);
  if (!st->error.empty())
    fail("childproc: " + st->error);
  if (!drained)
    fail("childproc: tasks still in flight 30 s after the slice");
  into.seconds += us_since(t0) / 1e6;
  into.tasks += static_cast<std::uint64_t>(st->done);
}

// The pids of `pid`'s children (the agents' workers).
std::vector<pid_t> children_of(pid_t pid) {
  const std::string p = std::to_string(pid);
  std::ifstream list("/proc/" + p + "/task/" + p + "/children");
  std::vector<pid_t> out;
  for (pid_t child; list >> child;)
    out.push_back(child);
  return out;
}

// This process's CPU time (every thread), in seconds.
double self_cpu_seconds() {
  rusage self{};
  ::getrusage(RUSAGE_SELF, &self);
  return static_cast<double>(self.ru_utime.tv_sec + self.ru_stime.tv_sec) +
         static_cast<double>(self.ru_utime.tv_usec + self.ru_stime.tv_usec) / 1e6;
}

// The counters around each slice: the server's commands and CPU time (INFO), and the CPU time
// of everything else that serves the tasks: this process (the caller, and raw's consumer
// threads), the agents and their workers.
class probe {
public:
  probe(const std::string& socket, std::vector<pid_t> helpers)
      : c_(connect(socket)), helpers_(std::move(helpers)) {
    for (pid_t agent : std::vector<pid_t>(helpers_))
      for (pid_t worker : children_of(agent))
        helpers_.push_back(worker);
  }
  // Runs `slice` and adds the counters' growth over it to `into`.
  template <class Slice>
  void around(cell& into, Slice&& slice) {
    const auto before = counters();
    slice();
    const auto after = counters();
    into.commands += after.commands - before.commands - 1; // not the INFO itself
    into.server_cpu_us += (after.server_cpu - before.server_cpu) * 1e6;
    into.client_cpu_us += (after.client_cpu - before.client_cpu) * 1e6;
  }

private:
  struct sample {
    double commands, server_cpu, client_cpu;
  };
  sample counters() {
    append(c_.get(), {"INFO", "everything"});
    const std::string info = text(next_reply(c_.get()).get());
    double client = self_cpu_seconds();
    for (pid_t pid : helpers_)
      client += process_cpu_seconds(pid);
    return {number(info, "total_commands_processed:"),
            number(info, "used_cpu_sys:") + number(info, "used_cpu_user:"), client};
  }
  static double number(const std::string& info, const std::string& key) {
    const auto at = info.find("\n" + key);
    if (at == std::string::npos)
      fail("INFO without " + key);
    return std::strtod(info.c_str() + at + 1 + key.size(), nullptr);
  }
  redis_ptr c_;
  std::vector<pid_t> helpers_;
};

// --- the schedule ---------------------------------------------------------------------------

struct schedule {
  int rounds;
  std::chrono::milliseconds slice, warmup;
};

void measure(asio::io_context& io, const std::string& socket, std::vector<pid_t> agents,
             const schedule& plan) {
  childproc::remote_pool pool(io, {.server = socket, .stream = "bench:tasks"});
  for (int w : windows) { // warm-up: connections, workers, the server's allocations
    cell scratch;
    raw_slice(socket, w, plan.warmup, scratch);
    childproc_slice(io, pool, w, plan.warmup, scratch);
  }
  probe probe(socket, std::move(agents)); // after the warm-up: the workers run
  cell raw[2], ours[2];
  const auto raw_at = [&](int k) {
    probe.around(raw[k], [&] { raw_slice(socket, windows[k], plan.slice, raw[k]); });
  };
  for (int round = 0; round < plan.rounds; ++round)
    for (int k = 0; k < 2; ++k) {
      // The order of the modes alternates every round: neither always runs first.
      if (round % 2 == 0)
        raw_at(k);
      probe.around(ours[k], [&] { childproc_slice(io, pool, windows[k], plan.slice, ours[k]); });
      if (round % 2 == 1)
        raw_at(k);
    }
  for (int k = 0; k < 2; ++k) {
    report("hiredis", windows[k], raw[k]);
    report("childproc", windows[k], ours[k]);
  }
  pool.destroy();
}

// The server's per-command counters (INFO commandstats) since the last reset: one line per
// command, its calls per task and µs per call.
void print_command_stats(const std::string& socket, std::uint64_t tasks) {
  auto c = connect(socket);
  append(c.get(), {"INFO", "commandstats"});
  std::istringstream lines(text(next_reply(c.get()).get()));
  for (std::string line; std::getline(lines, line);) {
    // cmdstat_xadd:calls=N,usec=N,usec_per_call=F,...
    unsigned long long calls = 0, usec = 0;
    char name[64] = {};
    if (std::sscanf(line.c_str(), "cmdstat_%63[^:]:calls=%llu,usec=%llu", name, &calls, &usec) == 3)
      std::printf("  %-12s %8.4g calls/task %8.4g us/call %8.4g us/task\n", name,
                  static_cast<double>(calls) / static_cast<double>(tasks),
                  static_cast<double>(usec) / static_cast<double>(calls),
                  static_cast<double>(usec) / static_cast<double>(tasks));
  }
}

void reset_command_stats(const std::string& socket) {
  auto c = connect(socket);
  append(c.get(), {"CONFIG", "RESETSTAT"});
  next_reply(c.get());
}

// `profile <in flight> <seconds> [raw]`: one mode alone, in one long slice, and where its CPU
// time goes: by process (the server, this caller, the agents, their workers; µs per task), and
// on the server by command. A run to profile with perf, not part of the table.
void profile(asio::io_context& io, const std::string& socket, const std::vector<pid_t>& agents,
             int window, std::chrono::milliseconds length, bool raw) {
  childproc::remote_pool pool(io, {.server = socket, .stream = "bench:tasks"});
  cell scratch, c;
  childproc_slice(io, pool, window, 300ms, scratch);
  std::vector<pid_t> workers;
  for (pid_t agent : agents)
    for (pid_t worker : children_of(agent))
      workers.push_back(worker);
  const auto cpu_of = [](const std::vector<pid_t>& pids) {
    double sum = 0;
    for (pid_t pid : pids)
      sum += process_cpu_seconds(pid);
    return sum;
  };
  const double caller0 = self_cpu_seconds(), agents0 = cpu_of(agents), workers0 = cpu_of(workers);
  probe server(socket, {});
  reset_command_stats(socket);
  server.around(c, [&] {
    if (raw)
      raw_slice(socket, window, length, c);
    else
      childproc_slice(io, pool, window, length, c);
  });
  const auto per_task = [&](double seconds) { return seconds * 1e6 / c.tasks; };
  std::printf("profile %s f%d: %.6g tasks/s, p50 %.6g us, %.4g commands/task; CPU us/task: server "
              "%.4g, caller %.4g, agents %.4g, workers %.4g\n",
              raw ? "hiredis" : "childproc", window, c.tasks / c.seconds, pct(c.latency_us, 0.5),
              c.commands / c.tasks, c.server_cpu_us / c.tasks,
              per_task(self_cpu_seconds() - caller0), per_task(cpu_of(agents) - agents0),
              per_task(cpu_of(workers) - workers0));
  print_command_stats(socket, c.tasks);
  pool.destroy();
}

int run(const schedule& plan, int profile_window = 0, bool profile_raw = false) {
  asio::io_context io;
  temp_dir dir;
  const std::string socket = dir.path + "/redis.sock";
  auto server = start_server(io, dir, socket);
  {
    auto agents = start_agents(io, socket);
    std::vector<pid_t> pids;
    for (auto& a : agents)
      pids.push_back(a->pid());
    if (profile_window > 0)
      profile(io, socket, pids, profile_window, plan.slice, profile_raw);
    else
      measure(io, socket, std::move(pids), plan);
    for (auto& a : agents)
      a->terminate();
  } // the agents stop before the server
  server.reset();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if ((argc == 4 || argc == 5) && std::string_view(argv[1]) == "profile") {
    const schedule plan{1, std::chrono::milliseconds(std::atoi(argv[3]) * 1000), 0ms};
    return run(plan, std::max(1, std::atoi(argv[2])),
               argc == 5 && std::string_view(argv[4]) == "raw");
  }
  const bool quick = argc > 1 && std::string_view(argv[1]) == "quick";
  // (usage: [quick] | profile <in flight> <seconds> [raw])
  // Full: 3 s per cell in 3 slices; quick: one 0.6 s slice per cell.
  const schedule plan = quick ? schedule{1, 600ms, 150ms} : schedule{3, 1000ms, 300ms};
  try {
    return run(plan);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "remote: %s\n", e.what());
    return 1;
  }
}
