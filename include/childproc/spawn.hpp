// spawn() and spawn_sync(): launch a program with an argv, no shell unless asked (Node's spawn).
#pragma once

#include <childproc/child_process.hpp>
#include <childproc/options.hpp>

#include <boost/asio/execution_context.hpp>

#include <concepts>
#include <cstddef>
#include <string>
#include <system_error>
#include <vector>

namespace childproc {
inline namespace v1 {

/// Launches `file` with `args` (argv[1..]) and returns its handle at once.
///
/// `file` without a '/' is looked up in the PATH of the child's environment with execvp's rules;
/// a file that is not a valid executable format runs through /bin/sh, as with execvp.
///
/// Throws process_error (or sets `ec`) for failures that are the caller's: invalid arguments (a
/// NUL byte, a bad fd or signal), a cwd that cannot be entered, a refused setuid/setgid, an
/// stdio fd that is not open. A program that is missing or not executable, and a lack of
/// processes or fds (ENOENT, EACCES, EAGAIN, EMFILE, ENFILE), are not thrown: the handle reports
/// them through on_error and on_close, as Node does.
child_process spawn(const asio::any_io_executor& ex, std::string file,
                    std::vector<std::string> args = {}, spawn_options options = spawn_options());
child_process spawn(const asio::any_io_executor& ex, std::string file,
                    std::vector<std::string> args, spawn_options options,
                    std::error_code& ec) noexcept;

template <class ExecutionContext>
requires std::derived_from<ExecutionContext, asio::execution_context>
    child_process spawn(ExecutionContext& ctx, std::string file, std::vector<std::string> args = {},
                        spawn_options options = spawn_options()) {
  return spawn(asio::any_io_executor(ctx.get_executor()), std::move(file), std::move(args),
               std::move(options));
}
template <class ExecutionContext>
requires std::derived_from<ExecutionContext, asio::execution_context>
    child_process spawn(ExecutionContext& ctx, std::string file, std::vector<std::string> args,
                        spawn_options options, std::error_code& ec)
noexcept {
  return spawn(asio::any_io_executor(ctx.get_executor()), std::move(file), std::move(args),
               std::move(options), ec);
}

/// The outcome of spawn_sync(), as Node's spawnSync returns it.
struct spawn_sync_result {
  std::optional<pid_t> pid{}; ///< empty when the launch failed
  /// Everything read from stdout; nullopt when slot 1 is no pipe or the launch failed (Node's
  /// null), "" for a pipe the child wrote nothing to. A copy of (*output)[1].
  std::optional<std::string> out{};
  /// Everything read from stderr, as `out`: a copy of (*output)[2].
  std::optional<std::string> err{};
  /// Node's result.output: one entry per stdio slot, what was read from it; nullopt for slot 0
  /// (stdin is written, never read) and for every slot that is no pipe. nullopt as a whole
  /// after a failed launch, as Node's null.
  std::optional<std::vector<std::optional<std::string>>> output{};
  std::optional<int> status{}; ///< exit code (Node's status), empty when ended by a signal
  std::optional<int> signal{}; ///< the signal that ended the child
  exit_status exit{};          ///< the full status, with resource usage
  /// Node's result.error: ENOENT/EACCES/... of a failed launch, ETIMEDOUT when the timeout killed
  /// the child, ENOBUFS when max_buffer was exceeded; empty otherwise. A non-zero exit is not an
  /// error here. As Node's, it names the syscall "spawnSync <file>", the path and the spawnargs
  /// (what(): "spawnSync <file> ETIMEDOUT: ..."), and the failed step of a launch.
  std::optional<process_error> error{};
};

/// Runs `file` to completion on a private io_context and returns its output and status.
/// Throws (or sets `ec`) in the cases where spawn() throws; everything else is in the result.
spawn_sync_result spawn_sync(std::string file, std::vector<std::string> args = {},
                             spawn_sync_options options = {});
spawn_sync_result spawn_sync(std::string file, std::vector<std::string> args,
                             spawn_sync_options options, std::error_code& ec) noexcept;

} // namespace v1
} // namespace childproc
