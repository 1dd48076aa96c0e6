// channel: one end of an IPC channel between a parent and a forked child (Node's child.send /
// process.send), and parent_channel(), the worker side.
#pragma once

#include <childproc/executor.hpp>
#include <childproc/message.hpp>
#include <childproc/options.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <system_error>
#include <type_traits>

namespace childproc {
namespace detail {
struct channel_state;
struct channel_access;
} // namespace detail

inline namespace v1 {

using message_handler = std::function<void(const message& msg)>;
using send_handler = std::function<void(std::error_code ec)>;
using disconnect_handler = std::function<void()>;
using channel_error_handler = std::function<void(std::error_code ec)>;

/// One end of an IPC channel.
///
/// Sends are queued and written asynchronously in order (small messages are gathered into one
/// write); reads go on meanwhile, so two sides sending heavily at once never deadlock. Messages
/// arrive in order, each to every on_message handler. The channel ends on disconnect() from
/// either side, on the peer's exit, or on a frame that is too large (errc::message_too_large) or
/// malformed (errc::malformed_message); the error handlers hear about the latter two, then
/// `disconnect` comes.
///
/// Handlers: a handler may add handlers (one added during an event first hears the next one). A
/// handler that throws ends that event's delivery and the exception propagates out of the
/// executor's run(); the channel stays consistent, and the next run() delivers the remaining
/// messages and events in order. The handlers are dropped once `disconnect` was delivered (the
/// error handlers just after the errors already posted by then), so a handler may capture the
/// channel or the child without keeping them alive.
///
/// Lifetime: the handle is a cheap shared reference. The channel stays open while it is
/// connected and its executor runs, whether or not a handle exists; disconnect() ends it.
/// Use it from its executor's thread. Unlike a child_process handle, a channel handle must not
/// outlive its execution context (Asio's rule for its own I/O objects): drop it first.
class channel {
public:
  channel() noexcept = default;
  explicit channel(std::shared_ptr<detail::channel_state> state) noexcept
      : state_(std::move(state)) {}
  explicit operator bool() const noexcept { return state_ != nullptr; }

  /// Queues `msg`. Returns true while the channel is connected. After it closed, returns false
  /// and reports errc::channel_closed once: to `done` when given, otherwise to the error
  /// handlers, never both. A message larger than the channel's max_message_size (the framed
  /// payload, or the JSON line) is refused the same way with errc::message_too_large: the peer
  /// applies the same limit. `done` gets the outcome once the message is written. Reports are
  /// posted, never made from inside send().
  bool send(const message& msg, send_handler done = {});
  /// Sends a user type converted with Boost.JSON's value_from.
  template <class T>
  requires(!std::is_convertible_v<const T&, message>) bool send(const T& value,
                                                                send_handler done = {}) {
    return send(message::from(value), std::move(done));
  }

  channel& on_message(message_handler handler);
  channel& on_disconnect(disconnect_handler handler);
  /// Errors of the channel itself (malformed or oversized frames, a send after close without a
  /// completion handler). On a forked child's channel they also reach the child's on_error.
  channel& on_error(channel_error_handler handler);

  /// Closes the channel once the queued messages are written; `disconnect` follows on both
  /// sides. No message is delivered after it. On a channel that is not connected (any more),
  /// it reports errc::already_disconnected ("IPC channel is already disconnected", Node's
  /// ERR_IPC_DISCONNECTED) to the error handlers, posted.
  void disconnect();
  bool connected() const noexcept;
  /// Bytes queued and not yet written.
  std::size_t pending_bytes() const noexcept;
  serialization mode() const;

private:
  friend struct detail::channel_access;
  std::shared_ptr<detail::channel_state> state_;
};

/// True when this process was started with an IPC channel (by childproc::fork or by Node's
/// fork / spawn with 'ipc') that parent_channel() has not taken yet.
bool has_parent_channel() noexcept;

/// The worker side: the channel to the parent (Node's process.send / process.on('message')).
/// Detects childproc's channel (CHILDPROC_CHANNEL_FD) or Node's (NODE_CHANNEL_FD, json mode) and
/// removes the variable from the environment so that grandchildren do not see it. The first call
/// takes the channel; later calls return the same one while it is alive. The size limit comes
/// from CHILDPROC_CHANNEL_MAX_MESSAGE (a decimal byte count; anything else, or 0, gives the
/// default 64 MiB). Because it calls unsetenv, call it before this process starts threads that
/// read the environment (getenv, or a spawn that inherits it): POSIX gives no thread safety
/// between setenv/unsetenv and getenv. Throws
/// std::system_error (errc::channel_closed) when there is no channel, or when Node's channel
/// uses its 'advanced' serialization, which is not supported.
/// A worker whose io_context has no other work ends its run() when the parent disconnects or
/// dies.
channel parent_channel(const boost::asio::any_io_executor& ex);
template <executor_or_context Target>
channel parent_channel(Target& target) {
  return parent_channel(detail::executor_of(target));
}

} // namespace v1
} // namespace childproc
