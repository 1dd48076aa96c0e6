// fork(): start a worker with an IPC channel (Node's child_process.fork).
#pragma once

#include <childproc/channel.hpp>
#include <childproc/child_process.hpp>
#include <childproc/executor.hpp>
#include <childproc/options.hpp>

#include <string>
#include <vector>

namespace childproc {
inline namespace v1 {

/// Starts `program` with `args` and an IPC channel (fd 3 by default, or the stdio::ipc slot),
/// and returns its handle; child.channel() (or child.send / on_message) talks to it.
///
/// - A program that links childproc gets the channel with parent_channel(); the current binary is
///   self_exe(), for the `if (argv[1] == "child")` pattern.
/// - A script (.js, .mjs, .cjs), or any program when options.exec_path is set, runs through
///   `exec_path` (default "node" on PATH) with exec_argv, and speaks Node's own channel protocol,
///   so an unmodified Node worker's process.send / process.on('message') work.
/// - options.stdio not given (empty, the default): Node's default, stdin/stdout/stderr inherited
///   (piped with options.silent) and the channel at fd 3. A given table is used as it is (slots
///   missing among 0..2 are pipes, silent does not apply) and must contain stdio::ipc, where
///   the channel goes (NODE_CHANNEL_FD, or CHILDPROC_CHANNEL_FD, names that fd): without one it
///   throws process_error with errc::ipc_required (Node's ERR_CHILD_PROCESS_IPC_REQUIRED).
///
/// Events, in Node's order: `spawn`, `message`s, `disconnect`, `exit`, `close`. Everything the
/// child sent before it exited is delivered before `disconnect` and `exit`.
/// Throws as spawn() does (a missing program is an `error` event, as in Node).
child_process fork(const asio::any_io_executor& ex, std::string program,
                   std::vector<std::string> args = {}, fork_options options = fork_options());
template <executor_or_context Target>
child_process fork(Target& target, std::string program, std::vector<std::string> args = {},
                   fork_options options = fork_options()) {
  return fork(detail::executor_of(target), std::move(program), std::move(args), std::move(options));
}

/// The path of the running executable (/proc/self/exe), to fork the current binary.
std::string self_exe();

} // namespace v1
} // namespace childproc
