// childproc::pipe(): a child's output copied into another child's stdin, with backpressure.
#include "asio_error.hpp"
#include "child_state.hpp"

#include <childproc/pipe.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/error.hpp>

#include <string_view>
#include <vector>

namespace childproc::detail {
namespace {

// One read at most this large: with the writable's high-water mark, what the parent holds.
constexpr std::size_t pipe_chunk = 64 * 1024;

// The copy's state, kept alive by its pending read, writes and drain handler. It keeps both
// children's states alive as long as it lives: the caller may drop their handles (Node code
// does), and a child that exits frees nothing the copy still uses.
struct pipe_op : std::enable_shared_from_this<pipe_op> {
  pipe_op(readable_stream& f, writable_stream& t, std::unique_ptr<pipe_completion> d)
      : from(f), to(t), keep_from(child_state::owner_of(f)), keep_to(child_state::owner_of(t)),
        done(std::move(d)), buffer(pipe_chunk) {}

  void read() {
    // `from` closed (or handed over) during the copy stopped it, whether a read was pending
    // (aborted, as Asio's are) or the copy was waiting for drain: operation_aborted both ways.
    // A copy that starts on a closed stream reads, and gets bad_descriptor.
    if (started && !from.is_open())
      return finish(asio::error::operation_aborted);
    started = true;
    reading = true;
    from.async_read_some(asio::buffer(buffer),
                         asio::bind_cancellation_slot(
                             stop_read.slot(),
                             [self = shared_from_this()](boost::system::error_code ec,
                                                         std::size_t n) { self->on_read(ec, n); }));
  }

  void on_read(boost::system::error_code ec, std::size_t n) {
    reading = false;
    if (!done)
      return; // a write failed meanwhile (the read was cancelled: it took nothing)
    if (n > 0) {
      const bool below = to.write(
          std::string_view(buffer.data(), n),
          [self = shared_from_this(), n](std::error_code wec) { self->on_written(wec, n); });
      if (!below && !ec) {
        wait_drain();
        return;
      }
    }
    if (ec == asio::error::eof)
      to.end(
          [self = shared_from_this()](std::error_code wec) { self->finish(to_asio_error(wec)); });
    else if (ec)
      finish(ec);
    else
      read();
  }

  void wait_drain() {
    if (!drain_handler_added) { // once per copy: a handler list only grows
      drain_handler_added = true;
      to.on_drain([weak = weak_from_this()] {
        if (auto self = weak.lock(); self && self->done && self->waiting_drain) {
          self->waiting_drain = false;
          self->read();
        }
      });
    }
    waiting_drain = true;
  }

  void on_written(std::error_code ec, std::size_t n) {
    if (ec)
      finish(to_asio_error(ec));
    else
      written += n;
  }

  void finish(boost::system::error_code ec) {
    if (auto d = std::move(done)) {
      if (reading)
        stop_read.emit(asio::cancellation_type::terminal); // lossless: nothing read for it
      d->complete(ec, written);
    }
  }

  readable_stream& from;
  writable_stream& to;
  std::shared_ptr<child_state> keep_from, keep_to;
  std::unique_ptr<pipe_completion> done; // empty once completed
  std::vector<char> buffer;
  asio::cancellation_signal stop_read;
  std::size_t written = 0;
  bool started = false; // a read was issued: a closed `from` is a stop from then on
  bool reading = false;
  bool waiting_drain = false;
  bool drain_handler_added = false;
};

} // namespace

void start_pipe(readable_stream& from, writable_stream& to, std::unique_ptr<pipe_completion> done) {
  std::make_shared<pipe_op>(from, to, std::move(done))->read();
}

} // namespace childproc::detail
