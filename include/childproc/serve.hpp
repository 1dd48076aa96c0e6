// serve(): the worker side of a childproc::pool. A worker program answers the pool's tasks with
// handlers, by name; the pool starts it, sends tasks, and receives results and progress.
#pragma once

#include <childproc/message.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <variant>

namespace childproc {
namespace detail {
struct served_task;
}

inline namespace v1 {

/// What a handler knows of the task it runs, and how it talks back to the caller.
///
/// Lifetime: a cheap shared reference to the task; it may be copied into an asynchronous
/// handler's frame. Use it from the worker's io_context thread.
class task_context {
public:
  explicit task_context(std::shared_ptr<detail::served_task> task) noexcept
      : task_(std::move(task)) {}

  /// The task's name ("" for the default handler).
  const std::string& name() const noexcept;
  /// The pool's id of the task (unique among the worker's tasks).
  std::uint64_t id() const noexcept;
  /// Sends a progress message for this task: the caller's run_options::on_progress receives it,
  /// in order, before the result. Written at once when the channel can take it. Ignored once the
  /// task's result was sent (the pool no longer knows its id) or the pool has gone.
  void progress(const message& update);
  /// True once the caller cancelled the task (the pool sends a cancel message, then kills the
  /// worker after pool_options::cancel_grace). A synchronous handler calls this from its loop:
  /// it reads what the pool has sent without waiting, at the cost of one non-blocking read, so
  /// call it every millisecond or so rather than on every iteration. Also true once the pool has
  /// disconnected (nobody waits for the result any more). A cancelled coroutine handler's
  /// pending co_await also fails with operation_aborted.
  bool cancelled();

private:
  std::shared_ptr<detail::served_task> task_;
};

/// A task handler: synchronous (runs on the worker's io_context thread; a second task waits for
/// it unless it is asynchronous), with or without the task's context, or asynchronous (a
/// coroutine on the worker's io_context; with pool_options::concurrent_tasks_per_worker above 1
/// several run at once). A handler that throws fails its task with errc::task_failed, and the
/// caller's message is {"name": <exception type>, "message": <what()>}.
class task_handler {
public:
  using plain = std::function<message(const message& task)>;
  using with_context = std::function<message(const message& task, task_context& context)>;
  using coroutine =
      std::function<boost::asio::awaitable<message>(message task, task_context context)>;

  template <class F>
  requires std::is_invocable_r_v<message, F&, const message&> task_handler(F f)
      : call_(plain(std::move(f))) {}
  template <class F>
  requires(!std::is_invocable_v<F&, const message&> &&
           std::is_invocable_r_v<message, F&, const message&, task_context&>) task_handler(F f)
      : call_(with_context(std::move(f))) {}
  template <class F>
  requires std::is_invocable_r_v<boost::asio::awaitable<message>, F&, message, task_context>
  task_handler(F f) : call_(coroutine(std::move(f))) {}

  const std::variant<plain, with_context, coroutine>& call() const noexcept { return call_; }

private:
  std::variant<plain, with_context, coroutine> call_;
};

/// Named handlers: run_options::name picks one; "" is the default handler.
using task_table = std::map<std::string, task_handler, std::less<>>;

/// The worker's hooks beyond its tasks.
struct serve_options {
  /// Called once before the first task with pool_options::worker_data (Piscina's workerData);
  /// the worker reports itself ready after it returns. A hook that throws ends the worker with
  /// exit code 1: the pool counts that as a start-up failure. Default: none.
  std::function<void(const message& worker_data)> on_init{};
  /// Called for each pool::broadcast() message, in order with the tasks. Default: none.
  std::function<void(const message& update)> on_broadcast{};
};

/// True in a process that a childproc::pool started as its worker (CHILDPROC_POOL_WORKER is set;
/// serve() removes it so that the worker's own children do not see it). For a pool of the current
/// binary: `if (childproc::is_pool_worker()) return childproc::serve(io, tasks);` in main().
bool is_pool_worker() noexcept;

/// Answers the pool's tasks until the pool disconnects (or the parent dies), running `io` for
/// that time, and returns the exit status the worker should end with: 0; 1 when on_init threw;
/// 2 when the pool sent something that is not an envelope (the worker disconnects first). It
/// stops `io` when the pool has gone, so it returns even if other work is left on `io`.
/// A handler that throws something not derived from std::exception fails its task with
/// {"name": "Error", "message": "unknown exception"}.
/// Throws std::system_error (errc::channel_closed) when this process has no parent channel.
int serve(boost::asio::io_context& io, task_table tasks, serve_options options = {});
/// One handler for every task, whatever its name.
int serve(boost::asio::io_context& io, task_handler handler, serve_options options = {});
/// The same, reporting a missing parent channel in `ec` (errc::channel_closed) and returning 1
/// instead of throwing; `ec` is cleared otherwise.
int serve(boost::asio::io_context& io, task_table tasks, serve_options options,
          std::error_code& ec);
int serve(boost::asio::io_context& io, task_handler handler, serve_options options,
          std::error_code& ec);

} // namespace v1
} // namespace childproc
