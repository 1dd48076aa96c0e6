// The pool's envelope (see pool_protocol.hpp).
#include "pool_protocol.hpp"

#include "channel_state.hpp"
#include "frame.hpp"

#include <childproc/error.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serializer.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

namespace childproc::detail::pool_wire {
namespace {

constexpr std::array<std::string_view, 8> op_names = {"init",  "task", "cancel", "bcast",
                                                      "ready", "done", "fail",   "prog"};

std::optional<op> op_named(std::string_view name) noexcept {
  for (std::size_t i = 0; i < op_names.size(); ++i)
    if (op_names[i] == name)
      return static_cast<op>(i);
  return std::nullopt;
}

bool has_id(op kind) noexcept {
  return kind == op::task || kind == op::cancel || kind == op::done || kind == op::fail ||
         kind == op::progress;
}
bool has_data(op kind) noexcept {
  return kind == op::init || kind == op::task || kind == op::broadcast || kind == op::done ||
         kind == op::progress;
}

// Node's Buffer JSON ({"type":"Buffer","data":[bytes]}) as the bytes it stands for.
std::optional<message> buffer_json_bytes(const boost::json::value& v) {
  const auto* obj = v.if_object();
  if (!obj || obj->size() != 2)
    return std::nullopt;
  const auto* type = obj->if_contains("type");
  const auto* data = obj->if_contains("data");
  if (!type || !data || !type->is_string() || type->get_string() != "Buffer" || !data->is_array())
    return std::nullopt;
  std::string bytes;
  bytes.reserve(data->get_array().size());
  for (const auto& b : data->get_array()) {
    if (!b.is_int64() || b.get_int64() < 0 || b.get_int64() > 255)
      return std::nullopt;
    bytes.push_back(static_cast<char>(b.get_int64()));
  }
  return message::bytes(std::move(bytes));
}

// The envelope in `obj`, or nullopt when it is not one. Sets `bytes_follow`.
std::optional<envelope> parse(const boost::json::object& obj, bool& bytes_follow) {
  const auto* cp = obj.if_contains("cp");
  if (!cp || !cp->is_string())
    return std::nullopt;
  const auto kind = op_named(std::string_view(cp->get_string()));
  if (!kind)
    return std::nullopt;
  envelope e;
  e.kind = *kind;
  if (has_id(e.kind)) {
    const auto* id = obj.if_contains("id");
    if (!id || !(id->is_uint64() || (id->is_int64() && id->get_int64() >= 0)))
      return std::nullopt;
    e.id = id->is_uint64() ? id->get_uint64() : static_cast<std::uint64_t>(id->get_int64());
  }
  if (const auto* name = obj.if_contains("name")) {
    if (!name->is_string())
      return std::nullopt;
    e.name = std::string(name->get_string());
  }
  const auto* bytes = obj.if_contains("bytes");
  bytes_follow = bytes && bytes->is_bool() && bytes->get_bool() && has_data(e.kind);
  if (const auto* data = obj.if_contains(e.kind == op::fail ? "error" : "data"))
    e.data = message(*data);
  return e;
}

// The binary form (pool_protocol.hpp).
constexpr std::uint8_t json_data = 1, bytes_follow_flag = 2;
constexpr std::size_t binary_head = 14; // op, flags, id, name length

void put_le(std::string& out, std::uint64_t value, int size) {
  for (int i = 0; i < size; ++i)
    out.push_back(static_cast<char>(value >> (8 * i)));
}

std::uint64_t get_le(std::string_view in, std::size_t at, int size) {
  std::uint64_t value = 0;
  for (int i = 0; i < size; ++i)
    value |= std::uint64_t(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return value;
}

// The largest message `ch` sends (the peer's limit too).
std::size_t limit_of(const channel& ch) {
  const auto* state = channel_access::state(ch);
  return state ? state->incoming.max_message_size() : SIZE_MAX;
}

std::error_code send_binary(channel& ch, envelope& e) {
  const bool bytes = e.data.is_bytes();
  const bool json = !bytes && (has_data(e.kind) || e.kind == op::fail);
  // Built in this thread's scratch buffer and copied into the channel's queue: no allocation
  // per envelope once the buffer has grown (a large one is let go after use).
  static thread_local std::string head;
  head.clear();
  head.push_back(static_cast<char>(e.kind));
  head.push_back(static_cast<char>((json ? json_data : 0) | (bytes ? bytes_follow_flag : 0)));
  put_le(head, e.id, 8);
  put_le(head, e.name.size(), 4);
  head += e.name;
  if (json)
    append_json(head, e.data.json());
  const std::size_t limit = limit_of(ch);
  const bool fits = head.size() <= limit && (!bytes || e.data.bytes().size() <= limit);
  if (fits) {
    if (auto* state = channel_access::state(ch))
      state->send_copy(head);
    else
      ch.send(message::bytes(head));
    if (bytes)
      ch.send(e.data);
  }
  if (head.capacity() > 64 * 1024)
    std::string().swap(head);
  return fits ? std::error_code() : make_error_code(errc::message_too_large);
}

// The binary envelope in `in`, or nullopt when it is not one. Sets `bytes_follow`.
std::optional<envelope> parse_binary(std::string_view in, bool& bytes_follow) {
  if (in.size() < binary_head || static_cast<unsigned char>(in[0]) >= op_names.size())
    return std::nullopt;
  const auto flags = static_cast<unsigned char>(in[1]);
  if (flags > bytes_follow_flag) // unknown flags, or JSON data and a payload at once
    return std::nullopt;
  envelope e;
  e.kind = static_cast<op>(in[0]);
  e.id = get_le(in, 2, 8);
  const std::uint64_t name_size = get_le(in, 10, 4);
  if (name_size > in.size() - binary_head)
    return std::nullopt;
  e.name = std::string(in.substr(binary_head, name_size));
  const std::string_view data = in.substr(binary_head + name_size);
  if (flags & json_data) {
    boost::system::error_code ec;
    auto value = boost::json::parse(data, ec);
    if (ec)
      return std::nullopt;
    e.data = message(std::move(value));
  } else if (!data.empty()) {
    return std::nullopt;
  }
  bytes_follow = (flags & bytes_follow_flag) && has_data(e.kind);
  return e;
}

std::error_code send_json(channel& ch, envelope& e) {
  boost::json::object obj;
  obj.reserve(4);
  obj.emplace("cp", name_of(e.kind));
  if (has_id(e.kind))
    obj.emplace("id", e.id);
  if (!e.name.empty())
    obj.emplace("name", e.name);
  const bool bytes = e.data.is_bytes();
  if (bytes && e.data.bytes().size() > limit_of(ch))
    return make_error_code(errc::message_too_large);
  if (bytes)
    obj.emplace("bytes", true);
  else if (has_data(e.kind) || e.kind == op::fail)
    obj.emplace(e.kind == op::fail ? "error" : "data", std::move(message_access::json(e.data)));
  // An envelope whose JSON is over the limit is refused by the channel (its handlers hear it).
  ch.send(message(boost::json::value(std::move(obj))));
  if (bytes)
    ch.send(e.data);
  return {};
}

} // namespace

form form_for(const channel& ch) {
  return ch.mode() == serialization::framed ? form::binary : form::json;
}

std::string_view name_of(op kind) noexcept {
  return op_names[static_cast<std::size_t>(kind)];
}

std::error_code send(channel ch, envelope e, form f) {
  return f == form::binary ? send_binary(ch, e) : send_json(ch, e);
}

std::optional<envelope> reader::feed(const message& m, std::error_code& ec) {
  if (head_)
    return complete(m.is_bytes() ? std::optional<message>(m) : buffer_json_bytes(m.json()), ec);
  if (m.is_bytes())
    return feed_bytes(m.bytes(), ec);
  bool bytes_follow = false;
  std::optional<envelope> e;
  if (const auto* obj = m.json().if_object()) {
    form_ = form::json;
    e = parse(*obj, bytes_follow);
  }
  return begun(std::move(e), bytes_follow, ec);
}

std::optional<envelope> reader::feed_bytes(std::string_view bytes, std::error_code& ec) {
  if (head_)
    return complete(message::bytes(std::string(bytes)), ec);
  form_ = form::binary;
  bool bytes_follow = false;
  auto e = parse_binary(bytes, bytes_follow);
  return begun(std::move(e), bytes_follow, ec);
}

std::optional<envelope> reader::complete(std::optional<message> payload, std::error_code& ec) {
  envelope e = std::move(*head_);
  head_.reset();
  if (!payload) {
    ec = make_error_code(errc::malformed_message);
    return std::nullopt;
  }
  e.data = std::move(*payload);
  return e;
}

std::optional<envelope> reader::begun(std::optional<envelope> e, bool bytes_follow,
                                      std::error_code& ec) {
  if (!e) {
    ec = make_error_code(errc::malformed_message);
    return std::nullopt;
  }
  if (bytes_follow) {
    head_ = std::move(e);
    return std::nullopt;
  }
  return e;
}

} // namespace childproc::detail::pool_wire
