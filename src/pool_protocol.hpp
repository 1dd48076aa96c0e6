// The pool's envelope: how a pool and its workers (serve(), or the Node module
// share/childproc/childproc-pool-worker.js) wrap tasks, results and control messages in channel
// messages (internal; docs/pool.md gives the format to worker authors).
//
// Every envelope is a JSON object whose "cp" member names it:
//   pool -> worker  {"cp":"init","data":D}          worker_data, before anything else
//                   {"cp":"task","id":N,"name":S,"data":D}
//                   {"cp":"cancel","id":N}
//                   {"cp":"bcast","data":D}
//   worker -> pool  {"cp":"ready"}                  on_init returned
//                   {"cp":"done","id":N,"data":D}
//                   {"cp":"fail","id":N,"error":{"name":S,"message":S}}
//                   {"cp":"prog","id":N,"data":D}
// "name" is left out for the default handler. A bytes payload is not put in "data": the envelope
// has "bytes":true instead and the next message of the channel is the payload, so bytes are never
// converted to JSON (over Node's channel that next message is Node's Buffer JSON, which is
// accepted in its place). Anything else is malformed_message.
#pragma once

#include <childproc/channel.hpp>
#include <childproc/message.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace childproc::detail::pool_wire {

enum class op { init, task, cancel, broadcast, ready, done, fail, progress };

struct envelope {
  op kind = op::init;
  std::uint64_t id = 0;
  std::string name;
  message data; // the payload; for `fail`, the error object
};

// How envelopes are written. A framed channel (a pool of C++ workers) carries them in a compact
// binary form: one bytes message
//   [u8 op][u8 flags][u64 id][u32 name length][name][the data's JSON text, when flags has 1]
// (integers little-endian; flags 2: a bytes payload follows as the next message). A Node channel
// carries the JSON form above. Readers take both; serve() answers in the form the pool writes.
enum class form { json, binary };
form form_for(const channel& ch);

// Sends `e` through `ch` (one message, or the header and then the bytes). An envelope or payload
// over the channel's limit is refused whole, before anything is sent (a head without its payload
// would make the peer take the next envelope for it): message_too_large, and nothing reaches the
// channel's handlers. The other errors of a send go to the channel's handlers as usual.
std::error_code send(channel ch, envelope e, form f);

// Reassembles envelopes from the messages of a channel, in order.
class reader {
public:
  // Takes the channel's next message. Returns an envelope once one is complete (nullopt while a
  // bytes payload is still to come). Sets `ec` to malformed_message for anything that is not an
  // envelope; the reader must not be fed again then.
  std::optional<envelope> feed(const message& m, std::error_code& ec);
  // The same for a bytes message given as its bytes (channel_state::take_bytes_frames).
  std::optional<envelope> feed_bytes(std::string_view bytes, std::error_code& ec);
  // The form of the last envelope begun.
  form last_form() const noexcept { return form_; }

private:
  // The payload of the envelope in head_, or nullopt when `payload` is not bytes.
  std::optional<envelope> complete(std::optional<message> payload, std::error_code& ec);
  // An envelope parsed (nullopt: malformed), held back when its payload follows.
  std::optional<envelope> begun(std::optional<envelope> e, bool bytes_follow, std::error_code& ec);
  std::optional<envelope> head_; // an envelope waiting for its bytes payload
  form form_ = form::json;
};

std::string_view name_of(op kind) noexcept;

} // namespace childproc::detail::pool_wire
