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

#include <algorithm>
#include <atomic>
#include <chrono>
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
using steady = std::chrono::steady_clock;

using progress_handler = std::function<void(const message& update)>;

struct pending_run {
  std::unique_ptr<run_completion> done;
  std::uint64_t generation = 0; // the connection its XADD was sent on
  // Its entry id in the task stream, once the server answered its XADD (empty until then: the
  // task may not be in the stream).
  std::string entry;
  // run_options::on_progress, shared with the updates posted to the completion's executor.
  std::shared_ptr<progress_handler> on_progress;
};

struct remote_state : std::enable_shared_from_this<remote_state> {
  boost::asio::any_io_executor executor;
  remote_options options;
  std::string reply_stream;
  std::shared_ptr<redis_connection> commands, replies;
  std::error_code failure; // the pool's lasting error, once it failed for good
  std::string failure_text;
  std::error_code offline; // why the pool is disconnected, while it waits to connect again
  std::string offline_text;
  std::unordered_map<std::uint64_t, pending_run> in_flight;
  std::uint64_t next_id = 1;
  std::uint64_t generation = 0; // connections made so far
  std::string last_reply = "0-0";
  remote_stats counters;
  bool closed = false;
  std::unique_ptr<boost::asio::steady_timer> expiry_timer, reconnect_timer, held_deadline;
  bool renewing = false;             // a PEXPIRE is unanswered
  steady::time_point last_renewal{}; // when the last PEXPIRE that found the stream was sent
  std::chrono::milliseconds next_delay{};
  std::minstd_rand jitter{std::random_device{}()};

  void start();
  void connect();
  void probe_reply_stream();
  void read_replies();
  void renew_expiry();
  void arm_renewal();
  void request_expiry();
  void on_expiry_renewed(std::error_code ec, redisReply* reply, steady::time_point sent);
  void open_reply_stream();
  void on_replies(std::error_code ec, redisReply* reply);
  void on_connection_error(std::error_code ec, const std::string& text);
  void on_error_reply(const std::string& command, const std::string& text);
  void lose_connection(std::error_code ec, const std::string& text);
  void schedule_reconnect();
  void fail_held(std::uint64_t before, boost::system::error_code ec, const message& error);
  void deliver(const remote_wire::entry& e);
  void deliver_progress(pending_run& run, const std::string& kind, std::string data);
  void finish(std::uint64_t id, boost::system::error_code ec, message result);
  void cancel(std::uint64_t id);
  void fail_all(std::error_code ec, const std::string& text);
  void send(message task, run_options options, std::unique_ptr<run_completion> done);
  void on_task_added(std::uint64_t id, std::error_code ec, redisReply* reply);
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
  expiry_timer = std::make_unique<boost::asio::steady_timer>(executor);
  reconnect_timer = std::make_unique<boost::asio::steady_timer>(executor);
  held_deadline = std::make_unique<boost::asio::steady_timer>(executor);
  next_delay = options.reconnect_delay;
  connect();
  arm_renewal();
}

// The same sequence for the first connection and every later one: the commands below are the
// first in the pipeline, so the runs sent from now on come after the reply stream is made.
void remote_state::connect() {
  std::error_code ec;
  std::string why;
  const redis_credentials credentials{options.user, options.password};
  ++generation;
  commands = redis_connection::open(executor, options.server, credentials, ec, why);
  if (!ec)
    replies = redis_connection::open(executor, options.server, credentials, ec, why);
  if (ec) {
    if (commands)
      commands->close();
    commands.reset();
    offline.clear(); // a new reason, from this attempt
    return on_connection_error(ec, why);
  }
  offline.clear();
  // A connection that ends with nothing in flight (the server's idle timeout, CLIENT KILL) is
  // found out now, not by the next run's command.
  for (const auto& c : {commands, replies})
    c->on_end([weak = weak_from_this(), current = generation](std::error_code e,
                                                              const std::string& text) {
      if (auto self = weak.lock(); self && current == self->generation)
        self->on_connection_error(e, text);
    });
  // The group starts at the stream's beginning, so that tasks added before any agent ran are
  // read; BUSYGROUP (it exists) is the usual answer. Sent each time: a server that restarted
  // without persistence lost it.
  commands->command({"XGROUP", "CREATE", options.stream, options.group, "0", "MKSTREAM"},
                    [](std::error_code, redisReply*) {});
  probe_reply_stream();
  open_reply_stream();
  read_replies();
}

