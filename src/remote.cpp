// remote_pool: tasks XADDed to a Redis stream, results read back from the pool's own reply
// stream with a blocking XREAD on a second connection.
#include "remote_redis.hpp"
#include "remote_wire.hpp"

#include <childproc/error.hpp>
#include <childproc/remote.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>
#include <boost/system/error_category.hpp>

#include <hiredis/hiredis.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <unistd.h>
#include <unordered_map>

namespace childproc {
inline namespace v1 {
namespace {

class remote_category_impl final : public boost::system::error_category {
public:
  constexpr remote_category_impl() noexcept
      : boost::system::error_category(0x6370726d6f746531ULL) {}
  const char* name() const noexcept override { return "childproc.remote"; }
  std::string message(int value) const override {
    switch (static_cast<remote_errc>(value)) {
    case remote_errc::server_unreachable:
      return "the Redis server cannot be reached";
    case remote_errc::connection_lost:
      return "the connection to the Redis server was lost";
    case remote_errc::server_error:
      return "the Redis server answered with an error";
    case remote_errc::payload_too_large:
      return "the payload is larger than max_payload";
    case remote_errc::auth_failed:
      return "the Redis server refused the credentials";
    case remote_errc::dead_lettered:
      return "the task was delivered max_attempts times without a result (dead-lettered)";
    case remote_errc::reply_stream_lost:
      return "the reply stream was gone from the Redis server with the task in flight";
    }
    return "unknown remote pool error";
  }
};

} // namespace

const std::error_category& remote_category() noexcept {
  static const remote_category_impl instance;
  return instance; // the std view; converts back to `instance` in a boost error_code
}

} // namespace v1

namespace detail {

using run_completion = completion<boost::system::error_code, message>;

struct remote_state : std::enable_shared_from_this<remote_state> {
  boost::asio::any_io_executor executor;
  remote_options options;
  std::string reply_stream;
  std::shared_ptr<redis_connection> commands, replies;
  std::error_code failure; // the connections' error, once they failed
  std::string failure_text;
  std::unordered_map<std::uint64_t, std::unique_ptr<run_completion>> in_flight;
  std::uint64_t next_id = 1;
  std::string last_reply = "0-0";
  remote_stats counters;
  bool closed = false;
  std::unique_ptr<boost::asio::steady_timer> expiry_timer;
  bool renewing = false; // a PEXPIRE is unanswered

  void start();
  void read_replies();
  void renew_expiry();
  void request_expiry();
  void on_expiry_renewed(std::error_code ec, redisReply* reply);
  void open_reply_stream();
  void on_replies(std::error_code ec, redisReply* reply);
  void deliver(const remote_wire::entry& e);
  void finish(std::uint64_t id, boost::system::error_code ec, message result);
  void cancel(std::uint64_t id);
  void fail_all(std::error_code ec, const std::string& text);
  void send(message task, run_options options, std::unique_ptr<run_completion> done);
  void destroy();
};

namespace {

message error_message(std::string_view name, const std::string& text) {
  return message(boost::json::value{{"name", name}, {"message", text}});
}

// Host name and pid alone collide between containers that share a host name and all run as
// pid 1: 64 random bits drawn once make the name unique. The pid is read at each call: a child
// forked after a first pool shares the bits and the counter, never the pid.
std::string unique_reply_stream() {
  static const std::string random_tag = [] {
    std::random_device entropy;
    const std::uint64_t bits = (std::uint64_t{entropy()} << 32) ^ entropy();
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(bits));
    return std::string(hex);
  }();
  static std::atomic<std::uint64_t> counter{0};
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return "childproc:reply:" + std::string(host) + ':' + std::to_string(::getpid()) + ':' +
         random_tag + ':' + std::to_string(++counter);
}

} // namespace

void remote_state::start() {
  std::error_code ec;
  std::string why;
  const redis_credentials credentials{options.user, options.password};
  commands = redis_connection::open(executor, options.server, credentials, ec, why);
  if (!ec)
    replies = redis_connection::open(executor, options.server, credentials, ec, why);
  if (ec) {
    failure = ec;
    failure_text = why;
    return;
  }
  // The group starts at the stream's beginning, so that tasks added before any agent ran are
  // read; BUSYGROUP (it exists) is the usual answer.
  commands->command({"XGROUP", "CREATE", options.stream, options.group, "0", "MKSTREAM"},
                    [](std::error_code, redisReply*) {});
  open_reply_stream();
  expiry_timer = std::make_unique<boost::asio::steady_timer>(executor);
  renew_expiry();
  read_replies();
}

// The reply stream exists (empty) before the first task is sent: agents write results with
// NOMKSTREAM, so that a result arriving after destroy() (which deletes the stream) cannot
// create it again. A refusal (OOM, NOPERM) fails the pool: no result could reach it.
void remote_state::open_reply_stream() {
  commands->command({"XADD", reply_stream, "MAXLEN", "0", "*", "open", "1"},
                    [weak = weak_from_this()](std::error_code ec, redisReply* reply) {
                      auto self = weak.lock();
                      if (!self || self->closed)
                        return;
                      if (ec)
                        return self->fail_all(ec, self->commands->error_text());
                      if (const auto text = remote_wire::error_text(reply); !text.empty())
                        self->fail_all(make_error_code(remote_errc::server_error),
                                       "XADD " + self->reply_stream + ": " + text);
                    });
  request_expiry();
}

// A caller that dies leaves no stream behind: the server deletes it once it was not renewed
// for reply_expiry (XADD and XDEL keep a key's expiry).
void remote_state::renew_expiry() {
  request_expiry();
  expiry_timer->expires_after(options.reply_expiry / 3);
  expiry_timer->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (auto self = weak.lock(); self && !ec && !self->closed && !self->failure)
      self->renew_expiry();
  });
}

