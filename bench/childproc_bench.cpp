// childproc's side of the peer benchmarks: the same workloads as ../shared/bench/peers (the raw
// C baseline and Node's child_process), through childproc's public API only.
//
// Usage: childproc_bench <workload> [quick]
//   spawn        /bin/true spawned and waited for, one at a time: rate, call median, parent CPU
//   exec         async_exec("echo hi"): median and p99 latency
//   concurrency  500 x `sleep 0.2` at once: wall time, parent peak RSS
//   stdout       `head -c 2G /dev/zero` streamed from stdout: GB/s, default and 1 MiB pipes
//   ipc          fork IPC ping-pong of 32-byte messages; 1 MiB one-way messages
//   forkmem      fork() to the first message of a worker; the idle worker's RSS and PSS; this
//                binary, and the same idle worker as a program of its own built by
//                childproc_add_worker (bench/idle_worker.cpp: worker_*)
//   bigparent    spawn rate with 1 GiB of touched memory in the parent, vs. without
//   pipe         childproc::pipe() from `head -c N /dev/zero` into another child's stdin: the
//                parent's peak RSS growth with a slow reader (1 GiB; a python3 loop that reads
//                64 KiB, then sleeps 0.5 ms), then GB/s into `cat > /dev/null` (2 GiB); Node's
//                a.stdout.pipe(b.stdin) on the same data is bench/pipe.js
//   pool         a childproc::pool of 2 worker processes (this binary), as the peers' pools:
//                100 000 tiny {a, b} add tasks with one in flight per worker (tasks_w1), 64 per
//                worker through concurrent_tasks_per_worker (tasks_w64), all queued at once
//                (tasks, Piscina's runAll), pool start + 1000 tasks; 1 MiB bytes tasks echoed
//                back, one in flight per worker (bytes_1MiB, MB/s each way); then the same
//                with isolation::thread (threads_*)
//   workers      seed 004's tables: 1, 10, 100 and 1000 idle workers forked at once (1 and 10
//                quick): the time until all are ready and the sum of their RSS and PSS; and a
//                thread's create + join (the process side is forkmem); Node's side is
//                bench/workers.js
// Output: one line per measurement, `childproc <workload> <metric> <value> <unit>`, the format
// of the peers' programs.
#include "process_cpu.hpp"

#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/io_context.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

namespace asio = boost::asio;
using clock_type = std::chrono::steady_clock;
namespace stdio = childproc::stdio;

bool quick = false;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void out(const char* workload, const char* metric, double value, const char* unit) {
  std::printf("childproc %s %s %.6g %s\n", workload, metric, value, unit);
  std::fflush(stdout);
}

// Linear-interpolated percentile, as the peers compute it.
double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double idx = static_cast<double>(v.size() - 1) * p;
  const auto lo = static_cast<std::size_t>(idx);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

double cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

long max_rss_kib() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// VmRSS and Pss of `pid`, in KiB.
void proc_mem(pid_t pid, long& rss, long& pss) {
  rss = pss = 0;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0)
      rss = std::atol(line.c_str() + 6);
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps_rollup");
  for (std::string line; std::getline(smaps, line);)
    if (line.rfind("Pss:", 0) == 0)
      pss = std::atol(line.c_str() + 4);
}

const childproc::spawn_options quiet{.stdio = {stdio::ignore, stdio::ignore, stdio::ignore}};

// Spawns /bin/true n times, one after the other; returns spawns/s and fills the call times.
double spawn_rate(int n, std::vector<double>* call_ms) {
  asio::io_context io;
  const auto t0 = clock_type::now();
  for (int i = 0; i < n; ++i) {
    const auto a = clock_type::now();
    auto child = childproc::spawn(io, "/bin/true", {}, quiet);
    if (call_ms)
      call_ms->push_back(seconds_since(a) * 1e3);
    child.async_wait([](boost::system::error_code, childproc::exit_status) {});
    io.run();
    io.restart();
  }
  return n / seconds_since(t0);
}

