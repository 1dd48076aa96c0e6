// The channel's wire formats: encoding and an incremental decoder, free of I/O so that they can
// be tested and fuzzed on their own (tests/fuzz/frame_decoder_fuzz.cpp).
//
// framed (childproc to childproc):
//   [u32 payload length, little-endian][u8 kind][payload]
//   kind 1: payload is one JSON text; kind 2: payload is raw bytes. Bit 0x80 of the kind: the
//   frame carries one descriptor (SCM_RIGHTS), sent with the frame's first byte.
//   A length above the channel's maximum is message_too_large; an unknown kind or JSON that does
//   not parse is malformed_message. Either error ends the channel.
// node_json (Node's own channel, NODE_CHANNEL_SERIALIZATION_MODE=json):
//   one JSON text per line, '\n'-terminated. Objects whose "cmd" starts with "NODE_" are Node's
//   internal messages and are not delivered. Bytes are sent as Node's Buffer JSON,
//   {"type":"Buffer","data":[...]} (valid JSON for any parser; a Node peer gets them back with
//   Buffer.from(m.data)), and arrive as that JSON object. A handle travels as Node's
//   {"cmd":"NODE_HANDLE","type":...,"msg":<message>} with the descriptor; the receiver answers
//   {"cmd":"NODE_HANDLE_ACK"} (or NODE_HANDLE_NACK when no descriptor came with it).
//
// Descriptors: the channel gives the decoder the descriptors of each read with its bytes. The
// sender sends a frame that carries a descriptor at the start of its own sendmsg, and Linux ends
// a read after the data that came with descriptors, so those arrive with the read holding the
// frame's first byte: the frame starting inside that read takes them. Descriptors that no frame
// starting in their read claims, or a claiming frame without them, are malformed_message.
// Both formats accept JSON nested up to json_max_depth (Node accepts such depths; Boost.JSON's
// default is 32), and lone UTF-16 surrogate escapes ("\ud800", which Node's JSON.stringify
// writes for a lone surrogate) are read as U+FFFD, as Node itself converts them to UTF-8.
#pragma once

#include <childproc/error.hpp>
#include <childproc/message.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace childproc::detail {

// The channel's access to a bytes message's shared buffer (zero-copy sends, buffer reuse).
struct message_access {
  static const std::shared_ptr<std::string>& payload(const message& m) {
    return std::get<1>(m.content_).data;
  }
  // The JSON value of a JSON message, to move out of a message the caller gave up.
  static boost::json::value& json(message& m) { return std::get<0>(m.content_); }
  static message from_shared(std::shared_ptr<std::string> data) {
    message m;
    m.content_ = message::raw{std::move(data)};
    return m;
  }
  static void attach_handle(message& m, owned_fd fd) {
    m.handle_ = std::make_shared<message::handle_slot>();
    m.handle_->fd = std::move(fd);
  }
};

enum class wire { framed, node_json };

inline constexpr std::size_t frame_header_size = 5;
// The largest payload a frame's 32-bit length can carry; every message size limit is clamped to
// it, so that a message the limit allows can always be framed.
inline constexpr std::size_t max_frame_payload = 0xffffffffu;
inline constexpr std::size_t clamp_max_message(std::size_t limit) noexcept {
  return std::min(limit, max_frame_payload);
}
inline constexpr std::size_t json_max_depth = 1024;
enum class frame_kind : std::uint8_t { json = 1, bytes = 2 };
inline constexpr std::uint8_t frame_has_handle = 0x80;

// The frame header of a bytes message of `size` bytes, size <= max_frame_payload (the payload is
// sent from the message's own buffer, without a copy).
std::string bytes_frame_header(std::size_t size, bool with_handle = false);

