// channel: one end of an IPC channel between a parent and a forked child (Node's child.send /
// process.send), and parent_channel(), the worker side.
#pragma once

#include <childproc/detail/completion.hpp>
#include <childproc/executor.hpp>
#include <childproc/message.hpp>
#include <childproc/options.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/system/error_code.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <sys/socket.h>
#include <system_error>
#include <type_traits>

namespace childproc {
namespace detail {
struct channel_state;
struct channel_access;
using receive_completion = completion<boost::system::error_code, message>;
void start_receive(const std::shared_ptr<channel_state>& state,
                   std::unique_ptr<receive_completion> done);
void cancel_receive(const std::weak_ptr<channel_state>& state, receive_completion* done);
boost::asio::any_io_executor channel_executor(const channel_state& state);
} // namespace detail

inline namespace v1 {

class channel;
using message_handler = std::function<void(const message& msg)>;
/// A message handler that is also given its channel (a handle to it, for Node's
/// `child.on('message', m => child.disconnect())`).
using channel_message_handler = std::function<void(const message& msg, channel ch)>;
using drain_handler = std::function<void()>;
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
/// Receiving: flowing (on_message, Node's) or pulled (async_receive). The first async_receive
/// switches the channel to pulled mode for good: from then on every message goes to the
/// receive queue and on_message handlers hear nothing. A coroutine loop has gaps between two
/// receives; a rule that gave the messages arriving in a gap to the handlers would split the
/// stream between the two by timing, so a channel is read one way. In flowing mode, messages
/// that arrive while no on_message handler exists are queued for a later async_receive
/// rather than dropped (Node drops them).
///
/// Backpressure: send() returns false once the bytes queued and not yet written reach the high-
/// water mark (Node's rule: child.send() returns false while its write queue holds 128 KiB or
/// more); the message is queued all the same. `drain` follows once the queue fell below the mark
/// again (Node's channel has no such event; its streams do).
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
  /// Sends `msg` with a descriptor (Node's `send(message, handle)`), which the channel owns from
  /// now on: it is closed once sent (the peer has its own) or when it cannot be. The receiver
  /// gets it with the message (message::take_handle). Any descriptor over framed; over
  /// node_json only what Node can take, sockets (TCP and Unix stream: "net.Socket", listening:
  /// "net.Server"; UDP), else errc::invalid_argument, reported as a closed channel is. To keep
  /// using a descriptor, send owned_fd::duplicate(fd). With node_json, Node's protocol holds
  /// later messages back until Node acknowledged the handle (NODE_HANDLE_ACK), as Node does.
  bool send(const message& msg, owned_fd handle, send_handler done = {});
  /// The same with an Asio I/O object (a socket, an acceptor, a stream_descriptor), given up:
  /// `ch.send(msg, std::move(socket))`.
  template <class IoObject>
  requires(!std::is_lvalue_reference_v<IoObject> && requires(IoObject & o) {
    o.release();
  }) bool send(const message& msg, IoObject&& object, send_handler done = {}) {
    return send(msg, owned_fd::from(std::move(object)), std::move(done));
  }
  /// Sends a user type converted with Boost.JSON's value_from.
  template <class T>
  requires(!std::is_convertible_v<const T&, message>) bool send(const T& value,
                                                                send_handler done = {}) {
    return send(message::from(value), std::move(done));
  }

  /// Sends `msg`; completes with void(boost::system::error_code) once it is written (the
  /// errors of send()'s `done`). Any completion token (callback, use_future, use_awaitable,
  /// deferred). A queued message is sent whatever happens to the operation: cancellation is not
  /// supported (the slot is ignored).
  template <class CompletionToken>
  auto async_send(const message& msg, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, channel self, message msg) {
          std::shared_ptr<detail::completion<boost::system::error_code>> done =
              detail::make_completion<boost::system::error_code>(
                  std::move(handler), detail::channel_executor(*self.state_));
          self.send(msg, [done](std::error_code ec) { done->complete(ec); });
        },
        token, *this, msg);
  }
  /// The same with a descriptor (see send(msg, handle)).
  template <class CompletionToken>
  auto async_send(const message& msg, owned_fd handle, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, channel self, message msg, std::shared_ptr<owned_fd> handle) {
          std::shared_ptr<detail::completion<boost::system::error_code>> done =
              detail::make_completion<boost::system::error_code>(
                  std::move(handler), detail::channel_executor(*self.state_));
          self.send(msg, std::move(*handle), [done](std::error_code ec) { done->complete(ec); });
        },
        token, *this, msg, std::make_shared<owned_fd>(std::move(handle)));
  }

  /// Receives the next message (pulled mode, see above): completes with
  /// void(boost::system::error_code, message). Messages queue between receives, in order; once
  /// the channel closed and the queue is drained, receives complete with errc::channel_closed
  /// (also those pending at the close). Any completion token (callback, use_future,
  /// use_awaitable, deferred); receives pending together complete in the order they were made.
  /// Cancelling (terminal, partial or total, through the token's cancellation slot) completes
  /// that receive with operation_aborted at once and loses nothing: a message arriving later
  /// goes to the queue, for the next receive. A cancellation after the message was handed over
  /// has no effect (Asio's rule).
  template <class CompletionToken>
  auto async_receive(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, message)>(
        [](auto handler, std::shared_ptr<detail::channel_state> state) {
          auto slot = boost::asio::get_associated_cancellation_slot(handler);
          auto done = detail::make_completion<boost::system::error_code, message>(
              std::move(handler), detail::channel_executor(*state));
          if (slot.is_connected())
            slot.assign([weak = std::weak_ptr<detail::channel_state>(state),
                         which = done.get()](boost::asio::cancellation_type) {
              detail::cancel_receive(weak, which);
            });
          detail::start_receive(state, std::move(done));
        },
        token, checked_state());
  }

  channel& on_message(message_handler handler);
  channel& on_message(channel_message_handler handler);
  /// After send() returned false: the queue fell below the high-water mark again.
  channel& on_drain(drain_handler handler);
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
  /// Node's threshold: send() returns false from 128 KiB queued.
  static constexpr std::size_t default_high_water_mark = 128 * 1024;
  std::size_t high_water_mark() const noexcept;
  void high_water_mark(std::size_t bytes);
  serialization mode() const;