// Whether the reply stream outlived the time without a connection: when it is gone, the
// results of the runs sent on an earlier connection were dropped (agents write with
// NOMKSTREAM), and those runs fail. open_reply_stream() makes it again right after this.
void remote_state::probe_reply_stream() {
  const auto sent = steady::now();
  const std::uint64_t current = generation;
  commands->command(
      {"PEXPIRE", reply_stream, std::to_string(options.reply_expiry.count())},
      [weak = weak_from_this(), sent, current](std::error_code ec, redisReply* reply) {
        auto self = weak.lock();
        if (!self || self->closed || self->failure)
          return;
        if (ec)
          return self->on_connection_error(ec, self->commands->error_text());
        if (const auto text = remote_wire::error_text(reply); !text.empty())
          return self->on_error_reply("PEXPIRE " + self->reply_stream, text);
        self->held_deadline->cancel();
        self->next_delay = self->options.reconnect_delay;
        self->last_renewal = sent;
        if (current > 1)
          ++self->counters.reconnects;
        if (reply != nullptr && reply->type == REDIS_REPLY_INTEGER && reply->integer == 0)
          self->fail_held(current, make_error_code(remote_errc::reply_stream_lost), {});
      });
}

// The reply stream exists (empty) before the first task is sent: agents write results with
// NOMKSTREAM, so that a result arriving after destroy() (which deletes the stream) cannot
// create it again. A refusal (OOM, NOPERM) fails the pool: no result could reach it. XGROUP
// CREATE ... MKSTREAM makes it only when it is missing (BUSYGROUP: it is there): on a new
// connection it holds the results written while the pool was away, which must stay.
void remote_state::open_reply_stream() {
  commands->command({"XGROUP", "CREATE", reply_stream, "open", "$", "MKSTREAM"},
                    [weak = weak_from_this()](std::error_code ec, redisReply* reply) {
                      auto self = weak.lock();
                      if (!self || self->closed)
                        return;
                      if (ec)
                        return self->on_connection_error(ec, self->commands->error_text());
                      if (const auto text = remote_wire::error_text(reply);
                          !text.empty() && text.rfind("BUSYGROUP", 0) != 0)
                        self->on_error_reply("XGROUP CREATE " + self->reply_stream, text);
                    });
  request_expiry();
}

// A caller that dies leaves no stream behind: the server deletes it once it was not renewed
// for reply_expiry (XADD and XDEL keep a key's expiry). Nothing is sent while disconnected:
// the next connection's probe renews it.
void remote_state::renew_expiry() {
  if (!offline)
    request_expiry();
  arm_renewal();
}

void remote_state::arm_renewal() {
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
  commands->command(
      {"PEXPIRE", reply_stream, std::to_string(options.reply_expiry.count())},
      [weak = weak_from_this(), sent = steady::now()](std::error_code ec, redisReply* reply) {
        if (auto self = weak.lock(); self && !self->closed) {
          self->renewing = false;
          self->on_expiry_renewed(ec, reply, sent);
        }
      });
}

// PEXPIRE answers 0 when the stream is gone (it expired while this loop was stalled, or the
// server lost it): results sent meanwhile were dropped (NOMKSTREAM), so the runs in flight fail
// rather than wait for ever, and the stream is made again for the runs to come.
void remote_state::on_expiry_renewed(std::error_code ec, redisReply* reply,
                                     steady::time_point sent) {
  if (failure)
    return; // the stream could not be made (its XADD was refused): nothing to renew
  if (ec)
    return on_connection_error(ec, commands->error_text());
  // A refusal (NOPERM: the ACL lacks PEXPIRE) lasts: the pool fails. Other errors (BUSY,
  // LOADING, READONLY during a fail-over) pass: the next renewal tries again.
  if (const auto text = remote_wire::error_text(reply); !text.empty()) {
    if (text.rfind("NOPERM", 0) == 0)
      fail_all(make_error_code(remote_errc::server_error), "PEXPIRE: " + text);
    return;
  }
  if (reply == nullptr || reply->type != REDIS_REPLY_INTEGER || reply->integer != 0) {
    last_renewal = sent;
    return;
  }
  open_reply_stream();
  fail_held(generation + 1, make_error_code(remote_errc::reply_stream_lost), {});
}

