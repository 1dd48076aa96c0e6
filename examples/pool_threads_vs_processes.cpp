// The source document's worker_threads vs child processes trade-off, shown rather than told:
//
//   worker_threads: share the same address space and process PID. Bugs in native addons or
//                   memory corruption can affect whole process.
//   child_process:  full process isolation (separate memory, separate PID); crashes in child
//                   usually don't crash the parent.
//
// The same CPU task (longComputation({n}) of the Piscina snippet) runs on two pools that serve
// the same task table: one of worker processes (the default isolation), one of threads of this
// process (isolation::thread): the threads all report the main pid, the workers their own. Then a
// task that crashes (std::abort) fails alone on the process pool, with errc::worker_died, while
// the pool replaces the worker and keeps answering; the same crash on a thread worker ends the
// whole process that runs the pool (shown in a child, so that this example survives to report
// it). The timings are printed for the curious and never checked: they depend on the machine and
// its load.
#include <childproc/childproc.hpp>
#include <childproc/pool.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using clock_type = std::chrono::steady_clock;

constexpr long long n = 20'000'000; // a few tens of milliseconds a task
constexpr int tasks = 4;

// longTask.js, with the kernel's ids of the process and thread that ran it.
json::value long_computation(long long count) {
  volatile long long sum = 0; // volatile: keep the loop, as the snippet's is real work
  for (long long i = 0; i < count; ++i)
    sum = sum + i;
  return {{"result", sum}, {"pid", ::getpid()}, {"tid", ::gettid()}};
}

[[noreturn]] void crash() {
  const rlimit no_core{0, 0}; // a demonstration: no core file
  ::setrlimit(RLIMIT_CORE, &no_core);
  std::abort(); // what a native addon's memory corruption ends in, at best
}

childproc::task_table worker_tasks() {
  return {
      {"",
       [](const childproc::message& task) -> childproc::message {
         return long_computation(task.json().at("n").to_number<long long>());
       }},
      {"crash", [](const childproc::message&) -> childproc::message { crash(); }},
  };
}

struct ids {
  std::set<long long> pids, tids;
  void add(const json::value& reply) {
    pids.insert(reply.at("pid").to_number<long long>());
    tids.insert(reply.at("tid").to_number<long long>());
  }
};

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

// Waits until `pending` falls to 0 (the callbacks cancel `all_done` then).
asio::awaitable<void> wait_all(asio::steady_timer& all_done) {
  boost::system::error_code cancelled;
  co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, cancelled));
}

// `tasks` tasks at once on `pool`, whichever its isolation.
asio::awaitable<ids> run_all(childproc::pool& pool) {
  ids seen;
  int pending = tasks;
  asio::steady_timer all_done(co_await asio::this_coro::executor, clock_type::time_point::max());
  for (int i = 0; i < tasks; ++i)
    pool.async_run(json::value{{"n", n}}, [&](boost::system::error_code ec, childproc::message m) {
      if (ec)
        throw boost::system::system_error(ec, "task");
      seen.add(m.json());
      if (--pending == 0)
        all_done.cancel();
    });
  co_await wait_all(all_done);
  co_return seen;
}

// A crash on the process pool: only the crashing task fails; the next task is answered.
asio::awaitable<void> crash_on_processes(childproc::pool& pool) {
  // A named run_options: GCC 12 destroys an aggregate temporary of a co_await expression twice
  // (a double free).
  const childproc::message no_data;
  const childproc::run_options crash_task{.name = "crash"};
  boost::system::error_code ec;
  co_await pool.async_run(no_data, crash_task, asio::redirect_error(asio::use_awaitable, ec));
  fmt::print("process pool, crash task: {}\n", ec == childproc::errc::worker_died
                                                   ? "failed alone with worker_died"
                                                   : "unexpected: " + ec.message());
  const childproc::message small(json::value{{"n", 1000}});
  const auto after = co_await pool.async_run(small, asio::use_awaitable);
  fmt::print("process pool, next task: {}\n",
             after.json().at("result") == 499500 ? "answered (499500)" : "wrong answer");
}

childproc::pool_options two_workers(childproc::isolation where) {
  childproc::pool_options options{.isolation = where, .min_workers = 2, .max_workers = 2};
  if (where == childproc::isolation::thread)
    options.tasks = worker_tasks(); // a process worker has them in its own main()
  return options;
}

// The child that shows a crash on a thread worker: one crashes while the other runs a task.
int thread_crash_child() {
  asio::io_context io;
  childproc::pool threads(io, two_workers(childproc::isolation::thread));
  threads.async_run(json::value{{"n", n * 50}}, [](boost::system::error_code, childproc::message) {
  }); // seconds long: never finishes
  threads.async_run(json::value(nullptr), childproc::run_options{.name = "crash"},
                    [](boost::system::error_code, childproc::message) {
                      fmt::print("unexpected: the thread pool survived the crash\n");
                      std::exit(1);
                    });
  io.run();
  return 1;
}

asio::awaitable<void> crash_on_threads() {
  const auto ex = co_await asio::this_coro::executor;
  auto child = childproc::spawn(ex, childproc::self_exe(), {"thread-crash"});
  const auto status = co_await child.async_wait(asio::use_awaitable);
  fmt::print("thread pool, crash task: the whole process ended ({}), its other task with it\n",
             status.signal ? childproc::signal_name(*status.signal)
                           : fmt::format("exit code {}", status.code.value_or(-1)));
}

asio::awaitable<void> compare(childproc::pool& pool, childproc::pool& threads) {
  const long long main_pid = ::getpid();
  auto t0 = clock_type::now();
  const ids processes = co_await run_all(pool);
  const double process_ms = ms_since(t0);
  t0 = clock_type::now();
  const ids in_threads = co_await run_all(threads);
  const double thread_ms = ms_since(t0);

  fmt::print("main: pid {}\n", main_pid);
  fmt::print("process pool: {} tasks ran in pids {}: the main pid among them: {}\n", tasks,
             processes.pids, processes.pids.count(main_pid) == 1);
  fmt::print("thread pool: {} tasks ran in pids {}, on threads {}: only the main pid: {}\n", tasks,
             in_threads.pids, in_threads.tids, in_threads.pids == std::set<long long>{main_pid});
  fmt::print("(time for {} tasks: processes {:.0f} ms, threads {:.0f} ms; not checked)\n", tasks,
             process_ms, thread_ms);

  co_await crash_on_processes(pool);
  co_await crash_on_threads();
  co_await pool.async_close(asio::use_awaitable);
  co_await threads.async_close(asio::use_awaitable);
}

} // namespace

int main(int argc, char** argv) {
  asio::io_context io;
  if (childproc::is_pool_worker())
    return childproc::serve(io, worker_tasks());
  if (argc > 1 && std::string_view(argv[1]) == "thread-crash")
    return thread_crash_child();

  childproc::pool pool(io, two_workers(childproc::isolation::process));
  childproc::pool threads(io, two_workers(childproc::isolation::thread));
  std::vector<std::string> worker_signals; // of the workers that did not exit normally
  pool.on_worker_exit([&](pid_t, const childproc::exit_status& status) {
    if (status.signal)
      worker_signals.push_back(childproc::signal_name(*status.signal));
  });
  asio::co_spawn(io, compare(pool, threads), [](std::exception_ptr e) {
    if (e)
      std::rethrow_exception(e);
  });
  io.run(); // returns once the pools are closed: every worker_exit event has run
  fmt::print("process pool: workers ended by a signal: {}, the others exited at the close\n",
             worker_signals);
}
