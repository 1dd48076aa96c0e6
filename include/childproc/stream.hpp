// The parent's ends of a child's stdio pipes, with Node's stream events.
//
// Both stream types live inside the child_process's shared state and are reached through
// child_process::in() / out() / err() / stdio(n). Like the child_process, they are used from the
// child's executor only (one thread, or a strand).
#pragma once

#include <childproc/detail/completion.hpp>
#include <childproc/detail/handler_list.hpp>
#include <childproc/options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/system/error_code.hpp>

#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace childproc {
namespace detail {
struct child_state;
struct stream_stopper;
} // namespace detail

inline namespace v1 {
namespace asio = boost::asio;

/// A pipe the child writes and the parent reads (stdout, stderr, extra slots).
///
/// Flowing mode (the default, Node's): the library drains the pipe from the moment the child is
/// spawned until EOF, whether or not anybody listens, so a child never blocks on a full pipe and
/// `close` can come (Node's rule). Each chunk goes to every on_data handler; the string_view is
/// valid only during the call (also when the handler runs a nested event loop, e.g. exec_sync:
/// that loop reads into a buffer of its own). Handlers follow the child_process's rules (see
/// there): a handler may add handlers; one that throws ends that chunk's delivery and the
/// exception leaves io.run(), the reading goes on when the loop runs again; the handlers are
/// dropped after `end`.
///
/// Pulled mode: the stream is an Asio AsyncReadStream. async_read_some() (and so asio::async_read,
/// asio::async_read_until, coroutines, any completion token) switches it to pulled mode: the
/// library then reads only for a pending read, into its buffers, and those bytes never reach the
/// on_data handlers (each byte goes to one consumer). resume() goes back to flowing; adding an
/// on_data handler does not (Node's rule for a stream paused explicitly). In pulled mode the pipe
/// fills when nobody reads and the child blocks: `close` still waits for EOF on this stream, so a
/// pulled stream nobody reads to its end holds `close` back (Node's rule for paused streams);
/// `exit` does not wait for it. See docs/streams.md.
class readable_stream {
public:
  using executor_type = asio::any_io_executor;
  using data_handler = std::function<void(std::string_view chunk)>;
  using end_handler = std::function<void()>;

  /// Adds a handler for each chunk read (Node's 'data').
  readable_stream& on_data(data_handler handler);
  using line_handler = std::function<void(std::string_view line)>;
  /// Adds a handler for each line of the flowing stream (Node's readline `line` event): the line
  /// without its '\n' ('\r' is kept), split across chunk boundaries, valid during the call. A
  /// last line without '\n' comes at EOF, before `end`. A line longer than max_line_length()
  /// comes in pieces of that length (nothing is lost, memory stays bounded). Lines come after
  /// the on_data handlers of their chunk, and only in flowing mode (async_read_line is the
  /// pulled form); bytes the stream read before the first on_line are not split.
  readable_stream& on_line(line_handler handler);
  /// Adds a handler for EOF (Node's 'end'); called once, after the last on_data.
  readable_stream& on_end(end_handler handler);

  /// True while the pipe is open (a pipe slot that has not reached EOF).
  bool is_open() const noexcept { return fd_ && fd_->is_open(); }
  /// The child fd this stream is connected to.
  int slot() const noexcept { return slot_; }
  /// The child's executor (reads complete there unless their handler has its own).
  executor_type get_executor() const;

  /// Reads some bytes into `buffers` (Asio's AsyncReadStream): completion
  /// void(boost::system::error_code, std::size_t), always later, never inside this call. Switches
  /// the stream to pulled mode. One read at a time (a second one completes with
  /// asio::error::in_progress). At EOF: asio::error::eof (and the stream's `end`); on a stream
  /// closed by close() or handed to another child: asio::error::bad_descriptor. Cancellation
  /// through the handler's slot (any type) completes a pending read with operation_aborted and
  /// 0 bytes: nothing was read for it, so no byte is lost. At most 16 buffers are filled.
  template <class MutableBufferSequence,
            class ReadToken = asio::default_completion_token_t<executor_type>>
  auto async_read_some(const MutableBufferSequence& buffers, ReadToken&& token = ReadToken()) {
    return asio::async_initiate<ReadToken, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const MutableBufferSequence& seq) {
          read_request request;
          for (auto it = asio::buffer_sequence_begin(seq), end = asio::buffer_sequence_end(seq);
               it != end && request.count < request.buffers.size(); ++it) {
            asio::mutable_buffer b(*it);
            if (b.size() > 0)
              request.buffers[request.count++] = b;
          }
          start_read(request, detail::make_completion<boost::system::error_code, std::size_t>(
                                  std::move(handler), get_executor()));
        },
        token, buffers);
  }

  /// Node's readline over this stream: the next line, without its '\n' ('\r' is kept),
  /// split across chunk boundaries. Completion void(boost::system::error_code, std::string),
  /// always later. At EOF a last line without '\n' comes as a line, then asio::error::eof. A
  /// line longer than max_line_length() completes with asio::error::message_size and its first
  /// max_line_length() bytes; the next call goes on with the rest of it (nothing is lost).
  /// Switches the stream to pulled mode, as async_read_some() does; bytes read past the line
  /// stay in the stream for the next read of either kind (or for on_data after resume()).
  /// Cancellation as for async_read_some (the bytes read so far stay for the next call).
  template <class LineToken = asio::default_completion_token_t<executor_type>>
  auto async_read_line(LineToken&& token = LineToken()) {
    return asio::async_initiate<LineToken, void(boost::system::error_code, std::string)>(
        [this](auto handler) {
          start_line_read(detail::make_completion<boost::system::error_code, std::string>(
              std::move(handler), get_executor()));
        },
        token);
  }
  /// The longest line async_read_line() returns whole (default 1 MiB).
  std::size_t max_line_length() const noexcept { return max_line_length_; }
  void set_max_line_length(std::size_t bytes) noexcept { max_line_length_ = bytes ? bytes : 1; }

  /// Node's pause(): the library stops reading the pipe (a chunk being delivered is the last
  /// one), so a child that goes on writing blocks once the pipe is full; that is the point.
  /// While paused, `close` waits (this stream's EOF is not read) and `exit` does not. A pending
  /// or later async_read_some still reads: pulled mode is paused mode plus explicit reads.
  void pause() noexcept { flowing_ = false; }
  /// Node's resume(): back to flowing mode, the library reads for the on_data handlers again
  /// (later, never inside this call).
  void resume();
  /// Node's isPaused(): true when paused or pulled.
  bool is_paused() const noexcept { return !flowing_; }

  /// Node's destroy(): closes the parent's end now. A child that writes to it later gets
  /// EPIPE, or dies of SIGPIPE (its default); `close` no longer waits for this stream; there is
  /// no `end` and no more `data` (a chunk being delivered is the last one); a pending read
  /// completes with operation_aborted, later ones with bad_descriptor. Bytes still in the pipe
  /// are lost. No effect on a stream that is not open.
  void close();

  readable_stream(const readable_stream&) = delete;
  readable_stream& operator=(const readable_stream&) = delete;
  ~readable_stream();