// Appends the encoding of `m` to `out`. Non-finite doubles are written as null, as Node's
// JSON.stringify does (Boost.JSON 1.81 would write `Infinity`, which no JSON parser accepts).
// A framed payload must fit max_frame_payload (the channel refuses larger messages first).
// `with_handle`: a descriptor goes with it (framed: the kind's flag; node_json: Node's NODE_HANDLE
// wrapper, of Node's handle type `node_type`).
void encode(const message& m, wire w, std::string& out, bool with_handle = false,
            std::string_view node_type = "net.Socket");
// Appends the JSON text of `v` to `out`, serialized in place (no string of its own).
void append_json(std::string& out, const boost::json::value& v);
// The size the decoder's limit applies to, of a message encoded by encode() in `encoded` (the
// frame's payload, or the line without its '\n').
inline std::size_t limited_size(wire w, std::size_t encoded) noexcept {
  return encoded - (w == wire::framed ? frame_header_size : 1);
}

// `v` with every non-finite double replaced by null (what encode() sends).
boost::json::value finite_json(const boost::json::value& v);
bool has_non_finite(const boost::json::value& v) noexcept;

// A complete small bytes frame's payload, for a sink that takes views (decoder::deliver_views):
// valid only during the sink's call.
struct bytes_frame_view {
  std::string_view payload;
};
// A sink that takes views says so (a member type `takes_views`, and a call operator for
// bytes_frame_view): a generic lambda could not be asked whether it can.
template <class Sink>
concept view_sink = requires {
  typename std::remove_cvref_t<Sink>::takes_views;
};

class decoder {
public:
  // Bytes frames of at least `large_frame` bytes are collected straight into the message's own
  // (reused) buffer rather than through the frame buffer: one copy less per byte.
  decoder(wire w, std::size_t max_message_size, std::size_t large_frame = 64 * 1024)
      : wire_(w), max_(clamp_max_message(max_message_size)), large_frame_(large_frame) {}

  // Decodes what `data` completes; calls sink(message&&) for each message, in order. After an
  // error no more messages come and the decoder must not be fed again.
  // What the node_json decoder found in Node's handle protocol, for the channel to act on.
  enum class node_control { send_ack, send_nack, ack_received, nack_received };

  template <class Sink>
  std::error_code feed(std::string_view data, Sink&& sink) {
    return feed(data, {}, std::forward<Sink>(sink));
  }
  // On: complete bytes frames under large_frame that carry no descriptor reach a view_sink as a
  // bytes_frame_view, not as a message, in order with the messages: for a reader that parses
  // them at once (the pool's envelopes), with no message to allocate.
  void deliver_views(bool on) noexcept { views_ = on; }
  // The same, with the descriptors that came with `data` (closed if no frame claims them).
  template <class Sink>
  std::error_code feed(std::string_view data, std::vector<owned_fd> fds, Sink&& sink) {
    if (failed_)
      return failed_;
    if (!fds.empty())
      batches_.push_back({std::move(fds), fed_, fed_ + data.size()});
    fed_ += data.size();
    if (large_) {
      // The rest of a large bytes frame: straight into its buffer.
      const std::size_t n = std::min(large_need_, data.size());
      large_->append(data.substr(0, n));
      large_need_ -= n;
      consumed_ += n;
      data.remove_prefix(n);
      if (large_need_ > 0)
        return {};
      spare_ = std::move(large_);
      large_.reset();
      message whole = message_access::from_shared(spare_);
      if (large_handle_)
        message_access::attach_handle(whole, std::move(large_handle_));
      sink(std::move(whole));
      if (data.empty())
        return {};
    }
    std::string_view view = data;
    if (!pending_.empty()) {
      pending_.append(data);
      view = pending_;
    }
    std::size_t used = 0;
    views_now_ = views_ && view_sink<Sink>;
    for (;;) {
      message m;
      std::size_t consumed = 0;
      bool deliver = false;
      frame_start_ = consumed_ + used;
      std::error_code ec = next(view.substr(used), m, consumed, deliver);
      if (ec) {
        failed_ = ec;
        pending_.clear();
        drop_handles();
        return ec;
      }
      if (consumed == 0)
        break; // incomplete: wait for more
      used += consumed;
      if constexpr (view_sink<Sink>) {
        if (std::exchange(view_ready_, false)) {
          sink(bytes_frame_view{view_});
          continue;
        }
      }
      if (deliver)
        sink(std::move(m));
    }
    consumed_ += used;
    keep_rest(view, used);
    return {};
  }

