// An IPC message: JSON (Node's messages) or raw bytes.
#pragma once

#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace childproc {
namespace detail {
struct message_access;
}

inline namespace v1 {

/// One message of a channel. Node sends JSON values; childproc channels also carry raw bytes
/// without any encoding (framed serialization; over a Node channel they travel as Node's Buffer
/// JSON, {"type":"Buffer","data":[...]}, and arrive as that JSON object). Strings given to the
/// constructor are JSON strings, as `send("start")` is in Node. The bytes of a bytes message are
/// shared, immutable: copying a message, or sending the same message many times, does not copy
/// them.
class message {
public:
  /// A JSON null.
  message() = default;
  /// A JSON value.
  message(boost::json::value value) : content_(std::move(value)) {}
  /// A JSON string (Node's `send("text")`).
  message(const char* text) : content_(boost::json::value(boost::json::string(text))) {}
  message(std::string_view text) : content_(boost::json::value(boost::json::string(text))) {}
  message(const std::string& text) : message(std::string_view(text)) {}

  /// Raw bytes, sent without any encoding.
  static message bytes(std::string data) {
    message m;
    m.content_ = raw{std::make_shared<std::string>(std::move(data))};
    return m;
  }
  /// A user type, converted with Boost.JSON's value_from (tag_invoke or described types).
  template <class T>
  static message from(const T& value) {
    return message(boost::json::value_from(value));
  }

  bool is_json() const noexcept { return content_.index() == 0; }
  bool is_bytes() const noexcept { return content_.index() == 1; }

  /// The JSON value. Throws std::bad_variant_access for a bytes message.
  const boost::json::value& json() const { return std::get<0>(content_); }
  /// The raw bytes. Throws std::bad_variant_access for a JSON message.
  const std::string& bytes() const { return *std::get<1>(content_).data; }
  /// The JSON value converted to T with Boost.JSON's value_to. Throws on a mismatch.
  template <class T>
  T as() const {
    return boost::json::value_to<T>(json());
  }

private:
  friend struct detail::message_access;
  struct raw {
    std::shared_ptr<std::string> data;
  };
  std::variant<boost::json::value, raw> content_;
};

} // namespace v1
} // namespace childproc
