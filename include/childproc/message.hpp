// An IPC message: JSON (Node's messages) or raw bytes.
#pragma once

#include <boost/json/value.hpp>
#include <boost/json/value_from.hpp>
#include <boost/json/value_to.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unistd.h>
#include <utility>
#include <variant>

namespace childproc {
namespace detail {
struct message_access;
}

inline namespace v1 {

/// An owned file descriptor: a handle passed over a channel (Node's `send(message, handle)`).
/// Closed on destruction unless released or moved into an Asio object (childproc::adopt, in
/// channel.hpp).
class owned_fd {
public:
  owned_fd() noexcept = default;
  explicit owned_fd(int fd) noexcept : fd_(fd) {}
  owned_fd(owned_fd&& o) noexcept : fd_(o.release()) {}
  owned_fd& operator=(owned_fd&& o) noexcept {
    if (this != &o)
      reset(o.release());
    return *this;
  }
  owned_fd(const owned_fd&) = delete;
  owned_fd& operator=(const owned_fd&) = delete;
  ~owned_fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
  }

  /// A duplicate of `fd` (close-on-exec, numbered 3 or above): how to send a descriptor this
  /// process keeps using (Node's `keepOpen`). Throws std::system_error.
  static owned_fd duplicate(int fd);
  static owned_fd duplicate(int fd, std::error_code& ec) noexcept;
  /// Takes the descriptor out of an Asio I/O object (a socket, an acceptor, a
  /// stream_descriptor), which is left closed: `owned_fd::from(std::move(socket))`.
  template <class IoObject>
  requires requires(IoObject& o) { o.release(); }
  static owned_fd from(IoObject&& object) { return owned_fd(object.release()); }

private:
  int fd_ = -1;
};

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
  /// A JSON number or boolean (Node's `send(42)`, `send(true)`): an exact match, so that
  /// `message(0)` is the number 0 and not a null `const char*`. A `char` is a number too.
  template <class T>
  requires(std::is_arithmetic_v<T>&& std::is_constructible_v<boost::json::value, T>)
      message(T value)
      : content_(boost::json::value(value)) {}
  /// A JSON null (Node's `send(null)`).
  message(std::nullptr_t) : message() {}
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

  /// True while a handle (a descriptor sent with the message) came with it and nobody took it.
  bool has_handle() const noexcept { return handle_ && handle_->fd; }
  /// The handle that came with the message, once: copies of a message share it, and whoever
  /// takes it first owns it (an empty owned_fd afterwards, and for a message without one). A
  /// handle nobody takes is closed with the last copy of the message.
  owned_fd take_handle() const noexcept { return handle_ ? std::move(handle_->fd) : owned_fd(); }

private:
  friend struct detail::message_access;
  struct raw {
    std::shared_ptr<std::string> data;
  };
  struct handle_slot {
    owned_fd fd;
  };
  std::variant<boost::json::value, raw> content_;
  std::shared_ptr<handle_slot> handle_;
};

} // namespace v1
} // namespace childproc
