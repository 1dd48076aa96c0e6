// exec and exec_file (Node's exec / execFile) and their sync forms: run a command to its end and
// buffer its output.
#pragma once

#include <childproc/child_process.hpp>
#include <childproc/executor.hpp>
#include <childproc/options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <concepts>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

namespace childproc {
inline namespace v1 {

/// What a finished exec run produced. Delivered on success and on failure alike: nothing
/// captured is lost.
struct exec_result {
  std::string out{};          ///< stdout bytes (binary-safe)
  std::string err{};          ///< stderr bytes
  exit_status status{};       ///< code or signal, resource usage; neither after a failed launch
  std::optional<pid_t> pid{}; ///< empty when the launch failed
  bool killed = false;        ///< a signal was delivered (by kill(), timeout or max_buffer)
  bool timed_out = false;     ///< beyond Node: the timeout fired
  std::string command{};      ///< Node's err.cmd: the command line, or file and args joined
  std::string max_buffer_stream{}; ///< "stdout" or "stderr" when max_buffer was exceeded
  /// The failed launch, with Node's syscall ("spawn <file>"), path, spawnargs and the step;
  /// empty when the child ran.
  std::optional<process_error> launch_error{};
};

/// The failure of an exec run, with everything Node's error carries: code, signal, killed, cmd,
/// stdout, stderr (in result()), and for a failed launch syscall ("spawn <file>"), path and
/// spawnargs (process_error's, empty otherwise). code() is:
///  - the launch failure (ENOENT of a missing program for exec_file or of a missing shell, a bad
///    cwd, ...); result().status then has neither code nor signal: it is not an exit code;
///  - errc::max_buffer_exceeded for the async forms, ENOBUFS for the sync forms;
///  - errc::timed_out when the timeout killed the child;
///  - errc::killed when another signal ended it; errc::nonzero_exit for an exit code other than 0
///    (exec of a missing command is the shell's exit 127);
///  - errc::exit_status_unknown when the status was reaped elsewhere (SIGCHLD set to SIG_IGN, a
///    foreign waitpid(-1)): success cannot be told from failure;
///  - operation_aborted when the async operation was cancelled.
class exec_error : public process_error {
public:
  exec_error(std::error_code code, exec_result result);

  const exec_result& result() const noexcept { return result_; }
  const std::string& cmd() const noexcept { return result_.command; }
  std::optional<int> exit_code() const noexcept { return result_.status.code; }
  std::optional<int> signal() const noexcept { return result_.status.signal; }
  bool killed() const noexcept { return result_.killed; }
  /// Node's message: "Command failed: <cmd>\n<stderr>", "stdout maxBuffer length exceeded", or
  /// for a failed launch process_error's ("spawn <file> ENOENT (execve): ...", "spawn /bin/sh
  /// ENOENT (chdir): ..." for a missing cwd; exec_file names no args there, as Node).
  const char* what() const noexcept override { return message_.c_str(); }

private:
  exec_result result_;
  std::string message_;
};

} // namespace v1
} // namespace childproc

namespace childproc {
namespace detail {

struct exec_run;

// The tokens that throw (throws_error_object_v) get void(std::exception_ptr, exec_result), the
// exception an exec_error that carries the result.
template <class Token>
using exec_signature =
    std::conditional_t<throws_error_object_v<Token>, void(std::exception_ptr, exec_result),
                       void(boost::system::error_code, exec_result)>;

// A pending exec completion, type-erased so that the run is compiled once.
struct exec_completion {
  virtual ~exec_completion() = default;
  virtual void complete(boost::system::error_code ec, exec_result result) = 0;
};

template <class Handler, bool ThrowsExecError = false>
struct exec_completion_for final : exec_completion {
  using work_executor = asio::associated_executor_t<Handler, asio::any_io_executor>;
  exec_completion_for(Handler&& h, const asio::any_io_executor& ex)
      : handler(std::move(h)), work(asio::get_associated_executor(handler, ex)) {}
  void complete(boost::system::error_code ec, exec_result result) override {
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected())
      slot.clear();
    auto ex = work.get_executor();
    work.reset();
    if constexpr (ThrowsExecError) {
      // On failure the result travels in the exception (the value is not looked at then).
      std::exception_ptr failure;
      if (ec)
        failure = std::make_exception_ptr(exec_error(ec, std::move(result)));
      asio::post(ex, asio::append(std::move(handler), failure,
                                  failure ? exec_result{} : std::move(result)));
    } else {
      asio::post(ex, asio::append(std::move(handler), ec, std::move(result)));
    }
  }
  Handler handler;
  asio::executor_work_guard<work_executor> work;
};

struct exec_request {
  std::string file;
  std::vector<std::string> args;
  exec_options options;
  bool via_shell = false; // exec: `file` is a command line for the shell
  bool sync = false;      // the sync forms' max_buffer rules (keep what was read, ENOBUFS)
};

// Launches and starts collecting; `handle` (may be null) receives the child. Returns the run, for
// cancellation. Never completes inline.
std::shared_ptr<exec_run> start_exec(const asio::any_io_executor& ex, exec_request request,
                                     child_process* handle, std::unique_ptr<exec_completion> done);
void cancel_exec(const std::weak_ptr<exec_run>& run);

template <class Token>
auto initiate_exec(asio::any_io_executor ex, exec_request request, child_process* handle,
                   Token&& token) {
  return asio::async_initiate<Token, exec_signature<Token>>(
      [](auto handler, asio::any_io_executor ex, exec_request request, child_process* handle) {
        using handler_type = std::decay_t<decltype(handler)>;
        auto slot = asio::get_associated_cancellation_slot(handler);
        auto done =
            std::make_unique<exec_completion_for<handler_type, throws_error_object_v<Token>>>(
                std::move(handler), ex);
        auto run = start_exec(ex, std::move(request), handle, std::move(done));
        if (slot.is_connected())
          slot.assign([weak = std::weak_ptr<exec_run>(run)](asio::cancellation_type) {
            cancel_exec(weak);
          });
      },
      token, std::move(ex), std::move(request), handle);
}

} // namespace detail

