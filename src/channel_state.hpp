// The state behind a channel handle (internal).
#pragma once

#include "frame.hpp"
#include "posix/unique_fd.hpp"

#include <childproc/channel.hpp>
#include <childproc/detail/handler_list.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <sys/uio.h>
#include <vector>

namespace childproc::detail {

struct channel_state : std::enable_shared_from_this<channel_state> {
  // Takes `fd` (a connected stream socket, non-blocking, CLOEXEC). `max_message_size` is clamped
  // to what a frame can carry.
  channel_state(boost::asio::any_io_executor ex, posix::unique_fd fd, wire w,
                std::size_t max_message_size);

  void start(); // begins reading
  // `handle`: a descriptor sent with the message (closed once sent, or when it cannot be).
  bool send(const message& m, send_handler done, owned_fd handle = {});
  // send() of a bytes message made of `data`, copied now (no message, no buffer of its own): the
  // pool's envelopes. Errors go to the channel's handlers.
  bool send_copy(std::string_view data);
  // async_receive: hands over the next queued message, or waits for one.
  void receive(std::unique_ptr<receive_completion> done);
  void cancel_receive(receive_completion* which);
  // Writes what is queued now, when batch_sends left it waiting for the posted flush.
  void flush();
  // While corked, sends are only queued (no write, no posted flush); the last uncork writes them
  // at once. A run of sends made in one step (serve()'s batch of results) leaves in one write,
  // without a turn of the event loop in between.
  void cork() noexcept { ++corked_; }
  void uncork();
  void disconnect(); // flush, then close
  void drain_now();  // reads and delivers whatever is already there, without waiting
  void close(std::error_code reason, bool emit_now);
  // A channel that never opened (a failed fork): closed, no events, no handlers kept.
  void close_silently();

  boost::asio::any_io_executor executor;
  boost::asio::posix::stream_descriptor socket;
  wire format;
  decoder incoming;

  // Released once `disconnect` was delivered (the error handlers a little later, after the
  // errors already posted by then), so that a handler capturing the channel does not keep it.
  handler_list<channel_message_handler> message_handlers;
  handler_list<drain_handler> drain_handlers;
  handler_list<disconnect_handler> disconnect_handlers;
  handler_list<channel_error_handler> error_handlers;
  // Set by fork() on the parent side: errors also go to the child's on_error, and the child's
  // `close` waits for the channel to close.
  std::function<void(std::error_code)> error_sink;
  std::function<void()> closed_hook;
  // The pool's and serve()'s envelopes: small bytes frames go to `handler` as views, in order
  // with the messages (decoder::deliver_views), instead of becoming messages. The handler must
  // not run the event loop (the view is of the inbox's buffer, which a nested read may move).
  void take_bytes_frames(std::function<void(std::string_view)> handler) {
    bytes_frame_handler = std::move(handler);
    incoming.deliver_views(true);
  }
  std::function<void(std::string_view)> bytes_frame_handler;

