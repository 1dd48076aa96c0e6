// childproc-agent: runs a remote pool's tasks on this host. It reads the task stream with a
// consumer group, never more entries than its local pool has free slots, runs each in the local
// childproc::pool (the worker program it was started with: tasks are data, never commands),
// writes the result to the caller's reply stream and only then acknowledges the entry.
//
//   childproc-agent --server PATH|HOST:PORT [--stream S] [--group G] [--consumer C]
//                   [--workers N] [--concurrency K] [--max-payload BYTES] [--claim-idle MS]
//                   [--max-attempts N] [--dead-letter-max N] [--log-tasks 1] [--user NAME]
//                   [--password-file PATH] -- PROGRAM [ARGS...]
//
// The Redis password comes from the file (its first line) or from the environment variable
// CHILDPROC_REDIS_PASSWORD, never from the command line (which `ps` shows to every user); with
// --user it is an ACL user's. Refused credentials: a message naming them, and exit status 69.
//
// Entries another agent took and has not acknowledged for --claim-idle ms (it died) are claimed
// with XAUTOCLAIM; one delivered more than --max-attempts times goes to "<stream>:dead" and its
// caller gets remote_errc::dead_lettered; that stream keeps the last --dead-letter-max entries
// (10 000 by default), so a task that always kills its agent cannot fill the server's memory.
// The entries this agent runs are re-claimed every claim-idle / 2 (XCLAIM JUSTID), so that a
// long task is never taken from a live agent.
//
// It prints "agent <consumer>: ready" once connected. SIGTERM or SIGINT: stops reading, lets the
// running tasks finish, closes the pool and exits 0, printing "agent <consumer>: <n> tasks" on
// stdout.
#include "../remote_redis.hpp"
#include "../remote_wire.hpp"

#include <childproc/error.hpp>
#include <childproc/pool.hpp>
#include <childproc/remote.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/value.hpp>

#include <hiredis/hiredis.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

using childproc::detail::redis_connection;
namespace wire = childproc::detail::remote_wire;

struct agent_options {
  std::string server;
  std::string stream = "childproc:tasks";
  std::string group = "childproc";
  std::string consumer;
  std::size_t workers = 2;
  std::size_t concurrency = 1;
  std::size_t max_payload = 64 * 1024 * 1024;
  std::chrono::milliseconds claim_idle{30000};
  std::size_t max_attempts = 5;
  std::size_t dead_letter_max = 10000;
  bool log_tasks = false;
  childproc::detail::redis_credentials credentials;
  std::string program;
  std::vector<std::string> args;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "childproc-agent: " << why
            << "\nusage: childproc-agent --server PATH|HOST:PORT [--stream S] [--group G] "
               "[--consumer C] [--workers N] [--concurrency K] [--max-payload BYTES] "
               "[--claim-idle MS] [--max-attempts N] [--dead-letter-max N] [--log-tasks 1] "
               "[--user NAME] [--password-file PATH] -- PROGRAM [ARGS...]\n"
               "(the password: the file's first line, or $CHILDPROC_REDIS_PASSWORD)\n";
  std::exit(64);
}

std::size_t count_of(const std::string& text, const std::string& what) {
  char* end = nullptr;
  const unsigned long long n = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || n == 0)
    usage(what + " must be a positive number");
  return static_cast<std::size_t>(n);
}

// The first line of `path` (the password file), without its line end.
std::string first_line_of(const std::string& path) {
  std::ifstream file(path);
  std::string line;
  if (!file || !std::getline(file, line))
    usage("cannot read the password file " + path);
  if (!line.empty() && line.back() == '\r')
    line.pop_back();
  // An empty first line is a mistake (a file truncated or not written yet), never "no password":
  // falling back to the environment or to no AUTH would hide it.
  if (line.empty())
    usage("the password file " + path + " has an empty first line");
  return line;
}

