// The IPC channel: queued gathered writes, readiness-driven reads, the worker side.
#include "channel_state.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <sys/socket.h>
#include <unistd.h>

namespace childproc::detail {
namespace {

// One read buffer per thread, shared by every channel (messages are decoded before the next read).
constexpr std::size_t read_chunk = 256 * 1024;
char* thread_read_buffer() {
  static thread_local std::unique_ptr<char[]> buffer(new char[read_chunk]);
  return buffer.get();
}

// At most this many queued messages go into one gathered write (one writev).
constexpr std::size_t max_gather = 64;

} // namespace

channel_state::channel_state(boost::asio::any_io_executor ex, int fd, wire w,
                             std::size_t max_message_size)
    : executor(ex), socket(ex, fd), format(w), incoming(w, max_message_size) {}

void channel_state::start() {
  wait_readable();
}

void channel_state::wait_readable() {
  socket.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [self = shared_from_this()](boost::system::error_code ec) {
                      if (ec || !self->open)
                        return;
                      // From a completion handler, a close emits at once: `disconnect`
                      // must not be overtaken by the child's `exit`.
                      if (self->read_available(16, true))
                        self->wait_readable();
                    });
}

bool channel_state::read_available(int limit, bool emit_now) {
  char* buf = thread_read_buffer();
  for (int i = 0; limit < 0 || i < limit; ++i) {
    if (!open)
      return false;
    ssize_t n = ::recv(socket.native_handle(), buf, read_chunk, MSG_DONTWAIT);
    if (n > 0) {
      std::error_code ec = incoming.feed(std::string_view(buf, static_cast<std::size_t>(n)),
                                         [this](message&& m) { deliver(std::move(m)); });
      if (ec) {
        close(ec, emit_now);
        return false;
      }
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return true;
    // EOF (or a reset): the peer is gone. A frame cut short means it died mid-message.
    close(incoming.partial() ? make_error_code(errc::malformed_message) : std::error_code{},
          emit_now);
    return false;
  }
  return true;
}

void channel_state::deliver(message&& m) {
  if (!connected)
    return; // nothing is delivered after disconnect()
  const std::size_t n = message_handlers.size();
  for (std::size_t i = 0; i < n; ++i)
    if (message_handlers[i])
      message_handlers[i](m);
}

void channel_state::drain_now() {
  if (open)
    read_available(-1, true);
}

bool channel_state::send(const message& m, send_handler done) {
  if (!connected) {
    const auto ec = make_error_code(errc::channel_closed);
    if (done)
      boost::asio::post(executor, [done = std::move(done), ec] { done(ec); });
    else
      boost::asio::post(executor, [self = shared_from_this(), ec] { self->report(ec); });
    return false;
  }
  pending_write w;
  if (format == wire::framed && m.is_bytes()) {
    w.bytes = bytes_frame_header(m.bytes().size());
    w.payload = message_access::payload(m); // shared, immutable: no copy
  } else {
    encode(m, format, w.bytes);
  }
  w.done = std::move(done);
  pending_bytes += w.size();
  queue_.push_back(std::move(w));
  if (!writing_)
    write_next();
  return true;
}

void channel_state::write_next() {
  if (queue_.empty() || !open) {
    writing_ = false;
    if (!connected && open && queue_.empty())
      close({}, true); // disconnect() waited for the queue to drain (we are in a completion)
    return;
  }
  writing_ = true;
  gather_.clear();
  in_flight_ = std::min(queue_.size(), max_gather);
  for (std::size_t i = 0; i < in_flight_; ++i) {
    gather_.push_back(boost::asio::buffer(queue_[i].bytes));
    if (queue_[i].payload)
      gather_.push_back(boost::asio::buffer(*queue_[i].payload));
  }
  boost::asio::async_write(socket, gather_,
                           [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                             if (ec) {
                               // The peer is gone. Its last messages may still be unread: the read
                               // side ends the channel when it reaches the EOF; here only the
                               // queued sends fail.
                               self->writing_ = false;
                               self->connected = false;
                               self->fail_queued();
                               return;
                             }
                             for (std::size_t i = 0; i < self->in_flight_; ++i) {
                               auto w = std::move(self->queue_.front());
                               self->queue_.pop_front();
                               self->pending_bytes -= w.size();
                               if (w.done)
                                 w.done({});
                             }
                             self->in_flight_ = 0;
                             self->write_next();
                           });
}

void channel_state::disconnect() {
  if (!connected)
    return;
  connected = false;
  if (!writing_)
    close({}, false);
  // else: write_next closes once the queue is written
}

void channel_state::report(std::error_code ec) {
  const std::size_t n = error_handlers.size();
  for (std::size_t i = 0; i < n; ++i)
    if (error_handlers[i])
      error_handlers[i](ec);
  if (error_sink)
    error_sink(ec);
}

void channel_state::close(std::error_code reason, bool emit_now) {
  if (!open)
    return;
  open = false;
  connected = false;
  boost::system::error_code ignored;
  socket.close(ignored);
  fail_queued();
  if (emit_now) {
    if (reason)
      report(reason);
    emit_disconnect();
  } else {
    boost::asio::post(executor, [self = shared_from_this(), reason] {
      if (reason)
        self->report(reason);
      self->emit_disconnect();
    });
  }
}

void channel_state::fail_queued() {
  // Unwritten messages will never be written.
  auto unsent = std::move(queue_);
  queue_.clear();
  pending_bytes = 0;
  in_flight_ = 0;
  for (auto& w : unsent)
    if (w.done)
      boost::asio::post(
          executor, [done = std::move(w.done)] { done(make_error_code(errc::channel_closed)); });
}

void channel_state::emit_disconnect() {
  if (disconnect_emitted)
    return;
  disconnect_emitted = true;
  const std::size_t n = disconnect_handlers.size();
  for (std::size_t i = 0; i < n; ++i)
    if (disconnect_handlers[i])
      disconnect_handlers[i]();
  if (closed_hook)
    closed_hook();
}

} // namespace childproc::detail

