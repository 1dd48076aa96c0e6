// hiredis's async API on Asio: the five event hooks map onto async_wait on the connection's
// descriptor, run by the caller's executor.
#include "remote_redis.hpp"
#include "remote_wire.hpp"

#include <childproc/remote.hpp>

#include <boost/asio/post.hpp>

extern "C" { // first: hiredis.h includes sds.h, which declares no C linkage of its own
#include <hiredis/sds.h>
}
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <charconv>
#include <csignal>
#include <ctime>
#include <pthread.h>
#include <sys/socket.h>
#include <utility>

namespace childproc::detail {
namespace {

redisAsyncContext* connect_to(const std::string& server) {
  if (!server.empty() && server.front() == '/')
    return redisAsyncConnectUnix(server.c_str());
  const auto colon = server.rfind(':');
  int port = 6379;
  std::string host = server;
  if (colon != std::string::npos) {
    host = server.substr(0, colon);
    const char* first = server.data() + colon + 1;
    if (std::from_chars(first, server.data() + server.size(), port).ec != std::errc{})
      port = -1;
  }
  if (host.empty() || port <= 0 || port > 65535)
    return nullptr;
  return redisAsyncConnect(host.c_str(), port);
}

redis_connection* owner_of(const redisAsyncContext* context) {
  return static_cast<redis_connection*>(context->data);
}

// The server's answers to a client without (valid) credentials: NOAUTH for a command, and, from
// Redis 7, a protocol error (then a close) for a command of more than 10 arguments.
bool refuses_credentials(const redisReply* reply) {
  if (reply->type != REDIS_REPLY_ERROR)
    return false;
  const std::string_view text(reply->str, reply->len);
  return text.starts_with("NOAUTH") || text.starts_with("ERR Protocol error: unauthenticated");
}

} // namespace

std::shared_ptr<redis_connection> redis_connection::open(const boost::asio::any_io_executor& ex,
                                                         const std::string& server,
                                                         const redis_credentials& credentials,
                                                         std::error_code& ec, std::string& why) {
  redisAsyncContext* context = connect_to(server);
  if (context == nullptr) {
    ec = make_error_code(remote_errc::server_unreachable);
    why = "not a unix socket path or host:port: '" + server + "'";
    return nullptr;
  }
  if (context->err != 0) {
    ec = make_error_code(remote_errc::server_unreachable);
    why = server + ": " + context->errstr;
    redisAsyncFree(context);
    return nullptr;
  }
  // A server that vanished (a host down, a cable cut) is found out by TCP keep-alive, where a
  // blocking XREAD would wait for ever.
  if (server.front() != '/')
    redisEnableKeepAlive(&context->c);
  ec.clear();
  auto connection = std::make_shared<redis_connection>(ex, context);
  connection->attach(); // after make_shared: hiredis may call add_write() at once
  if (!credentials.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!credentials.user.empty())
      auth.push_back(credentials.user);
    auth.push_back(credentials.password);
    // Its handler runs before any later command's (one connection answers in order).
    connection->command(
        auth, [weak = connection->weak_from_this()](std::error_code ec, redisReply* reply) {
          if (auto self = weak.lock(); self && !ec && reply->type == REDIS_REPLY_ERROR)
            self->refuse(std::string(reply->str, reply->len));
        });
  }
  return connection;
}

void redis_connection::refuse(std::string text) {
  if (!error_) {
    // An AUTH answered with an error that passes (the server has no room for another client, or
    // loads its data) refuses no credentials: the connection is lost, and made again later.
    error_ = make_error_code(remote_wire::is_transient(text) ? remote_errc::connection_lost
                                                             : remote_errc::auth_failed);
    error_text_ = std::move(text);
  }
  close(); // inside a reply callback: hiredis frees the context once the callback returns
}

redis_connection::redis_connection(const boost::asio::any_io_executor& ex,
                                   redisAsyncContext* context)
    : executor_(ex), context_(context), socket_(ex, context->c.fd) {}

void redis_connection::attach() {
  redisAsyncContext* context = context_;
  context->data = this;
  context->ev.data = this;
  context->ev.addRead = &redis_connection::add_read;
  context->ev.delRead = &redis_connection::del_read;
  context->ev.addWrite = &redis_connection::add_write;
  context->ev.delWrite = &redis_connection::del_write;
  context->ev.cleanup = &redis_connection::cleanup;
  redisAsyncSetConnectCallback(context, &redis_connection::on_connect);
  redisAsyncSetDisconnectCallback(context, &redis_connection::on_disconnect);
}

