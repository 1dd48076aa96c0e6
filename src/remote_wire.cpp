// The remote pool's entries in Redis: payloads, error codes, XREAD replies.
#include "remote_wire.hpp"

#include <childproc/error.hpp>
#include <childproc/remote.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/system_category.hpp>

#include <hiredis/hiredis.h>

#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace childproc::detail::remote_wire {
namespace {

std::string_view text_of(const redisReply* r) {
  return r != nullptr && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

bool read_entry(const redisReply* r, entry& out) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[0]->type != REDIS_REPLY_STRING)
    return false;
  out.id.assign(text_of(r->element[0]));
  out.fields.clear();
  const redisReply* f = r->element[1];
  if (f->type == REDIS_REPLY_NIL) // an entry deleted while pending
    return true;
  if (f->type != REDIS_REPLY_ARRAY || f->elements % 2 != 0)
    return false;
  for (std::size_t i = 0; i + 1 < f->elements; i += 2)
    out.fields.emplace_back(text_of(f->element[i]), text_of(f->element[i + 1]));
  return true;
}

} // namespace

payload encode(const message& m) {
  if (m.is_bytes())
    return {std::string(bytes_kind), m.bytes()};
  return {std::string(json_kind), boost::json::serialize(m.json())};
}

message decode(std::string_view kind, std::string data) {
  if (kind == bytes_kind)
    return message::bytes(std::move(data));
  boost::system::error_code ec;
  auto value = kind == json_kind ? boost::json::parse(data, ec) : boost::json::value();
  if (kind != json_kind || ec)
    throw std::system_error(make_error_code(errc::malformed_message),
                            "remote pool: an entry whose payload is not a message");
  return message(std::move(value));
}

std::pair<std::string, std::string> encode_error(const boost::system::error_code& ec) {
  const std::string_view name = ec.category().name();
  const std::string category =
      name == "childproc" || name == "childproc.remote" ? std::string(name) : "system";
  return {category, std::to_string(ec.value())};
}

boost::system::error_code decode_error(std::string_view category, std::string_view code) {
  int value = 0;
  const auto end = code.data() + code.size();
  const auto [stop, failure] = std::from_chars(code.data(), end, value);
  // An error reply must name an error: 0 (no error in any category), or no number at all,
  // would complete a failed task as a success.
  if (failure != std::errc{} || stop != end || value == 0)
    return make_error_code(errc::malformed_message);
  if (category == "childproc")
    return make_error_code(static_cast<errc>(value));
  if (category == "childproc.remote")
    return make_error_code(static_cast<remote_errc>(value));
  return {value, boost::system::system_category()};
}

const std::string* entry::find(std::string_view name) const noexcept {
  for (const auto& [key, value] : fields)
    if (key == name)
      return &value;
  return nullptr;
}

bool read_entries(const redisReply* reply, std::vector<entry>& out) {
  out.clear();
  if (reply == nullptr || reply->type == REDIS_REPLY_NIL) // BLOCK timed out
    return reply != nullptr;
  if (reply->type != REDIS_REPLY_ARRAY)
    return false;
  for (std::size_t s = 0; s < reply->elements; ++s) {
    const redisReply* stream = reply->element[s];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2 ||
        stream->element[1]->type != REDIS_REPLY_ARRAY)
      return false;
    if (!read_entry_list(stream->element[1], out))
      return false;
  }
  return true;
}

bool read_entry_list(const redisReply* list, std::vector<entry>& out) {
  if (list == nullptr || list->type != REDIS_REPLY_ARRAY)
    return false;
  for (std::size_t i = 0; i < list->elements; ++i)
    if (!read_entry(list->element[i], out.emplace_back()))
      return false;
  return true;
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_id(std::string_view id) noexcept {
  const auto parse = [](std::string_view text, std::uint64_t& to) {
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), to);
    return !text.empty() && ec == std::errc() && end == text.data() + text.size();
  };
  const auto dash = id.find('-');
  std::uint64_t ms = 0, seq = 0;
  if (dash == std::string_view::npos || !parse(id.substr(0, dash), ms) ||
      !parse(id.substr(dash + 1), seq))
    return std::nullopt;
  return std::pair{ms, seq};
}

std::string next_id(std::string_view id) {
  constexpr auto last = std::numeric_limits<std::uint64_t>::max();
  const auto parsed = parse_id(id);
  if (!parsed || (parsed->first == last && parsed->second == last))
    return {}; // not an id, or the last id there can be: nothing comes after it
  const auto [ms, seq] = *parsed;
  if (seq != last)
    return std::to_string(ms) + '-' + std::to_string(seq + 1);
  return std::to_string(ms + 1) + "-0";
}

std::string error_text(const redisReply* reply) {
  return reply != nullptr && reply->type == REDIS_REPLY_ERROR ? std::string(reply->str, reply->len)
                                                              : std::string();
}

std::vector<std::string> reply_command(const std::string& reply_stream, const std::string& task_id,
                                       std::string_view status, payload body) {
  return {"XADD",       reply_stream,
          "NOMKSTREAM", "*",
          "id",         task_id,
          "status",     std::string(status),
          "kind",       std::move(body.kind),
          "data",       std::move(body.data)};
}

bool is_transient(std::string_view text) noexcept {
  for (const std::string_view passing :
       {"LOADING", "BUSY ", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN", "READONLY",
        "ERR max number of clients reached"})
    if (text.starts_with(passing))
      return true;
  return false;
}

} // namespace childproc::detail::remote_wire