// One renewal at a time: two answering 0 would make the stream twice and fail runs sent to the
// stream made by the first.
void remote_state::request_expiry() {
  if (renewing)
    return;
  renewing = true;
  commands->command({"PEXPIRE", reply_stream, std::to_string(options.reply_expiry.count())},
                    [weak = weak_from_this()](std::error_code ec, redisReply* reply) {
                      if (auto self = weak.lock(); self && !self->closed) {
                        self->renewing = false;
                        self->on_expiry_renewed(ec, reply);
                      }
                    });
}

// PEXPIRE answers 0 when the stream is gone (it expired while this loop was stalled, or the
// server lost it): results sent meanwhile were dropped (NOMKSTREAM), so the runs in flight fail
// rather than wait for ever, and the stream is made again for the runs to come.
void remote_state::on_expiry_renewed(std::error_code ec, redisReply* reply) {
  if (failure)
    return; // the stream could not be made (its XADD was refused): nothing to renew
  if (ec)
    return fail_all(ec, commands->error_text());
  // A refusal (NOPERM: the ACL lacks PEXPIRE) lasts: the pool fails. Other errors (BUSY,
  // LOADING, READONLY during a fail-over) pass: the next renewal tries again.
  if (const auto text = remote_wire::error_text(reply); !text.empty()) {
    if (text.rfind("NOPERM", 0) == 0)
      fail_all(make_error_code(remote_errc::server_error), "PEXPIRE: " + text);
    return;
  }
  if (reply == nullptr || reply->type != REDIS_REPLY_INTEGER || reply->integer != 0)
    return;
  open_reply_stream();
  auto lost = std::move(in_flight);
  in_flight.clear();
  for (auto& [id, done] : lost) {
    ++counters.failed;
    done->complete(make_error_code(remote_errc::reply_stream_lost), {});
  }
}

void remote_state::read_replies() {
  replies->command({"XREAD", "COUNT", "1024", "BLOCK", "0", "STREAMS", reply_stream, last_reply},
                   [weak = weak_from_this()](std::error_code ec, redisReply* reply) {
                     if (auto self = weak.lock(); self && !self->closed)
                       self->on_replies(ec, reply);
                   });
}

void remote_state::on_replies(std::error_code ec, redisReply* reply) {
  if (ec)
    return fail_all(ec, replies->error_text());
  std::vector<remote_wire::entry> entries;
  if (!remote_wire::read_entries(reply, entries)) {
    const auto text = remote_wire::error_text(reply);
    return fail_all(make_error_code(remote_errc::server_error), text);
  }
  std::vector<std::string> trim{"XDEL", reply_stream};
  for (const auto& e : entries) {
    last_reply = e.id;
    trim.push_back(e.id);
    deliver(e);
  }
  if (entries.size() > 0)
    commands->command(trim, [](std::error_code, redisReply*) {});
  read_replies();
}

void remote_state::deliver(const remote_wire::entry& e) {
  const std::string* id_text = e.find("id");
  const std::string* status = e.find("status");
  const std::string* kind = e.find("kind");
  const std::string* data = e.find("data");
  const auto found =
      id_text ? in_flight.find(std::strtoull(id_text->c_str(), nullptr, 10)) : in_flight.end();
  if (found == in_flight.end() || status == nullptr || kind == nullptr || data == nullptr) {
    ++counters.stray_replies;
    return;
  }
  const std::uint64_t id = found->first;
  // An agent's --max-payload is its own: it may answer more than this pool takes.
  if (data->size() > options.max_payload)
    return finish(id, make_error_code(remote_errc::payload_too_large), {});
  message result;
  try {
    result = remote_wire::decode(*kind, *data);
  } catch (const std::system_error&) {
    return finish(id, make_error_code(errc::malformed_message), {});
  }
  if (*status == "ok")
    return finish(id, {}, std::move(result));
  const std::string* category = e.find("category");
  const std::string* code = e.find("code");
  finish(id, remote_wire::decode_error(category ? *category : "childproc", code ? *code : ""),
         std::move(result));
}

void remote_state::finish(std::uint64_t id, boost::system::error_code ec, message result) {
  const auto found = in_flight.find(id);
  if (found == in_flight.end())
    return;
  auto done = std::move(found->second);
  in_flight.erase(found);
  ++(ec ? counters.failed : counters.completed);
  done->complete(ec, std::move(result));
}