redis_connection::~redis_connection() {
  close();
}

void redis_connection::close() {
  ended_ = nullptr;
  if (context_ == nullptr)
    return;
  if (!error_)
    error_ = make_error_code(remote_errc::connection_lost), error_text_ = "connection closed";
  redisAsyncFree(context_); // fails the callbacks, then calls cleanup()
}

void redis_connection::disconnect() {
  ended_ = nullptr;
  if (context_ != nullptr)
    redisAsyncDisconnect(context_);
}

void redis_connection::command(const std::vector<std::string>& args, redis_handler handler) {
  if (context_ == nullptr)
    return fail_later(std::move(handler));
  request_.assign("*").append(std::to_string(args.size())).append("\r\n");
  for (const auto& a : args)
    request_.append("$").append(std::to_string(a.size())).append("\r\n").append(a).append("\r\n");
  auto* pending = new redis_handler(std::move(handler));
  if (redisAsyncFormattedCommand(context_, &redis_connection::on_reply, pending, request_.data(),
                                 request_.size()) != REDIS_OK) {
    redis_handler refused = std::move(*pending);
    delete pending;
    fail_later(std::move(refused));
  }
  if (request_.capacity() > kept_request_capacity) // a large payload's buffer is not kept
    std::string().swap(request_);
}

void redis_connection::subscribe(const std::string& channel, redis_handler handler) {
  if (context_ == nullptr)
    return fail_later(std::move(handler));
  const char* argv[] = {"SUBSCRIBE", channel.c_str()};
  const std::size_t lengths[] = {9, channel.size()};
  // hiredis keeps the callback for the channel and calls it with a null reply when it frees
  // the context: that last call deletes the handler.
  auto* pending = new redis_handler(std::move(handler));
  if (redisAsyncCommandArgv(context_, &redis_connection::on_published, pending, 2, argv, lengths) !=
      REDIS_OK) {
    redis_handler refused = std::move(*pending);
    delete pending;
    fail_later(std::move(refused));
  }
}

void redis_connection::on_published(redisAsyncContext* context, void* reply, void* privdata) {
  auto* handler = static_cast<redis_handler*>(privdata);
  auto* self = owner_of(context);
  if (reply != nullptr)
    return (*handler)({}, static_cast<redisReply*>(reply));
  std::unique_ptr<redis_handler> last(handler);
  if (context->err != 0)
    self->record_error(context->errstr);
  (*last)(self->error_ ? self->error_ : make_error_code(remote_errc::connection_lost), nullptr);
}

void redis_connection::fail_later(redis_handler handler) {
  const std::error_code ec = error_ ? error_ : make_error_code(remote_errc::connection_lost);
  boost::asio::post(executor_, [handler = std::move(handler), ec] { handler(ec, nullptr); });
}

void redis_connection::record_error(const char* text) {
  if (error_)
    return;
  error_ =
      make_error_code(connected_ ? remote_errc::connection_lost : remote_errc::server_unreachable);
  error_text_ = text != nullptr && *text != '\0' ? text : "connection closed by the server";
}

void redis_connection::on_reply(redisAsyncContext* context, void* reply, void* privdata) {
  std::unique_ptr<redis_handler> handler(static_cast<redis_handler*>(privdata));
  auto* self = owner_of(context);
  if (reply == nullptr) {
    // Freed or disconnected with this command in flight.
    if (context->err != 0)
      self->record_error(context->errstr);
    const std::error_code ec =
        self->error_ ? self->error_ : make_error_code(remote_errc::connection_lost);
    return (*handler)(ec, nullptr);
  }
  self->connected_ = true;
  if (refuses_credentials(static_cast<redisReply*>(reply))) {
    self->refuse(
        std::string(static_cast<redisReply*>(reply)->str, static_cast<redisReply*>(reply)->len));
    return (*handler)(self->error_, nullptr);
  }
  (*handler)({}, static_cast<redisReply*>(reply));
}

void redis_connection::on_connect(const redisAsyncContext* context, int status) {
  auto* self = owner_of(context);
  if (status == REDIS_OK)
    self->connected_ = true;
  else
    self->record_error(context->errstr);
}