agent_options parse(int argc, char** argv) {
  agent_options o;
  int i = 1;
  for (; i < argc && std::string(argv[i]) != "--"; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc)
      usage(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--server")
      o.server = value;
    else if (flag == "--stream")
      o.stream = value;
    else if (flag == "--group")
      o.group = value;
    else if (flag == "--consumer")
      o.consumer = value;
    else if (flag == "--workers")
      o.workers = count_of(value, flag);
    else if (flag == "--concurrency")
      o.concurrency = count_of(value, flag);
    else if (flag == "--max-payload")
      o.max_payload = count_of(value, flag);
    else if (flag == "--claim-idle")
      o.claim_idle = std::chrono::milliseconds(count_of(value, flag));
    else if (flag == "--max-attempts")
      o.max_attempts = count_of(value, flag);
    else if (flag == "--dead-letter-max")
      o.dead_letter_max = count_of(value, flag);
    else if (flag == "--log-tasks")
      o.log_tasks = value == "1";
    else if (flag == "--user")
      o.credentials.user = value;
    else if (flag == "--password-file")
      o.credentials.password = first_line_of(value);
    else
      usage("unknown option " + flag);
  }
  if (o.server.empty())
    usage("--server is required");
  // The workers (and whatever they start) inherit the agent's environment, and could read
  // /proc/<agent>/environ, which shows the strings the process started with: the value is
  // zeroed where it lies, then the variable removed.
  if (char* password = std::getenv("CHILDPROC_REDIS_PASSWORD"); password != nullptr) {
    if (o.credentials.password.empty())
      o.credentials.password = password;
    ::explicit_bzero(password, std::strlen(password));
    ::unsetenv("CHILDPROC_REDIS_PASSWORD");
  }
  if (i + 1 >= argc)
    usage("the worker program is missing (after --)");
  o.program = argv[i + 1];
  o.args.assign(argv + i + 2, argv + argc);
  if (o.consumer.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    o.consumer = std::string(host) + ':' + std::to_string(::getpid());
  }
  return o;
}

class agent {
public:
  agent(boost::asio::io_context& io, agent_options o)
      : io_(io), options_(std::move(o)), capacity_(options_.workers * options_.concurrency),
        pool_(io, childproc::pool_options{.program = options_.program,
                                          .args = options_.args,
                                          .min_workers = options_.workers,
                                          .max_workers = options_.workers,
                                          .concurrent_tasks_per_worker = options_.concurrency}),
        signals_(io, SIGTERM, SIGINT), claim_timer_(io), trim_timer_(io) {}

  int run() {
    std::error_code ec;
    std::string why;
    reader_ =
        redis_connection::open(io_.get_executor(), options_.server, options_.credentials, ec, why);
    if (!ec)
      writer_ = redis_connection::open(io_.get_executor(), options_.server, options_.credentials,
                                       ec, why);
    if (!ec)
      control_ = redis_connection::open(io_.get_executor(), options_.server, options_.credentials,
                                        ec, why);
    if (ec) {
      std::cerr << "childproc-agent: " << ec.message() << ": " << why << '\n';
      return 69;
    }
    // The group starts at the stream's beginning (tasks added before any agent ran are read);
    // BUSYGROUP (another agent or the caller made it) is the usual answer.
    writer_->command({"XGROUP", "CREATE", options_.stream, options_.group, "0", "MKSTREAM"},
                     [this](std::error_code ec, redisReply*) {
                       if (ec == childproc::remote_errc::auth_failed)
                         return fail(ec.message() + ": " + writer_->error_text() +
                                     " (the credentials: --user, and --password-file or "
                                     "CHILDPROC_REDIS_PASSWORD)");
                       if (ec)
                         return fail(ec.message() + ": " + writer_->error_text());
                       watch_cancellations();
                       std::cout << "agent " << options_.consumer << ": ready" << std::endl;
                       read_more(); // the group exists now
                       claim_later();
                     });
    signals_.async_wait([this](boost::system::error_code ec, int) {
      if (!ec)
        stop();
    });
    io_.run();
    return status_;
  }

private:
  // The read and the claim take free slots, so they never overlap: each asks for what is free
  // when it starts (a claim that comes during a read waits for it, at most its BLOCK time).
  void read_more() {
    if (claim_wanted_ && !stopping_)
      return claim_idle_entries();
    if (reading_ || claiming_ || stopping_ || in_flight_ >= capacity_)
      return;
    reading_ = true;
    reader_->command({"XREADGROUP", "GROUP", options_.group, options_.consumer, "COUNT",
                      std::to_string(capacity_ - in_flight_), "BLOCK", "1000", "STREAMS",
                      options_.stream, ">"},
                     [this](std::error_code ec, redisReply* reply) { on_entries(ec, reply); });
  }