inline namespace v1 {

/// `{}` in the options' place of async_exec / async_exec_file: the default options (see there).
enum class default_options {};

/// Node's exec: runs `command` through `/bin/sh -c` (or options.shell when it names a shell),
/// buffers stdout and stderr, and completes once the child has exited and its output ended (Node's
/// callback). The second form also gives the child's handle in `child` as soon as it is launched
/// (Node's return value), to stream, kill() or read the pid while it runs.
///
/// The completion signature depends on the token, so that a failure never loses the result:
///  - asio::use_future and asio::use_awaitable: void(std::exception_ptr, exec_result). The
///    future or co_await gives the exec_result, or throws exec_error with the whole result (exit
///    code, signal, killed, cmd, stdout, stderr), not the bare system_error they would make of an
///    error_code.
///  - every other token (callbacks, deferred, as_tuple, redirect_error, yield_context, ...):
///    void(boost::system::error_code, exec_result); exec_error(ec, result) gives Node's error.
///    The choice is made by the token given here: `deferred` later completed with use_future
///    throws the bare system_error (use the two arguments, or as_tuple, there).
///
/// Beyond Node, the child runs in a new process group unless options.process_group or
/// options.detached says otherwise, so that a timeout or max_buffer kill reaches the shell's own
/// children and the completion never waits on a grandchild holding the pipes.
/// Cancelling kills the child (its group) with kill_signal and completes with operation_aborted
/// once it has ended, with what was captured.
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec(Target&& target, std::string command, exec_options options, Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(command), {}, std::move(options), true, false}, nullptr,
                               std::forward<Token>(token));
}
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec(Target&& target, std::string command, exec_options options, child_process& child,
                Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(command), {}, std::move(options), true, false}, &child,
                               std::forward<Token>(token));
}

/// async_exec with default options. (Inside `co_await` with g++ 12, options written in place,
/// `{.cwd = "/"}`, are an aggregate temporary that g++ 12 destroys twice: name them in a
/// variable. `{}` alone is fine, see below.)
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec(Target&& target, std::string command, Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(command), {}, exec_options(), true, false}, nullptr,
                               std::forward<Token>(token));
}

/// async_exec with `{}` for the options: the defaults. `{}` picks this overload (a scalar type
/// converts better than an aggregate), so that `co_await async_exec(ex, cmd, {}, use_awaitable)`
/// builds no options aggregate inside the co_await, which g++ 12 would destroy twice.
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec(Target&& target, std::string command, default_options, Token&& token) {
  return async_exec(target, std::move(command), std::forward<Token>(token));
}
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec(Target&& target, std::string command, default_options, child_process& child,
                Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(command), {}, exec_options(), true, false}, &child,
                               std::forward<Token>(token));
}

/// Node's execFile: as async_exec, without a shell (unless options.shell asks for one); `args`
/// reach the program byte for byte. A missing program completes with ENOENT.
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec_file(Target&& target, std::string file, std::vector<std::string> args,
                     exec_options options, Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(file), std::move(args), std::move(options), false, false},
                               nullptr, std::forward<Token>(token));
}
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec_file(Target&& target, std::string file, std::vector<std::string> args,
                     exec_options options, child_process& child, Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(file), std::move(args), std::move(options), false, false},
                               &child, std::forward<Token>(token));
}

/// async_exec_file with default options (see async_exec about g++ 12 and co_await).
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec_file(Target&& target, std::string file, std::vector<std::string> args,
                     Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(file), std::move(args), exec_options(), false, false},
                               nullptr, std::forward<Token>(token));
}

/// async_exec_file with `{}` for the options (see async_exec about g++ 12 and co_await).
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec_file(Target&& target, std::string file, std::vector<std::string> args,
                     default_options, Token&& token) {
  return async_exec_file(target, std::move(file), std::move(args), std::forward<Token>(token));
}
template <class Target, class Token>
requires executor_or_context<std::remove_cvref_t<Target>>
auto async_exec_file(Target&& target, std::string file, std::vector<std::string> args,
                     default_options, child_process& child, Token&& token) {
  return detail::initiate_exec(detail::executor_of(target),
                               {std::move(file), std::move(args), exec_options(), false, false},
                               &child, std::forward<Token>(token));
}

/// Node's execSync / execFileSync: run to the end on a private io_context. Return the result;
/// throw exec_error on any failure (the error_code forms set `ec` and still return what was
/// captured). `options.input` is written to stdin, which is then closed. Past max_buffer they
/// keep what was read (at most one 256 KiB read more), close the output pipes, kill the child and
/// fail with ENOBUFS, as Node's sync forms do.
exec_result exec_sync(std::string command, exec_options options = {});
exec_result exec_sync(std::string command, exec_options options, std::error_code& ec) noexcept;
exec_result exec_file_sync(std::string file, std::vector<std::string> args = {},
                           exec_options options = {});
exec_result exec_file_sync(std::string file, std::vector<std::string> args, exec_options options,
                           std::error_code& ec) noexcept;

} // namespace v1
} // namespace childproc
