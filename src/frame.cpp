// The channel's wire formats. See frame.hpp.
#include "frame.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/serializer.hpp>

#include <atomic>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstring>

namespace childproc::detail {
namespace {

#if defined(__SANITIZE_THREAD__)
#define CHILDPROC_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHILDPROC_UNDER_TSAN 1
#endif
#endif

// True when `p` is the only owner left, so its buffer may be written again. use_count() is a
// relaxed load: the fence orders this thread's writes after the last other owner's release (a
// message the application dropped on another thread), as an acquire load would. TSan does not
// model fences (GCC refuses them under -fsanitize=thread): there, no reuse.
bool sole_owner(const std::shared_ptr<std::string>& p) noexcept {
#if defined(CHILDPROC_UNDER_TSAN)
  (void)p;
  return false;
#else
  if (p.use_count() != 1)
    return false;
  std::atomic_thread_fence(std::memory_order_acquire);
  return true;
#endif
}

void store_u32le(char* at, std::uint32_t v) noexcept {
  for (int i = 0; i < 4; ++i)
    at[i] = static_cast<char>(v >> (8 * i));
}

void put_u32le(std::string& out, std::uint32_t v) {
  char bytes[4];
  store_u32le(bytes, v);
  out.append(bytes, 4);
}

std::uint32_t get_u32le(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 |
         static_cast<std::uint32_t>(b[2]) << 16 | static_cast<std::uint32_t>(b[3]) << 24;
}

bool is_hex4(std::string_view s, std::size_t at) {
  if (at + 4 > s.size())
    return false;
  for (std::size_t i = at; i < at + 4; ++i)
    if (!std::isxdigit(static_cast<unsigned char>(s[i])))
      return false;
  return true;
}

unsigned hex4(std::string_view s, std::size_t at) {
  unsigned v = 0;
  for (std::size_t i = at; i < at + 4; ++i) {
    const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
    v = v * 16 + static_cast<unsigned>(c <= '9' ? c - '0' : c - 'a' + 10);
  }
  return v;
}

// `text` with every escape of a lone UTF-16 surrogate replaced by "\ufffd" (a pair stays as it
// is). Backslashes occur only inside strings in JSON, so escapes are found without tracking
// strings; an escaped backslash is skipped whole.
std::string replace_lone_surrogates(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] != '\\' || i + 1 >= text.size()) {
      out += text[i++];
      continue;
    }
    if (text[i + 1] != 'u' || !is_hex4(text, i + 2)) {
      out.append(text.substr(i, 2));
      i += 2;
      continue;
    }
    const unsigned unit = hex4(text, i + 2);
    const bool high = unit >= 0xd800 && unit <= 0xdbff, low = unit >= 0xdc00 && unit <= 0xdfff;
    if (high && text.substr(i + 6, 2) == "\\u" && is_hex4(text, i + 8)) {
      const unsigned next = hex4(text, i + 8);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out.append(text.substr(i, 12)); // a valid pair
        i += 12;
        continue;
      }
    }
    out.append(high || low ? std::string_view("\\ufffd") : text.substr(i, 6));
    i += 6;
  }
  return out;
}

bool parse_json(std::string_view text, boost::json::value& out) {
  boost::json::parse_options options;
  options.max_depth = json_max_depth;
  boost::system::error_code ec;
  out = boost::json::parse(text, ec, {}, options);
  if (ec) {
    // Node's JSON.stringify writes a lone surrogate as "\ud800", which Boost.JSON 1.81 refuses
    // (as a syntax error or an illegal surrogate, depending on what follows).
    std::string fixed = replace_lone_surrogates(text);
    if (fixed != text) {
      ec = {};
      out = boost::json::parse(fixed, ec, {}, options);
    }
  }
  return !ec;
}

// Node's internal messages ({"cmd": "NODE_..."}) are not the application's: the command, or
// empty for an application message.
std::string_view node_command(const boost::json::value& v) {
  const auto* obj = v.if_object();
  if (!obj)
    return {};
  const auto it = obj->find("cmd");
  if (it == obj->end() || !it->value().is_string())
    return {};
  const std::string_view cmd = it->value().get_string();
  return cmd.starts_with("NODE_") ? cmd : std::string_view();
}

// Appends `v` (non-finite doubles as null) to `out`, serialized in place: no string of its own.
void append_finite_json(std::string& out, const boost::json::value& v) {
  if (has_non_finite(v))
    return append_json(out, finite_json(v));
  append_json(out, v);
}

// Node's Buffer.toJSON() shape: {"type":"Buffer","data":[0,255,...]}.
void append_buffer_json(std::string_view bytes, std::string& out) {
  out.reserve(out.size() + 28 + bytes.size() * 4);
  out += "{\"type\":\"Buffer\",\"data\":[";
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0)
      out += ',';
    out += std::to_string(static_cast<unsigned char>(bytes[i]));
  }
  out += "]}";
}

} // namespace