  void on_entries(std::error_code ec, redisReply* reply) {
    reading_ = false;
    auto& entries = read_entries_; // its buffer kept: see redis_connection's request_
    entries.clear();
    if (ec || !wire::read_entries(reply, entries))
      return stopping_
                 ? finish_if_idle()
                 : fail(ec ? ec.message() + ": " + reader_->error_text() : wire::error_text(reply));
    for (auto& e : entries) // delivered to this consumer: run even while stopping
      start(std::move(e));
    if (stopping_)
      return finish_if_idle();
    read_more();
  }

  // Callers publish "<reply stream> <task id>" on "<stream>:cancel" when a run is cancelled.
  void watch_cancellations() {
    control_->subscribe(options_.stream + ":cancel", [this](std::error_code ec, redisReply* r) {
      // A refusal (NOPERM: the ACL user lacks the channel) ends the connection too; its text
      // and the channel's name say what to grant.
      if (ec)
        return fail("the cancellation channel " + options_.stream + ":cancel: " + ec.message() +
                    ": " + control_->error_text());
      if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
          r->element[2]->type == REDIS_REPLY_STRING)
        cancel(std::string(r->element[2]->str, r->element[2]->len));
    });
  }

  // Cancels the local runs of that task (every entry that carries it: a caller may have added
  // it twice), or remembers the cancel for when the task is read.
  void cancel(const std::string& key) {
    bool found = false;
    for (auto& [entry, r] : running_) {
      if (r->key != key)
        continue;
      if (options_.log_tasks)
        std::cout << "agent " << options_.consumer << ": cancelled " << entry << std::endl;
      found = true;
      r->cancelled = true;
      r->signal.emit(boost::asio::cancellation_type::terminal); // its completion is posted
    }
    if (found)
      return;
    if (cancelled_.insert(key).second)
      cancel_order_.push_back(key);
    if (cancel_order_.size() > 4096) { // bounded: a cancel is only useful for a short while
      cancelled_.erase(cancel_order_.front());
      cancel_order_.pop_front();
    }
  }

  // Every claim-idle / 2: keep this agent's entries claimed, and claim those of dead agents.
  void claim_later() {
    claim_timer_.expires_after(options_.claim_idle / 2);
    claim_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping_)
        return;
      refresh_claims();
      claim_idle_entries();
      claim_later();
    });
  }

  void refresh_claims() {
    if (held_.empty())
      return;
    std::vector<std::string> args{"XCLAIM", options_.stream, options_.group, options_.consumer,
                                  "0"};
    args.insert(args.end(), held_.begin(), held_.end());
    args.push_back("JUSTID");
    writer_->command(args, [](std::error_code, redisReply*) {});
  }

  void claim_idle_entries() {
    // Kept when it cannot run now: taken when the read ends or a slot frees (read_more), so a
    // steady backlog cannot starve a dead agent's entries.
    claim_wanted_ = reading_ || in_flight_ >= capacity_;
    if (reading_ || claiming_ || stopping_ || in_flight_ >= capacity_)
      return;
    claiming_ = true;
    writer_->command({"XAUTOCLAIM", options_.stream, options_.group, options_.consumer,
                      std::to_string(options_.claim_idle.count()), claim_cursor_, "COUNT",
                      std::to_string(capacity_ - in_flight_)},
                     [this](std::error_code ec, redisReply* reply) { on_claimed(ec, reply); });
  }

  void on_claimed(std::error_code ec, redisReply* reply) {
    claiming_ = false;
    std::vector<wire::entry> entries;
    if (ec || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        !wire::read_entry_list(reply->element[1], entries))
      return fail("XAUTOCLAIM: " + (ec ? ec.message() : wire::error_text(reply)));
    // Redis scans at most COUNT x 10 pending entries per call: the next call goes on from
    // where this one stopped (0-0 once the scan went round), or live agents' older entries
    // would hide a dead agent's for as long as they run.
    claim_cursor_.assign(reply->element[0]->str, reply->element[0]->len);
    for (auto& e : entries)
      if (!held_.contains(e.id)) // one this agent runs (or answers) already: it runs once
        check_attempts(std::move(e));
    if (stopping_)
      return finish_if_idle();
    read_more();
  }

  // XAUTOCLAIM counted this delivery: past max_attempts the entry is dead-lettered.
  void check_attempts(wire::entry e) {
    ++in_flight_;                // its slot, while the count is read
    const std::string id = e.id; // before the lambda takes `e`
    writer_->command({"XPENDING", options_.stream, options_.group, id, id, "1"},
                     [this, e = std::move(e)](std::error_code ec, redisReply* reply) mutable {
                       --in_flight_;
                       if (ec)
                         return fail("XPENDING: " + ec.message());
                       long long deliveries = 0;
                       if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1 &&
                           reply->element[0]->type == REDIS_REPLY_ARRAY &&
                           reply->element[0]->elements == 4)
                         deliveries = reply->element[0]->element[3]->integer;
                       if (deliveries > static_cast<long long>(options_.max_attempts))
                         dead_letter(std::move(e), deliveries);
                       else
                         start(std::move(e));
                       if (stopping_)
                         return finish_if_idle();
                       read_more();
                     });
  }

  void dead_letter(wire::entry e, long long deliveries) {
    const std::string* reply = e.find("reply");
    const std::string* id = e.find("id");
    std::vector<std::string> args{"XADD",
                                  options_.stream + ":dead",
                                  "MAXLEN",
                                  std::to_string(options_.dead_letter_max),
                                  "*",
                                  "entry",
                                  e.id,
                                  "deliveries",
                                  std::to_string(deliveries)};
    for (auto& [key, value] : e.fields)
      args.insert(args.end(), {key, value});
    writer_->command(args, [](std::error_code, redisReply*) {});
    if (!reply || !id)
      return acknowledge(e.id);
    const std::string why =
        "delivered " + std::to_string(deliveries) + " times without a result (max attempts " +
        std::to_string(options_.max_attempts) + "); moved to " + options_.stream + ":dead";
    answer(e.id, *reply, *id, make_error_code(childproc::remote_errc::dead_lettered),
           childproc::message(boost::json::value{{"name", "DeadLetter"}, {"message", why}}));
  }

  void start(wire::entry e) {
    const std::string* reply = e.find("reply");
    const std::string* id = e.find("id");
    const std::string* kind = e.find("kind");
    const std::string* data = e.find("data");
    if (!reply || !id || !kind || !data)
      return acknowledge(e.id); // not a task: nobody waits for it
    std::optional<childproc::message> task;
    boost::system::error_code refused;
    if (data->size() > options_.max_payload)
      refused = make_error_code(childproc::remote_errc::payload_too_large);
    else
      try {
        task = wire::decode(*kind, *data);
      } catch (const std::system_error&) {
        refused = make_error_code(childproc::errc::malformed_message);
      }
    if (!task)
      return answer(e.id, *reply, *id, refused, {});
    const std::string key = *reply + ' ' + *id;
    if (cancelled_.erase(key) > 0)
      return acknowledge(e.id); // cancelled before it was read: nobody waits for it
    childproc::run_options run;
    if (const std::string* name = e.find("name"))
      run.name = *name;
    if (const std::string* timeout = e.find("timeout"))
      run.timeout = std::chrono::milliseconds(std::strtoll(timeout->c_str(), nullptr, 10));
    if (const std::string* progress = e.find("progress"); progress && *progress == "1")
      run.on_progress = [this, entry = e.id, reply_stream = *reply,
                         task_id = *id](const childproc::message& update) {
        send_progress(entry, reply_stream, task_id, update);
      };
    ++in_flight_;
    held_.insert(e.id);
    if (options_.log_tasks)
      std::cout << "agent " << options_.consumer << ": task " << e.id << std::endl;
    // Its own record: the run's cancellation slot lives in it until the run completes.
    auto& r = *running_.emplace(e.id, std::make_unique<running>(key)).first->second;
    pool_.async_run(std::move(*task), std::move(run),
                    boost::asio::bind_cancellation_slot(
                        r.signal.slot(), [this, entry = e.id, reply_stream = *reply, task_id = *id](
                                             boost::system::error_code ec, childproc::message m) {
                          finished(entry, reply_stream, task_id, ec, std::move(m));
                        }));
  }

  // A cancelled task's caller forgot it: no result, only the acknowledgement.
  void finished(const std::string& entry, const std::string& reply_stream,
                const std::string& task_id, boost::system::error_code ec,
                childproc::message result) {
    bool cancelled = false;
    if (const auto found = running_.find(entry); found != running_.end()) {
      cancelled = found->second->cancelled;
      running_.erase(found);
    }
    --in_flight_;
    ++completed_;
    if (cancelled)
      acknowledge(entry);
    else
      answer(entry, reply_stream, task_id, ec, std::move(result));
    if (stopping_)
      return finish_if_idle();
    read_more();
  }

  // Written on the writer connection, as the result will be: the caller reads them in order.
  // Dropped when the caller forgot the task (cancelled) or when too large: progress is advisory.
  void send_progress(const std::string& entry, const std::string& reply_stream,
                     const std::string& task_id, const childproc::message& update) {
    const auto found = running_.find(entry);
    if (found == running_.end() || found->second->cancelled)
      return;
    auto body = wire::encode(update);
    if (body.data.size() > options_.max_payload)
      return;
    writer_->command(
        wire::reply_command(reply_stream, task_id, wire::progress_status, std::move(body)),
        [](std::error_code, redisReply*) {});
  }

  // The result goes to the caller first; the entry is acknowledged (and trimmed) only once
  // the server has it, so a crash in between leaves the entry pending, never lost.
  void answer(const std::string& entry, const std::string& reply_stream, const std::string& task_id,
              boost::system::error_code ec, childproc::message result) {
    auto body = wire::encode(result);
    if (body.data.size() > options_.max_payload) {
      ec = make_error_code(childproc::remote_errc::payload_too_large);
      body = wire::encode(childproc::message());
    }
    // NOMKSTREAM: a caller that destroyed its pool deleted its reply stream; a late result
    // must not create it again (nobody would ever delete it). A nil reply then: acknowledged.
    auto fields = wire::reply_command(reply_stream, task_id, ec ? "error" : "ok", std::move(body));
    if (ec) {
      auto [category, code] = wire::encode_error(ec);
      fields.insert(fields.end(), {"category", category, "code", code});
    }
    // Counted until its XACK is queued: a stop that closed the connection before this reply
    // would lose it (hiredis refuses commands once disconnecting), and the entry, left pending,
    // would be claimed and run a second time.
    ++answering_;
    writer_->command(fields, [this, entry](std::error_code ec, redisReply* reply) {
      --answering_;
      if (ec || !wire::error_text(reply).empty())
        return fail("writing a result: " + (ec ? ec.message() : wire::error_text(reply)));
      acknowledge(entry);
      if (stopping_)
        finish_if_idle();
    });
  }

  // The entries acknowledged in one turn of the loop (the results whose XADD replies were read
  // together) go in one XACK: one command a batch, not one a task. They leave the stream with
  // the next trim.
  void acknowledge(const std::string& entry) {
    held_.erase(entry);
    unacknowledged_.push_back(entry);
    if (unacknowledged_.size() == 1)
      boost::asio::post(io_, [this] { flush_acknowledgements(); });
  }

  void flush_acknowledgements() {
    // Kept between flushes: a batch's vector passes 1 KiB (see redis_connection's request_).
    ack_command_.assign({"XACK", options_.stream, options_.group});
    ack_command_.insert(ack_command_.end(), unacknowledged_.begin(), unacknowledged_.end());
    std::move(unacknowledged_.begin(), unacknowledged_.end(), std::back_inserter(untrimmed_));
    unacknowledged_.clear();
    writer_->command(ack_command_, [](std::error_code, redisReply*) {});
    trim_later();
    if (stopping_)
      finish_if_idle();
  }

  // Acknowledged entries leave the task stream at most once per trim_interval, most of them in
  // one XTRIM MINID from its head: an XDEL by id costs the server a search per id, several
  // times more. Those the trim cannot reach (newer than an entry still pending: a long task
  // holds the head) go by id.
  void trim_later() {
    if (trimming_ || trim_armed_)
      return;
    trim_armed_ = true;
    trim_timer_.expires_after(trim_interval);
    trim_timer_.async_wait([this](boost::system::error_code ec) {
      trim_armed_ = false;
      if (!ec)
        trim_tasks();
    });
  }

  // The trim's bound: past the group's last delivered entry nothing was read; below its oldest
  // pending entry everything read was acknowledged. The last delivered id is read first: what
  // it covers can only leave the pending list (XCLAIM moves entries, never adds them), so the
  // XPENDING that follows cannot miss one. Other groups on the stream are not consulted: the
  // task stream serves one group (docs/scale-out.md).
  void trim_tasks() {
    if (trimming_ || untrimmed_.empty() || closing_)
      return;
    trimming_ = true;
    auto acknowledged = std::make_shared<std::vector<std::string>>(std::move(untrimmed_));
    untrimmed_.clear();
    writer_->command({"XINFO", "GROUPS", options_.stream}, [this, acknowledged](std::error_code ec,
                                                                                redisReply* reply) {
      const std::string delivered = ec ? "" : last_delivered(reply);
      if (delivered.empty())
        return trim_ended("XINFO GROUPS: " + problem_of(ec, reply));
      writer_->command({"XPENDING", options_.stream, options_.group},
                       [this, delivered, acknowledged](std::error_code ec, redisReply* reply) {
                         on_pending_summary(delivered, *acknowledged, ec, reply);
                       });
    });
  }

  void on_pending_summary(const std::string& delivered,
                          const std::vector<std::string>& acknowledged, std::error_code ec,
                          redisReply* reply) {
    if (ec || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4)
      return trim_ended("XPENDING: " + problem_of(ec, reply));
    std::string below = wire::next_id(delivered);
    if (const redisReply* oldest = reply->element[1]; oldest->type == REDIS_REPLY_STRING) {
      const std::string_view pending(oldest->str, oldest->len);
      if (wire::parse_id(pending) < wire::parse_id(below))
        below = pending;
    }
    const auto bound = wire::parse_id(below);
    std::vector<std::string> unreached{"XDEL", options_.stream};
    for (const auto& id : acknowledged)
      if (wire::parse_id(id) >= bound)
        unreached.push_back(id);
    // The round ends with the last command's reply; the first refusal, if any, is kept for it.
    auto refusal = std::make_shared<std::string>();
    const auto check = [this, refusal](const char* command, std::error_code ec,
                                       const redisReply* reply) {
      if (refusal->empty() && (ec || reply->type != REDIS_REPLY_INTEGER))
        *refusal = command + (": " + problem_of(ec, reply));
    };
    const bool last = unreached.size() == 2;
    writer_->command({"XTRIM", options_.stream, "MINID", below},
                     [this, check, refusal, last](std::error_code ec, redisReply* reply) {
                       check("XTRIM", ec, reply);
                       if (last)
                         trim_ended(*refusal);
                     });
    if (!last)
      writer_->command(unreached, [this, check, refusal](std::error_code ec, redisReply* reply) {
        check("XDEL", ec, reply);
        trim_ended(*refusal);
      });
  }

  void trim_ended(const std::string& refusal) {
    trimming_ = false;
    // A refusal (NOPERM: the ACL user lacks XINFO, XTRIM or XDEL) would let the stream grow for
    // ever: the agent stops and says what to grant. While stopping (the server went) it ends.
    if (!refusal.empty())
      return fail("trimming the task stream: " + refusal);
    if (!untrimmed_.empty())
      trim_later();
    if (stopping_)
      finish_if_idle();
  }

  std::string problem_of(std::error_code ec, const redisReply* reply) const {
    if (ec)
      return ec.message() + ": " + writer_->error_text();
    const std::string text = wire::error_text(reply);
    return text.empty() ? "unexpected reply" : text;
  }

  // This group's last-delivered-id in an XINFO GROUPS reply (RESP2: each group a flat list of
  // names and values), or empty.
  std::string last_delivered(const redisReply* reply) const {
    if (reply->type != REDIS_REPLY_ARRAY)
      return {};
    for (std::size_t g = 0; g < reply->elements; ++g) {
      const redisReply* group = reply->element[g];
      std::string_view name, delivered;
      for (std::size_t i = 0; group->type == REDIS_REPLY_ARRAY && i + 1 < group->elements; i += 2) {
        const redisReply* key = group->element[i];
        const redisReply* value = group->element[i + 1];
        if (key->type != REDIS_REPLY_STRING || value->type != REDIS_REPLY_STRING)
          continue;
        const std::string_view k(key->str, key->len), v(value->str, value->len);
        if (k == "name")
          name = v;
        else if (k == "last-delivered-id")
          delivered = v;
      }
      if (name == options_.group)
        return std::string(delivered);
    }
    return {};
  }

  // A failure while stopping (the server went: every connection fails in turn) still ends the
  // stop that waited for what failed.
  void fail(const std::string& why) {
    if (stopping_)
      return finish_if_idle();
    std::cerr << "childproc-agent " << options_.consumer << ": " << why << '\n';
    status_ = 69;
    stop();
  }

  void stop() {
    if (stopping_)
      return;
    stopping_ = true;
    signals_.cancel();
    claim_timer_.cancel();
    finish_if_idle();
  }

  // The pool closes, then the connections, once nothing is running, being answered, read or
  // claimed: entries an outstanding XREADGROUP or XAUTOCLAIM delivers are this agent's to run.
  void finish_if_idle() {
    if (in_flight_ > 0 || answering_ > 0 || !unacknowledged_.empty() || reading_ || claiming_ ||
        trimming_ || closing_)
      return;
    // The last trim, at once: what this agent acknowledged leaves the stream before it goes.
    if (!untrimmed_.empty()) {
      trim_timer_.cancel();
      return trim_tasks();
    }
    closing_ = true;
    trim_timer_.cancel();
    pool_.async_close([this](boost::system::error_code) {
      std::cout << "agent " << options_.consumer << ": " << completed_ << " tasks" << std::endl;
      reader_->close();
      control_->close();
      writer_->disconnect();
    });
  }

  boost::asio::io_context& io_;
  agent_options options_;
  std::size_t capacity_;
  childproc::pool pool_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer claim_timer_;
  std::set<std::string> held_; // entries this agent runs (not acknowledged yet)
  bool claiming_ = false;
  bool claim_wanted_ = false;        // a claim came while reading or full
  std::string claim_cursor_ = "0-0"; // where the next XAUTOCLAIM scan starts
  std::shared_ptr<redis_connection> reader_, writer_, control_;
  struct running {
    explicit running(std::string k) : key(std::move(k)) {}
    std::string key; // "<reply stream> <task id>", what a cancel names
    boost::asio::cancellation_signal signal;
    bool cancelled = false;
  };
  // By stream entry id: two entries may carry one task (a caller's XADD sent twice).
  std::map<std::string, std::unique_ptr<running>> running_;
  std::set<std::string> cancelled_; // cancels of tasks not read yet
  std::deque<std::string> cancel_order_;
  std::size_t in_flight_ = 0;
  std::size_t answering_ = 0;               // results written, their XACK not queued yet
  std::vector<std::string> unacknowledged_; // their XACK goes with the next flush
  std::vector<std::string> ack_command_;
  std::vector<wire::entry> read_entries_; // the last XREADGROUP's, moved out by start()
  static constexpr std::chrono::milliseconds trim_interval{100};
  boost::asio::steady_timer trim_timer_;
  bool trim_armed_ = false;            // trim_timer_ waits
  bool trimming_ = false;              // a trim's XINFO, XPENDING, XTRIM or XDEL is unanswered
  std::vector<std::string> untrimmed_; // acknowledged since the last trim began
  std::uint64_t completed_ = 0;
  bool reading_ = false, stopping_ = false, closing_ = false;
  int status_ = 0;
};

} // namespace

int main(int argc, char** argv) {
  agent_options options = parse(argc, argv);
  boost::asio::io_context io;
  agent a(io, std::move(options));
  return a.run();
}
