// The parent's ends of the stdio pipes.
#include "child_state.hpp"

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include <cerrno>
#include <unistd.h>

namespace childproc {
inline namespace v1 {
namespace {

// One read buffer per thread, shared by every stream: a chunk is delivered to the handlers
// before the next read, so 500 idle children cost no buffer memory at all.
constexpr std::size_t read_chunk = 64 * 1024;
char* thread_read_buffer() {
  static thread_local std::unique_ptr<char[]> buffer(new char[read_chunk]);
  return buffer.get();
}

// At most this many reads per readiness before yielding to other work on the executor.
constexpr int reads_per_turn = 16;

} // namespace

readable_stream::readable_stream(detail::child_state& owner, int slot,
                                 boost::asio::any_io_executor ex, int fd)
    : owner_(&owner), slot_(slot), fd_(std::move(ex), fd) {}

readable_stream::~readable_stream() = default;

readable_stream& readable_stream::on_data(data_handler handler) {
  data_handlers_.push_back(std::move(handler));
  return *this;
}

readable_stream& readable_stream::on_end(end_handler handler) {
  end_handlers_.push_back(std::move(handler));
  return *this;
}

void readable_stream::start() {
  if (started_)
    return;
  started_ = true;
  wait_readable();
}

void readable_stream::wait_readable() {
  fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                 [this, keep = owner_->shared_from_this()](boost::system::error_code ec) {
                   if (ec == boost::asio::error::operation_aborted)
                     return;
                   drain();
                 });
}

void readable_stream::drain() {
  if (!fd_.is_open())
    return; // a continuation posted before drain_available() reached the EOF
  char* buf = thread_read_buffer();
  for (int i = 0; i < reads_per_turn; ++i) {
    ssize_t n = ::read(fd_.native_handle(), buf, read_chunk);
    if (n > 0) {
      const std::string_view chunk(buf, static_cast<std::size_t>(n));
      detail::emit(data_handlers_, chunk);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_readable();
      return;
    }
    finish(); // EOF, or a read error that ends the stream as EOF would
    return;
  }
  // Still readable: let other work run first.
  boost::asio::post(fd_.get_executor(), [this, keep = owner_->shared_from_this()] { drain(); });
}

void readable_stream::drain_available() {
  if (!started_ || !fd_.is_open())
    return;
  char* buf = thread_read_buffer();
  for (;;) {
    ssize_t n = ::read(fd_.native_handle(), buf, read_chunk);
    if (n > 0) {
      detail::emit(data_handlers_, std::string_view(buf, static_cast<std::size_t>(n)));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return; // a grandchild still holds the pipe: the pending wait goes on
    finish();
    return;
  }
}

void readable_stream::finish() {
  boost::system::error_code ignored;
  fd_.close(ignored);
  detail::emit(end_handlers_);
  owner_->reader_ended();
}

writable_stream::writable_stream(detail::child_state& owner, boost::asio::any_io_executor ex,
                                 int fd)
    : owner_(&owner), fd_(std::move(ex), fd) {}

writable_stream::~writable_stream() = default;

void writable_stream::write(std::string data, write_handler done) {
  if (!fd_.is_open() || ending_) {
    // The reader is gone (or end() was called): the same answer a closed pipe gives.
    if (done)
      boost::asio::post(fd_.get_executor(), [done = std::move(done)] {
        done(std::make_error_code(std::errc::broken_pipe));
      });
    return;
  }
  pending_bytes_ += data.size();
  queue_.push_back({std::move(data), std::move(done), false});
  if (!writing_)
    write_next();
}

void writable_stream::end(write_handler done) {
  if (!fd_.is_open() || ending_) {
    if (done)
      boost::asio::post(fd_.get_executor(), [done = std::move(done)] { done({}); });
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
    if (done)
      done({});
  }
  if (queue_.empty() || !fd_.is_open()) {
    writing_ = false;
    return;
  }
  writing_ = true;
  auto& front = queue_.front();
  fd_.async_write_some(
      boost::asio::buffer(front.data.data() + front_offset_, front.data.size() - front_offset_),
      [this, keep = owner_->shared_from_this()](boost::system::error_code ec, std::size_t n) {
        if (ec) {
          writing_ = false;
          if (ec == boost::asio::error::operation_aborted && !fd_.is_open())
            ec = boost::asio::error::broken_pipe;
          fail_all(ec); // boost::system::error_code converts to std::error_code
          return;
        }
        pending_bytes_ -= n;
        front_offset_ += n;
        auto& front = queue_.front();
        if (front_offset_ == front.data.size()) {
          auto done = std::move(front.done);
          queue_.pop_front();
          front_offset_ = 0;
          if (done)
            done({});
        }
        write_next();
      });
}

void writable_stream::fail_all(std::error_code ec) {
  auto failed = std::move(queue_);
  queue_.clear();
  pending_bytes_ = 0;
  front_offset_ = 0;
  close_now();
  for (auto& p : failed)
    if (p.done)
      p.done(p.is_end ? std::error_code{} : ec);
}

void writable_stream::close_now() {
  boost::system::error_code ignored;
  fd_.close(ignored);
  ending_ = false;
}

void readable_stream::stop_reading() {
  boost::asio::post(fd_.get_executor(), [this, keep = owner_->shared_from_this()] {
    if (!fd_.is_open())
      return; // it reached EOF meanwhile
    boost::system::error_code ignored;
    fd_.close(ignored); // a pending wait ends with operation_aborted
    owner_->reader_ended();
  });
}

} // namespace v1
} // namespace childproc
