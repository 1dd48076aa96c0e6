// The IPC channel: queued gathered writes, readiness-driven reads, the worker side.
#include "channel_state.hpp"
#include "read_buffer.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <mutex>
#include <sys/socket.h>
#include <unistd.h>

namespace childproc::detail {
namespace {

// At most this many queued writes go into one gathered write (one sendmsg).
constexpr std::size_t max_gather = 64;

// Node's name for the kind of handle `fd` is, or empty for what Node cannot receive (libuv
// takes TCP, Unix stream and UDP sockets only).
std::string_view node_handle_type(int fd) {
  int type = 0, listening = 0;
  socklen_t length = sizeof type;
  sockaddr_storage address{};
  socklen_t address_length = sizeof address;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) != 0)
    return {};
  const int family = address.ss_family;
  const bool inet = family == AF_INET || family == AF_INET6;
  if (type == SOCK_STREAM && (inet || family == AF_UNIX)) {
    length = sizeof listening;
    ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length);
    return listening ? "net.Server" : "net.Socket";
  }
  return type == SOCK_DGRAM && inet ? "dgram.Native" : std::string_view();
}

} // namespace

channel_state::channel_state(boost::asio::any_io_executor ex, posix::unique_fd fd, wire w,
                             std::size_t max_message_size)
    : executor(ex), socket(ex), format(w), incoming(w, max_message_size) {
  boost::system::error_code ec;
  socket.assign(fd.get(), ec);
  if (ec)
    throw std::system_error(ec, "childproc: registering the IPC channel");
  fd.release(); // the socket owns it now
}

void channel_state::start() {
  wait_readable();
}

void channel_state::wait_readable() {
  if (waiting_ || !open)
    return;
  waiting_ = true;
  socket.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [self = shared_from_this()](boost::system::error_code ec) {
                      self->waiting_ = false;
                      if (ec || !self->open)
                        return;
                      // From a completion handler, a close emits at once: `disconnect`
                      // must not be overtaken by the child's `exit`.
                      if (!self->read_burst())
                        return;
                      if (self->after_reads)
                        self->after_reads();
                      self->wait_readable();
                    });
}

bool channel_state::read_burst() {
  // A handler that throws leaves the burst too: after_reads then comes from a posted handler.
  struct burst_scope {
    channel_state& state;
    explicit burst_scope(channel_state& s) : state(s) { state.in_read_burst = true; }
    ~burst_scope() {
      state.in_read_burst = false;
      if (std::uncaught_exceptions() > 0 && state.after_reads)
        boost::asio::post(state.executor, [self = state.shared_from_this()] {
          if (self->after_reads)
            self->after_reads();
        });
    }
  } scope(*this);
  return read_available(16, true);
}

bool channel_state::read_available(int limit, bool emit_now) {
  for (int i = 0; limit < 0 || i < limit; ++i) {
    if (!open)
      return false;
    bool more;
    {
      // Leased for the read and its decoding only: the messages own their bytes, and a handler
      // that runs a nested event loop on this thread gets a buffer of its own anyway.
      read_buffer_lease buffer;
      // A bounded burst (the readiness handler) stops at a short read; a drain reads to EAGAIN.
      more = read_once(buffer.data(), /*until_empty=*/limit < 0);
    }
    if (!deliver_inbox(emit_now))
      return false;
    if (!more)
      return true;
  }
  return true;
}

