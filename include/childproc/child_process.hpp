// child_process: the handle of one launched child (Node's ChildProcess).
#pragma once

#include <childproc/channel.hpp>
#include <childproc/detail/completion.hpp>
#include <childproc/error.hpp>
#include <childproc/exit_status.hpp>
#include <childproc/stream.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

#include <csignal>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace childproc {
inline namespace v1 {
namespace asio = boost::asio;
} // namespace v1

} // namespace childproc

namespace boost::asio {
template <typename Allocator>
class use_future_t;
template <typename Executor>
struct use_awaitable_t;
} // namespace boost::asio

namespace childproc {
namespace detail {
struct child_state;

// Tokens that throw what the first argument says: for an error_code, a bare system_error that
// loses the error object's fields (syscall, path, args, the exec result). Operations complete
// them with void(std::exception_ptr, ...) instead, the exception the error object itself.
template <class Token>
struct throws_error_object : std::false_type {};
template <class Allocator>
struct throws_error_object<asio::use_future_t<Allocator>> : std::true_type {};
template <class Executor>
struct throws_error_object<asio::use_awaitable_t<Executor>> : std::true_type {};

template <class Token>
inline constexpr bool throws_error_object_v = throws_error_object<std::decay_t<Token>>::value;

template <class Token>
using wait_signature =
    std::conditional_t<throws_error_object_v<Token>, void(std::exception_ptr, exit_status),
                       void(boost::system::error_code, exit_status)>;

// A pending async_wait: one of the two completions, by the token's kind.
struct exit_waiter {
  std::unique_ptr<completion<boost::system::error_code, exit_status>> done;
  std::unique_ptr<completion<std::exception_ptr, exit_status>> done_throwing;
  bool cancelled = false;
  // `launch_error` is the failed launch's error, thrown as itself by done_throwing.
  void complete(boost::system::error_code ec, const exit_status& status,
                const process_error* launch_error);
};

// Which event a wait completes at.
enum class wait_event { exit, close };

void add_exit_waiter(const std::shared_ptr<child_state>& state, std::unique_ptr<exit_waiter> w,
                     wait_event event);
void cancel_exit_waiter(const std::weak_ptr<child_state>& state, exit_waiter* w);
asio::any_io_executor state_executor(const child_state& state);
} // namespace detail

inline namespace v1 {

/// Event handler types, with Node's argument lists.
using exit_handler = std::function<void(std::optional<int> code, std::optional<int> signal)>;
using error_handler = std::function<void(const process_error& error)>;
using spawn_handler = std::function<void()>;

/// The handle of a launched child: its pid, its stdio streams and its events.
///
/// Events come in Node's order: `spawn` (before any output, never after a failed launch), the
/// streams' data, `exit(code, signal)`, then `close(code, signal)` once the child exited and every
/// piped output stream reached EOF. A launch that failed with ENOENT, EACCES, EAGAIN, EMFILE or
/// ENFILE gives `error`, then `close` with the negative errno as code, and no `spawn` or `exit`.
/// Handlers added after an event has fired are not called for it (as in Node).
///
/// Handlers can do what a Node listener can: add handlers (also to the event being delivered:
/// they are called from its next occurrence on), run a nested event loop (exec_sync), or throw.
/// A throwing handler ends that event's delivery (the later handlers are not called) and the
/// exception propagates out of the event loop (io.run()); the library's bookkeeping was done
/// before, so running the loop again delivers the events that follow and reaps the child. The
/// handlers are dropped after the last event (`close`), so one may capture the handle; the
/// on_error handlers only once no handle is left (send() and kill() on the handle can still
/// report errors after `close`, as in Node), so an on_error handler should not capture it.
///
/// Lifetime: the handle is move-only. Dropping it does not kill the child (Node's rule) unless
/// spawn_options::kill_on_destroy was set; either way the child is reaped, by the executor while
/// it runs and otherwise by the library's background reaper, so no zombie is left. A handle may
/// outlive its io_context: it is then inert (no more events; kill() returns false; write(),
/// end(), send() and async_wait() do nothing, their handlers are destroyed uncalled, as Asio
/// does with the operations of a context that is gone) and safe to destroy. The handle and its
/// streams are used from the child's executor only (one thread, or a strand).
class child_process {
public:
  using executor_type = asio::any_io_executor;

  /// An empty handle: no child.
  child_process() noexcept = default;
  child_process(child_process&&) noexcept = default;
  child_process& operator=(child_process&& other) noexcept;
  ~child_process();

  /// False for an empty handle.
  explicit operator bool() const noexcept { return state_ != nullptr; }

  /// The child's pid while it is not yet reaped; empty after a failed launch and once reaped.
  std::optional<pid_t> pid() const noexcept;
  /// The pid the child had, also after it was reaped; empty after a failed launch.
  std::optional<pid_t> original_pid() const noexcept;

  /// Sends `signal` to the child. Returns true when it was delivered; false when the child was
  /// already reaped (never signals a pid that may have been reused), or the launch failed.
  /// Invalid signals and permission errors are passed to on_error handlers (or thrown by the
  /// error_code-less form when there are none) and return false. Signal 0 only probes.
  bool kill(int signal = SIGTERM);
  bool kill(int signal, std::error_code& ec) noexcept;
  /// kill() by Node's signal name ("SIGTERM", or "TERM"). An unknown name sends nothing and is
  /// errc::unknown_signal (Node's ERR_UNKNOWN_SIGNAL): thrown as std::system_error by the first
  /// form whatever the on_error handlers (Node throws it), set in `ec` by the second.
  bool kill(std::string_view signal);
  bool kill(std::string_view signal, std::error_code& ec) noexcept;

  /// True once a signal sent through kill() (or by the library's timeout) was delivered.
  bool killed() const noexcept;
  /// The exit code once the child exited normally (or the negative errno of a failed launch).
  std::optional<int> exit_code() const noexcept;
  /// The signal that ended the child, once it ended by one.
  std::optional<int> signal_code() const noexcept;
  /// The full status once known (with resource usage).
  std::optional<exit_status> status() const noexcept;

  /// The program that was launched ("/bin/sh" for shell: true).
  const std::string& spawn_file() const;
  /// The full argv, argv[0] included (Node's spawnargs).
  const std::vector<std::string>& spawn_args() const;

  /// The stdin pipe. Throws std::logic_error when slot 0 is not a pipe. After a launch failure
  /// reported as events (ENOENT, EACCES, ...) the pipes still exist: stdin is closed (writes fail
  /// with EPIPE) and the others end without data (`on_end`, after `error`, before `close`).
  writable_stream& in();
  /// The stdout / stderr pipes. Throw std::logic_error when the slot is not a pipe.
  readable_stream& out();
  readable_stream& err();
  /// An extra pipe slot (n >= 3), read by the parent. Throws std::logic_error when not a pipe.
  readable_stream& stdio(int n);
  /// True when slot n is a pipe.
  bool has_pipe(int n) const noexcept;
  /// The number of stdio slots the child has, the stdio::ipc slot included (Node's
  /// child.stdio.length): at least 3; 0 for an empty handle.
  int stdio_count() const noexcept;

  /// fork(): the IPC channel (a shared handle). Throws std::logic_error when there is none.
  childproc::channel channel() const;
  bool has_channel() const noexcept;
  /// Node's child.send(): the channel's send. Without a channel, returns false and reports
  /// errc::channel_closed once (to `done`, or else to on_error).
  bool send(const message& msg, send_handler done = {});
  template <class T>
  requires(!std::is_convertible_v<const T&, message>) bool send(const T& value,
                                                                send_handler done = {}) {
    return send(message::from(value), std::move(done));
  }
  /// Node's child.disconnect() and child.connected.
  void disconnect();
  bool connected() const noexcept;
  /// Node's 'message' and 'disconnect' events (on the channel; logic_error without one).
  child_process& on_message(message_handler handler);
  child_process& on_disconnect(disconnect_handler handler);

  /// Adds an event handler; returns *this for chaining.
  child_process& on_spawn(spawn_handler handler);
  child_process& on_exit(exit_handler handler);
  child_process& on_close(exit_handler handler);
  child_process& on_error(error_handler handler);

  executor_type get_executor() const;

  /// Waits for the child's `exit` event (not `close`: output a grandchild still writes may come
  /// later; async_wait_close waits for that) and reaps it. Completion: void(error_code,
  /// exit_status) for callbacks, deferred and the other tokens; the error is the launch failure
  /// (ENOENT...) for a child that never ran.
  /// With asio::use_future and asio::use_awaitable the signature is
  /// void(std::exception_ptr, exit_status): a failed launch throws its process_error ("spawn
  /// <file> ENOENT", with syscall, path, args), a cancellation boost::system::system_error.
  /// Cancelling (terminal, partial or total) signals the child with kill_signal (escalating per
  /// kill_after) and completes with operation_aborted once it has exited and was reaped, so
  /// cancellation never leaves a zombie. A cancellation after the child already exited by itself
  /// has no effect (Asio's rule): the wait completes with the status and no error.
  template <class CompletionToken>
  auto async_wait(CompletionToken&& token) {
    return initiate_wait(detail::wait_event::exit, std::forward<CompletionToken>(token));
  }

  /// Waits for the child's `close` event: it exited and every piped output stream reached EOF
  /// (and the channel closed), so everything it and its grandchildren wrote has been delivered.
  /// Completes as async_wait does, with the same exit_status and errors, at `close` instead of
  /// `exit` (a grandchild holding stdout delays it). Cancelling signals a running child as
  /// async_wait does; the wait then completes with operation_aborted once the child has exited,
  /// without waiting for the streams (a cancellation after the exit completes it at once).
  template <class CompletionToken>
  auto async_wait_close(CompletionToken&& token) {
    return initiate_wait(detail::wait_event::close, std::forward<CompletionToken>(token));
  }

  /// For the library's own parts (exec, fork): the shared state.
  explicit child_process(std::shared_ptr<detail::child_state> state) noexcept;
  const std::shared_ptr<detail::child_state>& state() const noexcept { return state_; }

private:
  template <class CompletionToken>
  auto initiate_wait(detail::wait_event event, CompletionToken&& token) {
    return asio::async_initiate<CompletionToken, detail::wait_signature<CompletionToken>>(
        [](auto handler, std::shared_ptr<detail::child_state> state, detail::wait_event event) {
          auto ex = detail::state_executor(*state);
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto waiter = std::make_unique<detail::exit_waiter>();
          if constexpr (detail::throws_error_object_v<CompletionToken>)
            waiter->done_throwing =
                detail::make_completion<std::exception_ptr, exit_status>(std::move(handler), ex);
          else
            waiter->done = detail::make_completion<boost::system::error_code, exit_status>(
                std::move(handler), ex);
          if (slot.is_connected()) {
            slot.assign([weak = std::weak_ptr<detail::child_state>(state), w = waiter.get()](
                            asio::cancellation_type) { detail::cancel_exit_waiter(weak, w); });
          }
          detail::add_exit_waiter(state, std::move(waiter), event);
        },
        token, checked_state(), event);
  }
  const std::shared_ptr<detail::child_state>& checked_state() const;
  void release() noexcept;

  std::shared_ptr<detail::child_state> state_;
};

} // namespace v1
} // namespace childproc
