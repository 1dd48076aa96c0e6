// Options of spawn() and spawn_sync(): aggregates meant for designated initializers.
//
//   auto child = childproc::spawn(io, "ls", {"-lh"}, {.cwd = "/tmp", .timeout = 5s});
#pragma once

#include <childproc/exit_status.hpp>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <system_error>
#include <utility>
#include <vector>

namespace childproc {
inline namespace v1 {
class readable_stream;

/// How one stdio slot of the child is set up.
enum class stdio_kind {
  pipe,    ///< a new pipe; the parent's end is a child_process stream
  inherit, ///< the parent's own fd of the same number
  ignore,  ///< /dev/null
  fd,      ///< a descriptor of the parent's, given by number (it stays owned by the caller)
  ipc,     ///< the IPC channel (Node's 'ipc'): at most one slot; NODE_CHANNEL_FD names it
  from,    ///< another child's pipe, handed over by stdio::from() (spawn closes the parent's copy)
};

/// One stdio slot. Use the constants in childproc::stdio.
struct stdio_spec {
  stdio_kind kind = stdio_kind::pipe;
  int fd = -1; ///< for stdio_kind::fd (and the handed-over pipe of stdio_kind::from)
  /// For stdio_kind::from only: the serial number stdio::from() gave this hand-over, so that a
  /// spent spec never names a later hand-over that the kernel gave the same fd number.
  std::uint64_t token = 0;

  friend bool operator==(const stdio_spec&, const stdio_spec&) = default;
};

namespace stdio {
inline constexpr stdio_spec pipe{stdio_kind::pipe};
inline constexpr stdio_spec inherit{stdio_kind::inherit};
inline constexpr stdio_spec ignore{stdio_kind::ignore};
/// The parent's descriptor `fd` in this slot; the child gets its own copy, the caller keeps `fd`.
constexpr stdio_spec fd(int fd) noexcept {
  return {stdio_kind::fd, fd};
}
/// The IPC channel in this slot (Node's 'ipc'), in spawn() as in fork(): the child finds it by
/// the variable NODE_CHANNEL_FD (CHILDPROC_CHANNEL_FD with serialization::framed), which names
/// the slot, and the parent on child.channel(). At most one per table (errc::ipc_one_pipe); not
/// in the sync forms (errc::ipc_sync).
inline constexpr stdio_spec ipc{stdio_kind::ipc};
/// Node's `stdio: [a.stdout]`: the pipe behind another child's readable stream in this slot, so
/// `ls | grep` moves no byte through the parent. The stream is handed over at once: the parent
/// stops reading it (no more `data`, no `end`; reads complete with bad_descriptor) and the
/// first child's `close` no longer waits for it. The spec owns the pipe's fd until the spawn()
/// that takes it, which closes the parent's copy whatever its outcome (a call refusing its
/// options included): use it in one spawn, at once. A second spawn with the same spec is refused
/// with errc::stdio_from_used and touches no fd; the pool refuses it in worker_options. Throws
/// std::system_error (EBADF) on a stream that is not open; see docs/streams.md.
stdio_spec from(readable_stream& stream);
stdio_spec from(readable_stream& stream, std::error_code& ec);
} // namespace stdio

/// How messages travel over a fork() channel.
enum class serialization {
  framed,    ///< childproc's own: 4-byte length + kind + payload; JSON or raw bytes
  node_json, ///< Node's own channel protocol: one JSON text per line (NODE_CHANNEL_FD)
};

/// Node's `shell` option: false (no shell), true (/bin/sh) or a shell's path.
/// (A small type rather than std::variant<bool, std::string>, whose copies make g++ 12 -O3 warn
/// "may be used uninitialized" in user code.)
class shell_choice {
public:
  shell_choice(bool use = false) : path_(use ? "/bin/sh" : "") {}
  shell_choice(const char* path) : path_(path ? path : "") {}
  shell_choice(std::string path) : path_(std::move(path)) {}
  /// Whether a shell is used; an empty path means no shell.
  bool enabled() const noexcept { return !path_.empty(); }
  /// The shell's path ("/bin/sh" for true); empty when no shell is used.
  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
};

/// A signal by number (SIGTERM) or by Node's name ("SIGTERM", "TERM"). A name is looked up at
/// once; one that names no signal makes spawn() fail with errc::unknown_signal (Node's
/// ERR_UNKNOWN_SIGNAL), never signal 0.
class signal_choice {
public:
  constexpr signal_choice(int number = SIGTERM) noexcept : number_(number) {}
  signal_choice(std::string_view name) noexcept;
  signal_choice(const char* name) noexcept : signal_choice(std::string_view(name)) {}
  signal_choice(const std::string& name) noexcept : signal_choice(std::string_view(name)) {}
  /// The signal's number (0 for an unknown name).
  constexpr int number() const noexcept { return number_; }
  constexpr operator int() const noexcept { return number_; }
  /// True when it was given as a name that names no signal.
  constexpr bool unknown_name() const noexcept { return unknown_name_; }

private:
  int number_;
  bool unknown_name_ = false;
};

/// Environment variables, in the order given: the child sees them in that order, as Node passes
/// its env object's keys. A value of std::nullopt leaves the variable out (Node's `undefined`).
/// A name appears once: assigning one that is there changes its value in place (also in the
/// initializer list, where the last value wins, as in an object literal). Lookups are linear:
/// an environment has tens of entries.
class env_map {
public:
  using value_type = std::pair<std::string, std::optional<std::string>>;
  using iterator = std::vector<value_type>::iterator;
  using const_iterator = std::vector<value_type>::const_iterator;

  env_map() = default;
  env_map(std::initializer_list<value_type> entries);

  /// The value of `name`, appended (unset) when absent.
  std::optional<std::string>& operator[](std::string_view name);
  /// Appends `name` unless it is there (std::map's emplace); the bool says whether it was added.
  std::pair<iterator, bool> emplace(std::string name, std::optional<std::string> value);
  iterator find(std::string_view name) noexcept;
  const_iterator find(std::string_view name) const noexcept;
  bool contains(std::string_view name) const noexcept { return find(name) != end(); }
  /// Removes `name`; returns how many entries went (0 or 1).
  std::size_t erase(std::string_view name);

  iterator begin() noexcept { return entries_.begin(); }
  iterator end() noexcept { return entries_.end(); }
  const_iterator begin() const noexcept { return entries_.begin(); }
  const_iterator end() const noexcept { return entries_.end(); }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  friend bool operator==(const env_map&, const env_map&) = default;

private:
  friend env_map current_env(); // fills entries_ directly: environ's names are already unique
  std::vector<value_type> entries_;
};

/// The parent's environment as an env_map (a snapshot of `environ`). Entries without a name
/// ("=x", which execve allows) or without '=' are left out: no variable can be made of them.
env_map current_env();

/// The longest `timeout` and `kill_after` (about 292 years: what the library's timers count in
/// nanoseconds). A longer one, such as milliseconds::max(), is rejected with
/// errc::invalid_argument, as Node rejects a timeout of Infinity; zero means none.
inline constexpr std::chrono::milliseconds max_timeout =
    std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds::max());

/// Options of spawn(). Every field has Node's default.
struct spawn_options {
  /// Working directory of the child. Default: empty, the parent's. A missing or non-directory cwd
  /// fails the spawn() call itself (process_error with spawn_step::chdir).
  std::string cwd{};

