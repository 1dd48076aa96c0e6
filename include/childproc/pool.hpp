// pool: Piscina's worker pool, over processes. Tasks go to a set of worker processes (the current
// binary by default, answering with childproc::serve, or a Node script); a worker that crashes
// fails only its own tasks and is replaced.
#pragma once

#include <childproc/detail/completion.hpp>
#include <childproc/executor.hpp>
#include <childproc/exit_status.hpp>
#include <childproc/message.hpp>
#include <childproc/options.hpp>
#include <childproc/serve.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <sys/types.h>
#include <system_error>
#include <type_traits>
#include <vector>

namespace childproc {
namespace detail {
struct pool_state;
struct pool_task;
} // namespace detail

inline namespace v1 {

/// The largest number of tasks waiting for a worker (Piscina's maxQueue): a count, unbounded
/// (the default), or automatic (max_workers squared).
class queue_limit {
public:
  constexpr queue_limit(std::size_t count) noexcept : count_(count) {}
  static constexpr queue_limit unbounded() noexcept {
    return queue_limit(std::numeric_limits<std::size_t>::max());
  }
  static constexpr queue_limit automatic() noexcept { return queue_limit(automatic_tag{}); }
  constexpr bool is_automatic() const noexcept { return automatic_; }
  /// The limit for a pool of `max_workers`.
  constexpr std::size_t resolve(std::size_t max_workers) const noexcept {
    return automatic_ ? max_workers * max_workers : count_;
  }

private:
  struct automatic_tag {};
  constexpr explicit queue_limit(automatic_tag) noexcept : count_(0), automatic_(true) {}
  std::size_t count_;
  bool automatic_ = false;
};

/// Where a pool's workers run.
enum class isolation {
  /// Worker processes (the default): a crash, a leak or a kill stays in its worker; tasks and
  /// results are copied through a socket.
  process,
  /// Threads of this process, each running pool_options::tasks on its own io_context as a
  /// worker process would (the same envelope over an in-process socket pair, so every feature
  /// behaves alike): cheaper to start and smaller, but a crash takes the whole process, and a
  /// thread cannot be killed: a timed-out or force-cancelled handler keeps its thread until it
  /// returns (the pool replaces the worker meanwhile), and destroying the pool waits for it.
  thread,
};

struct pool_options {
  /// process (default) or thread. With thread, `tasks` and `thread_hooks` are the workers, and
  /// program, args, worker_options, nice, max_worker_rss and max_worker_address_space do not
  /// apply (a non-empty program is errc::invalid_argument).
  childproc::isolation isolation = childproc::isolation::process;
  /// isolation::thread only: the handlers every thread worker serves (serve()'s table), required
  /// there; with isolation::process it must be empty (the worker program has its own).
  task_table tasks{};
  /// isolation::thread only: on_init / on_broadcast for each thread worker. Default: none.
  serve_options thread_hooks{};
  /// The worker program. Default: empty, the current binary (self_exe()) with `args` defaulting to
  /// {"--childproc-pool-worker"}; its main() calls serve() when is_pool_worker() is true. A .js
  /// script runs under Node (see worker_options.exec_path) and must speak the pool's envelope:
  /// share/childproc/childproc-pool-worker.js does (docs/pool.md).
  std::string program{};
  /// The worker's arguments. Default: none (for the current binary: {"--childproc-pool-worker"}).
  std::vector<std::string> args{};
  /// Workers kept running however idle, started with the pool. Default: nullopt, max(cpus / 2, 1)
  /// (Piscina's minThreads), at most max_workers.
  std::optional<std::size_t> min_workers{};
  /// The most workers running at once. Default: nullopt, cpus * 1.5 rounded up (Piscina's
  /// maxThreads). 0 is errc::invalid_argument.
  std::optional<std::size_t> max_workers{};
  /// How long a worker above min_workers stays idle before it is retired. Default: 0, at once
  /// (Piscina's).
  std::chrono::milliseconds idle_timeout{0};
  /// Tasks waiting for a worker; past it async_run fails at once with errc::queue_full.
  /// Default: unbounded.
  queue_limit max_queue = queue_limit::unbounded();
  /// Tasks in flight on one worker at once (they may complete out of order). Default: 1.
  std::size_t concurrent_tasks_per_worker = 1;
  /// Recycling: a worker that completed this many tasks is replaced. Default: 0, never.
  std::size_t max_tasks_per_worker = 0;
  /// A task running longer fails with errc::timed_out and its worker is killed (kill_signal,
  /// then SIGKILL after kill_after) and replaced. run_options::timeout overrides it per task.
  /// Default: 0, no limit.
  std::chrono::milliseconds task_timeout{0};
  /// The grace between the cancel message to a worker running a cancelled task and the kill.
  /// Default: 1 s.
  std::chrono::milliseconds cancel_grace{1000};
  /// The signal that kills a worker (timeout, cancellation, destroy), by number or Node's name
  /// ("SIGINT"), and how long before SIGKILL follows. Defaults: SIGTERM, 1 s. An unknown name
  /// makes the pool's constructor throw errc::unknown_signal; 0 or a number past the last
  /// signal, errc::invalid_argument.
  signal_choice kill_signal = SIGTERM;
  std::chrono::milliseconds kill_after{1000};
  /// Recycling on memory: a worker whose resident set is above this many bytes after a task is
  /// replaced (its result is delivered first). Default: 0, no check.
  std::size_t max_worker_rss = 0;
  /// A hard cap on each worker's address space (RLIMIT_AS, set on the worker as it starts): an
  /// allocation past it fails in the worker. Default: 0, the inherited limit.
  std::size_t max_worker_address_space = 0;
  /// The workers' nice value increment (setpriority, Piscina's niceIncrement). Default: 0.
  int nice = 0;
  /// Sent to every worker before its first task; serve_options::on_init receives it (Piscina's
  /// workerData). Default: null.
  message worker_data{};
  /// How the workers are started: env, cwd, uid/gid, stdio, serialization, exec_path, ...
  /// (fork()'s options). Default: fork()'s defaults (stdio inherited).
  fork_options worker_options{};
  /// How long async_close() lets running and queued tasks finish before the workers are killed
  /// and it completes with errc::timed_out. Default: 30 s (Piscina's closeTimeout).
  std::chrono::milliseconds close_timeout{30000};
  /// A worker that has not reported ready this long after its start is killed and counts as a
  /// start-up failure. Default: 10 s.
  std::chrono::milliseconds startup_timeout{10000};
  /// Start-up failures in a row after which the pool stops respawning, fails the queued tasks
  /// with errc::worker_start_failed and emits `error`; it retries after a backoff that doubles
  /// from 100 ms up to 10 s, and a worker that becomes ready resets it. Default: 3.
  std::size_t max_startup_failures = 3;
};

/// Per-task options of async_run.
struct run_options {
  /// The handler to run (serve()'s task_table). Default: "", the default handler.
  std::string name{};
  /// Overrides pool_options::task_timeout for this task; 0 keeps the pool's. Default: 0.
  std::chrono::milliseconds timeout{0};
  /// Receives the task's progress messages (task_context::progress), in order, before the
  /// completion: each is posted to the completion handler's executor, so the order holds where
  /// that executor runs handlers in order (a strand, an io_context run by one thread). Default:
  /// none.
  std::function<void(const message& update)> on_progress{};
};

/// Run-time or wait-time percentiles, in microseconds (a log-linear histogram: within 1/32).
struct latency_summary {
  std::uint64_t count = 0;
  double mean = 0;
  std::uint64_t p50 = 0, p90 = 0, p99 = 0, max = 0;
};

struct pool_stats {
  std::uint64_t completed = 0; ///< tasks that completed successfully
  std::uint64_t failed = 0;    ///< accepted tasks that completed with an error (cancelled ones
                               ///< included; runs refused at once, queue_full, are not counted)
  std::size_t queue_size = 0;  ///< tasks waiting for a worker
  std::size_t workers = 0;     ///< workers the pool has (starting, retiring and killed ones too)
  std::size_t busy_workers = 0;
  std::size_t idle_workers = 0;
  std::uint64_t workers_started = 0;
  /// Run time of the completed tasks over (time since the pool started × max_workers), as
  /// Piscina's utilization.
  double utilization = 0;
  latency_summary run_time;  ///< from dispatch to result
  latency_summary wait_time; ///< from async_run to dispatch
};

/// A pool of worker processes.
///
/// async_run(task, [options,] token) completes with void(boost::system::error_code, message): the
/// worker's result, or an error: errc::queue_full, pool_closed, worker_died, timed_out,
/// task_failed (the message is the worker's error), unknown_task, malformed_message (the worker
/// sent something that is not the pool's envelope: it is killed and replaced),
/// worker_start_failed, or asio::error::operation_aborted when cancelled. Cancelling a queued task
/// removes it; cancelling a running one sends the worker a cancel message
/// (task_context::cancelled), and kills and replaces the worker if it has not answered after
/// cancel_grace. Completions never run inside async_run.
///
/// Events (handlers run on the pool's executor, in order): `drain` when the queue has emptied
/// after `needs_drain`; `worker_create(pid)`; `worker_exit(pid, status)` for
/// every worker that ended, recycled or crashed; `error` for pool-level failures (start-up
/// failures, a malformed worker).
///
/// Lifetime: the handle owns the pool. Destroying it without async_close() calls destroy(): the
/// workers are killed and every pending task completes with errc::pool_closed (posted). After
/// async_close() the pool lives on until that close completes, whether or not the handle does.
/// Use it from its executor's thread.
class pool {
public:
  explicit pool(const boost::asio::any_io_executor& ex, pool_options options = {});
  template <executor_or_context Target>
  explicit pool(Target& target, pool_options options = {})
      : pool(detail::executor_of(target), std::move(options)) {}
  pool(pool&&) noexcept;
  pool& operator=(pool&&) noexcept;
  ~pool();

  template <class Token>
  auto async_run(message task, run_options options, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, message)>(
        [this](auto handler, message task, run_options options) {
          start_run(std::move(task), std::move(options),
                    detail::make_completion<boost::system::error_code, message>(std::move(handler),
                                                                                executor()));
        },
        token, std::move(task), std::move(options));
  }
  template <class Token>
  auto async_run(message task, Token&& token) {
    return async_run(std::move(task), run_options{}, std::forward<Token>(token));
  }
  /// A user type as the task, converted with Boost.JSON's value_from; the result converts back
  /// with message::as<T>().
  template <class T, class Token>
  requires(!std::is_convertible_v<const T&, message>) auto async_run(const T& task,
                                                                     run_options options,
                                                                     Token&& token) {
    return async_run(message::from(task), std::move(options), std::forward<Token>(token));
  }

  /// Graceful close: new runs fail with errc::pool_closed; queued and running tasks finish, then
  /// the workers are disconnected and reaped. Completes with void(boost::system::error_code):
  /// success, or errc::timed_out when close_timeout passed (the rest was then destroyed).
  template <class Token>
  auto async_close(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto handler) {
          start_close(
              detail::make_completion<boost::system::error_code>(std::move(handler), executor()));
        },
        token);
  }
  /// Kills every worker now and fails every pending task with errc::pool_closed.
  void destroy();

  /// Sends `update` to every running worker (serve_options::on_broadcast), in order with their
  /// tasks. Workers started later do not get it.
  void broadcast(const message& update);

  pool& on_drain(std::function<void()> handler);
  pool& on_needs_drain(std::function<void()> handler);
  pool& on_worker_create(std::function<void(pid_t pid)> handler);
  pool& on_worker_exit(std::function<void(pid_t pid, const exit_status& status)> handler);
  pool& on_error(std::function<void(std::error_code ec)> handler);

  pool_stats stats() const;
  /// True while the queue is at max_queue (Piscina's needsDrain).
  bool needs_drain() const noexcept;
  std::size_t queue_size() const noexcept;
  /// The resolved sizes (after the CPU-count defaults).
  std::size_t min_workers() const noexcept;
  std::size_t max_workers() const noexcept;
  boost::asio::any_io_executor executor() const noexcept;

private:
  void start_run(message task, run_options options,
                 std::unique_ptr<detail::completion<boost::system::error_code, message>> done);
  void start_close(std::unique_ptr<detail::completion<boost::system::error_code>> done);
  std::shared_ptr<detail::pool_state> state_;
};

} // namespace v1
} // namespace childproc