bool has_non_finite(const boost::json::value& v) noexcept {
  switch (v.kind()) {
  case boost::json::kind::double_:
    return !std::isfinite(v.get_double());
  case boost::json::kind::array:
    for (const auto& e : v.get_array())
      if (has_non_finite(e))
        return true;
    return false;
  case boost::json::kind::object:
    for (const auto& kv : v.get_object())
      if (has_non_finite(kv.value()))
        return true;
    return false;
  default:
    return false;
  }
}

boost::json::value finite_json(const boost::json::value& v) {
  switch (v.kind()) {
  case boost::json::kind::double_:
    return std::isfinite(v.get_double()) ? v : boost::json::value(nullptr);
  case boost::json::kind::array: {
    boost::json::array out;
    out.reserve(v.get_array().size());
    for (const auto& e : v.get_array())
      out.push_back(finite_json(e));
    return out;
  }
  case boost::json::kind::object: {
    boost::json::object out;
    for (const auto& kv : v.get_object())
      out.emplace(kv.key(), finite_json(kv.value()));
    return out;
  }
  default:
    return v;
  }
}

std::string bytes_frame_header(std::size_t size, bool with_handle) {
  assert(size <= max_frame_payload);
  std::string header;
  put_u32le(header, static_cast<std::uint32_t>(size));
  header += static_cast<char>(static_cast<std::uint8_t>(frame_kind::bytes) |
                              (with_handle ? frame_has_handle : 0));
  return header;
}

void encode(const message& m, wire w, std::string& out, bool with_handle,
            std::string_view node_type) {
  if (w == wire::node_json) {
    if (with_handle) {
      out += "{\"cmd\":\"NODE_HANDLE\",\"type\":";
      out += boost::json::serialize(boost::json::value(boost::json::string(node_type)));
      out += ",\"msg\":";
    }
    if (m.is_json())
      append_finite_json(out, m.json());
    else
      append_buffer_json(m.bytes(), out);
    if (with_handle)
      out += '}';
    out += '\n';
    return;
  }
  const std::size_t start = out.size();
  out.append(frame_header_size, '\0');
  frame_kind kind;
  if (m.is_json()) {
    append_finite_json(out, m.json());
    kind = frame_kind::json;
  } else {
    out += m.bytes();
    kind = frame_kind::bytes;
  }
  assert(out.size() - start - frame_header_size <= max_frame_payload);
  store_u32le(out.data() + start,
              static_cast<std::uint32_t>(out.size() - start - frame_header_size));
  out[start + 4] =
      static_cast<char>(static_cast<std::uint8_t>(kind) | (with_handle ? frame_has_handle : 0));
}

void append_json(std::string& out, const boost::json::value& v) {
  // Through a small buffer: growing `out` to its capacity and serializing into it would zero-fill
  // the whole spare capacity of a kept buffer (up to 128 KiB) for every small value.
  boost::json::serializer writer;
  writer.reset(&v);
  char chunk[4096];
  while (!writer.done())
    out.append(writer.read(chunk, sizeof chunk));
}

std::error_code decoder::next(std::string_view data, message& m, std::size_t& consumed,
                              bool& deliver) {
  consumed = 0;
  deliver = false;
  return wire_ == wire::node_json ? next_line(data, m, consumed, deliver)
                                  : next_frame(data, m, consumed, deliver);
}

std::error_code decoder::next_line(std::string_view data, message& m, std::size_t& consumed,
                                   bool& deliver) {
  // The front of `data` that an earlier read already scanned holds no '\n'.
  const std::size_t from = std::min(line_scanned_, data.size());
  const std::size_t eol = data.find('\n', from);
  scanned_ += (eol == std::string_view::npos ? data.size() : eol + 1) - from;
  line_scanned_ = eol == std::string_view::npos ? data.size() : 0;
  if (eol == std::string_view::npos)
    return data.size() > max_ ? make_error_code(errc::message_too_large) : std::error_code{};
  if (eol > max_)
    return make_error_code(errc::message_too_large);
  consumed = eol + 1;
  std::string_view line = data.substr(0, eol);
  if (!line.empty() && line.back() == '\r')
    line.remove_suffix(1);
  if (line.empty())
    return {};
  boost::json::value v;
  if (!parse_json(line, v))
    return make_error_code(errc::malformed_message);
  if (!node_command(v).empty())
    return node_internal(v, m, deliver);
  owned_fd none;
  if (!claim(false, none))
    return make_error_code(errc::malformed_message);
  m = message(std::move(v));
  deliver = true;
  return {};
}