// Fails the runs sent on a connection older than `before` (every run, for generation + 1),
// each with `error` as its message.
void remote_state::fail_held(std::uint64_t before, boost::system::error_code ec,
                             const message& error) {
  std::vector<std::unique_ptr<run_completion>> held;
  for (auto it = in_flight.begin(); it != in_flight.end();) {
    if (it->second.generation < before) {
      held.push_back(std::move(it->second.done));
      it = in_flight.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& done : held) {
    ++counters.failed;
    done->complete(ec, error);
  }
}

// An error reply where the pool needs an answer: one that passes (LOADING after a restart with
// persistence, BUSY, a replica during a fail-over) is a lost connection, tried again later; a
// refusal (NOPERM, OOM) fails the pool, as a new connection would meet it again.
void remote_state::on_error_reply(const std::string& command, const std::string& text) {
  if (remote_wire::is_transient(text))
    return on_connection_error(make_error_code(remote_errc::connection_lost),
                               command + ": " + text);
  fail_all(make_error_code(remote_errc::server_error), command + ": " + text);
}

// Refused credentials are final, and so is any loss when reconnection is off.
void remote_state::on_connection_error(std::error_code ec, const std::string& text) {
  if (closed || failure)
    return;
  if (ec == make_error_code(remote_errc::auth_failed) ||
      options.reconnect_delay == std::chrono::milliseconds::zero())
    return fail_all(ec, text);
  lose_connection(ec, text);
}

// Runs whose XADD was unanswered fail (the task may or may not be in the stream; if it is, its
// result counts as a stray reply); the others keep waiting: their results wait in the reply
// stream until it expires, reply_expiry after its last renewal, which bounds the wait.
void remote_state::lose_connection(std::error_code ec, const std::string& text) {
  if (offline)
    return; // the other connection's commands, failing as it closes below
  offline = ec;
  offline_text = text;
  for (auto& c : {commands, replies})
    if (c)
      c->close(); // their handlers run now, and come back above
  renewing = false;
  std::vector<std::uint64_t> unsent;
  for (const auto& [id, run] : in_flight)
    if (run.entry.empty())
      unsent.push_back(id);
  for (const auto id : unsent)
    finish(id, ec, error_message("RedisError", text));
  if (!in_flight.empty()) {
    held_deadline->expires_at(last_renewal + options.reply_expiry);
    held_deadline->async_wait([weak = weak_from_this()](boost::system::error_code e) {
      if (auto self = weak.lock(); self && !e && self->offline)
        self->fail_held(self->generation + 1, make_error_code(remote_errc::connection_lost),
                        error_message("RedisError", self->offline_text +
                                                        " (no connection before the reply "
                                                        "stream expired)"));
    });
  }
  schedule_reconnect();
}

void remote_state::schedule_reconnect() {
  const auto delay = next_delay;
  next_delay = std::min(next_delay * 2, options.max_reconnect_delay);
  const auto wait = std::chrono::milliseconds(
      std::uniform_int_distribution<std::int64_t>(delay.count() / 2, delay.count())(jitter));
  reconnect_timer->expires_after(wait);
  reconnect_timer->async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    if (auto self = weak.lock(); self && !ec && !self->closed && !self->failure)
      self->connect();
  });
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
    return on_connection_error(ec, replies->error_text());
  std::vector<remote_wire::entry> entries;
  if (!remote_wire::read_entries(reply, entries))
    return on_error_reply("XREAD " + reply_stream, remote_wire::error_text(reply));
  for (const auto& e : entries) {
    last_reply = e.id;
    deliver(e);
  }
  // Only this pool reads its stream: what it read goes, in one XTRIM from the stream's head
  // (an XDEL by id costs the server a search per id, several times more).
  if (!entries.empty())
    commands->command({"XTRIM", reply_stream, "MINID", remote_wire::next_id(last_reply)},
                      [](std::error_code, redisReply*) {});
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
    // A late progress message (its run was cancelled or failed here) is not a reply.
    if (status == nullptr || *status != remote_wire::progress_status)
      ++counters.stray_replies;
    return;
  }
  const std::uint64_t id = found->first;
  if (*status == remote_wire::progress_status)
    return deliver_progress(found->second, *kind, *data);
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

// Posted where the completion will be, so that it comes before it, as the local pool's updates
// do. An update too large for max_payload, or undecodable, is dropped: progress is advisory,
// and the run's own result decides how it ends.
void remote_state::deliver_progress(pending_run& run, const std::string& kind, std::string data) {
  if (!run.on_progress || data.size() > options.max_payload)
    return;
  try {
    boost::asio::post(run.done->executor(), [handler = run.on_progress,
                                             update = remote_wire::decode(kind, std::move(data))] {
      (*handler)(update);
    });
  } catch (const std::system_error&) {
  }
}

