// What the remote pool and childproc-agent write in Redis (internal): the fields of a task
// entry and of a reply entry, shared by both sides so that they cannot drift apart.
#pragma once

#include <childproc/message.hpp>

#include <boost/system/error_code.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

struct redisReply;

namespace childproc::detail::remote_wire {

// Task entry fields: id (the caller's task id), name, reply (the caller's reply stream), kind,
// data, timeout (ms, 0 none), and progress ("1": the caller wants the task's progress messages).
// Reply entry fields: id, status ("ok", "error", or "progress" for a progress message, which
// comes before the task's own reply), kind, data, and for an error: category, code.
inline constexpr std::string_view json_kind = "j";
inline constexpr std::string_view bytes_kind = "b";
inline constexpr std::string_view progress_status = "progress";

struct payload {
  std::string kind;
  std::string data;
};
payload encode(const message& m);
// Throws std::system_error(errc::malformed_message) for an unknown kind or invalid JSON.
message decode(std::string_view kind, std::string data);

// The XADD that writes a reply entry (a result or a progress message) to `reply_stream`, with
// NOMKSTREAM: a stream its caller deleted is never made again. An error's category and code
// are appended by the caller.
std::vector<std::string> reply_command(const std::string& reply_stream, const std::string& task_id,
                                       std::string_view status, payload body);

// An error code as two fields, and back: childproc's and the remote categories by name, the
// system category's codes (asio::error::operation_aborted among them) as errno values.
std::pair<std::string, std::string> encode_error(const boost::system::error_code& ec);
boost::system::error_code decode_error(std::string_view category, std::string_view code);

struct entry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;
  // The value of `name`, or empty.
  const std::string* find(std::string_view name) const noexcept;
};
// The entries of an XREAD / XREADGROUP reply (of one stream); false if the reply is not one.
bool read_entries(const redisReply* reply, std::vector<entry>& out);
// The entries of an entry list (XRANGE's reply, XAUTOCLAIM's second element), appended.
bool read_entry_list(const redisReply* list, std::vector<entry>& out);

// A stream entry id ("<ms>-<seq>") as its two numbers, which order ids; nullopt if `id` is not one.
std::optional<std::pair<std::uint64_t, std::uint64_t>> parse_id(std::string_view id) noexcept;
// The id right after `id`: what XTRIM MINID takes to drop the entries up to `id` and keep the
// rest. Empty if `id` is not an entry id.
std::string next_id(std::string_view id);

// The text of an error reply, or empty.
std::string error_text(const redisReply* reply);
// Whether an error reply passes by itself (the server loads its data, runs a long script, is a
// replica during a fail-over, or has no room for another client): worth a new connection later,
// unlike a refusal (NOPERM, OOM, WRONGTYPE).
bool is_transient(std::string_view error_text) noexcept;

} // namespace childproc::detail::remote_wire