  // Node's handle protocol messages found since the last call.
  std::vector<node_control> take_node_controls() { return std::exchange(controls_, {}); }
  // Closes the descriptors received and not (yet) claimed by a complete frame.
  void drop_handles() noexcept {
    batches_.clear();
    large_handle_.reset();
  }

  // True while part of a message is buffered (a peer that stops here died mid-message).
  bool partial() const noexcept { return !pending_.empty() || large_; }
  // The limit on one message's size (see limited_size), clamped to what a frame carries.
  std::size_t max_message_size() const noexcept { return max_; }
  // How many bytes the node_json decoder has examined looking for line ends (its work, which
  // must stay linear in the input however it is cut into reads).
  std::size_t scanned_bytes() const noexcept { return scanned_; }

private:
  // Decodes one message from the front of `data`. consumed == 0: incomplete. A large bytes frame
  // that is incomplete is taken over (consumed entirely) into large_, and feed() completes it.
  std::error_code next(std::string_view data, message& m, std::size_t& consumed, bool& deliver);
  std::error_code next_line(std::string_view data, message& m, std::size_t& consumed,
                            bool& deliver);
  std::error_code next_frame(std::string_view data, message& m, std::size_t& consumed,
                             bool& deliver);
  std::error_code start_large_frame(std::string_view data, std::uint32_t length, bool with_handle,
                                    std::size_t& consumed);
  message bytes_message(std::string_view payload);
  void keep_rest(std::string_view view, std::size_t used);
  // The frame starting at frame_start_ takes the descriptors that came with its first byte.
  // Returns false for descriptors left over by an earlier frame (stray), or when `wanted` and
  // none came with it; `fd` is left empty when not `wanted`.
  bool claim(bool wanted, owned_fd& fd);
  // A node_json message whose "cmd" starts with "NODE_": the handle protocol's are acted on.
  std::error_code node_internal(boost::json::value& v, message& m, bool& deliver);

  wire wire_;
  std::size_t max_;
  std::size_t large_frame_;
  std::string pending_;
  // A large bytes frame being collected, and how many payload bytes it still needs.
  std::shared_ptr<std::string> large_;
  std::size_t large_need_ = 0;
  std::error_code failed_;
  std::size_t scanned_ = 0;
  // node_json: how many bytes at the front of the next data given to next() are already known
  // to hold no '\n' (the partial line kept in pending_), so that each byte is scanned once.
  std::size_t line_scanned_ = 0;
  // The buffer of the last large bytes message, reused for the next one when the application
  // did not keep the message: its pages stay mapped, so large messages do not page-fault.
  std::shared_ptr<std::string> spare_;
  bool views_ = false;     // deliver_views
  bool views_now_ = false; // this feed's sink takes views
  bool view_ready_ = false;
  std::string_view view_; // the payload next_frame left for the sink, when view_ready_

  // Descriptors: each read's, with the stream offsets of its bytes [from, to).
  struct fd_batch {
    std::vector<owned_fd> fds;
    std::uint64_t from, to;
  };
  std::deque<fd_batch> batches_;
  std::uint64_t fed_ = 0;         // bytes fed so far
  std::uint64_t consumed_ = 0;    // the stream offset of the first byte not consumed yet
  std::uint64_t frame_start_ = 0; // of the frame next() looks at
  owned_fd large_handle_;         // the descriptor of the large frame being collected
  std::vector<node_control> controls_;
};

} // namespace childproc::detail