void remote_state::finish(std::uint64_t id, boost::system::error_code ec, message result) {
  const auto found = in_flight.find(id);
  if (found == in_flight.end())
    return;
  auto done = std::move(found->second.done);
  in_flight.erase(found);
  ++(ec ? counters.failed : counters.completed);
  done->complete(ec, std::move(result));
}

// The run completes here at once. Its entry is deleted from the task stream, so that no agent
// reads it later, even one that starts after the cancel (a deleted entry an agent already read
// stays pending: that agent runs it). The agents also hear of it on "<stream>:cancel" ("<reply
// stream> <id>"): the one running the task cancels its local run and writes no result.
void remote_state::cancel(std::uint64_t id) {
  const auto found = in_flight.find(id);
  if (found == in_flight.end())
    return; // completed meanwhile
  const std::string entry = found->second.entry;
  finish(id, boost::asio::error::operation_aborted, {});
  if (closed || failure || offline)
    return;
  if (!entry.empty())
    commands->command({"XDEL", options.stream, entry}, [](std::error_code, redisReply*) {});
  commands->command(
      {"PUBLISH", options.stream + ":cancel", reply_stream + ' ' + std::to_string(id)},
      [](std::error_code, redisReply*) {});
}

void remote_state::fail_all(std::error_code ec, const std::string& text) {
  if (!failure) {
    failure = ec;
    failure_text = text;
  }
  fail_held(generation + 1, ec, error_message("RedisError", text));
}

void remote_state::send(message task, run_options run, std::unique_ptr<run_completion> done) {
  if (closed)
    return done->complete(make_error_code(errc::pool_closed), {});
  if (failure)
    return done->complete(failure, error_message("RedisError", failure_text));
  if (offline)
    return done->complete(offline, error_message("RedisError", offline_text));
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
  std::vector<std::string> fields{"XADD",
                                  options.stream,
                                  "*",
                                  "id",
                                  std::to_string(id),
                                  "name",
                                  run.name,
                                  "reply",
                                  reply_stream,
                                  "kind",
                                  body.kind,
                                  "data",
                                  std::move(body.data),
                                  "timeout",
                                  std::to_string(run.timeout.count())};
  pending_run pending{std::move(done), generation, {}, nullptr};
  if (run.on_progress) {
    fields.insert(fields.end(), {"progress", "1"});
    pending.on_progress = std::make_shared<progress_handler>(std::move(run.on_progress));
  }
  in_flight.emplace(id, std::move(pending));
  commands->command(fields, [weak = weak_from_this(), id](std::error_code ec, redisReply* reply) {
    if (auto self = weak.lock(); self && !self->closed)
      self->on_task_added(id, ec, reply);
  });
}

// The XADD's answer: the entry id (what a cancel deletes), or why the task is not in the stream.
void remote_state::on_task_added(std::uint64_t id, std::error_code ec, redisReply* reply) {
  if (ec)
    return on_connection_error(ec, commands->error_text());
  if (const auto text = remote_wire::error_text(reply); !text.empty())
    return finish(id, make_error_code(remote_errc::server_error),
                  error_message("RedisError", text));
  if (const auto run = in_flight.find(id);
      run != in_flight.end() && reply != nullptr && reply->type == REDIS_REPLY_STRING)
    run->second.entry.assign(reply->str, reply->len);
}

void remote_state::destroy() {
  if (closed)
    return;
  closed = true;
  for (auto* timer : {expiry_timer.get(), reconnect_timer.get(), held_deadline.get()})
    if (timer)
      timer->cancel();
  auto pending = std::move(in_flight);
  in_flight.clear();
  for (auto& [id, run] : pending)
    run.done->complete(make_error_code(errc::pool_closed), {});
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
  // Over an hour between attempts, a pool would not notice its server was back for longer than
  // any outage worth waiting out; the doubling would overflow far beyond it.
  if (options.reconnect_delay < std::chrono::milliseconds::zero() ||
      options.max_reconnect_delay < options.reconnect_delay ||
      options.max_reconnect_delay > std::chrono::hours(1))
    throw std::system_error(make_error_code(errc::invalid_argument),
                            "remote_pool: remote_options::reconnect_delay is negative or larger "
                            "than max_reconnect_delay, or max_reconnect_delay is over an hour");
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