void bench_spawn() {
  const int n = quick ? 200 : 2000;
  spawn_rate(20, nullptr); // warm-up
  std::vector<double> call;
  const double cpu0 = cpu_seconds();
  const double rate = spawn_rate(n, &call);
  const double cpu = cpu_seconds() - cpu0;
  out("spawn", "rate", rate, "spawns/s");
  out("spawn", "call_median", pct(call, 0.5), "ms");
  out("spawn", "parent_cpu", cpu / n * 1e3, "ms/spawn");
}

void bench_exec() {
  const int n = quick ? 100 : 500;
  asio::io_context io;
  std::vector<double> lat;
  for (int i = 0; i < n + 10; ++i) {
    const auto a = clock_type::now();
    bool ok = false;
    childproc::async_exec(io, "echo hi",
                          [&](boost::system::error_code ec, childproc::exec_result r) {
                            ok = !ec && r.out == "hi\n";
                          });
    io.run();
    io.restart();
    if (!ok) {
      std::fprintf(stderr, "exec: unexpected result\n");
      std::exit(1);
    }
    if (i >= 10) // the first ten warm up
      lat.push_back(seconds_since(a) * 1e3);
  }
  out("exec", "median", pct(lat, 0.5), "ms");
  out("exec", "p99", pct(lat, 0.99), "ms");
}

void bench_concurrency() {
  const int n = quick ? 100 : 500;
  asio::io_context io;
  int done = 0;
  const auto t0 = clock_type::now();
  {
    std::vector<childproc::child_process> children;
    children.reserve(n);
    for (int i = 0; i < n; ++i) {
      children.push_back(childproc::spawn(io, "sleep", {"0.2"}, quiet));
      children.back().on_exit([&](auto, auto) { ++done; });
    }
    io.run();
  }
  const double wall = seconds_since(t0);
  if (done != n) {
    std::fprintf(stderr, "concurrency: %d of %d exited\n", done, n);
    std::exit(1);
  }
  out("concurrency", "wall", wall, "s");
  out("concurrency", "peak_rss", static_cast<double>(max_rss_kib()) / 1024.0, "MB");
}

double stream(std::size_t pipe_size) {
  asio::io_context io;
  std::uint64_t total = 0;
  const char* size = quick ? "256M" : "2G";
  const auto t0 = clock_type::now();
  auto child = childproc::spawn(
      io, "head", {"-c", size, "/dev/zero"},
      {.stdio = {stdio::ignore, stdio::pipe, stdio::inherit}, .pipe_size = pipe_size});
  child.out().on_data([&](std::string_view chunk) { total += chunk.size(); });
  io.run();
  const double dt = seconds_since(t0);
  const std::uint64_t expected = quick ? (256ull << 20) : (2ull << 30);
  if (total != expected) {
    std::fprintf(stderr, "stdout: got %llu bytes\n", static_cast<unsigned long long>(total));
    std::exit(1);
  }
  return static_cast<double>(total) / dt / 1e9;
}

void bench_stdout() {
  out("stdout", "head", stream(0), "GB/s");
  out("stdout", "head_pipe1M", stream(1 << 20), "GB/s");
}

// The slow reader of the pipe workload (the same command as bench/pipe.js's).
const std::vector<std::string> slow_reader = {
    "python3", "-c",
    "import sys, time\nr = sys.stdin.buffer.raw\nwhile r.read(65536):\n    time.sleep(0.0005)\n"};

// Seconds to pipe `size` bytes of `head -c` into `reader` with childproc::pipe().
double pipe_through(const std::vector<std::string>& reader, std::uint64_t size) {
  asio::io_context io;
  const auto t0 = clock_type::now();
  auto producer = childproc::spawn(io, "head", {"-c", std::to_string(size), "/dev/zero"},
                                   {.stdio = {stdio::ignore, stdio::pipe, stdio::inherit}});
  auto consumer =
      childproc::spawn(io, reader[0], std::vector<std::string>(reader.begin() + 1, reader.end()),
                       {.stdio = {stdio::pipe, stdio::ignore, stdio::inherit}});
  boost::system::error_code result;
  std::size_t copied = 0;
  childproc::pipe(producer.out(), consumer.in(), [&](boost::system::error_code ec, std::size_t n) {
    result = ec;
    copied = n;
  });
  io.run();
  if (result || copied != size) {
    std::fprintf(stderr, "pipe: %s, %zu bytes\n", result.message().c_str(), copied);
    std::exit(1);
  }
  return seconds_since(t0);
}

