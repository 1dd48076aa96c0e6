// Seed 000, "Socket.IO": long-lived connections spread over cluster workers, and events shared
// between the workers through Redis pub/sub, the document's solution:
//
//   - keep each client's socket connected to one worker (that's normal for WebSocket)
//   - share socket state/events across workers with a pub/sub adapter (Redis)
//
// Socket.IO's own protocol is not reproduced: the clients speak plain WebSocket (Boost.Beast) and
// the adapter is one Redis channel ("chat") that every worker subscribes to. A WebSocket stays
// with the worker that accepted it for its whole life, so no sticky-session routing is needed
// (Socket.IO needs it for its HTTP long-polling fallback only). Heavy work in a worker would
// still block its own clients: hand it to a pool (http_pool_sum shows how).
//
// Redis is reached with hiredis's command encoder and reply parser and Asio's sockets: the I/O
// runs on the worker's io_context, with no thread and no blocking call on the event loop.
//
//   socketio_cluster <address> <port> <redis unix socket>   serve for ever
//   socketio_cluster                                        the demonstration (the test)
//
// The demonstration starts its own redis-server on a private unix socket (childproc::spawn), a
// cluster of 2 workers on 127.0.0.1 port 0 (reuse_port scheduling: the kernel spreads the
// connections), connects clients until both workers have some, has one client send a message
// and checks that every client, on either worker, receives it exactly once.
#include <childproc/childproc.hpp>
#include <childproc/cluster.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/core.h>

#include <hiredis/hiredis.h>

#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using error_code = boost::system::error_code;
constexpr auto no_throw = asio::as_tuple(use_awaitable);

// Texts written one at a time and in order: Asio and Beast allow one write in flight per stream.
// `write` is awaitable<error_code>(const std::string&); `keep` keeps the stream's owner alive
// while a write is in flight.
template <class Write>
class outbox {
public:
  outbox(asio::any_io_executor ex, Write write) : ex_(std::move(ex)), write_(std::move(write)) {}

  void push(std::string text, std::shared_ptr<void> keep = {}) {
    queue_.push_back(std::move(text));
    if (!busy_) {
      busy_ = true;
      asio::co_spawn(ex_, drain(std::move(keep)), asio::detached);
    }
  }

private:
  // `keep` lives in the coroutine frame until the queue is drained.
  awaitable<void> drain([[maybe_unused]] std::shared_ptr<void> keep) {
    while (!queue_.empty()) {
      // Awaited into a variable: g++ 12 miscompiles some co_await temporaries (docs/design.md).
      const error_code ec = co_await write_(queue_.front());
      if (ec) {
        queue_.clear(); // the stream is gone: what is left can never be written
        break;
      }
      queue_.pop_front();
    }
    busy_ = false;
  }

  asio::any_io_executor ex_;
  Write write_;
  std::deque<std::string> queue_;
  bool busy_ = false;
};

using reply_ptr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

// A Redis connection over a unix socket: commands encoded by hiredis, replies parsed by its
// reader, the bytes moved by Asio.
class redis_connection {
public:
  explicit redis_connection(asio::any_io_executor ex)
      : socket_(ex), commands_(ex, write_to{this}), reader_(redisReaderCreate(), &redisReaderFree) {
    if (!reader_)
      throw std::bad_alloc();
  }

  awaitable<void> connect(const std::string& path) {
    co_await socket_.async_connect(asio::local::stream_protocol::endpoint(path), use_awaitable);
  }

  void command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    char* text = nullptr;
    const long long length =
        redisFormatCommandArgv(&text, static_cast<int>(argv.size()), argv.data(), lengths.data());
    if (length < 0)
      throw std::bad_alloc();
    std::string encoded(text, static_cast<std::size_t>(length));
    redisFreeCommand(text);
    commands_.push(std::move(encoded));
  }

  // The next reply; null once the connection is closed or broken.
  awaitable<reply_ptr> next_reply() {
    for (;;) {
      void* reply = nullptr;
      if (redisReaderGetReply(reader_.get(), &reply) != REDIS_OK)
        throw std::runtime_error(std::string("redis: ") + reader_->errstr);
      // Named before co_return: g++ 12 destroys a co_return temporary twice (docs/design.md).
      reply_ptr parsed(static_cast<redisReply*>(reply), &freeReplyObject);
      if (parsed)
        co_return parsed;
      char chunk[4096];
      auto [ec, n] = co_await socket_.async_read_some(asio::buffer(chunk), no_throw);
      if (ec) {
        reply_ptr none(nullptr, &freeReplyObject);
        co_return none;
      }
      redisReaderFeed(reader_.get(), chunk, n);
    }
  }

  void close() {
    error_code ignored;
    socket_.close(ignored);
  }