  /// The child's whole environment, replacing the parent's (Node's `env`). Default: nullopt,
  /// inherit the parent's. PATH lookup uses the PATH of the resulting environment.
  std::optional<env_map> env{};

  /// Variables set (or, with nullopt, removed) on top of `env` or the inherited environment.
  /// Default: none. Beyond Node: saves copying the environment to change one variable.
  env_map env_overrides{};

  /// What the child sees as argv[0]. Default: the file (or the shell with `shell`). Does not
  /// change what is executed.
  std::optional<std::string> argv0{};

  /// One entry per child fd: 0, 1, 2 and any number of extra slots (up to 64). Default: empty,
  /// "not given": three pipes for spawn and exec, Node's default for fork (inherit 0..2, or
  /// pipes with `silent`, and the channel at slot 3). Missing entries among 0..2 are pipes.
  /// Extra pipe slots are read by the parent (child writes).
  /// A given table is used as it is; fork's must contain stdio::ipc (errc::ipc_required).
  std::vector<stdio_spec> stdio{};

  /// Start the child in a new session (setsid), so it outlives the parent's terminal.
  /// Default: false. Cannot be combined with process_group.
  bool detached = false;

  /// Run the child as this user / group (setuid / setgid after dropping supplementary groups).
  /// Default: unchanged. A refused change fails the spawn() call (spawn_step::setuid / setgid).
  std::optional<uid_t> uid{};
  std::optional<gid_t> gid{};