void bench_pipe() {
  // The slow reader first: the peak that the fast run may reach must not hide this one's.
  const long rss0 = max_rss_kib();
  pipe_through(slow_reader, quick ? (64ull << 20) : (1ull << 30));
  out("pipe", "slow_rss_growth", static_cast<double>(max_rss_kib() - rss0) / 1024.0, "MB");
  const std::uint64_t size = quick ? (256ull << 20) : (2ull << 30);
  out("pipe", "throughput", static_cast<double>(size) / pipe_through({"cat"}, size) / 1e9, "GB/s");
}

// The ipc worker: echoes small messages; counts big ones and reports their total on "done".
int ipc_worker() {
  asio::io_context io;
  auto parent = childproc::parent_channel(io);
  std::uint64_t big_bytes = 0;
  parent.on_message([&](const childproc::message& m) {
    if (m.is_bytes() && m.bytes().size() > 64) {
      big_bytes += m.bytes().size();
    } else if (m.is_bytes()) {
      parent.send(m);
    } else { // "done"
      parent.send(boost::json::value(big_bytes));
      big_bytes = 0;
    }
  });
  io.run();
  return 0;
}

void bench_ipc(const std::string& self) {
  const int n = quick ? 10000 : 100000;
  const int nbig = quick ? 256 : 2048;
  asio::io_context io;
  auto child = childproc::fork(io, self, {"ipc-worker"});
  const auto ping = childproc::message::bytes(std::string(32, 'x'));
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(n));
  int sent = 0;
  const int warmup = 1000;
  clock_type::time_point t0, a;
  std::uint64_t acked = 0;
  clock_type::time_point big0;
  double rt_dt = 0;
  auto send_ping = [&] {
    a = clock_type::now();
    child.send(ping);
  };
  child.on_message([&](const childproc::message& m) {
    if (!m.is_bytes()) { // the ack of the bulk phase
      acked = m.json().to_number<std::uint64_t>();
      child.disconnect();
      return;
    }
    if (sent > warmup)
      lat.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - a).count());
    if (sent == warmup)
      t0 = clock_type::now();
    if (sent++ < warmup + n) {
      send_ping();
      return;
    }
    rt_dt = seconds_since(t0);
    // One-way bulk: 1 MiB messages, then "done" for the ack.
    const auto big = childproc::message::bytes(std::string(1 << 20, 'y'));
    big0 = clock_type::now();
    for (int i = 0; i < nbig; ++i)
      child.send(big);
    child.send("done");
  });
  send_ping();
  io.run();
  const double big_dt = seconds_since(big0);
  if (acked != static_cast<std::uint64_t>(nbig) << 20) {
    std::fprintf(stderr, "ipc: acked %llu\n", static_cast<unsigned long long>(acked));
    std::exit(1);
  }
  out("ipc", "roundtrips", n / rt_dt, "rt/s");
  out("ipc", "rtt_median", pct(lat, 0.5), "us");
  out("ipc", "rtt_p99", pct(lat, 0.99), "us");
  out("ipc", "oneway_1MiB", static_cast<double>(acked) / big_dt / 1e6, "MB/s");
}

// The forkmem worker: says hello at once, then idles until the parent disconnects.
int idle_worker() {
  asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.send("ready");
  io.run();
  return 0;
}

// The time `pid` has run on a CPU since its clone, in ms (/proc/<pid>/schedstat: nanoseconds,
// where /proc/<pid>/stat counts clock ticks).
double process_run_ms(pid_t pid) {
  std::ifstream schedstat("/proc/" + std::to_string(pid) + "/schedstat");
  double ns = 0;
  schedstat >> ns;
  return ns * 1e-6;
}