// The run completes here at once; the agents hear of it on "<stream>:cancel" ("<reply stream>
// <id>"): the one running the task cancels its local run and writes no result, and one that
// reads it later acknowledges it without running it.
void remote_state::cancel(std::uint64_t id) {
  if (in_flight.find(id) == in_flight.end())
    return; // completed meanwhile
  finish(id, boost::asio::error::operation_aborted, {});
  if (!closed && !failure)
    commands->command(
        {"PUBLISH", options.stream + ":cancel", reply_stream + ' ' + std::to_string(id)},
        [](std::error_code, redisReply*) {});
}

void remote_state::fail_all(std::error_code ec, const std::string& text) {
  if (!failure) {
    failure = ec;
    failure_text = text;
  }
  auto pending = std::move(in_flight);
  in_flight.clear();
  for (auto& [id, done] : pending) {
    ++counters.failed;
    done->complete(ec, error_message("RedisError", text));
  }
}

void remote_state::send(message task, run_options run, std::unique_ptr<run_completion> done) {
  if (closed)
    return done->complete(make_error_code(errc::pool_closed), {});
  if (failure)
    return done->complete(failure, error_message("RedisError", failure_text));
  auto body = remote_wire::encode(task);
  if (body.data.size() > options.max_payload)
    return done->complete(make_error_code(remote_errc::payload_too_large), {});
  const std::uint64_t id = next_id++;
  if (auto slot = done->cancellation_slot(); slot.is_connected())
    // Posted: finishing clears the slot, which would destroy this handler while it runs.
    slot.assign([weak = weak_from_this(), ex = executor, id](boost::asio::cancellation_type) {
      boost::asio::post(ex, [weak, id] {
        if (auto self = weak.lock())
          self->cancel(id);
      });
    });
  in_flight.emplace(id, std::move(done));
  commands->command({"XADD", options.stream, "*", "id", std::to_string(id), "name", run.name,
                     "reply", reply_stream, "kind", body.kind, "data", std::move(body.data),
                     "timeout", std::to_string(run.timeout.count())},
                    [weak = weak_from_this(), id](std::error_code ec, redisReply* reply) {
                      auto self = weak.lock();
                      if (!self || self->closed)
                        return;
                      if (ec)
                        return self->fail_all(ec, self->commands->error_text());
                      if (const auto text = remote_wire::error_text(reply); !text.empty())
                        self->finish(id, make_error_code(remote_errc::server_error),
                                     error_message("RedisError", text));
                    });
}

void remote_state::destroy() {
  if (closed)
    return;
  closed = true;
  if (expiry_timer)
    expiry_timer->cancel();
  auto pending = std::move(in_flight);
  in_flight.clear();
  for (auto& [id, done] : pending)
    done->complete(make_error_code(errc::pool_closed), {});
  if (replies)
    replies->close();
  if (commands) {
    commands->command({"DEL", reply_stream}, [](std::error_code, redisReply*) {});
    commands->disconnect(); // once the DEL is answered
  }
}

} // namespace detail

inline namespace v1 {

remote_pool::remote_pool(const boost::asio::any_io_executor& ex, remote_options options)
    : state_(std::make_shared<detail::remote_state>()) {
  if (options.server.empty())
    throw std::system_error(make_error_code(errc::invalid_argument),
                            "remote_pool: remote_options::server is empty");
  // Under a second, a loop busy for a moment loses the stream; a huge value overflows the
  // timer's nanoseconds, and over a day a dead caller's stream would stay too long to matter.
  if (options.reply_expiry < std::chrono::seconds(1) ||
      options.reply_expiry > std::chrono::hours(24))
    throw std::system_error(make_error_code(errc::invalid_argument),
                            "remote_pool: remote_options::reply_expiry is outside 1 s .. 24 h");
  state_->executor = ex;
  state_->options = std::move(options);
  state_->reply_stream = detail::unique_reply_stream();
  state_->start();
}

remote_pool::remote_pool(remote_pool&&) noexcept = default;
remote_pool& remote_pool::operator=(remote_pool&& other) noexcept {
  if (this != &other) {
    destroy();
    state_ = std::move(other.state_);
  }
  return *this;
}
remote_pool::~remote_pool() {
  destroy();
}

void remote_pool::destroy() {
  if (state_)
    state_->destroy();
}

void remote_pool::start_run(message task, run_options options,
                            std::unique_ptr<detail::run_completion> done) {
  state_->send(std::move(task), std::move(options), std::move(done));
}

remote_stats remote_pool::stats() const {
  remote_stats s = state_->counters;
  s.in_flight = state_->in_flight.size();
  return s;
}

const std::string& remote_pool::reply_stream() const noexcept {
  return state_->reply_stream;
}
boost::asio::any_io_executor remote_pool::executor() const noexcept {
  return state_->executor;
}

} // namespace v1
} // namespace childproc
