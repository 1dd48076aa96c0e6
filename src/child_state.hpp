// The state machine behind a child_process handle (internal).
//
// Owned by the handle and by every pending operation (the exit wait, the stream reads, the
// timers), so the events of a child whose handle was dropped still run while the executor runs.
// When the executor is destroyed first, the state goes with it and the child is handed to the
// SIGCHLD hub for reaping; a state that a handle keeps alive longer destroys its I/O objects
// when the execution context shuts down (io_registration), so the handle is safe to destroy.
//
// User handlers may throw: each step does the library's bookkeeping before it calls them, and a
// step left by an exception posts its continuation (resume_after_throw), so the events that
// follow still come when the application runs the loop again.
#pragma once

#include "channel_state.hpp"
#include "posix/exit_watcher.hpp"

#include <childproc/child_process.hpp>
#include <childproc/detail/handler_list.hpp>
#include <childproc/options.hpp>

#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace childproc::detail {

struct child_state;
class io_registry;

// Runs `resume` (which posts the rest of a step) when the scope is left by an exception, i.e.
// when a user handler threw: the exception goes on out of io.run(), the work goes on later.
template <class Resume>
class resume_after_throw {
public:
  explicit resume_after_throw(Resume resume) noexcept
      : resume_(std::move(resume)), uncaught_(std::uncaught_exceptions()) {}
  ~resume_after_throw() {
    if (std::uncaught_exceptions() > uncaught_) {
      try {
        resume_();
      } catch (...) {
        // No memory for the post while unwinding: the exception that is leaving matters more.
      }
    }
  }
  resume_after_throw(const resume_after_throw&) = delete;
  resume_after_throw& operator=(const resume_after_throw&) = delete;

private:
  Resume resume_;
  int uncaught_;
};

// Emits the last event of `list` and drops its handlers, also when one throws: a handler that
// captures the handle must not keep the state alive.
template <class List, class... Args>
void emit_last(List& list, const Args&... args) {
  List taken = std::move(list);
  list.release();
  taken.emit(args...);
}

// A state's link to the io_registry service of its execution context.
struct io_registration {
  io_registration(const asio::any_io_executor& ex, child_state& state);
  ~io_registration();
  io_registration(const io_registration&) = delete;
  io_registration& operator=(const io_registration&) = delete;

  child_state& state;
  io_registry* registry = nullptr; // null once the context shut down
  io_registration* prev = nullptr;
  io_registration* next = nullptr;
};

struct child_state : std::enable_shared_from_this<child_state> {
  child_state(asio::any_io_executor executor, std::string file, std::vector<std::string> args,
              const spawn_options& options);
  ~child_state();

  // The state a stream belongs to, for an operation that must keep both ends of its work alive
  // after the caller dropped its handles (pipe()). Null for a stream of no child.
  static std::shared_ptr<child_state> owner_of(const readable_stream& s) {
    return s.owner_ ? s.owner_->shared_from_this() : nullptr;
  }
  static std::shared_ptr<child_state> owner_of(const writable_stream& s) {
    return s.owner_ ? s.owner_->shared_from_this() : nullptr;
  }

  // Before the launch, everything that can fail (each throws): the streams over the parent's
  // pipe ends (valid for pipe slots; taken as they are wrapped), the exit watch.
  void attach_pipes(std::vector<posix::unique_fd>& pipe_fds);
  void prepare_exit_watch();
  // After a successful launch: takes the pid and posts start(). Only the registration of a pidfd
  // (made by the clone) and the post's allocation can fail: the child is then killed and reaped,
  // and the error returned.
  std::error_code launched(pid_t pid, posix::unique_fd pidfd) noexcept;
  // After a launch failure that Node reports as events: the error, the streams' ends (they were
  // made, and end without data; stdin writes fail with EPIPE), then close.
  void launch_failed(process_error error);
  // A state whose launch failure is thrown instead: lets go of the watch and the input.
  void abandon() noexcept;
  // fork(): the channel is part of the child from before the launch (its hooks reach this
  // state, and `close` waits for it as for a stdio stream), so start() finds it on any thread.
  void attach_channel(std::shared_ptr<channel_state> channel);
  void close_unused_channel() noexcept;