// One fork of `program idle-worker`: the time to its first message, the CPU it used until then
// (less disturbed by a loaded machine than the time) and its RSS and PSS once idle, in ms and MB.
struct first_message {
  double ms, cpu_ms, rss, pss;
};
first_message fork_until_first_message(const std::string& program) {
  asio::io_context io;
  first_message m{};
  const auto t0 = clock_type::now();
  auto child = childproc::fork(io, program, {"idle-worker"});
  child.on_message([&](const childproc::message&) {
    m.ms = seconds_since(t0) * 1e3;
    m.cpu_ms = process_run_ms(*child.pid());
    long r = 0, p = 0;
    proc_mem(*child.pid(), r, p);
    m.rss = static_cast<double>(r) / 1024.0;
    m.pss = static_cast<double>(p) / 1024.0;
    child.disconnect();
  });
  io.run();
  return m;
}

// This binary as the worker (fork_*), and, interleaved with it, the same idle worker as a
// program of its own built by childproc_add_worker (worker_*: bench/idle_worker.cpp), when it is
// there.
void bench_forkmem(const std::string& self) {
  const int k = quick ? 3 : 10;
  const std::string worker = self.substr(0, self.rfind('/') + 1) + "childproc_bench_worker";
  const bool have_worker = ::access(worker.c_str(), X_OK) == 0;
  std::vector<first_message> own, built;
  for (int i = 0; i < k; ++i) {
    own.push_back(fork_until_first_message(self));
    if (have_worker)
      built.push_back(fork_until_first_message(worker));
  }
  const auto report = [](const char* prefix, const std::vector<first_message>& runs) {
    const auto median = [&](double first_message::*field) {
      std::vector<double> v;
      for (const auto& r : runs)
        v.push_back(r.*field);
      return pct(v, 0.5);
    };
    const auto metric = [prefix](const char* name) { return std::string(prefix) + name; };
    out("forkmem", metric("startup_median").c_str(), median(&first_message::ms), "ms");
    out("forkmem", metric("startup_cpu").c_str(), median(&first_message::cpu_ms), "ms");
    out("forkmem", metric("rss").c_str(), median(&first_message::rss), "MB");
    out("forkmem", metric("pss").c_str(), median(&first_message::pss), "MB");
  };
  report("fork_", own);
  if (have_worker)
    report("worker_", built);
}

// The workers workload, seed 004's memory table measured: n idle workers (this binary) forked at
// once; once every one has said "ready", the time that took and the sum of their RSS and PSS.
// PSS divides a shared page between the processes that map it, so its sum is what the workers
// really cost the machine; RSS counts the shared pages (the executable, libc) in each again.
void workers_memory(const std::string& self, int n) {
  asio::io_context io;
  std::vector<childproc::child_process> children;
  children.reserve(static_cast<std::size_t>(n));
  int ready = 0;
  const auto t0 = clock_type::now();
  const auto all_ready = [&] {
    const double ms = seconds_since(t0) * 1e3;
    long rss_kib = 0, pss_kib = 0;
    for (auto& child : children) {
      long r = 0, p = 0;
      proc_mem(*child.pid(), r, p);
      rss_kib += r;
      pss_kib += p;
    }
    // snprintf, not "ready_" + std::to_string(n): g++ 12 -O3 warns falsely (-Wrestrict) there.
    const auto metric = [n](const char* name) {
      std::array<char, 32> text{};
      std::snprintf(text.data(), text.size(), "%s_%d", name, n);
      return text;
    };
    out("workers", metric("ready").data(), ms, "ms");
    out("workers", metric("rss_total").data(), static_cast<double>(rss_kib) / 1024.0, "MB");
    out("workers", metric("pss_total").data(), static_cast<double>(pss_kib) / 1024.0, "MB");
    for (auto& child : children)
      child.disconnect();
  };
  for (int i = 0; i < n; ++i) {
    children.push_back(childproc::fork(io, self, {"idle-worker"}));
    children.back().on_message([&](const childproc::message&) {
      if (++ready == n)
        all_ready();
    });
  }
  io.run();
}

// A thread created and joined, k times: the other half of seed 004's "creation cost" row (the
// process half is forkmem's fork -> first message).
void thread_creation(int k) {
  std::vector<double> us;
  for (int i = 0; i < k; ++i) {
    const auto t0 = clock_type::now();
    std::thread([] {}).join();
    us.push_back(seconds_since(t0) * 1e6);
  }
  out("workers", "thread_create_join", pct(us, 0.5), "us");
}