bool channel_state::read_once(char* buffer, bool until_empty) {
  for (;;) {
    std::vector<owned_fd> fds;
    const ssize_t n = receive_with_fds(buffer, fds);
    if (n == -2) {
      // The descriptors did not fit (MSG_CTRUNC): those that came are closed (fds), and the
      // stream cannot be trusted any more.
      close_reason_ = make_error_code(errc::malformed_message);
      return false;
    }
    if (n > 0) {
      struct to_inbox {
        struct takes_views {};
        channel_state& s;
        void operator()(message&& m) const { s.inbox_.push_back({std::move(m)}); }
        void operator()(bytes_frame_view v) const {
          const std::size_t at = s.inbox_bytes_.size();
          s.inbox_bytes_ += v.payload; // first: an entry never points past the buffer
          s.inbox_.push_back({{}, at, v.payload.size(), true});
        }
      };
      const std::error_code ec = incoming.feed(
          std::string_view(buffer, static_cast<std::size_t>(n)), std::move(fds), to_inbox{*this});
      for (auto c : incoming.take_node_controls())
        node_control(c);
      if (ec)
        close_reason_ = ec;
      // A short read usually means empty, but not always: a Unix socket's read also stops at
      // data that came with descriptors, or from another writer. A drain reads on to EAGAIN; the
      // readiness handler waits instead of a recvmsg that would fail with EAGAIN (one system
      // call per message): the wait re-checks readiness (Asio's async_wait re-arms the
      // descriptor with EPOLL_CTL_MOD, which reports data already there), so nothing is missed.
      return !ec && (until_empty || static_cast<std::size_t>(n) == read_buffer_lease::capacity);
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return false;
    // EOF (or a reset): the peer is gone. A frame cut short means it died mid-message.
    close_reason_ =
        incoming.partial() ? make_error_code(errc::malformed_message) : std::error_code{};
    return false;
  }
}

ssize_t channel_state::receive_with_fds(char* buffer, std::vector<owned_fd>& fds) {
  iovec into{buffer, read_buffer_lease::capacity};
  // Linux ends a read after data that came with descriptors: one sender's batch per read. Room
  // for a few: a batch larger than that is a peer outside the protocol (one per message).
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr header{};
  header.msg_iov = &into;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(socket.native_handle(), &header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0)
    return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(posix::above_stdio(fd));
    }
  }
  if (header.msg_flags & MSG_CTRUNC)
    return -2;
  return n; // at EOF (0) the descriptors, if any, are closed with `fds`
}