std::error_code decoder::next_frame(std::string_view data, message& m, std::size_t& consumed,
                                    bool& deliver) {
  if (data.size() < frame_header_size)
    return {};
  const std::uint32_t length = get_u32le(data.data());
  if (length > max_)
    return make_error_code(errc::message_too_large);
  const auto kind_byte = static_cast<std::uint8_t>(data[4]);
  const bool with_handle = (kind_byte & frame_has_handle) != 0;
  const auto kind = static_cast<frame_kind>(kind_byte & ~frame_has_handle);
  if (kind != frame_kind::json && kind != frame_kind::bytes)
    return make_error_code(errc::malformed_message);
  if (data.size() - frame_header_size < length) {
    if (kind == frame_kind::bytes && length >= large_frame_)
      return start_large_frame(data, length, with_handle, consumed);
    return {}; // incomplete
  }
  owned_fd handle;
  if (!claim(with_handle, handle))
    return make_error_code(errc::malformed_message);
  const std::string_view payload = data.substr(frame_header_size, length);
  if (kind == frame_kind::bytes && views_now_ && !handle && length < large_frame_) {
    view_ = payload;
    view_ready_ = true;
  } else if (kind == frame_kind::bytes) {
    m = bytes_message(payload);
  } else {
    boost::json::value v;
    if (!parse_json(payload, v))
      return make_error_code(errc::malformed_message);
    m = message(std::move(v));
  }
  if (handle)
    message_access::attach_handle(m, std::move(handle));
  consumed = frame_header_size + length;
  deliver = true;
  return {};
}

std::error_code decoder::start_large_frame(std::string_view data, std::uint32_t length,
                                           bool with_handle, std::size_t& consumed) {
  // From now on the frame is collected in the message's buffer (see feed()).
  if (!claim(with_handle, large_handle_))
    return make_error_code(errc::malformed_message);
  if (spare_ && sole_owner(spare_)) {
    large_ = std::move(spare_);
    large_->clear(); // keeps the capacity: warm pages
  } else {
    large_ = std::make_shared<std::string>();
  }
  spare_.reset();
  large_->reserve(length);
  const std::string_view have = data.substr(frame_header_size);
  large_->append(have);
  large_need_ = length - have.size();
  consumed = data.size();
  return {};
}

message decoder::bytes_message(std::string_view payload) {
  if (payload.size() < large_frame_)
    return message::bytes(std::string(payload));
  if (spare_ && sole_owner(spare_))
    spare_->assign(payload); // warm pages, no allocation
  else
    spare_ = std::make_shared<std::string>(payload);
  return message_access::from_shared(spare_);
}

bool decoder::claim(bool wanted, owned_fd& fd) {
  // A read's descriptors belong to a frame starting inside that read: one starting after it
  // finds them stray.
  if (!batches_.empty() && batches_.front().to <= frame_start_)
    return false;
  if (!wanted)
    return true;
  if (batches_.empty() || batches_.front().from > frame_start_)
    return false;
  fd_batch batch = std::move(batches_.front());
  batches_.pop_front();
  if (batch.fds.size() != 1)
    return false; // one descriptor per message: the rest would have no owner
  fd = std::move(batch.fds.front());
  return true;
}

std::error_code decoder::node_internal(boost::json::value& v, message& m, bool& deliver) {
  const std::string_view cmd = node_command(v);
  if (cmd == "NODE_HANDLE_ACK" || cmd == "NODE_HANDLE_NACK") {
    controls_.push_back(cmd == "NODE_HANDLE_ACK" ? node_control::ack_received
                                                 : node_control::nack_received);
    return {};
  }
  const bool handle_message = cmd == "NODE_HANDLE";
  owned_fd fd;
  if (!claim(handle_message, fd)) {
    if (!handle_message || (!batches_.empty() && batches_.front().to <= frame_start_))
      return make_error_code(errc::malformed_message); // stray descriptors
    controls_.push_back(node_control::send_nack);      // Node sends it again
    return {};
  }
  if (!handle_message)
    return {}; // Node's other internal messages (cluster's...) are not the application's
  boost::json::value* inner = v.as_object().if_contains("msg");
  controls_.push_back(node_control::send_ack); // received: Node's sender closes its own copy
  if (inner && !node_command(*inner).empty())
    return {}; // Node's internal message with a handle (its cluster's): closed with `fd`
  m = message(inner ? std::move(*inner) : boost::json::value());
  message_access::attach_handle(m, std::move(fd));
  deliver = true;
  return {};
}

void decoder::keep_rest(std::string_view view, std::size_t used) {
  if (!pending_.empty() && view.data() == pending_.data())
    pending_.erase(0, used);
  else
    pending_.assign(view.substr(used));
  // A large frame arrives in many reads: make room for all of it once (no view into pending_
  // is alive any more).
  if (wire_ == wire::framed && pending_.size() >= frame_header_size) {
    const std::size_t total = frame_header_size + get_u32le(pending_.data());
    if (total <= frame_header_size + max_ && pending_.capacity() < total)
      pending_.reserve(total);
  }
}

} // namespace childproc::detail
