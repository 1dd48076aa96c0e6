// The state behind a channel handle (internal).
#pragma once

#include "frame.hpp"

#include <childproc/channel.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <deque>
#include <memory>
#include <string>
#include <vector>

namespace childproc::detail {

struct channel_state : std::enable_shared_from_this<channel_state> {
  // Takes `fd` (a connected stream socket, non-blocking, CLOEXEC).
  channel_state(boost::asio::any_io_executor ex, int fd, wire w, std::size_t max_message_size);

  void start(); // begins reading
  bool send(const message& m, send_handler done);
  void disconnect(); // flush, then close
  void drain_now();  // reads and delivers whatever is already there, without waiting
  void close(std::error_code reason, bool emit_now);

  boost::asio::any_io_executor executor;
  boost::asio::posix::stream_descriptor socket;
  wire format;
  decoder incoming;

  std::vector<message_handler> message_handlers;
  std::vector<disconnect_handler> disconnect_handlers;
  std::vector<channel_error_handler> error_handlers;
  // Set by fork() on the parent side: errors also go to the child's on_error, and the child's
  // `close` waits for the channel to close.
  std::function<void(std::error_code)> error_sink;
  std::function<void()> closed_hook;

  bool connected = true; // from the user's point of view: send() accepted
  bool open = true;      // the socket is open
  bool disconnect_emitted = false;

private:
  struct pending_write {
    std::string bytes;                    // the whole frame, or a bytes message's header
    std::shared_ptr<std::string> payload; // a bytes message's own buffer (sent without a copy)
    send_handler done;
    std::size_t size() const { return bytes.size() + (payload ? payload->size() : 0); }
  };
  void wait_readable();
  // Reads until EAGAIN (or `limit` reads, -1: no limit); returns false once the channel closed.
  // `emit_now`: a close it causes emits its events before returning.
  bool read_available(int limit, bool emit_now);
  void deliver(message&& m);
  void write_next();
  void report(std::error_code ec);
  void fail_queued();
  void emit_disconnect();

  std::deque<pending_write> queue_;
  std::vector<boost::asio::const_buffer> gather_;
  std::size_t in_flight_ = 0; // entries of queue_ being written
  bool writing_ = false;

public:
  std::size_t pending_bytes = 0;
};

} // namespace childproc::detail