void channel_state::node_control(decoder::node_control c) {
  using control = decoder::node_control;
  if (c == control::send_ack || c == control::send_nack) {
    queue_control(c == control::send_ack ? "{\"cmd\":\"NODE_HANDLE_ACK\"}\n"
                                         : "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
  } else if (awaiting_ack_ && unacked_) {
    awaiting_ack_ = false;
    if (c == control::nack_received && retransmissions_ < 3) {
      // Node could not take the handle: send it again (Node retries as often).
      ++retransmissions_;
      pending_write again = std::move(*unacked_);
      pending_bytes += again.size();
      queue_.insert(queue_.begin() + (front_written_ > 0 ? 1 : 0), std::move(again));
    } else {
      retransmissions_ = 0;
      if (c == control::nack_received) // Node never took it: a warning, the channel goes on
        post_error(make_error_code(errc::handle_not_received), {});
    }
    unacked_.reset(); // closes the descriptor: Node holds its own now
  }
  if (!writing_)
    write_next();
}

void channel_state::queue_control(std::string_view line) {
  pending_write w;
  w.bytes = line;
  w.control = true;
  pending_bytes += w.size();
  queue_.insert(queue_.begin() + (front_written_ > 0 ? 1 : 0), std::move(w));
}

bool channel_state::deliver_inbox(bool emit_now) {
  try {
    while (!inbox_.empty()) {
      // Taken out of the inbox first: a handler that throws, or that runs the event loop, leaves
      // the rest of the inbox consistent.
      inbox_entry e = std::move(inbox_.front());
      inbox_.pop_front();
      if (disconnect_called_) // nothing is delivered after disconnect()
        continue;
      if (!e.view)
        route(std::move(e.m));
      else if (bytes_frame_handler)
        bytes_frame_handler(std::string_view(inbox_bytes_).substr(e.view_at, e.view_size));
    }
    inbox_bytes_.clear();
    if (inbox_bytes_.capacity() > read_buffer_lease::capacity)
      std::string().swap(inbox_bytes_);
  } catch (...) {
    resume_later();
    throw;
  }
  if (close_reason_) {
    const std::error_code reason = *close_reason_;
    close_reason_.reset();
    close(reason, emit_now);
    return false;
  }
  return open;
}

void channel_state::route(message&& m) {
  if (!pulled_ && !message_handlers.empty()) {
    message_handlers.emit(m, channel(shared_from_this()));
    return;
  }
  if (receivers_.empty()) {
    received_.push_back(std::move(m));
    return;
  }
  auto done = std::move(receivers_.front());
  receivers_.pop_front();
  done->complete({}, std::move(m)); // posted
}

void channel_state::receive(std::unique_ptr<receive_completion> done) {
  pulled_ = true;
  if (!received_.empty()) {
    message m = std::move(received_.front());
    received_.pop_front();
    done->complete({}, std::move(m));
  } else if (!open || disconnect_called_) {
    done->complete(make_error_code(errc::channel_closed), message());
  } else {
    receivers_.push_back(std::move(done));
  }
}

void channel_state::cancel_receive(receive_completion* which) {
  for (auto it = receivers_.begin(); it != receivers_.end(); ++it)
    if (it->get() == which) {
      auto done = std::move(*it);
      receivers_.erase(it);
      done->complete(boost::asio::error::operation_aborted, message());
      return;
    }
}

void channel_state::fail_receives() {
  auto waiting = std::move(receivers_);
  receivers_.clear();
  for (auto& done : waiting)
    done->complete(make_error_code(errc::channel_closed), message());
}

void channel_state::resume_later() {
  boost::asio::post(executor, [self = shared_from_this()] {
    if (self->deliver_inbox(true))
      self->wait_readable();
  });
}

void channel_state::drain_now() {
  if (open)
    read_available(-1, true);
}

void channel_state::post_error(std::error_code ec, send_handler done) {
  if (done)
    boost::asio::post(executor, [done = std::move(done), ec] { done(ec); });
  else
    boost::asio::post(executor, [self = shared_from_this(), ec] { self->report(ec); });
}

bool channel_state::send(const message& m, send_handler done, owned_fd handle) {
  if (!connected) {
    post_error(make_error_code(errc::channel_closed), std::move(done));
    return false;
  }
  const bool with_handle = static_cast<bool>(handle);
  const std::string_view node_type = with_handle && format == wire::node_json
                                         ? node_handle_type(handle.get())
                                         : std::string_view("-");
  if (node_type.empty()) { // Node can only take sockets
    post_error(make_error_code(errc::invalid_argument), std::move(done));
    return false;
  }
  // A descriptor starts a write of its own, and a large bytes message goes from its own buffer;
  // anything else joins the run of bytes at the queue's end (one buffer, one iovec).
  const bool shared = format == wire::framed && m.is_bytes() && m.bytes().size() >= copy_below;
  const bool apart = with_handle || shared;
  pending_write& w = apart ? queue_.emplace_back() : run_for_append();
  const std::size_t start = w.bytes.size();
  const auto take_back = [&] { // leaves the queue as it was
    w.bytes.resize(start);
    if (apart || start == 0) { // the write was made for it (an existing run is never empty)
      if (!apart)
        spare_ = std::move(w.bytes);
      queue_.pop_back();
    }
  };
  std::size_t size;
  if (shared) {
    w.payload = message_access::payload(m); // shared, immutable: no copy
    size = w.payload->size();
    if (size <= incoming.max_message_size())
      w.bytes = bytes_frame_header(size, with_handle);
  } else {
    try {
      encode(m, format, w.bytes, with_handle, node_type);
    } catch (...) {
      take_back();
      throw;
    }
    size = limited_size(format, w.bytes.size() - start);
  }
  // The peer applies the same limit (a childproc peer is told it), and a frame cannot carry more.
  if (size > incoming.max_message_size()) {
    take_back();
    post_error(make_error_code(errc::message_too_large), std::move(done));
    return false;
  }
  w.handle = std::move(handle);
  w.done = std::move(done);
  pending_bytes += w.size() - start;
  return queued();
}

bool channel_state::send_copy(std::string_view data) {
  if (format != wire::framed)
    return send(message::bytes(std::string(data)), {});
  if (!connected) {
    post_error(make_error_code(errc::channel_closed), {});
    return false;
  }
  if (data.size() > incoming.max_message_size()) {
    post_error(make_error_code(errc::message_too_large), {});
    return false;
  }
  pending_write& w = run_for_append();
  w.bytes.reserve(w.bytes.size() + frame_header_size + data.size()); // no half frame on bad_alloc
  w.bytes += bytes_frame_header(data.size());
  w.bytes += data;
  pending_bytes += frame_header_size + data.size();
  return queued();
}

bool channel_state::queued() {
  if (!writing_ && corked_ == 0) { // else the socket's writability (or the uncork) writes it
    if (batch_sends)
      post_flush();
    else
      write_next();
  }
  if (pending_bytes >= high_water) {
    need_drain_ = true;
    return false; // queued all the same (Node's rule)
  }
  return true;
}

channel_state::pending_write& channel_state::run_for_append() {
  if (!queue_.empty()) {
    pending_write& last = queue_.back();
    if (!last.handle && !last.payload && !last.done && !last.control &&
        last.bytes.size() < run_limit)
      return last;
  }
  pending_write& w = queue_.emplace_back();
  w.bytes = std::move(spare_); // a written run's buffer: its capacity, no allocation
  spare_ = std::string();
  return w;
}

void channel_state::post_flush() {
  if (flush_posted_)
    return;
  flush_posted_ = true;
  boost::asio::post(executor, [self = shared_from_this()] {
    self->flush_posted_ = false;
    self->flush();
  });
}

void channel_state::flush() {
  if (open && !writing_ && !queue_.empty())
    write_next();
}

void channel_state::uncork() {
  if (corked_ > 0 && --corked_ == 0)
    flush();
}

void channel_state::drained() {
  if (!need_drain_ || pending_bytes >= high_water || !connected)
    return;
  need_drain_ = false;
  boost::asio::post(executor, [self = shared_from_this()] { self->drain_handlers.emit(); });
}

void channel_state::write_next() {
  std::vector<send_handler> written;
  while (open && !queue_.empty() && write_once(written)) {
  }
  // The bookkeeping is done: completions are posted (send() itself may be the caller).
  for (auto& done : written)
    boost::asio::post(executor, [done = std::move(done)] { done({}); });
  drained();
  if (disconnect_called_ && open && queue_.empty() && !writing_)
    // disconnect() waited for the queue to drain; the close comes after the completions.
    boost::asio::post(executor, [self = shared_from_this()] { self->close({}, true); });
}

void channel_state::gather() {
  gather_.clear();
  std::size_t skip = front_written_;
  for (std::size_t i = 0; i < queue_.size() && i < max_gather; ++i) {
    const pending_write& w = queue_[i];
    // A descriptor goes with the first byte of its message, which starts a sendmsg; Node takes
    // nothing else until it acknowledged a handle.
    if ((i > 0 && w.handle) || (awaiting_ack_ && !w.control))
      break;
    if (i > 0 && format == wire::node_json && queue_[i - 1].handle)
      break;
    for (std::string_view piece : {std::string_view(w.bytes),
                                   w.payload ? std::string_view(*w.payload) : std::string_view()}) {
      if (skip >= piece.size()) {
        skip -= piece.size();
        continue;
      }
      gather_.push_back({const_cast<char*>(piece.data() + skip), piece.size() - skip});
      skip = 0;
    }
  }
}

namespace {
// The errors of a sendmsg that are the descriptor's, not the socket's: a number that is not open,
// Unix sockets nested too deep. Any other error (EAGAIN excepted) means the peer is gone.
bool descriptor_refused(int error) {
  return error == EBADF || error == ETOOMANYREFS;
}
} // namespace

bool channel_state::write_once(std::vector<send_handler>& written) {
  gather();
  if (gather_.empty())
    return false; // held back until Node's ACK
  msghdr header{};
  header.msg_iov = gather_.data();
  header.msg_iovlen = gather_.size();
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (queue_.front().handle && front_written_ == 0) {
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&header);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    const int fd = queue_.front().handle.get();
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  // MSG_NOSIGNAL: a peer that is gone is an error here, never a SIGPIPE that kills the process.
  const ssize_t n = ::sendmsg(socket.native_handle(), &header, MSG_NOSIGNAL | MSG_DONTWAIT);
  ++writes;
  if (n < 0) {
    if (errno == EINTR)
      return true;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      writing_ = true;
      socket.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                        [self = shared_from_this()](boost::system::error_code ec) {
                          self->writing_ = false;
                          if (!ec && self->open)
                            self->write_next();
                        });
      return false;
    }
    if (header.msg_control && descriptor_refused(errno)) {
      refuse_front(errno); // the descriptor's own error: this one send fails
      return true;
    }
    // The peer is gone. Its last messages may still be unread: the read side ends the channel
    // when it reaches the EOF; here only the queued sends fail.
    connected = false;
    fail_queued();
    return false;
  }
  finish_written(static_cast<std::size_t>(n), written);
  return true;
}

