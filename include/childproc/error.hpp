// childproc errors: the library's own error codes, and the exception that says which launch step
// failed.
//
// OS failures keep their errno: (errno, std::system_category()) in the std::error_code forms,
// (errno, boost::system::system_category()) in Asio completions, so ec.value() == ENOENT holds in
// both. Failures that are the library's own judgement (a timeout, a buffer limit, an invalid
// option) use childproc::errc in the category named "childproc", the same in both kinds of code.
// Both compare with std::errc where an errno applies.
#pragma once

#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace childproc {
inline namespace v1 {

/// The library's own error conditions.
enum class errc {
  invalid_argument = 1, ///< an option or argument is malformed (NUL byte, bad fd, bad signal)
  max_buffer_exceeded,  ///< buffered output grew past max_buffer
  timed_out,            ///< the timeout option expired and the child was signalled
  nonzero_exit,         ///< the child exited with a non-zero code
  killed,               ///< the child was ended by a signal
  channel_closed,       ///< the IPC channel or stream is closed
  message_too_large,    ///< an IPC frame is larger than the configured maximum
  malformed_message,    ///< an IPC frame could not be decoded
  /// exec forms: the child's status was taken by someone else (SIGCHLD set to SIG_IGN, a foreign
  /// waitpid(-1)), so success cannot be told from failure
  exit_status_unknown,
  already_disconnected, ///< disconnect() on a channel that is not connected (Node's
                        ///< ERR_IPC_DISCONNECTED)
  pool_closed,          ///< pool: async_close() or destroy() was called (a new run, or a queued
                        ///< task that destroy() dropped)
  queue_full,           ///< pool: every worker is busy and the queue is at max_queue
  worker_died,          ///< pool: the worker running the task exited or was killed
  task_failed,          ///< pool: the task's handler threw; the message carries its error
  unknown_task,         ///< pool: no handler of the task's name in the worker
  worker_start_failed,  ///< pool: workers keep dying before they are ready; respawning paused
  unknown_signal, ///< a signal name that names no signal (Node's ERR_UNKNOWN_SIGNAL); compares
                  ///< equal to std::errc::invalid_argument
  /// more than one stdio::ipc slot (Node's ERR_IPC_ONE_PIPE); compares equal to
  /// std::errc::invalid_argument, as the two below
  ipc_one_pipe,
  /// fork() with an explicit stdio that has no stdio::ipc slot (Node's
  /// ERR_CHILD_PROCESS_IPC_REQUIRED)
  ipc_required,
  /// stdio::ipc in a sync form (spawn_sync, exec_sync, exec_file_sync: Node's ERR_IPC_SYNC_FORK)
  ipc_sync,
  /// a stdio::from() spec whose pipe a spawn already took (a spec used twice: the pipe is closed
  /// and its number may be somebody else's now), or a `from` slot that no stdio::from() made; no
  /// fd is touched. Compares equal to std::errc::bad_file_descriptor
  stdio_from_used,
  /// Node's protocol: the peer refused a handle sent with a message (NACK) after the first send
  /// and three retransmissions (Node's SentHandleNotReceivedWarning). Reported to the channel's
  /// on_error; the channel stays open
  handle_not_received,
};

/// The category of childproc::errc.
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// The step of a launch that failed. The parent-side steps (pipe, open_dev_null, clone) fail in
/// the calling process; the others fail in the child between fork and exec and are reported back
/// to the parent.
enum class spawn_step {
  none,          ///< not a launch step (argument validation, or after the launch)
  pipe,          ///< creating the stdio pipes (parent)
  clone,         ///< creating the child process (parent)
  dup2,          ///< placing a stdio fd in its slot (child)
  close_fds,     ///< marking the fds not handed over as close-on-exec (child)
  setsid,        ///< detached: starting a new session (child)
  setpgid,       ///< process_group: joining or creating a process group (child)
  pdeathsig,     ///< kill_on_parent_death: prctl(PR_SET_PDEATHSIG) (child)
  chdir,         ///< changing to cwd (child)
  setgid,        ///< changing to gid (child)
  setuid,        ///< changing to uid (child)
  execve,        ///< executing the program (child)
  open_dev_null, ///< opening /dev/null for an ignore slot, or an inherit of a closed fd (parent)
};

/// The step's name as it appears in messages ("chdir", "execve", ...).
std::string_view to_string(spawn_step step) noexcept;

/// A failure to launch or control a child, with what Node's error carries: the code, the
/// syscall ("spawn ls"), the path, the arguments, and beyond Node the launch step that failed.
///
/// Thrown by spawn() for failures that are the caller's (a bad cwd, a failed setuid, invalid
/// arguments), and passed to child_process::on_error for failures that Node reports as events
/// (ENOENT, EACCES, EAGAIN, EMFILE, ENFILE of the exec).
class process_error : public std::system_error {
public:
  process_error(std::error_code code, std::string syscall, std::string path,
                std::vector<std::string> args, spawn_step step = spawn_step::none);

  /// "spawn <file>" for launch failures, "kill" for kill failures, as in Node.
  const std::string& syscall() const noexcept { return syscall_; }
  /// The program that was to be launched.
  const std::string& path() const noexcept { return path_; }
  /// The arguments after argv[0] (Node's err.spawnargs).
  const std::vector<std::string>& spawn_args() const noexcept { return args_; }
  /// Which step of the launch failed; spawn_step::none when not a launch failure.
  spawn_step step() const noexcept { return step_; }

private:
  std::string syscall_;
  std::string path_;
  std::vector<std::string> args_;
  spawn_step step_;
};

} // namespace v1
} // namespace childproc

template <>
struct std::is_error_code_enum<childproc::errc> : std::true_type {};