// Posted: hiredis calls this while it frees the context, where closing it again would free it
// twice.
void redis_connection::on_disconnect(const redisAsyncContext* context, int status) {
  auto* self = owner_of(context);
  if (status == REDIS_OK)
    return;
  self->record_error(context->errstr);
  if (self->ended_)
    boost::asio::post(self->executor_, [handler = std::move(self->ended_), ec = self->error_,
                                        text = self->error_text_] { handler(ec, text); });
}

void redis_connection::add_read(void* self) {
  auto* c = static_cast<redis_connection*>(self);
  c->read_.wanted = true;
  c->arm_read();
}
void redis_connection::del_read(void* self) {
  static_cast<redis_connection*>(self)->read_.wanted = false;
}
void redis_connection::add_write(void* self) {
  auto* c = static_cast<redis_connection*>(self);
  c->write_.wanted = true;
  c->arm_write();
}
void redis_connection::del_write(void* self) {
  static_cast<redis_connection*>(self)->write_.wanted = false;
}

void redis_connection::cleanup(void* self) {
  auto* c = static_cast<redis_connection*>(self);
  c->read_.wanted = c->write_.wanted = false;
  c->context_ = nullptr;
  // hiredis closes the descriptor itself; release() cancels the waits.
  c->socket_.release();
}

// One wait at a time per direction; a wait that completes after its hook was removed does
// nothing. The handlers hold the connection, so it outlives its waits.
void redis_connection::arm(direction& d, boost::asio::posix::stream_descriptor::wait_type type,
                           void (*handle)(redisAsyncContext*)) {
  if (d.armed || context_ == nullptr)
    return;
  d.armed = true;
  socket_.async_wait(type,
                     [self = shared_from_this(), &d, type, handle](boost::system::error_code ec) {
                       d.armed = false;
                       if (ec || self->context_ == nullptr || !d.wanted)
                         return;
                       handle(self->context_);
                       if (d.wanted)
                         self->arm(d, type, handle);
                     });
}

namespace {

bool sigpipe_pending() {
  sigset_t pending;
  ::sigpending(&pending);
  return ::sigismember(&pending, SIGPIPE) == 1;
}

// hiredis writes with write(2): to a server that closed the connection (Redis 7 does after
// refusing an unauthenticated command) that raises SIGPIPE, and the library never changes the
// process's disposition. The signal is blocked in this thread for the write, and one that the
// write raised is taken before the mask is restored; hiredis sees EPIPE.
void guarded_handle_write(redisAsyncContext* context) {
  sigset_t pipe_only, previous;
  ::sigemptyset(&pipe_only);
  ::sigaddset(&pipe_only, SIGPIPE);
  const bool pending_before = sigpipe_pending();
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &previous);
  redisAsyncHandleWrite(context);
  if (!pending_before && sigpipe_pending()) {
    const timespec now{};
    ::sigtimedwait(&pipe_only, nullptr, &now);
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

// The usual flush: the output buffer sent with MSG_NOSIGNAL, which cannot raise SIGPIPE, then
// hiredis's own handler with nothing left to write (it updates its hooks and writes nothing).
// Four signal-mask calls a flush are saved. What this cannot finish (not connected yet, a
// partial write, an error: hiredis must see it to disconnect) goes through the guarded path.
void handle_write_without_sigpipe(redisAsyncContext* context) {
  redisContext* c = &context->c;
  if ((c->flags & REDIS_CONNECTED) != 0 && c->err == 0 && sdslen(c->obuf) > 0) {
    const std::size_t length = sdslen(c->obuf);
    const ssize_t sent = ::send(c->fd, c->obuf, length, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0)
      sdsrange(c->obuf, static_cast<int>(sent), -1);
  }
  if ((c->flags & REDIS_CONNECTED) != 0 && sdslen(c->obuf) == 0)
    return redisAsyncHandleWrite(context);
  guarded_handle_write(context);
}

} // namespace

void redis_connection::arm_read() {
  arm(read_, boost::asio::posix::stream_descriptor::wait_read, &redisAsyncHandleRead);
}
void redis_connection::arm_write() {
  arm(write_, boost::asio::posix::stream_descriptor::wait_write, &handle_write_without_sigpipe);
}

} // namespace childproc::detail