void channel_state::refuse_front(int error) {
  // Nothing of this message went out (its descriptor goes with its first byte): it fails alone,
  // and its descriptor is closed with it.
  pending_write refused = std::move(queue_.front());
  queue_.pop_front();
  pending_bytes -= refused.size();
  post_error(std::error_code(error, std::system_category()), std::move(refused.done));
}

void channel_state::finish_written(std::size_t n, std::vector<send_handler>& written) {
  for (auto left = n; left > 0;) {
    pending_write& w = queue_.front();
    const std::size_t rest = w.size() - front_written_;
    if (left < rest) {
      front_written_ += left;
      break;
    }
    left -= rest;
    front_written_ = 0;
    pending_bytes -= w.size();
    if (w.done)
      written.push_back(std::move(w.done));
    if (w.handle && format == wire::node_json) {
      // Kept (with its bytes, for a NACK) until Node acknowledges it.
      awaiting_ack_ = true;
      unacked_ = std::move(w);
    } else if (!w.payload && !w.control && w.bytes.capacity() <= run_limit * 2) {
      spare_ = std::move(w.bytes);
      spare_.clear();
    }
    queue_.pop_front(); // a framed message's descriptor is closed: the peer has its own
  }
}

void channel_state::disconnect() {
  // After a failed write the channel is still open (and Node's still connected): disconnect()
  // closes it then.
  if (disconnect_called_ || !open) {
    // Node's ERR_IPC_DISCONNECTED.
    post_error(make_error_code(errc::already_disconnected), {});
    return;
  }
  disconnect_called_ = true;
  connected = false;
  if (!writing_ && !awaiting_ack_ && !queue_.empty())
    write_next(); // sends batch_sends left queued go first; it closes once they are written
  else if (!writing_ && !awaiting_ack_)
    close({}, false);
  // else: write_next closes once the queue is written
}