private:
  friend struct detail::channel_access;
  const std::shared_ptr<detail::channel_state>& checked_state() const;
  std::shared_ptr<detail::channel_state> state_;
};

} // namespace v1

namespace detail {
// The protocol of a socket type for `fd`: an IP protocol's family (v4 or v6) from the socket.
template <class Protocol>
Protocol protocol_of(int fd) {
  if constexpr (requires { Protocol::v4(); }) {
    sockaddr_storage address{};
    socklen_t length = sizeof address;
    const bool v6 = ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0 &&
                    address.ss_family == AF_INET6;
    return v6 ? Protocol::v6() : Protocol::v4();
  } else {
    return Protocol();
  }
}
} // namespace detail

inline namespace v1 {

/// Moves `fd` into a new Asio I/O object of type IoObject made on `target` (an executor or an
/// execution context): a socket or an acceptor (tcp, udp, local: an IP socket's family, v4 or
/// v6, is read from the descriptor) or a posix::stream_descriptor. A cluster worker:
/// `auto socket = childproc::adopt<tcp::socket>(io, msg.take_handle());`. The error_code form
/// closes `fd` on failure; the other throws std::system_error.
template <class IoObject, class Target>
IoObject adopt(Target&& target, owned_fd fd, std::error_code& ec) {
  IoObject object(target);
  boost::system::error_code failed;
  if constexpr (requires { typename IoObject::protocol_type; })
    object.assign(detail::protocol_of<typename IoObject::protocol_type>(fd.get()), fd.get(),
                  failed);
  else
    object.assign(fd.get(), failed);
  ec = failed;
  if (!failed)
    fd.release(); // the object owns it now
  return object;
}
template <class IoObject, class Target>
IoObject adopt(Target&& target, owned_fd fd) {
  std::error_code ec;
  IoObject object = adopt<IoObject>(target, std::move(fd), ec);
  if (ec)
    throw std::system_error(ec, "childproc: adopting a descriptor");
  return object;
}

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
