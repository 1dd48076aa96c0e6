// The state machine behind a child_process handle (internal).
//
// Owned by the handle and by every pending operation (the exit wait, the stream reads, the
// timers), so the events of a child whose handle was dropped still run while the executor runs.
// When the executor is destroyed first, the state goes with it and the child is handed to the
// SIGCHLD hub for reaping.
#pragma once

#include "channel_state.hpp"
#include "posix/exit_watcher.hpp"

#include <childproc/child_process.hpp>
#include <childproc/options.hpp>

#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace childproc::detail {

struct child_state : std::enable_shared_from_this<child_state> {
  child_state(asio::any_io_executor executor, std::string file, std::vector<std::string> args,
              const spawn_options& options);
  ~child_state();

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

  void start();
  void wait_for_exit();
  void on_exited();
  void reader_ended();
  void maybe_close();
  void complete_waiters();

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

  std::vector<spawn_handler> spawn_handlers;
  std::vector<exit_handler> exit_handlers;
  std::vector<exit_handler> close_handlers;
  std::vector<error_handler> error_handlers;
  std::vector<std::unique_ptr<exit_waiter>> waiters;

  asio::steady_timer timeout_timer;
  asio::steady_timer escalation_timer;

  void report_launch_failure();
};

// Handlers may add handlers while being called: call by index over the list as it was.
template <class List, class... Args>
void emit(List& handlers, const Args&... args) {
  const std::size_t n = handlers.size();
  for (std::size_t i = 0; i < n; ++i)
    if (handlers[i])
      handlers[i](args...);
}

} // namespace childproc::detail