void channel_state::report(std::error_code ec) {
  error_handlers.emit(ec);
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
  inbox_.clear();
  inbox_bytes_.clear();
  close_reason_.reset();
  incoming.drop_handles(); // descriptors no message took
  unacked_.reset();
  awaiting_ack_ = false;
  fail_queued();
  fail_receives();
  if (emit_now)
    emit_close_events(reason);
  else
    boost::asio::post(executor,
                      [self = shared_from_this(), reason] { self->emit_close_events(reason); });
}

void channel_state::close_silently() {
  disconnect_emitted = true;
  close({}, true);
  message_handlers.release();
  disconnect_handlers.release();
  drain_handlers.release();
  error_handlers.release();
}

void channel_state::emit_close_events(std::error_code reason) {
  if (reason) {
    try {
      report(reason);
    } catch (...) {
      // `disconnect` still comes, from the next run of the event loop.
      boost::asio::post(executor, [self = shared_from_this()] { self->emit_disconnect(); });
      throw;
    }
  }
  emit_disconnect();
}

void channel_state::fail_queued() {
  // Unwritten messages will never be written.
  auto unsent = std::move(queue_);
  queue_.clear();
  pending_bytes = 0;
  front_written_ = 0;
  for (auto& w : unsent)
    if (w.done)
      boost::asio::post(
          executor, [done = std::move(w.done)] { done(make_error_code(errc::channel_closed)); });
}