private:
  struct write_to {
    redis_connection* self;
    awaitable<error_code> operator()(const std::string& text) const {
      auto [ec, n] = co_await asio::async_write(self->socket_, asio::buffer(text), no_throw);
      co_return ec;
    }
  };

  asio::local::stream_protocol::socket socket_;
  outbox<write_to> commands_;
  std::unique_ptr<redisReader, decltype(&redisReaderFree)> reader_;
};

// ---- the worker: WebSocket clients, and the Redis channel they share ----

struct client : std::enable_shared_from_this<client> {
  struct write_to {
    client* self;
    awaitable<error_code> operator()(const std::string& text) const {
      auto [ec, n] = co_await self->ws.async_write(asio::buffer(text), no_throw);
      co_return ec;
    }
  };

  explicit client(tcp::socket socket)
      : ws(std::move(socket)), messages(ws.get_executor(), write_to{this}) {
    ws.text(true);
  }
  void send(std::string text) { messages.push(std::move(text), shared_from_this()); }

  websocket::stream<beast::tcp_stream> ws;
  outbox<write_to> messages;
};

// What one worker shares between its connections.
struct hub {
  explicit hub(asio::any_io_executor ex) : publisher(ex), subscriber(ex) {}
  std::set<std::shared_ptr<client>> clients;
  redis_connection publisher, subscriber;
};

// A client's messages go to Redis, never straight to the local clients: every worker, this one
// included, hears them back from the channel, so all clients see one order.
awaitable<void> session(tcp::socket socket, hub& shared) {
  auto self = std::make_shared<client>(std::move(socket));
  auto [accept_ec] = co_await self->ws.async_accept(no_throw);
  if (accept_ec)
    co_return;
  shared.clients.insert(self);
  self->send(fmt::format("welcome from worker {}", ::getpid()));
  beast::flat_buffer buffer;
  for (;;) {
    auto [ec, n] = co_await self->ws.async_read(buffer, no_throw);
    if (ec)
      break;
    shared.publisher.command({"PUBLISH", "chat", beast::buffers_to_string(buffer.data())});
    buffer.consume(n);
  }
  shared.clients.erase(self);
}

// The channel's messages, to every local client. The reply to SUBSCRIBE came before.
awaitable<void> relay(hub& shared) {
  for (;;) {
    const auto reply = co_await shared.subscriber.next_reply();
    if (!reply)
      break;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        std::string_view(reply->element[0]->str) != "message")
      continue;
    const std::string text(reply->element[2]->str, reply->element[2]->len);
    for (const auto& c : shared.clients)
      c->send(text);
  }
}

// PUBLISH answers with a count of receivers; read and drop them.
awaitable<void> drop_replies(redis_connection& connection) {
  for (;;) {
    const auto reply = co_await connection.next_reply();
    if (!reply)
      break;
  }
}

awaitable<void> serve(tcp::endpoint at, std::string redis_path, hub& shared) {
  co_await shared.subscriber.connect(redis_path);
  co_await shared.publisher.connect(redis_path);
  shared.subscriber.command({"SUBSCRIBE", "chat"});
  const auto confirmed = co_await shared.subscriber.next_reply();
  if (!confirmed)
    throw std::runtime_error("redis: SUBSCRIBE was not confirmed");
  // Listening only now: a client that can connect is one whose messages every worker hears.
  const auto ex = co_await asio::this_coro::executor;
  auto listener = childproc::cluster::listen(ex, at);
  asio::co_spawn(listener.get_executor(), relay(shared), asio::detached);
  asio::co_spawn(listener.get_executor(), drop_replies(shared.publisher), asio::detached);
  for (;;) {
    auto [ec, socket] = co_await listener.async_accept(no_throw);
    if (ec)
      break; // the primary disconnected this worker
    asio::co_spawn(listener.get_executor(), session(std::move(socket), shared), asio::detached);
  }
  shared.subscriber.close();
  shared.publisher.close();
  for (const auto& c : shared.clients)
    c->ws.next_layer().close();
}

// A worker that cannot reach Redis says why and exits 1: the primary sees the exit.
int worker(const tcp::endpoint& at, const std::string& redis_path) {
  asio::io_context io;
  hub shared(io.get_executor());
  int status = 0;
  asio::co_spawn(io, serve(at, redis_path, shared), [&](std::exception_ptr error) {
    try {
      if (error)
        std::rethrow_exception(error);
    } catch (const std::exception& e) {
      fmt::print(stderr, "worker {}: {}\n", ::getpid(), e.what());
      status = 1;
      io.stop();
    }
  });
  io.run();
  return status;
}

// ---- the demonstration, in the primary ----