void bench_workers(const std::string& self) {
  for (const int n : {1, 10, 100, 1000})
    if (!quick || n <= 10)
      workers_memory(self, n);
  thread_creation(quick ? 20 : 200);
}

void bench_bigparent() {
  const int n = quick ? 100 : 500;
  spawn_rate(20, nullptr);
  const double small = spawn_rate(n, nullptr);
  const std::size_t size = quick ? (256u << 20) : (1u << 30);
  char* ballast = static_cast<char*>(std::malloc(size));
  std::memset(ballast, 1, size); // touched: resident, as a real parent's heap
  const double big = spawn_rate(n, nullptr);
  out("bigparent", "rate_small_parent", small, "spawns/s");
  out("bigparent", quick ? "rate_256MiB_parent" : "rate_1GiB_parent", big, "spawns/s");
  out("bigparent", "ratio", big / small, "x");
  std::free(ballast);
}

// The pool's tasks: {a, b} -> a + b (the peers' task); "echo" answers its bytes task with the
// same message (the bytes are shared, not copied). Served by the process workers (this binary)
// and by the thread workers alike.
childproc::task_table pool_tasks() {
  return {
      {"",
       [](const childproc::message& task) -> childproc::message {
         const auto& t = task.json().as_object();
         return boost::json::value(t.at("a").to_number<std::int64_t>() +
                                   t.at("b").to_number<std::int64_t>());
       }},
      {"echo", [](const childproc::message& task) { return task; }},
  };
}

int pool_worker() {
  asio::io_context io;
  return childproc::serve(io, pool_tasks());
}

[[noreturn]] void pool_failed(const char* what, boost::system::error_code ec) {
  std::fprintf(stderr, "pool: %s: %s\n", what, ec.message().c_str());
  std::exit(1);
}

// Runs `io` until `done` is true (the pool keeps `io` busy: run() would not return).
void run_until(asio::io_context& io, const bool& done) {
  io.restart();
  while (!done && io.run_one() != 0) {
  }
}

// n tiny tasks {a: i, b: 1}, at most `window` outstanding (0: all n at once); returns tasks/s.
double run_tiny(asio::io_context& io, childproc::pool& pool, int n, int window) {
  int next = 0, done = 0;
  std::int64_t sum = 0;
  bool finished = false;
  std::function<void()> submit = [&] {
    const int i = next++;
    pool.async_run(boost::json::value{{"a", i}, {"b", 1}},
                   [&](boost::system::error_code ec, childproc::message result) {
                     if (ec)
                       pool_failed("tiny task", ec);
                     sum += result.json().to_number<std::int64_t>();
                     if (++done == n)
                       finished = true;
                     else if (next < n)
                       submit();
                   });
  };
  const auto t0 = clock_type::now();
  for (int k = 0; k < (window > 0 ? window : n); ++k)
    submit();
  run_until(io, finished);
  const double dt = seconds_since(t0);
  if (sum != static_cast<std::int64_t>(n) * (n - 1) / 2 + n) {
    std::fprintf(stderr, "pool: bad sum\n");
    std::exit(1);
  }
  return n / dt;
}

// n round trips of one 1 MiB bytes message, one in flight per worker; returns MB/s each way.
double run_bytes(asio::io_context& io, childproc::pool& pool, int n) {
  const auto payload = childproc::message::bytes(std::string(1 << 20, 'z'));
  int next = 0, done = 0;
  bool finished = false;
  std::function<void()> submit = [&] {
    ++next;
    pool.async_run(payload, childproc::run_options{.name = "echo"},
                   [&](boost::system::error_code ec, childproc::message back) {
                     if (ec)
                       pool_failed("bytes task", ec);
                     if (!back.is_bytes() || back.bytes().size() != payload.bytes().size()) {
                       std::fprintf(stderr, "pool: the bytes task came back changed\n");
                       std::exit(1);
                     }
                     if (++done == n)
                       finished = true;
                     else if (next < n)
                       submit();
                   });
  };
  const auto t0 = clock_type::now();
  for (int k = 0; k < 2; ++k)
    submit();
  run_until(io, finished);
  return static_cast<double>(n) * static_cast<double>(1 << 20) / seconds_since(t0) / 1e6;
}

