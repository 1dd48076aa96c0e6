// The parent's ends of the stdio pipes.
#include "child_state.hpp"
#include "handed_over.hpp"
#include "read_buffer.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <map>
#include <mutex>
#include <span>

#include <cerrno>
#include <csignal>
#include <ctime>
#include <fcntl.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>

namespace childproc {
inline namespace v1 {
namespace {

// What one read asks for. The leased buffer is larger (the channel reads more at once); 64 KiB
// is a full default pipe.
constexpr std::size_t read_chunk = 64 * 1024;
static_assert(read_chunk <= detail::read_buffer_lease::capacity);

// At most this many reads per readiness before yielding to other work on the executor.
constexpr int reads_per_turn = 16;

// write(2) to a pipe that cannot raise SIGPIPE in this process: a pipe takes no MSG_NOSIGNAL, so
// SIGPIPE is blocked in this thread around the write, and one that the write raised is consumed
// before the mask is restored, so the process's disposition never matters and is never changed.
// A SIGPIPE that was already pending belongs to someone else and is left alone. Returns the
// count written or -errno.
ssize_t write_without_sigpipe(int fd, const char* data, std::size_t size) noexcept {
  sigset_t sigpipe_only, old_mask, pending;
  sigemptyset(&sigpipe_only);
  sigaddset(&sigpipe_only, SIGPIPE);
  sigemptyset(&pending);
  ::sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  ::pthread_sigmask(SIG_BLOCK, &sigpipe_only, &old_mask);
  ssize_t n;
  do
    n = ::write(fd, data, size);
  while (n < 0 && errno == EINTR);
  const int error = n < 0 ? errno : 0;
  if (error == EPIPE && !was_pending) {
    const timespec zero{};
    while (::sigtimedwait(&sigpipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  if (!sigismember(&old_mask, SIGPIPE))
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return n < 0 ? -error : n;
}

} // namespace

readable_stream::readable_stream(detail::child_state& owner, int slot,
                                 boost::asio::any_io_executor ex, int fd)
    : owner_(&owner), slot_(slot), fd_(std::in_place, std::move(ex), fd) {}

readable_stream::~readable_stream() = default;

readable_stream& readable_stream::on_data(data_handler handler) {
  data_handlers_.add(std::move(handler));
  return *this;
}

readable_stream& readable_stream::on_line(line_handler handler) {
  line_handlers_.add(std::move(handler));
  return *this;
}

void readable_stream::deliver(std::string_view chunk) {
  data_handlers_.emit(chunk);
  emit_lines(chunk);
}

void readable_stream::emit_lines(std::string_view chunk) {
  if (line_handlers_.empty())
    return;
  flowing_line_.append(chunk);
  // What was emitted leaves the buffer even when a handler throws: no line comes twice.
  std::size_t done = 0;
  struct consume {
    std::string& buffer;
    std::size_t& count;
    std::size_t& scanned;
    ~consume() {
      buffer.erase(0, count);
      scanned = scanned > count ? scanned - count : 0;
    }
  } guard{flowing_line_, done, flowing_scanned_};
  for (;;) {
    const std::size_t eol = flowing_line_.find('\n', std::max(done, flowing_scanned_));
    std::size_t take = eol - done, skip = 1;
    if (eol == std::string::npos)
      flowing_scanned_ = flowing_line_.size(); // the next chunk is scanned from its own start
    if (eol == std::string::npos || take > max_line_length_) {
      if (flowing_line_.size() - done <= max_line_length_)
        return;
      take = max_line_length_; // too long: a piece, and the rest goes on
      skip = 0;
    }
    const std::string line = flowing_line_.substr(done, take);
    done += take + skip;
    line_handlers_.emit(std::string_view(line));
  }
}

readable_stream& readable_stream::on_end(end_handler handler) {
  end_handlers_.add(std::move(handler));
  return *this;
}

readable_stream::executor_type readable_stream::get_executor() const {
  return owner_->executor;
}

void readable_stream::start() {
  if (started_)
    return;
  started_ = true;
  wait_readable();
}

void readable_stream::wait_readable() {
  if (waiting_ || !is_open() || !wants_data())
    return;
  waiting_ = true;
  fd_->async_wait(boost::asio::posix::stream_descriptor::wait_read,
                  [this, keep = owner_->shared_from_this()](boost::system::error_code ec) {
                    waiting_ = false;
                    if (ec == boost::asio::error::operation_aborted)
                      return;
                    on_readable();
                  });
}

void readable_stream::on_readable() {
  if (!is_open())
    return;
  if (read_done_)
    serve_read(); // a pending read goes first, also when the stream flows again
  else if (line_done_)
    serve_line();
  else if (flowing_)
    drain();
}

void readable_stream::start_read(const read_request& request,
                                 std::unique_ptr<read_completion> done) {
  if (owner_->io_shut_down)
    return; // inert: the handler is destroyed, as Asio does on a context that is gone
  if (read_pending()) {
    done->complete(boost::asio::error::in_progress, 0);
    return;
  }
  if (request.count == 0) {
    done->complete({}, 0); // Asio's rule: an empty read completes at once with 0 bytes
    return;
  }
  flowing_ = false;
  if (!line_buffer_.empty()) { // what the line reader read past its last line comes first
    const std::size_t n = asio::buffer_copy(std::span(request.buffers.data(), request.count),
                                            asio::buffer(line_buffer_));
    line_buffer_.erase(0, n);
    line_scanned_ = 0;
    done->complete({}, n);
    return;
  }
  if (ended_ || !is_open()) {
    done->complete(ended_ ? boost::system::error_code(boost::asio::error::eof)
                          : boost::system::error_code(boost::asio::error::bad_descriptor),
                   0);
    return;
  }
  read_request_ = request;
  read_done_ = std::move(done);
  auto slot = read_done_->cancellation_slot();
  if (slot.is_connected())
    slot.assign([this, weak = owner_->weak_from_this()](boost::asio::cancellation_type) {
      if (auto keep = weak.lock())
        cancel_read();
    });
  if (started_)
    wait_readable(); // otherwise start() does, after `spawn`
}

void readable_stream::cancel_read() {
  // Called from inside the slot's handler: the completion (which clears the slot) is posted.
  if (read_done_)
    boost::asio::post(owner_->executor,
                      [done = std::move(read_done_), keep = owner_->shared_from_this()] {
                        done->complete(boost::asio::error::operation_aborted, 0);
                      });
  if (line_done_)
    boost::asio::post(owner_->executor,
                      [done = std::move(line_done_), keep = owner_->shared_from_this()] {
                        done->complete(boost::asio::error::operation_aborted, {});
                      });
}

void readable_stream::start_line_read(std::unique_ptr<line_completion> done) {
  if (owner_->io_shut_down)
    return;
  if (read_pending()) {
    done->complete(boost::asio::error::in_progress, {});
    return;
  }
  flowing_ = false;
  line_done_ = std::move(done);
  if (try_complete_line())
    return;
  if (ended_ || !is_open()) {
    complete_line_at_end(ended_ ? boost::system::error_code(boost::asio::error::eof)
                                : boost::system::error_code(boost::asio::error::bad_descriptor));
    return;
  }
  auto slot = line_done_->cancellation_slot();
  if (slot.is_connected())
    slot.assign([this, weak = owner_->weak_from_this()](boost::asio::cancellation_type) {
      if (auto keep = weak.lock())
        cancel_read();
    });
  if (started_)
    wait_readable();
}

bool readable_stream::try_complete_line() {
  const std::size_t eol = line_buffer_.find('\n', line_scanned_);
  std::size_t take = eol, skip = 1;
  boost::system::error_code ec;
  if (eol == std::string::npos || eol > max_line_length_) {
    line_scanned_ = line_buffer_.size();
    if (line_buffer_.size() <= max_line_length_)
      return false;
    take = max_line_length_; // too long: its first part, and the rest for the next call
    skip = 0;
    ec = boost::asio::error::message_size;
  }
  std::string line = line_buffer_.substr(0, take);
  line_buffer_.erase(0, take + skip);
  line_scanned_ = 0;
  auto done = std::move(line_done_);
  done->complete(ec, std::move(line));
  return true;
}

void readable_stream::complete_line_at_end(boost::system::error_code ec) {
  auto done = std::move(line_done_);
  if (!done)
    return;
  if (line_buffer_.empty()) {
    done->complete(ec, {});
    return;
  }
  std::string last = std::move(line_buffer_); // the last line, without '\n'
  line_buffer_.clear();
  line_scanned_ = 0;
  done->complete({}, std::move(last));
}

void readable_stream::serve_line() {
  const std::size_t old = line_buffer_.size();
  line_buffer_.resize(old + read_chunk);
  ssize_t n;
  do
    n = ::read(fd_->native_handle(), line_buffer_.data() + old, read_chunk);
  while (n < 0 && errno == EINTR);
  line_buffer_.resize(old + static_cast<std::size_t>(n > 0 ? n : 0));
  if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) {
    try_complete_line();
    wait_readable();
  } else {
    finish(); // the last line, then eof
  }
}

void readable_stream::complete_read(boost::system::error_code ec, std::size_t n) {
  if (auto done = std::move(read_done_))
    done->complete(ec, n);
}

void readable_stream::serve_read() {
  iovec iov[std::tuple_size_v<decltype(read_request_.buffers)>];
  for (std::size_t i = 0; i < read_request_.count; ++i)
    iov[i] = {read_request_.buffers[i].data(), read_request_.buffers[i].size()};
  ssize_t n;
  do
    n = ::readv(fd_->native_handle(), iov, static_cast<int>(read_request_.count));
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    complete_read({}, static_cast<std::size_t>(n));
    wait_readable(); // flowing again meanwhile (resume())
  } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    wait_readable();
  } else {
    finish(); // EOF (or a read error, which ends the stream as EOF would): the read gets eof
  }
}

readable_stream::read_result readable_stream::read_once(char* buffer) {
  const ssize_t n = ::read(fd_->native_handle(), buffer, read_chunk);
  if (n > 0) {
    deliver(std::string_view(buffer, static_cast<std::size_t>(n)));
    return read_result::more;
  }
  if (n < 0 && errno == EINTR)
    return read_result::more;
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return read_result::would_block;
  finish(); // EOF, or a read error that ends the stream as EOF would
  return read_result::ended;
}

void readable_stream::drain() {
  if (!is_open())
    return; // a continuation posted before drain_available() reached the EOF
  detail::resume_after_throw resume([this] { resume_later(); });
  // Leased for the whole delivery: a handler's nested event loop reads into its own buffer.
  detail::read_buffer_lease buffer;
  for (int i = 0; i < reads_per_turn; ++i) {
    if (!flowing_ || read_pending() || !is_open()) { // a handler paused, pulled or closed
      wait_readable();
      return;
    }
    if (!line_buffer_.empty()) { // left by the line reader: delivered first
      std::string rest = std::move(line_buffer_);
      line_buffer_.clear();
      line_scanned_ = 0;
      deliver(rest);
      continue;
    }
    switch (read_once(buffer.data())) {
    case read_result::more:
      continue;
    case read_result::would_block:
      wait_readable();
      return;
    case read_result::ended:
      return;
    }
  }
  // Still readable: let other work run first.
  boost::asio::post(owner_->executor, [this, keep = owner_->shared_from_this()] { drain(); });
}

void readable_stream::drain_available() {
  if (!started_ || !is_open())
    return;
  detail::resume_after_throw resume([this] { resume_later(); });
  detail::read_buffer_lease buffer;
  for (;;) {
    if (!flowing_ || read_pending() || !is_open()) // pulled: the bytes stay for the reader
      return;
    switch (read_once(buffer.data())) {
    case read_result::more:
      continue;
    case read_result::would_block:
      wait_readable(); // a grandchild still holds the pipe
      return;
    case read_result::ended:
      return;
    }
  }
}

void readable_stream::finish() {
  // The bookkeeping first: the stream is closed and no longer holds `close` back.
  boost::system::error_code ignored;
  fd_->close(ignored);
  ended_ = true;
  --owner_->open_readers;
  complete_read(boost::asio::error::eof, 0);
  complete_line_at_end(boost::asio::error::eof);
  data_handlers_.release(); // `end` is the last event: no handler is kept after it
  const std::string last = std::exchange(flowing_line_, std::string());
  flowing_scanned_ = 0;
  if (!last.empty() && !line_handlers_.empty()) {
    try {
      detail::emit_last(line_handlers_, std::string_view(last)); // released even if it throws
    } catch (...) {
      // The exception leaves io.run(); `end` and `close` still come, on the next turn.
      boost::asio::post(owner_->executor, [this, keep = owner_->shared_from_this()] {
        detail::emit_last(end_handlers_);
        owner_->maybe_close();
      });
      throw;
    }
  }
  line_handlers_.release();
  detail::emit_last(end_handlers_);
  owner_->maybe_close();
}

void readable_stream::resume() {
  if (owner_->io_shut_down)
    return;
  flowing_ = true;
  if (!line_buffer_.empty() && started_ && is_open()) // no readiness may come for those bytes
    boost::asio::post(owner_->executor, [this, keep = owner_->shared_from_this()] { drain(); });
  else
    wait_readable(); // never reads inline: the handlers run later
}

void readable_stream::resume_later() {
  if (owner_->io_shut_down)
    return;
  boost::asio::post(owner_->executor, [this, keep = owner_->shared_from_this()] {
    if (is_open())
      drain();
    else
      owner_->deliver(); // `end` threw: `close` may be due
  });
}

void readable_stream::shut_down_io() noexcept {
  fd_.reset();
  waiting_ = false;
  // Abandoned, as Asio abandons the operations of a context that shuts down.
  const auto abandon = [](auto& done) {
    if (!done)
      return;
    auto slot = done->cancellation_slot();
    if (slot.is_connected())
      slot.clear();
    done.reset();
  };
  abandon(read_done_);
  abandon(line_done_);
  data_handlers_.release();
  line_handlers_.release();
  end_handlers_.release();
}

writable_stream::writable_stream(detail::child_state& owner, boost::asio::any_io_executor ex,
                                 int fd)
    : owner_(&owner), fd_(std::in_place, std::move(ex), fd) {}

writable_stream::~writable_stream() = default;

bool writable_stream::write(std::string data, write_handler done) {
  return queue(std::move(data), std::move(done));
}

bool writable_stream::write(std::string_view data, write_handler done) {
  return queue(std::string(data), std::move(done));
}

bool writable_stream::queue(std::string data, write_handler done) {
  if (owner_->io_shut_down)
    return false; // inert: nothing can complete on a context that is gone
  if (!fd_open() || ending_) {
    // The reader is gone (or end() was called): the same answer a closed pipe gives.
    complete(std::move(done), std::error_code(EPIPE, std::system_category())); // as write(2)'s
    return false;
  }
  pending_bytes_ += data.size();
  queue_.push_back({std::move(data), std::move(done), false});
  if (!writing_)
    write_next();
  if (pending_bytes_ < high_water_mark_)
    return true;
  needs_drain_ = true;
  return false;
}

writable_stream& writable_stream::on_drain(drain_handler handler) {
  drain_handlers_.add(std::move(handler));
  return *this;
}

writable_stream& writable_stream::on_error(error_handler handler) {
  error_handlers_.add(std::move(handler));
  return *this;
}

void writable_stream::maybe_drain() {
  if (!needs_drain_ || pending_bytes_ >= high_water_mark_ || !fd_open())
    return;
  needs_drain_ = false;
  drain_handlers_.emit(); // last: the writes are under way again
}

void writable_stream::end(write_handler done) {
  if (owner_->io_shut_down)
    return;
  if (!fd_open() || ending_) {
    complete(std::move(done), {});
    return;
  }
  ending_ = true;
  queue_.push_back({{}, std::move(done), true});
  if (!writing_)
    write_next();
}

void writable_stream::write_next() {
  while (!queue_.empty() && queue_.front().is_end) {
    auto done = std::move(queue_.front().done);
    queue_.pop_front();
    close_now();
    complete(std::move(done), {});
  }
  if (queue_.empty() || !fd_open()) {
    writing_ = false;
    return;
  }
  // Written on readiness by write_without_sigpipe(), not by Asio's write (which may run on
  // whichever thread runs the reactor, where SIGPIPE cannot be held back).
  writing_ = true;
  fd_->async_wait(boost::asio::posix::stream_descriptor::wait_write,
                  [this, keep = owner_->shared_from_this()](boost::system::error_code ec) {
                    if (ec) {
                      writing_ = false;
                      if (ec == boost::asio::error::operation_aborted && !fd_open())
                        ec = boost::asio::error::broken_pipe;
                      fail_all(ec); // boost::system::error_code converts to std::error_code
                      return;
                    }
                    write_ready();
                  });
}

void writable_stream::write_ready() {
  while (!queue_.empty() && !queue_.front().is_end) {
    auto& front = queue_.front();
    const ssize_t n = write_without_sigpipe(fd_->native_handle(), front.data.data() + front_offset_,
                                            front.data.size() - front_offset_);
    if (n == -EAGAIN || n == -EWOULDBLOCK)
      break; // the pipe is full: wait again
    if (n < 0) {
      writing_ = false;
      fail_all(std::error_code(static_cast<int>(-n), std::system_category()));
      return;
    }
    pending_bytes_ -= static_cast<std::size_t>(n);
    front_offset_ += static_cast<std::size_t>(n);
    if (front_offset_ == front.data.size()) {
      complete(std::move(front.done), {});
      queue_.pop_front();
      front_offset_ = 0;
    }
  }
  write_next();
  maybe_drain();
}

void writable_stream::complete(write_handler done, std::error_code ec) {
  // Posted: never from inside write() or end(), and a handler that throws interrupts nothing.
  if (done)
    boost::asio::post(owner_->executor, [done = std::move(done), ec] { done(ec); });
}

void writable_stream::fail_all(std::error_code ec) {
  auto failed = std::move(queue_);
  queue_.clear();
  pending_bytes_ = 0;
  front_offset_ = 0;
  auto errors = std::move(error_handlers_); // the first error only (close_now() drops the list)
  if (errored_)
    errors.release();
  errored_ = true;
  close_now();
  for (auto& p : failed)
    complete(std::move(p.done), p.is_end ? std::error_code{} : ec);
  errors.emit(ec); // last, after the bookkeeping
}

void writable_stream::close_now() {
  boost::system::error_code ignored;
  if (fd_)
    fd_->close(ignored);
  ending_ = false;
  needs_drain_ = false;
  drain_handlers_.release(); // nothing can drain or fail on a closed pipe
  error_handlers_.release();
}

void writable_stream::shut_down_io() noexcept {
  fd_.reset();
  queue_.clear(); // abandoned, as Asio abandons the operations of a context that shuts down
  pending_bytes_ = 0;
  front_offset_ = 0;
  writing_ = false;
  drain_handlers_.release();
  error_handlers_.release();
}

void readable_stream::close() {
  if (!is_open() || owner_->io_shut_down)
    return;
  boost::system::error_code ignored;
  fd_->close(ignored); // a pending wait ends with operation_aborted
  detach();
}

stdio_spec readable_stream::hand_over(std::error_code& ec) {
  if (!is_open() || owner_->io_shut_down) {
    ec.assign(EBADF, std::system_category());
    return {stdio_kind::from, -1};
  }
  ec.clear();
  const int fd = fd_->native_handle();
  const std::uint64_t token = detail::register_handed_over(fd); // may throw: before letting go
  fd_->release(); // a pending wait ends with operation_aborted
  // The file description is shared with the next child: it reads it blocking, as a shell's.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  detach();
  return {stdio_kind::from, fd, token};
}

void readable_stream::detach() {
  // The bookkeeping only; `close` (which may be due now) is delivered later, never from here.
  complete_read(boost::asio::error::operation_aborted, 0);
  if (auto done = std::move(line_done_))
    done->complete(boost::asio::error::operation_aborted, {});
  data_handlers_.release();
  line_handlers_.release();
  end_handlers_.release(); // no `end`: the stream did not reach its end
  --owner_->open_readers;
  owner_->resume_later();
}

stdio_spec stdio::from(readable_stream& stream, std::error_code& ec) {
  return stream.hand_over(ec);
}

stdio_spec stdio::from(readable_stream& stream) {
  std::error_code ec;
  const stdio_spec spec = from(stream, ec);
  if (ec)
    throw std::system_error(ec, "stdio::from");
  return spec;
}

void readable_stream::stop_reading() {
  if (owner_->io_shut_down)
    return;
  boost::asio::post(owner_->executor, [this, keep = owner_->shared_from_this()] { close(); });
}

} // namespace v1

namespace detail {
namespace {

// Keyed by a serial token, not by the fd's number: a spent spec's number may name a later
// hand-over (the kernel reuses numbers), whose token it does not have.
struct handed_over_registry {
  std::mutex mutex;
  std::map<std::uint64_t, int> fds; // token -> fd
  std::uint64_t last_token = 0;
};

handed_over_registry& handed_over() {
  static handed_over_registry registry;
  return registry;
}

// Takes the table's registered `from` fds out of the registry, giving each to `take` (which must
// not throw); false when a `from` slot's token is not registered with its fd (and no earlier
// slot of the same table took it).
template <class Take>
bool take_from_registry(const std::vector<stdio_spec>& stdio, Take take) {
  auto& registry = handed_over();
  const std::lock_guard lock(registry.mutex);
  bool all_registered = true;
  for (auto it = stdio.begin(); it != stdio.end(); ++it) {
    if (it->kind != stdio_kind::from)
      continue;
    const auto found = registry.fds.find(it->token);
    if (found != registry.fds.end() && found->second == it->fd) {
      registry.fds.erase(found);
      take(it->fd);
    } else if (std::find(stdio.begin(), it, *it) == it) {
      all_registered = false;
    }
  }
  return all_registered;
}

} // namespace

std::uint64_t register_handed_over(int fd) {
  auto& registry = handed_over();
  const std::lock_guard lock(registry.mutex);
  registry.fds.emplace(registry.last_token + 1, fd);
  return ++registry.last_token;
}

std::vector<posix::unique_fd> take_handed_over(const std::vector<stdio_spec>& stdio,
                                               std::error_code& ec) {
  std::vector<posix::unique_fd> taken;
  taken.reserve(stdio.size()); // so that taking cannot throw once an fd is out of the registry
  const bool all_registered = take_from_registry(stdio, [&](int fd) { taken.emplace_back(fd); });
  ec = all_registered ? std::error_code{} : make_error_code(errc::stdio_from_used);
  return taken;
}

void close_handed_over(const std::vector<stdio_spec>& stdio) noexcept {
  take_from_registry(stdio, [](int fd) { ::close(fd); });
}

} // namespace detail
} // namespace childproc