struct test_client {
  explicit test_client(asio::any_io_executor ex) : ws(ex) {}
  websocket::stream<beast::tcp_stream> ws;
  long worker_pid = 0;
};

awaitable<std::string> read_text(test_client& c) {
  beast::flat_buffer buffer;
  co_await c.ws.async_read(buffer, use_awaitable);
  std::string text = beast::buffers_to_string(buffer.data());
  co_return text;
}

awaitable<void> demonstrate(tcp::endpoint at, childproc::cluster& primary,
                            std::function<void()> finished) {
  const auto ex = co_await asio::this_coro::executor;
  std::vector<std::unique_ptr<test_client>> clients;
  std::map<long, int> per_worker;
  while (clients.size() < 64 &&
         (per_worker.size() < primary.workers().size() || clients.size() < 8)) {
    auto c = std::make_unique<test_client>(ex);
    co_await beast::get_lowest_layer(c->ws).async_connect(at, use_awaitable);
    co_await c->ws.async_handshake("127.0.0.1", "/", use_awaitable);
    const auto welcome = co_await read_text(*c);
    c->worker_pid = std::atol(welcome.substr(welcome.rfind(' ') + 1).c_str());
    ++per_worker[c->worker_pid];
    clients.push_back(std::move(c));
  }
  fmt::print("{} clients connected, on {} workers\n", clients.size(), per_worker.size());

  const std::string text = fmt::format("hello from a client of worker {}", clients[0]->worker_pid);
  co_await clients[0]->ws.async_write(asio::buffer(text), use_awaitable);
  std::set<long> reached;
  std::size_t received = 0;
  for (auto& c : clients) {
    const auto got = co_await read_text(*c);
    if (got == text) {
      ++received;
      reached.insert(c->worker_pid);
    }
  }
  fmt::print("\"{}\" reached {} of {} clients, on {} workers: {}\n", text, received, clients.size(),
             reached.size(),
             received == clients.size() && reached.size() == primary.workers().size());
  for (auto& c : clients)
    co_await c->ws.async_close(websocket::close_code::normal, use_awaitable);
  primary.async_shutdown([finished = std::move(finished)](error_code ec) {
    fmt::print("shutdown: {}\n", ec ? ec.message() : "every worker exited");
    finished();
  });
}

// redis-server on a private unix socket, no persistence; `ready` is called once it accepts.
childproc::child_process start_redis(asio::io_context& io, const std::string& path,
                                     std::function<void()> ready) {
  childproc::spawn_options options;
  options.stdio = {childproc::stdio::ignore, childproc::stdio::pipe, childproc::stdio::inherit};
  options.kill_on_parent_death = true; // no stray server if the demonstration fails
  auto redis = childproc::spawn(
      io, "redis-server", {"--port", "0", "--unixsocket", path, "--save", "", "--appendonly", "no"},
      options);
  redis.out().on_line([ready = std::move(ready)](std::string_view line) mutable {
    // Redis 7.0 logs "Ready to accept connections" with a TCP port, "The server is now ready
    // to accept connections at <path>" with a unix socket only.
    if (ready && line.find("eady to accept connections") != line.npos)
      std::exchange(ready, nullptr)();
  });
  return redis;
}

int demonstration() {
  char dir_template[] = "/tmp/socketio_cluster-XXXXXX";
  const std::string dir = ::mkdtemp(dir_template);
  const std::string redis_path = dir + "/redis.sock";
  asio::io_context io;
  const tcp::endpoint at(asio::ip::make_address("127.0.0.1"), 0);
  childproc::cluster_options options{.workers = 2,
                                     .args = std::vector<std::string>{"127.0.0.1", "0", redis_path},
                                     .scheduling = childproc::scheduling::reuse_port,
                                     .endpoint = at};
  childproc::cluster primary(io, options);
  std::size_t listening = 0;
  auto redis = start_redis(io, redis_path, [&] { primary.start(); });
  primary.on_listening([&](const childproc::cluster_worker&, const tcp::endpoint& where) {
    if (++listening == primary.workers().size())
      asio::co_spawn(io, demonstrate(where, primary, [&] { redis.kill(); }), asio::detached);
  });
  io.run(); // until redis-server has exited too
  ::unlink(redis_path.c_str());
  ::rmdir(dir.c_str());
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc == 4) {
    const tcp::endpoint at(asio::ip::make_address(argv[1]),
                           static_cast<unsigned short>(std::atoi(argv[2])));
    if (childproc::cluster::is_worker())
      return worker(at, argv[3]);
    asio::io_context io;
    childproc::cluster_options options{.endpoint = at}; // one worker per CPU, the same arguments
    childproc::cluster primary(io, options);
    primary.start();
    io.run();
    return 0;
  }
  return demonstration();
}