void channel_state::emit_disconnect() {
  if (disconnect_emitted)
    return;
  disconnect_emitted = true;
  try {
    disconnect_handlers.emit();
  } catch (...) {
    boost::asio::post(executor, [self = shared_from_this()] { self->after_disconnect(); });
    throw;
  }
  after_disconnect();
}

void channel_state::after_disconnect() {
  // `disconnect` was the last message and disconnect event: a handler capturing the channel (or
  // the child) must not keep it alive. The error handlers still hear the errors already posted
  // (a second disconnect() right after the first): their release is posted behind them.
  message_handlers.release();
  disconnect_handlers.release();
  drain_handlers.release();
  boost::asio::post(executor, [self = shared_from_this()] { self->error_handlers.release(); });
  if (closed_hook)
    closed_hook();
}

void start_receive(const std::shared_ptr<channel_state>& state,
                   std::unique_ptr<receive_completion> done) {
  state->receive(std::move(done));
}

void cancel_receive(const std::weak_ptr<channel_state>& weak, receive_completion* done) {
  if (auto state = weak.lock())
    state->cancel_receive(done);
}

boost::asio::any_io_executor channel_executor(const channel_state& state) {
  return state.executor;
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

// CHILDPROC_CHANNEL_MAX_MESSAGE, as fork() writes it: a decimal number of bytes. Anything else
// (unset, empty, garbage, a sign, 0) gives fork_options' default limit; a number beyond what a
// frame can carry is clamped to it, as fork() clamps the option.
std::size_t max_message_from(const char* text) {
  const std::size_t fallback = fork_options{}.max_message_size;
  if (!text || !*text)
    return fallback;
  std::size_t value = 0;
  for (const char* p = text; *p; ++p) {
    if (*p < '0' || *p > '9')
      return fallback;
    value = detail::clamp_max_message(value * 10 + static_cast<std::size_t>(*p - '0'));
  }
  return value == 0 ? fallback : value;
}

} // namespace

bool channel::send(const message& msg, send_handler done) {
  return checked(state_).send(msg, std::move(done));
}

bool channel::send(const message& msg, owned_fd handle, send_handler done) {
  return checked(state_).send(msg, std::move(done), std::move(handle));
}

owned_fd owned_fd::duplicate(int fd, std::error_code& ec) noexcept {
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  ec = copy < 0 ? std::error_code(errno, std::system_category()) : std::error_code();
  return owned_fd(copy);
}

owned_fd owned_fd::duplicate(int fd) {
  std::error_code ec;
  owned_fd copy = duplicate(fd, ec);
  if (ec)
    throw std::system_error(ec, "childproc: duplicating a descriptor");
  return copy;
}

channel& channel::on_message(message_handler handler) {
  if (handler)
    checked(state_).message_handlers.add(
        [handler = std::move(handler)](const message& m, channel) { handler(m); });
  return *this;
}

channel& channel::on_message(channel_message_handler handler) {
  checked(state_).message_handlers.add(std::move(handler));
  return *this;
}

channel& channel::on_drain(drain_handler handler) {
  checked(state_).drain_handlers.add(std::move(handler));
  return *this;
}

std::size_t channel::high_water_mark() const noexcept {
  return state_ ? state_->high_water : default_high_water_mark;
}

void channel::high_water_mark(std::size_t bytes) {
  checked(state_).high_water = bytes;
}

const std::shared_ptr<detail::channel_state>& channel::checked_state() const {
  checked(state_);
  return state_;
}

channel& channel::on_disconnect(disconnect_handler handler) {
  checked(state_).disconnect_handlers.add(std::move(handler));
  return *this;
}

channel& channel::on_error(channel_error_handler handler) {
  checked(state_).error_handlers.add(std::move(handler));
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
  const std::size_t max_message = max_message_from(std::getenv("CHILDPROC_CHANNEL_MAX_MESSAGE"));
  ::unsetenv("CHILDPROC_CHANNEL_MAX_MESSAGE");
  auto state = std::make_shared<detail::channel_state>(ex, detail::posix::unique_fd(fd), format,
                                                       max_message);
  state->start();
  parent_channel_taken = state;
  return channel(state);
}

} // namespace v1
} // namespace childproc