  void start();
  void wait_for_exit();
  void on_exited();
  // Delivers what is due (`exit` after the last output, then `close`); idempotent, so it is also
  // how a step that a throwing handler interrupted is resumed.
  void deliver();
  void resume_later();
  void reader_ended();
  void maybe_close();
  void complete_waiters();
  // At `close` (or, for a cancelled one, at `exit`): the async_wait_close waiters.
  void complete_close_waiters(bool cancelled_only);
  // The error an async_wait completes with: the launch failure, or none.
  boost::system::error_code wait_error() const noexcept;
  // The execution context is shutting down: destroy the I/O objects while its services exist,
  // hand the child to the background reaper, and drop every handler (no event comes any more).
  void shut_down_io() noexcept;

  // Sends `signal`; returns 0 or an errno. Marks killed on delivery.
  int send_signal(int signal) noexcept;
  // The library's own kill (timeout, cancellation, max_buffer, kill_on_destroy): kill_signal,
  // then SIGKILL after kill_after if still running. Reaches the whole group when the child leads
  // one, so a shell's children do not keep the pipes (and `close`) open.
  void kill_by_library();
  int signal_by_library(int signal) noexcept;
  // Whether the library may still signal the child (or its group).
  bool library_can_signal() const noexcept;
  void emit_error(const process_error& error);

  bool running() const noexcept { return pid > 0 && !status; }

  asio::any_io_executor executor;
  std::string file;
  std::vector<std::string> args;
  int kill_signal;
  std::chrono::milliseconds timeout;
  std::chrono::milliseconds kill_after;
  bool kill_on_destroy;
  // Detached or process_group 0: library kills signal the whole group, and the child is kept a
  // zombie from its exit to `close`, so the group id cannot be reused while we may signal it.
  bool leads_group;
  // exec: the timeout keeps running after `exit`, until `close` (a grandchild may hold the pipes).
  bool timeout_until_close = false;

  pid_t pid = 0;
  std::optional<posix::exit_watcher> watcher;
  std::optional<exit_status> status;
  std::optional<process_error> launch_error;
  bool killed = false;
  bool exit_delivered = false; // `exit` was emitted (or, for a failed launch, will never be)
  bool timed_out = false;      // the timeout option fired and the child was signalled
  bool close_emitted = false;

  std::shared_ptr<channel_state> ipc; // fork(): the channel; `close` waits for it too
  std::unique_ptr<writable_stream> in;
  std::vector<std::unique_ptr<readable_stream>> readers; // by slot; null where not a pipe
  int open_readers = 0;

  handler_list<spawn_handler> spawn_handlers;
  handler_list<exit_handler> exit_handlers;
  handler_list<exit_handler> close_handlers;
  handler_list<error_handler> error_handlers;
  std::vector<std::unique_ptr<exit_waiter>> waiters;       // async_wait: complete at `exit`
  std::vector<std::unique_ptr<exit_waiter>> close_waiters; // async_wait_close: at `close`

  // Optional so that they can be destroyed when the execution context shuts down.
  std::optional<asio::steady_timer> timeout_timer;
  std::optional<asio::steady_timer> escalation_timer;
  bool io_shut_down = false; // the execution context is gone: the handle is inert
  // child_process handles of this state: errors can follow `close` while one exists (send(),
  // kill()), so the error handlers are released after `close` only once none is left.
  std::atomic<int> handles{0};

  // Last: unlinked first when the state is destroyed.
  io_registration registration{executor, *this};

  void report_launch_failure();
};

// The exception being handled as an error code, for the error_code& forms: bad_alloc as ENOMEM,
// errno values in the system category (std::thread reports EAGAIN in the generic one),
// boost::system::system_error (Asio's; not a std::system_error) too. Anything else is rethrown.
std::error_code current_exception_code();

// The sync forms refuse stdio::ipc (Node's ERR_IPC_SYNC_FORK): that error ("<syscall>
// <message>"), or nullopt for a table without one.
std::optional<process_error> sync_ipc_error(const std::string& syscall, const std::string& file,
                                            const std::vector<std::string>& args,
                                            const spawn_options& options);

// spawn() that reports what it would throw as a process_error in `failure` (syscall, path, args,
// step: more than the error_code form keeps). Other exceptions (bad_alloc) propagate.
child_process spawn_reporting(const asio::any_io_executor& ex, std::string file,
                              std::vector<std::string> args, const spawn_options& options,
                              std::optional<process_error>& failure);

} // namespace childproc::detail