void close_pool(asio::io_context& io, childproc::pool& pool) {
  bool closed = false;
  pool.async_close([&](boost::system::error_code ec) {
    if (ec)
      pool_failed("close", ec);
    closed = true;
  });
  run_until(io, closed);
}

// Two workers, as the C, Node and Piscina pools; `per_worker` tasks in flight on each.
childproc::pool_options two_workers(childproc::isolation where, std::size_t per_worker) {
  childproc::pool_options options{.isolation = where,
                                  .min_workers = 2,
                                  .max_workers = 2,
                                  .concurrent_tasks_per_worker = per_worker};
  if (where == childproc::isolation::thread)
    options.tasks = pool_tasks();
  return options;
}

// The pool rows for one isolation; the metrics of isolation::thread have the prefix "threads_".
void bench_pool_of(childproc::isolation where, const std::string& prefix) {
  const int n = quick ? 10000 : 100000;
  const auto metric = [&](const char* name) { return prefix + name; };
  asio::io_context io;
  {
    const auto t0 = clock_type::now();
    childproc::pool pool(io, two_workers(where, 1));
    std::vector<pid_t> worker_pids; // process workers; thread workers count in cpu_seconds()
    if (where == childproc::isolation::process)
      pool.on_worker_create([&](pid_t pid) { worker_pids.push_back(pid); });
    const auto all_cpu = [&] {
      double total = cpu_seconds();
      for (pid_t pid : worker_pids)
        total += process_cpu_seconds(pid);
      return total;
    };
    run_tiny(io, pool, 1000, 0); // Piscina's warm-up: the workers started, 1000 tasks done
    out("pool", metric("startup_plus_1k").c_str(), seconds_since(t0) * 1e3, "ms");
    // CPU per task of the pool and its workers together, as Piscina's peer measures its process
    // (main thread and worker threads): a figure the machine's load does not change much.
    const double cpu0 = all_cpu();
    out("pool", metric("tasks").c_str(), run_tiny(io, pool, n, 0), "tasks/s");
    out("pool", metric("cpu_per_task").c_str(), (all_cpu() - cpu0) / n * 1e6, "us");
    out("pool", metric("tasks_w1").c_str(), run_tiny(io, pool, n, 2), "tasks/s");
    out("pool", metric("bytes_1MiB").c_str(), run_bytes(io, pool, quick ? 64 : 1024), "MB/s");
    close_pool(io, pool);
  }
  {
    childproc::pool pool(io, two_workers(where, 64));
    run_tiny(io, pool, 1000, 128); // warm-up, as the peers' (not timed)
    out("pool", metric("tasks_w64").c_str(), run_tiny(io, pool, n, 128), "tasks/s");
    close_pool(io, pool);
  }
}

void bench_pool() {
  bench_pool_of(childproc::isolation::process, "");
  bench_pool_of(childproc::isolation::thread, "threads_");
}

} // namespace

int main(int argc, char** argv) {
  if (childproc::is_pool_worker()) // started by bench_pool's pool
    return pool_worker();
  if (argc < 2) {
    std::fprintf(
        stderr,
        "usage: %s spawn|exec|concurrency|stdout|ipc|forkmem|bigparent|pool|pipe|workers [quick]\n",
        argv[0]);
    return 2;
  }
  const std::string_view workload = argv[1];
  if (workload == "ipc-worker")
    return ipc_worker();
  if (workload == "idle-worker")
    return idle_worker();
  quick = argc > 2 && std::string_view(argv[2]) == "quick";
  const std::string self = childproc::self_exe();
  if (workload == "spawn")
    bench_spawn();
  else if (workload == "exec")
    bench_exec();
  else if (workload == "concurrency")
    bench_concurrency();
  else if (workload == "stdout")
    bench_stdout();
  else if (workload == "ipc")
    bench_ipc(self);
  else if (workload == "forkmem")
    bench_forkmem(self);
  else if (workload == "bigparent")
    bench_bigparent();
  else if (workload == "pool")
    bench_pool();
  else if (workload == "pipe")
    bench_pipe();
  else if (workload == "workers")
    bench_workers(self);
  else {
    std::fprintf(stderr, "unknown workload %s\n", argv[1]);
    return 2;
  }
  return 0;
}