  bool connected = true; // from the user's point of view: send() accepted
  bool open = true;      // the socket is open
  bool disconnect_emitted = false;
  std::size_t pending_bytes = 0;
  // The pool's channels: the sends of one turn of the event loop are queued and written together
  // by one posted flush (one sendmsg for a batch of tasks or results), not one write each.
  bool batch_sends = false;
  // Called after the reads one readiness brought in were delivered (outside the delivery, from
  // the event loop): serve() runs the tasks of that read there, instead of from a posted step.
  std::function<void()> after_reads;
  bool in_read_burst = false; // delivering from the readiness handler: after_reads follows
  std::size_t writes = 0;     // sendmsg calls made (tests read it)
  std::size_t high_water = channel::default_high_water_mark;

private:
  struct pending_write {
    std::string bytes; // the whole frame (a run: several), or a bytes message's header
    std::shared_ptr<std::string> payload; // a bytes message's own buffer (sent without a copy)
    send_handler done;
    owned_fd handle; // sent with the first byte
    bool control =
        false; // Node's NODE_HANDLE_ACK/NACK: not held back while a handle awaits its ACK
    std::size_t size() const { return bytes.size() + (payload ? payload->size() : 0); }
  };
  void wait_readable();
  // Reads until EAGAIN (or `limit` reads, then also a short read ends it; -1: no limit, to
  // EAGAIN), delivering as it goes; returns false
  // once the channel closed. `emit_now`: a close it causes emits its events before returning.
  bool read_available(int limit, bool emit_now);
  // read_available for the readiness handler, with in_read_burst set.
  bool read_burst();
  // One recv into `buffer`, decoded into inbox_. False at EAGAIN, and after a short read unless
  // `until_empty`; a close it calls for is left in close_reason_.
  bool read_once(char* buffer, bool until_empty);
  // One recvmsg into `buffer`, with the descriptors that came with it (close-on-exec, >= 3).
  ssize_t receive_with_fds(char* buffer, std::vector<owned_fd>& fds);
  // Node's handle protocol: ACK/NACK to send, or received for the handle we sent.
  void node_control(decoder::node_control c);
  void queue_control(std::string_view line);
  // Delivers inbox_, then carries out the close the reads found; false once closed. When a
  // handler throws, the rest is delivered by a posted continuation, and the exception goes on.
  bool deliver_inbox(bool emit_now);
  void resume_later();
  // The write whose bytes a message joins: the queue's last while it is a plain run (no handle,
  // no completion, no shared payload, not a control line) under run_limit, else a new one.
  pending_write& run_for_append();
  // After a message joined the queue: writes or schedules it; false above the high-water mark.
  bool queued();
  void write_next();
  void post_flush();
  bool write_once(std::vector<send_handler>& written); // false: wait (or stop)
  void gather(); // gather_: the queue's front messages that may go in one sendmsg
  // Pops the messages that `n` written bytes completed, collecting their completions.
  void finish_written(std::size_t n, std::vector<send_handler>& written);
  void refuse_front(int error);
  void post_error(std::error_code ec, send_handler done);
  void report(std::error_code ec);
  void emit_close_events(std::error_code reason);
  void fail_queued();
  void emit_disconnect();
  void after_disconnect();
  // A decoded message: to a pending receive, to the receive queue, or to the handlers.
  void route(message&& m);
  void fail_receives(); // the channel closed: pending receives get channel_closed
  void drained();       // after writes: `drain` when send() returned false and the queue fell

  // A run takes no more messages once it holds this much; bytes messages from copy_below up are
  // sent from their own buffer rather than copied into a run.
  static constexpr std::size_t run_limit = 64 * 1024;
  static constexpr std::size_t copy_below = 1024;
  std::deque<pending_write> queue_;
  std::string spare_; // a written run's buffer, kept for the next run (up to 2 * run_limit)
  std::size_t front_written_ = 0; // bytes of queue_.front() already written
  std::vector<iovec> gather_;
  bool writing_ = false;           // a write is waiting for the socket to become writable
  bool flush_posted_ = false;      // batch_sends: a flush is on its way
  int corked_ = 0;                 // cork() calls not yet uncorked
  bool waiting_ = false;           // a read is waiting for the socket to become readable
  bool disconnect_called_ = false; // by the user: later calls report already_disconnected
  // Decoded, not yet delivered: a message, or a small bytes frame for bytes_frame_handler, whose
  // bytes are in inbox_bytes_ (kept until the inbox is empty: no allocation per frame).
  struct inbox_entry {
    message m;
    std::size_t view_at = 0, view_size = 0;
    bool view = false;
  };
  std::deque<inbox_entry> inbox_;
  std::string inbox_bytes_;
  std::optional<std::error_code> close_reason_; // the reads reached the end (or bad input)
  bool pulled_ = false;          // async_receive was called: messages go to the receive queue
  std::deque<message> received_; // queued for async_receive
  std::deque<std::unique_ptr<receive_completion>> receivers_; // pending receives, in order
  bool need_drain_ = false; // send() returned false: `drain` is due below the mark
  // node_json: the handle message sent and not acknowledged yet; nothing but ACK/NACK is sent
  // until Node acknowledges it (Node's own rule), and a NACK sends it again.
  bool awaiting_ack_ = false;
  std::optional<pending_write> unacked_;
  int retransmissions_ = 0;
};

// The library's access to the state behind a channel handle.
struct channel_access {
  static channel_state* state(const channel& ch) noexcept { return ch.state_.get(); }
  static std::weak_ptr<channel_state> weak(const channel& ch) noexcept { return ch.state_; }
};

} // namespace childproc::detail