private:
  friend struct detail::child_state;
  friend stdio_spec stdio::from(readable_stream&, std::error_code&);
  readable_stream(detail::child_state& owner, int slot, boost::asio::any_io_executor ex, int fd);
  // The parent lets go of the pipe: as close(), but the fd is returned (blocking again) to be
  // handed to another child instead of closed, in a `from` spec with its registry token. A spec
  // with fd -1 and `ec` on a stream that is not open.
  stdio_spec hand_over(std::error_code& ec);
  // What close() and hand_over() share: the stream is done for the parent.
  void detach();
  struct read_request {
    std::array<asio::mutable_buffer, 16> buffers;
    std::size_t count = 0;
  };
  using read_completion = detail::completion<boost::system::error_code, std::size_t>;
  void start_read(const read_request& request, std::unique_ptr<read_completion> done);
  using line_completion = detail::completion<boost::system::error_code, std::string>;
  void start_line_read(std::unique_ptr<line_completion> done);
  bool try_complete_line();
  void complete_line_at_end(boost::system::error_code ec);
  void serve_line();
  bool read_pending() const noexcept { return read_done_ || line_done_; }
  void cancel_read();
  void complete_read(boost::system::error_code ec, std::size_t n);
  // Whether the pipe is to be read: for a pending read, or for the handlers while flowing.
  bool wants_data() const noexcept { return read_pending() || (flowing_ && started_); }
  void start();
  void wait_readable();
  void on_readable();
  void serve_read();
  void drain();
  // Reads what is already in the pipe, without waiting (the child has exited).
  void drain_available();
  enum class read_result { more, would_block, ended };
  read_result read_once(char* buffer);
  void finish();
  // Continues after a handler threw: reads on, or lets the owner deliver what is due.
  void resume_later();
  void shut_down_io() noexcept;

  detail::child_state* owner_;
  int slot_;
  std::optional<boost::asio::posix::stream_descriptor> fd_; // reset when the context shuts down
  detail::handler_list<data_handler> data_handlers_;
  detail::handler_list<end_handler> end_handlers_;
  detail::handler_list<line_handler> line_handlers_;
  std::string flowing_line_;        // on_line: the start of a line that has no '\n' yet
  std::size_t flowing_scanned_ = 0; // no '\n' in flowing_line_ before this: scanned once
  // A flowing chunk to the on_data handlers, then its lines to the on_line handlers.
  void deliver(std::string_view chunk);
  void emit_lines(std::string_view chunk);
  bool started_ = false;
  bool flowing_ = true; // false when paused or pulled
  bool ended_ = false;  // reached EOF (reads complete with eof)
  read_request read_request_;
  std::unique_ptr<read_completion> read_done_; // the pending async_read_some
  std::unique_ptr<line_completion> line_done_; // the pending async_read_line
  std::string line_buffer_;                    // read past the last line returned
  std::size_t line_scanned_ = 0;               // no '\n' in line_buffer_ before this
  std::size_t max_line_length_ = 1024 * 1024;

  // Past max_buffer (exec and the sync forms, src/output_limit.hpp): close() on the next turn.
  friend struct detail::stream_stopper;
  void stop_reading();
  bool waiting_ = false; // a wait for readiness is pending
};

