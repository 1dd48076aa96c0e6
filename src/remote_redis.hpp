// A hiredis async connection driven by Asio (internal): hiredis's read/write hooks become
// async_wait()s on a stream_descriptor of the executor, so no thread and no polling.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <functional>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

struct redisAsyncContext;
struct redisReply;

namespace childproc::detail {

// A reply, or an error: remote_errc::server_unreachable before the connection was made,
// connection_lost after. A reply of type REDIS_REPLY_ERROR is a reply (the caller decides).
using redis_handler = std::function<void(std::error_code ec, redisReply* reply)>;

// AUTH's arguments: `user` may be empty (requirepass); nothing is sent without a password.
struct redis_credentials {
  std::string user;
  std::string password;
};

class redis_connection : public std::enable_shared_from_this<redis_connection> {
public:
  // Starts connecting to `server` (a unix socket path, or "host:port"), and queues AUTH first
  // when there is a password. A connect that fails at once sets `ec`
  // (remote_errc::server_unreachable) and `why`, and returns null; a later failure fails the
  // commands. Refused credentials (or none where the server wants them) end the connection with
  // remote_errc::auth_failed and the server's text: every command in flight fails with it.
  static std::shared_ptr<redis_connection> open(const boost::asio::any_io_executor& ex,
                                                const std::string& server,
                                                const redis_credentials& credentials,
                                                std::error_code& ec, std::string& why);
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  // Sends the command (binary-safe arguments). `handler` runs once, from the executor, never
  // inside command(): with the reply, or with the connection's error.
  void command(const std::vector<std::string>& args, redis_handler handler);
  // SUBSCRIBEs to `channel` (the connection then takes no other command): `handler` runs for
  // the subscription's confirmation and for each message, always from the executor, and a last
  // time with the connection's error once it ends.
  void subscribe(const std::string& channel, redis_handler handler);
  // Frees the connection now: the commands in flight fail with connection_lost (their handlers
  // run inside close()).
  void close();
  // Closes once the replies of the commands sent so far have arrived (new commands fail).
  void disconnect();
  // `handler` runs once, from the executor, if the connection ends with an error (the server
  // closed it or it broke), even with no command in flight; never after close() or
  // disconnect().
  void on_end(std::function<void(std::error_code ec, const std::string& text)> handler) {
    ended_ = std::move(handler);
  }
  bool is_open() const noexcept { return context_ != nullptr; }
  // Why the connection ended (empty while open).
  std::error_code error() const noexcept { return error_; }
  const std::string& error_text() const noexcept { return error_text_; }

  redis_connection(const boost::asio::any_io_executor& ex, redisAsyncContext* context);

private:
  static void add_read(void* self);
  static void del_read(void* self);
  static void add_write(void* self);
  static void del_write(void* self);
  static void cleanup(void* self);
  static void on_connect(const redisAsyncContext* context, int status);
  static void on_disconnect(const redisAsyncContext* context, int status);
  static void on_reply(redisAsyncContext* context, void* reply, void* privdata);
  static void on_published(redisAsyncContext* context, void* reply, void* privdata);

  void attach();
  void arm_read();
  void arm_write();
  void record_error(const char* text);
  void refuse(std::string text);
  void fail_later(redis_handler handler);

  boost::asio::any_io_executor executor_;
  redisAsyncContext* context_;
  boost::asio::posix::stream_descriptor socket_;
  struct direction {
    bool wanted = false; // hiredis asked for it (add_read / add_write)
    bool armed = false;  // an async_wait is pending
  };
  void arm(direction& d, boost::asio::posix::stream_descriptor::wait_type type,
           void (*handle)(redisAsyncContext*));
  direction read_, write_;
  bool connected_ = false;
  std::error_code error_;
  std::string error_text_;
  std::function<void(std::error_code, const std::string&)> ended_;
  // command()'s request in the protocol's form, kept between calls. hiredis's own formatting
  // made a fresh buffer per command; a batch's passes 1 KiB, and each such allocation made glibc
  // consolidate its fast bins (perf: 3 to 5 % of an agent's time, docs/design.md).
  std::string request_;
  static constexpr std::size_t kept_request_capacity = 64 * 1024;
};

} // namespace childproc::detail