  /// Run through a shell: false (default), true for "/bin/sh", or a shell's path. The file and the
  /// args are joined with spaces, unquoted, and passed to `<shell> -c` as Node does.
  shell_choice shell = false;

  /// Kill the child with kill_signal after this long. Default: zero, no timeout. Negative or above
  /// max_timeout: errc::invalid_argument.
  std::chrono::milliseconds timeout{0};

  /// The signal used by timeout, cancellation and kill_on_destroy: a number or Node's name
  /// ("SIGINT"). Default: SIGTERM. An unknown name: errc::unknown_signal; 0 or a number past
  /// the last signal: errc::invalid_argument.
  signal_choice kill_signal = SIGTERM;

  /// Beyond Node: after the library signalled the child with kill_signal (timeout, cancellation),
  /// send SIGKILL if it is still running this long after. Default: zero, never escalate. Negative
  /// or above max_timeout: errc::invalid_argument.
  std::chrono::milliseconds kill_after{0};

  /// Beyond Node: put the child in a process group: 0 makes a new group led by the child, a
  /// positive value joins that group. Default: nullopt, the parent's group. Signals from the
  /// library's timeout then reach the whole group. Cannot be combined with detached.
  std::optional<pid_t> process_group{};

  /// Beyond Node: the child gets SIGKILL when the thread that spawned it ends (PR_SET_PDEATHSIG).
  /// Default: false.
  bool kill_on_parent_death = false;

  /// Beyond Node: dropping the child_process handle sends kill_signal to a running child (RAII
  /// ownership). Default: false, dropping the handle leaves the child running (Node's rule).
  bool kill_on_destroy = false;

  /// Beyond Node: the capacity of each stdio pipe the library creates (F_SETPIPE_SZ), for
  /// streaming at the machine's limit (1 MiB pipes move several times more per syscall than
  /// the 64 KiB default). Default: 0, the system's. Above /proc/sys/fs/pipe-max-size it fails the
  /// spawn() call (EPERM unless privileged).
  std::size_t pipe_size = 0;

  /// Written to the child's stdin, which is then closed (Node's `input` of the sync forms;
  /// honoured by every form here). Default: empty; spawn() then leaves stdin open for writing,
  /// the sync forms close it. Needs stdio[0] to be a pipe.
  std::string input{};

  /// Largest number of bytes buffered per output stream by exec, exec_file and the sync forms
  /// (Node's `maxBuffer`). Past it the child is killed with kill_signal (then SIGKILL after
  /// kill_after) and its output pipes are closed, as Node does: a child that survives the signal
  /// gets EPIPE/SIGPIPE on its next write and is never read for ever. The async forms keep exactly
  /// max_buffer bytes; the sync forms keep what they read, which is at most one read (256 KiB)
  /// more. Default: 1 MiB, Node's. spawn() does not buffer and ignores it.
  std::size_t max_buffer = 1024 * 1024;

  /// The channel's protocol (fork, and spawn with stdio::ipc). Default: nullopt, which means for
  /// fork node_json for a script (.js, .mjs, .cjs) or when exec_path is set, framed otherwise;
  /// for spawn node_json (Node's own 'ipc').
  std::optional<childproc::serialization> serialization{};

  /// fork() only: the program that runs a script, as Node's execPath. Default: empty, which
  /// means "node" (found on PATH) for a .js/.mjs/.cjs program and none otherwise.
  std::string exec_path{};

  /// fork() only: arguments for exec_path before the script (Node's execArgv). Default: none.
  std::vector<std::string> exec_argv{};

  /// fork() only: pipe the child's stdin/stdout/stderr instead of inheriting them (Node's
  /// `silent`) when no stdio is given. Default: false. A given stdio is used as given.
  bool silent = false;

  /// fork() and stdio::ipc: the largest message either side sends or accepts (the child is told
  /// it with serialization::framed); a larger send is refused with errc::message_too_large, a
  /// larger incoming frame ends the channel with it. Clamped to 4 GiB - 1, what a frame's length
  /// can carry. Default: 64 MiB.
  std::size_t max_message_size = 64u << 20;
};

/// The options of spawn_sync(), exec, exec_file and fork: the same fields (see spawn_options).
using spawn_sync_options = spawn_options;
using exec_options = spawn_options;
using fork_options = spawn_options;

} // namespace v1
} // namespace childproc