/// The next line of `stream` (see readable_stream::async_read_line).
template <class LineToken = asio::default_completion_token_t<readable_stream::executor_type>>
auto async_read_line(readable_stream& stream, LineToken&& token = LineToken()) {
  return stream.async_read_line(std::forward<LineToken>(token));
}

/// A pipe the parent writes and the child reads (stdin).
///
/// Writes are queued and performed asynchronously in order; each write's handler gets the
/// result, always later, never from inside write() or end(). Writing to a child that closed its
/// stdin (or exited) completes with EPIPE; SIGPIPE never kills the parent, and the library leaves
/// the process's SIGPIPE disposition alone (a SIGPIPE that its own write raises is blocked in the
/// writing thread and consumed).
class writable_stream {
public:
  using write_handler = std::function<void(std::error_code)>;
  using drain_handler = std::function<void()>;
  using error_handler = std::function<void(std::error_code)>;

  /// Queues `data`; `done` (optional) gets the result once it is written or has failed.
  /// Returns Node's answer: true while the queued bytes stay below high_water_mark(), false
  /// once they reach it (the data is queued all the same); after a false, `drain` comes when
  /// they fall below it again. False on a closed stream (the write then completes with EPIPE).
  bool write(std::string data, write_handler done = {});
  bool write(std::string_view data, write_handler done = {});
  bool write(const char* data, write_handler done = {}) {
    return write(std::string_view(data), std::move(done));
  }
  /// Copies the bytes of a buffer sequence (asio::buffer(...)) into the queue.
  template <class ConstBufferSequence>
  requires asio::is_const_buffer_sequence<ConstBufferSequence>::value bool
  write(const ConstBufferSequence& buffers, write_handler done = {}) {
    std::string data(asio::buffer_size(buffers), '\0');
    asio::buffer_copy(asio::buffer(data), buffers);
    return write(std::move(data), std::move(done));
  }
  /// Closes the pipe once the queued writes are done (the child then reads EOF).
  void end(write_handler done = {});
  /// True until end() completed or the pipe failed.
  bool is_open() const noexcept { return fd_ && fd_->is_open() && !ending_; }
  /// Bytes queued and not yet written.
  std::size_t pending_bytes() const noexcept { return pending_bytes_; }
  /// Node's writableHighWaterMark (default 16 KiB): where write() starts returning false.
  std::size_t high_water_mark() const noexcept { return high_water_mark_; }
  void set_high_water_mark(std::size_t bytes) noexcept { high_water_mark_ = bytes; }
  /// Node's writableNeedDrain: a write() returned false and `drain` has not come yet.
  bool needs_drain() const noexcept { return needs_drain_; }

  /// Node's 'drain': the queued bytes fell below the high-water mark after a write() that
  /// returned false. (Node waits for an empty queue; below the mark keeps the pipe busy.)
  writable_stream& on_drain(drain_handler handler);
  /// Node's 'error': the first failed write of the stream (EPIPE when the child closed its
  /// stdin), once, besides each write's own completion. SIGPIPE never kills the parent; without
  /// a handler nothing else happens (Node would throw).
  writable_stream& on_error(error_handler handler);

  writable_stream(const writable_stream&) = delete;
  writable_stream& operator=(const writable_stream&) = delete;
  ~writable_stream();

private:
  friend struct detail::child_state;
  writable_stream(detail::child_state& owner, boost::asio::any_io_executor ex, int fd);
  bool fd_open() const noexcept { return fd_ && fd_->is_open(); }
  void write_next();
  void write_ready();
  bool queue(std::string data, write_handler done);
  void complete(write_handler done, std::error_code ec);
  void fail_all(std::error_code ec);
  void maybe_drain();
  void close_now();
  void shut_down_io() noexcept;

  struct pending {
    std::string data;
    write_handler done;
    bool is_end = false;
  };
  detail::child_state* owner_;
  std::optional<boost::asio::posix::stream_descriptor> fd_; // reset when the context shuts down
  std::deque<pending> queue_;
  std::size_t pending_bytes_ = 0;
  std::size_t front_offset_ = 0;
  bool writing_ = false;
  bool ending_ = false;
  std::size_t high_water_mark_ = 16 * 1024;
  bool needs_drain_ = false;
  bool errored_ = false;
  detail::handler_list<drain_handler> drain_handlers_;
  detail::handler_list<error_handler> error_handlers_;
};

} // namespace v1
} // namespace childproc