namespace childproc {
inline namespace v1 {
namespace {

std::mutex parent_channel_mutex;
std::weak_ptr<detail::channel_state> parent_channel_taken;

detail::channel_state& checked(const std::shared_ptr<detail::channel_state>& s) {
  if (!s)
    throw std::logic_error("childproc: empty channel handle");
  return *s;
}

// The fd named by `variable`, if it is a number that names an open descriptor.
int channel_fd_from(const char* variable) {
  const char* text = std::getenv(variable);
  if (!text || !*text)
    return -1;
  char* end = nullptr;
  const long fd = std::strtol(text, &end, 10);
  if (*end != '\0' || fd < 0 || fd > 1 << 20 || ::fcntl(static_cast<int>(fd), F_GETFD) < 0)
    return -1;
  return static_cast<int>(fd);
}

} // namespace

bool channel::send(const message& msg, send_handler done) {
  return checked(state_).send(msg, std::move(done));
}

channel& channel::on_message(message_handler handler) {
  checked(state_).message_handlers.push_back(std::move(handler));
  return *this;
}

channel& channel::on_disconnect(disconnect_handler handler) {
  checked(state_).disconnect_handlers.push_back(std::move(handler));
  return *this;
}

channel& channel::on_error(channel_error_handler handler) {
  checked(state_).error_handlers.push_back(std::move(handler));
  return *this;
}

void channel::disconnect() {
  checked(state_).disconnect();
}

bool channel::connected() const noexcept {
  return state_ && state_->connected;
}

std::size_t channel::pending_bytes() const noexcept {
  return state_ ? state_->pending_bytes : 0;
}

serialization channel::mode() const {
  return checked(state_).format == detail::wire::framed ? serialization::framed
                                                        : serialization::node_json;
}

bool has_parent_channel() noexcept {
  std::lock_guard lock(parent_channel_mutex);
  return channel_fd_from("CHILDPROC_CHANNEL_FD") >= 0 || channel_fd_from("NODE_CHANNEL_FD") >= 0;
}

channel parent_channel(const boost::asio::any_io_executor& ex) {
  std::lock_guard lock(parent_channel_mutex);
  if (auto existing = parent_channel_taken.lock())
    return channel(existing);
  detail::wire format = detail::wire::framed;
  int fd = channel_fd_from("CHILDPROC_CHANNEL_FD");
  if (fd < 0) {
    fd = channel_fd_from("NODE_CHANNEL_FD");
    const char* mode = std::getenv("NODE_CHANNEL_SERIALIZATION_MODE");
    if (fd >= 0 && mode && std::strcmp(mode, "json") != 0)
      throw std::system_error(make_error_code(errc::channel_closed),
                              "childproc: Node's '" + std::string(mode) +
                                  "' channel serialization is not supported (use 'json')");
    format = detail::wire::node_json;
  }
  if (fd < 0)
    throw std::system_error(make_error_code(errc::channel_closed),
                            "childproc: this process has no parent channel");
  ::unsetenv("CHILDPROC_CHANNEL_FD");
  ::unsetenv("NODE_CHANNEL_FD");
  ::unsetenv("NODE_CHANNEL_SERIALIZATION_MODE");
  // The inherited descriptor is blocking and inheritable: make it ours.
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  const char* max_text = std::getenv("CHILDPROC_CHANNEL_MAX_MESSAGE");
  const std::size_t max_message = max_text ? std::strtoull(max_text, nullptr, 10) : 64u << 20;
  ::unsetenv("CHILDPROC_CHANNEL_MAX_MESSAGE");
  auto state = std::make_shared<detail::channel_state>(ex, fd, format, max_message);
  state->start();
  parent_channel_taken = state;
  return channel(state);
}

} // namespace v1
} // namespace childproc
