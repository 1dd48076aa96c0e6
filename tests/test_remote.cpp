// childproc::remote_pool and childproc-agent, against a redis-server that each test starts on a
// private unix socket (no persistence), with the test helper's pool-worker mode as the agents'
// worker program. Skipped with a WARN when redis-server is not installed.
#include "common.hpp"

#include "../src/remote_wire.hpp"

#include <childproc/remote.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>

using namespace std::chrono_literals;
using childproc::message;
using childproc::remote_errc;

namespace {

const std::string agent_program = CHILDPROC_TEST_AGENT;

// A private temporary directory, removed with everything in it.
struct temp_dir {
  std::string path;
  temp_dir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "childproc-remote-XXXXXX");
    path = ::mkdtemp(pattern.data());
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
};

std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const auto end = std::min(dirs.find(':', start), dirs.size());
    const std::string candidate = dirs.substr(start, end - start) + '/' + name;
    if (::access(candidate.c_str(), X_OK) == 0)
      return candidate;
    start = end + 1;
  }
  return {};
}

using test::run_until;

// A child whose output is kept, and that is killed when the handle goes. What its handlers
// record is shared with them: they may still run after the handle is gone (a test that failed
// half-way).
struct watched_child {
  struct record {
    std::string out, err;
    bool closed = false;
    std::optional<int> code, signal;
  };
  std::shared_ptr<record> seen = std::make_shared<record>();
  childproc::child_process child;
  std::string& out = seen->out;
  std::string& err = seen->err;
  bool& closed = seen->closed;
  std::optional<int>& code = seen->code;
  std::optional<int>& signal = seen->signal;

  watched_child(asio::io_context& io, const std::string& program, std::vector<std::string> args,
                childproc::spawn_options options = {})
      : child(childproc::spawn(io, program, std::move(args), std::move(options))) {
    child.out().on_data([seen = seen](std::string_view d) { seen->out += d; });
    child.err().on_data([seen = seen](std::string_view d) { seen->err += d; });
    child.on_close([seen = seen](std::optional<int> c, std::optional<int> s) {
      seen->closed = true;
      seen->code = c;
      seen->signal = s;
    });
  }
  // A test that failed half-way: no stray process (reaped when its io_context runs again, or
  // by the library's background reaper once the io_context is destroyed).
  ~watched_child() {
    if (!closed)
      child.kill(SIGKILL);
  }
  watched_child(const watched_child&) = delete;
  watched_child& operator=(const watched_child&) = delete;
  // Runs `io` until the child printed "ready" or closed; false when neither came in time.
  bool wait_ready(asio::io_context& io, std::chrono::seconds bound = 60s) {
    return run_until(
        io, [&] { return closed || out.find("ready") != std::string::npos; }, bound);
  }
  // Stops the child with `sig` and runs `io` until it closed.
  bool stop(asio::io_context& io, int sig = SIGTERM) {
    if (!closed)
      child.kill(sig);
    return run_until(
        io, [&] { return closed; }, 30s);
  }
};

// Its own redis-server, started on a unix socket in a private directory and stopped (and
// reaped) by the destructor. start() is empty when redis-server is not installed.
class redis_fixture {
public:
  static std::unique_ptr<redis_fixture> start(std::vector<std::string> extra = {}) {
    const std::string program = find_in_path("redis-server");
    if (program.empty()) {
      WARN("redis-server is not installed (Debian: apt-get install redis-server, or "
           "CHILDPROC_WITH_REDIS=1 scripts/deps.sh): the remote pool test is skipped");
      return nullptr;
    }
    return std::unique_ptr<redis_fixture>(new redis_fixture(program, std::move(extra)));
  }
  // The server runs on an io_context of its own: stopping it runs none of the test's handlers.
  // A test that failed half-way left completions on `io` that use its destroyed locals: `io` is
  // destroyed (its handlers with it, never run) before the server is stopped.
  ~redis_fixture() {
    test_io_.reset();
    server_->stop(server_io_);
    CHECK(server_->closed);
  }
  const std::string& socket() const { return socket_; }
  // redis-cli's answer to `args` (trimmed).
  std::string cli(std::vector<std::string> args) const {
    args.insert(args.begin(), {"-s", socket_});
    if (!password.empty())
      args.insert(args.begin(), {"--no-auth-warning", "-a", password});
    auto r = childproc::spawn_sync("redis-cli", std::move(args));
    std::string text = r.out.value_or("");
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
      text.pop_back();
    return text;
  }

  // Stops the server (SIGTERM: it closes every connection and removes its socket), and starts
  // it again on the same socket, empty (no persistence).
  void stop_server() { REQUIRE(server_->stop(server_io_)); }
  void start_server() {
    server_.reset();
    launch();
  }

private:
  std::unique_ptr<asio::io_context> test_io_ = std::make_unique<asio::io_context>();
  asio::io_context server_io_;

public:
  // The test's io_context: its pools, agents and handlers.
  asio::io_context& io = *test_io_;
  // The default user's password (requirepass), for cli().
  std::string password;

private:
  redis_fixture(const std::string& program, std::vector<std::string> extra)
      : program_(program), socket_(dir_.path + "/redis.sock") {
    args_ = {"--port",       "0",  "--unixsocket", socket_,   "--save",      "",
             "--appendonly", "no", "--dir",        dir_.path, "--daemonize", "no"};
    args_.insert(args_.end(), extra.begin(), extra.end());
    launch();
  }

  void launch() {
    server_.emplace(server_io_, program_, args_);
    // The server says so on its log (stdout) once it accepts connections ("The server is now
    // ready to accept connections at <path>" with a unix socket, Redis 7.0).
    const bool ready = run_until(server_io_, [&] {
      return server_->closed ||
             server_->out.find("ready to accept connections") != std::string::npos;
    });
    INFO(server_->out);
    if (!ready || server_->closed)
      server_->stop(server_io_); // the destructor does not run when the constructor fails
    REQUIRE(ready);
    REQUIRE_FALSE(server_->closed);
  }

  std::string program_;
  temp_dir dir_;
  std::string socket_;
  std::vector<std::string> args_;
  std::optional<watched_child> server_;
};

// `count` agents on the fixture's server, each with a local pool of `workers` test workers;
// returns once each said it is ready.
std::vector<std::unique_ptr<watched_child>> start_agents(redis_fixture& redis, int count,
                                                         int workers = 2) {
  std::vector<std::unique_ptr<watched_child>> agents;
  for (int i = 0; i < count; ++i)
    agents.push_back(std::make_unique<watched_child>(
        redis.io, agent_program,
        std::vector<std::string>{"--server", redis.socket(), "--consumer",
                                 "agent-" + std::to_string(i), "--workers", std::to_string(workers),
                                 "--", test::helper, "pool-worker"}));
  const bool ready = run_until(redis.io, [&] {
    for (auto& a : agents)
      if (a->out.find("ready") == std::string::npos && !a->closed)
        return false;
    return true;
  });
  REQUIRE(ready);
  for (auto& a : agents) {
    INFO(a->err);
    REQUIRE_FALSE(a->closed);
  }
  return agents;
}

// One agent `name` on the fixture's server (a local pool of one pool-worker, tasks logged, a
// claim idle time of 400 ms), with `extra` options and `spawn`'s environment; returns once it
// said it is ready.
std::unique_ptr<watched_child> start_agent(redis_fixture& redis, const std::string& name,
                                           std::vector<std::string> extra = {},
                                           childproc::spawn_options spawn = {}) {
  std::vector<std::string> args{
      "--server", redis.socket(), "--consumer", name,           "--workers",
      "1",        "--log-tasks",  "1",          "--claim-idle", "400"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), {"--", test::helper, "pool-worker"});
  auto agent =
      std::make_unique<watched_child>(redis.io, agent_program, std::move(args), std::move(spawn));
  REQUIRE(agent->wait_ready(redis.io));
  INFO(agent->err);
  REQUIRE_FALSE(agent->closed);
  return agent;
}

// Runs one task on `pool` and runs `io` until it completed (30 s at most): its completion, or
// nothing when it did not come in time.
std::optional<std::pair<boost::system::error_code, message>> run_one(asio::io_context& io,
                                                                     childproc::remote_pool& pool,
                                                                     message task,
                                                                     childproc::run_options run) {
  // Shared with the handler: a run that did not complete may complete after this frame.
  auto got = std::make_shared<std::optional<std::pair<boost::system::error_code, message>>>();
  pool.async_run(std::move(task), std::move(run), [got](boost::system::error_code ec, message m) {
    got->emplace(ec, std::move(m));
  });
  run_until(
      io, [&] { return got->has_value(); }, 30s);
  return *got;
}

// How many tasks an agent has started so far (its --log-tasks lines).
long started_by(const watched_child& agent) {
  long n = 0;
  for (auto at = agent.out.find(": task "); at != std::string::npos;
       at = agent.out.find(": task ", at + 1))
    ++n;
  return n;
}

// The task count an agent printed when it stopped ("agent NAME: N tasks").
long tasks_of(const watched_child& agent) {
  const auto at = agent.out.rfind(": ");
  const auto end = agent.out.find(" tasks", at);
  if (at == std::string::npos || end == std::string::npos)
    return -1;
  return std::strtol(agent.out.c_str() + at + 2, nullptr, 10);
}

} // namespace

// Before the fix (async_run stubbed to complete at once with success): "ec == server_unreachable"
// failed with 0 (success) == 1, for both the unix socket and the TCP port.
// No server needed: the id a trim from the stream's head takes to drop the entries up to `id`.
TEST_CASE("the id after a stream entry id, for XTRIM MINID", "[remote]") {
  namespace wire = childproc::detail::remote_wire;
  CHECK(wire::next_id("1700000000000-0") == "1700000000000-1");
  CHECK(wire::next_id("5-41") == "5-42");
  CHECK(wire::next_id("5-18446744073709551615") == "6-0");
  CHECK(wire::next_id("18446744073709551615-18446744073709551615").empty());
  for (const char* bad : {"", "5", "5-", "-5", "a-1", "5-1x", "5--1", "18446744073709551616-0"})
    CHECK(wire::next_id(bad).empty());
  CHECK(wire::parse_id("3-9") < wire::parse_id("10-0"));
  CHECK(wire::parse_id("3-9") < wire::parse_id("3-10"));
}

TEST_CASE("a remote pool whose server cannot be reached fails its runs with server_unreachable",
          "[remote]") {
  asio::io_context io;
  temp_dir dir;
  SECTION("a unix socket nobody listens on") {
    // A bound socket that never listens: connect() is refused.
    const std::string path = dir.path + "/deaf.sock";
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    childproc::remote_pool pool(io, {.server = path});
    boost::system::error_code ec;
    message error;
    bool done = false;
    pool.async_run(message("x"), [&](boost::system::error_code e, message m) {
      done = true;
      ec = e;
      error = std::move(m);
    });
    CHECK_FALSE(done); // never inside async_run
    REQUIRE(run_until(
        io, [&] { return done; }, 10s));
    CHECK(ec == make_error_code(remote_errc::server_unreachable));
    CHECK(ec.message() == "the Redis server cannot be reached");
    INFO(boost::json::serialize(error.is_json() ? error.json() : boost::json::value()));
    CHECK(error.is_json());
    CHECK(boost::json::serialize(error.json()).find("deaf.sock") != std::string::npos);
    ::close(fd);
  }
  SECTION("a TCP port nobody listens on") {
    // Port 1 on the loopback: the refusal may come at once or after the non-blocking connect.
    childproc::remote_pool pool(io, {.server = "127.0.0.1:1"});
    boost::system::error_code ec;
    bool done = false;
    pool.async_run(message("x"), [&](boost::system::error_code e, message) {
      done = true;
      ec = e;
    });
    REQUIRE(run_until(
        io, [&] { return done; }, 10s));
    CHECK(ec == make_error_code(remote_errc::server_unreachable));
  }
}

// Before the fix (async_run stubbed to complete at once with success): every result was null,
// "results == 10000" with 0 matching, and the agents printed "agent agent-0: 0 tasks".
TEST_CASE("10000 remote tasks on 3 agents complete exactly once each", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agents = start_agents(*redis, 3);
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  constexpr int count = 10000;
  std::vector<int> answers(count, 0);
  int matching = 0, failures = 0, done = 0;
  for (int i = 0; i < count; ++i)
    pool.async_run(message(boost::json::value{{"i", i}}),
                   [&, i](boost::system::error_code ec, message m) {
                     ++done;
                     ++answers[i];
                     if (ec)
                       ++failures;
                     else if (m.is_json() && m.json() == boost::json::value{{"i", i}})
                       ++matching;
                   });
  REQUIRE(run_until(
      redis->io, [&] { return done == count; }, 120s));
  CHECK(matching == count);
  CHECK(failures == 0);
  CHECK(std::count(answers.begin(), answers.end(), 1) == count);
  const auto stats = pool.stats();
  CHECK(stats.completed == count);
  CHECK(stats.in_flight == 0);
  CHECK(stats.stray_replies == 0);
  // What the pool read left its reply stream.
  CHECK(run_until(redis->io, [&] { return redis->cli({"XLEN", pool.reply_stream()}) == "0"; }));

  long total = 0;
  for (auto& a : agents) {
    REQUIRE(a->stop(redis->io));
    INFO(a->out << a->err);
    CHECK(a->code == 0);
    const long n = tasks_of(*a);
    CHECK(n > 0); // every agent took part
    total += n;
  }
  CHECK(total == count); // no task ran twice
  // Acknowledged and deleted: nothing left in the task stream or pending in the group.
  CHECK(redis->cli({"XLEN", "childproc:tasks"}) == "0");
  CHECK(redis->cli({"XPENDING", "childproc:tasks", "childproc"}).substr(0, 1) == "0");
  pool.destroy();
  REQUIRE(run_until(
      redis->io,
      [&] {
        return redis->cli({"EXISTS", pool.reply_stream()}) == "0";
      },
      10s));
}

// Before the fix (async_run stubbed to complete at once with success): ec was 0 (success), not
// task_failed, and the pid task's answer was null.
TEST_CASE("a remote task keeps the local pool's completion: result, task error, worker crash, "
          "timeout",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agents = start_agents(*redis, 1, 1);
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  std::map<std::string, std::pair<boost::system::error_code, message>> got;
  auto run = [&](const std::string& key, message task, std::string name) {
    pool.async_run(std::move(task), childproc::run_options{.name = std::move(name)},
                   [&got, key](boost::system::error_code ec, message m) {
                     got[key] = {ec, std::move(m)};
                   });
  };
  run("sum", message(boost::json::value{{"a", 2}, {"b", 3}}), "sum");
  run("throw", message("boom"), "throw");
  run("bytes", message::bytes(std::string("\x00\x01\xff", 3)), "");
  run("unknown", message(1), "no-such-task");
  REQUIRE(run_until(
      redis->io, [&] { return got.size() == 4; }, 60s));
  CHECK(!got["sum"].first);
  CHECK(got["sum"].second.json() == 5);
  CHECK(got["throw"].first == make_error_code(childproc::errc::task_failed));
  CHECK(got["bytes"].second.is_bytes());
  CHECK(got["bytes"].second.bytes() == std::string("\x00\x01\xff", 3));
  CHECK(got["unknown"].first == make_error_code(childproc::errc::unknown_task));
  // A crashing worker: the agent's pool replaces it and fails only that task.
  run("exit", message(7), "exit");
  REQUIRE(run_until(
      redis->io, [&] { return got.size() == 5; }, 60s));
  CHECK(got["exit"].first == make_error_code(childproc::errc::worker_died));
  run("after", message(boost::json::value{{"a", 1}, {"b", 1}}), "sum");
  REQUIRE(run_until(
      redis->io, [&] { return got.size() == 6; }, 60s));
  CHECK(got["after"].second.json() == 2);
  // The per-task timeout travels with the task: the agent's pool applies it.
  pool.async_run(message(30000), childproc::run_options{.name = "async_sleep", .timeout = 200ms},
                 [&got](boost::system::error_code ec, message m) {
                   got["timeout"] = {ec, std::move(m)};
                 });
  REQUIRE(run_until(
      redis->io, [&] { return got.size() == 7; }, 60s));
  CHECK(got["timeout"].first == make_error_code(childproc::errc::timed_out));
  for (auto& a : agents)
    REQUIRE(a->stop(redis->io));
}

namespace {

// Agent A takes a long task and is SIGKILLed while running it; agent B is then started with
// `b_options` and a short claim idle time. Returns the caller's completion.
std::pair<boost::system::error_code, message>
kill_holder_then_claim(redis_fixture& redis, std::vector<std::string> b_options, long& b_tasks) {
  auto holder = start_agent(redis, "holder");
  childproc::remote_pool pool(redis.io, {.server = redis.socket()});
  // Shared with the handler: on a failed REQUIRE the pool's destroy() posts it after this frame.
  auto got = std::make_shared<std::optional<std::pair<boost::system::error_code, message>>>();
  // async_sleep: the worker notices its agent's death at once (serve() ends on the disconnect).
  pool.async_run(
      message(1500), childproc::run_options{.name = "async_sleep"},
      [got](boost::system::error_code ec, message m) { got->emplace(ec, std::move(m)); });
  REQUIRE(run_until(redis.io, [&] { return holder->out.find(": task ") != std::string::npos; }));
  REQUIRE(holder->stop(redis.io, SIGKILL));
  CHECK(holder->signal == SIGKILL);
  auto claimer = start_agent(redis, "claimer", std::move(b_options));
  REQUIRE(run_until(
      redis.io, [&] { return got->has_value(); }, 60s));
  REQUIRE(claimer->stop(redis.io));
  INFO(claimer->out << claimer->err);
  CHECK(claimer->code == 0);
  b_tasks = tasks_of(*claimer);
  return **got;
}

} // namespace

// Before the fix (the agent had no claim loop): "run_until(... got.has_value() ...)" failed after
// 60 s: the task stayed pending on the killed agent.
TEST_CASE("a task whose agent is SIGKILLed mid-task completes on another agent", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  long claimer_tasks = -1;
  const auto [ec, result] = kill_holder_then_claim(*redis, {}, claimer_tasks);
  CHECK(!ec);
  CHECK(result.json() == 1500);
  CHECK(claimer_tasks == 1);
  CHECK(redis->cli({"XLEN", "childproc:tasks"}) == "0");
}

// Before the fix: EXISTS gave "1": the agent's late result created the reply stream again, and
// nobody would ever delete it.
TEST_CASE("a result that arrives after destroy() leaves no reply stream behind", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  watched_child agent(redis->io, agent_program,
                      {"--server", redis->socket(), "--consumer", "late", "--workers", "1",
                       "--log-tasks", "1", "--", test::helper, "pool-worker"});
  REQUIRE(agent.wait_ready(redis->io));
  INFO(agent.err);
  REQUIRE_FALSE(agent.closed);
  std::string reply_stream;
  {
    childproc::remote_pool pool(redis->io, {.server = redis->socket()});
    pool.async_run(message(300), childproc::run_options{.name = "async_sleep"},
                   [](boost::system::error_code, message) {});
    REQUIRE(run_until(redis->io, [&] { return agent.out.find(": task ") != std::string::npos; }));
    std::istringstream entry(redis->cli({"XRANGE", "childproc:tasks", "-", "+"}));
    for (std::string line; std::getline(entry, line);)
      if (line == "reply")
        std::getline(entry, reply_stream);
    REQUIRE(!reply_stream.empty());
    pool.destroy();
  }
  // The agent finishes the task, answers, and acknowledges and deletes the entry. The pool's DEL
  // may still be on its way then (the loop runs one handler per check here, and each check is a
  // redis-cli process: slow under load), so the check waits for the stream to be gone; the late
  // result must not have created it again after the DEL (before the fix it stayed for good).
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "0"; }));
  CHECK(run_until(
      redis->io,
      [&] {
        return redis->cli({"EXISTS", reply_stream}) == "0";
      },
      10s));
  REQUIRE(agent.stop(redis->io));
  CHECK(agent.code == 0);
}

// Before the fix: `ec` was false (a success with the error's payload as the result): a missing
// code was read as "0", and 0 is no error in any category.
TEST_CASE("an error reply without a usable code fails its run with malformed_message", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  std::vector<std::optional<boost::system::error_code>> got(3);
  for (std::size_t i = 0; i < got.size(); ++i)
    pool.async_run(message(static_cast<int>(i)),
                   [&got, i](boost::system::error_code ec, message) { got[i] = ec; });
  // The test is the agent: it reads the three tasks and answers each with status=error, with no
  // code, a code of 0 and a code that is no number.
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "3"; }));
  std::istringstream entries(redis->cli({"XRANGE", "childproc:tasks", "-", "+"}));
  std::vector<std::pair<std::string, std::string>> tasks; // (id, reply stream)
  for (std::string line, field; std::getline(entries, line);) {
    if (line == "id" && std::getline(entries, field))
      tasks.emplace_back(field, "");
    else if (line == "reply" && std::getline(entries, field) && !tasks.empty())
      tasks.back().second = field;
  }
  REQUIRE(tasks.size() == 3);
  const std::vector<std::vector<std::string>> codes{{}, {"code", "0"}, {"code", "x"}};
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    std::vector<std::string> args{"XADD",   tasks[i].second, "*",        "id", tasks[i].first,
                                  "status", "error",         "kind",     "j",  "data",
                                  "null",   "category",      "childproc"};
    args.insert(args.end(), codes[i].begin(), codes[i].end());
    redis->cli(args);
  }
  REQUIRE(run_until(redis->io, [&] { return got[0] && got[1] && got[2]; }));
  for (const auto& ec : got)
    CHECK(*ec == make_error_code(childproc::errc::malformed_message));
}

// Before the fix: XLEN was "1" and XPENDING "1": the agent, stopped while its result's XADD was
// held by the server, closed its connection first, and hiredis refused the XACK and XDEL queued
// in that reply's callback (seen first as a flaky failure of the SIGKILL test above in CI's
// rehearsal). The entry, left pending, would have been claimed and run a second time.
TEST_CASE("an agent stopped while its result is being written still acknowledges the entry",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  watched_child agent(redis->io, agent_program,
                      {"--server", redis->socket(), "--consumer", "stopping", "--workers", "1",
                       "--log-tasks", "1", "--", test::helper, "pool-worker"});
  REQUIRE(agent.wait_ready(redis->io));
  INFO(agent.err);
  REQUIRE_FALSE(agent.closed);
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto got = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(message(100), childproc::run_options{.name = "async_sleep"},
                 [got](boost::system::error_code ec, message) { got->emplace(ec); });
  REQUIRE(run_until(redis->io, [&] { return agent.out.find(": task ") != std::string::npos; }));
  // Writes wait on the server for 3 s: the task (100 ms) ends meanwhile, and its result's XADD
  // is held when the agent is told to stop. (If the machine is too slow for the task to end
  // first, the test passes without showing anything: it can never fail falsely.)
  CHECK(redis->cli({"CLIENT", "PAUSE", "3000", "WRITE"}) == "OK");
  redis->io.run_for(800ms);
  REQUIRE(agent.stop(redis->io));
  INFO(agent.out << agent.err);
  CHECK(agent.code == 0);
  REQUIRE(run_until(redis->io, [&] { return got->has_value(); }));
  CHECK(!**got);
  CHECK(redis->cli({"XLEN", "childproc:tasks"}) == "0");
  CHECK(redis->cli({"XPENDING", "childproc:tasks", "childproc"}).rfind("0", 0) == 0);
}

// Before the fix (the agent had no claim loop): not reached in that run (the test above crashed
// on its failure path, since fixed); the same wait for the completion cannot end without a claim.
// Before --dead-letter-max: the claimer refused the option (exit 64, "unknown option"), and
// without it the dead-letter stream grew without a bound (XLEN 4).
TEST_CASE("a task delivered more than max_attempts times is dead-lettered and fails its run",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  // Older dead letters: the stream keeps the last --dead-letter-max.
  for (int i = 0; i < 3; ++i)
    redis->cli({"XADD", "childproc:tasks:dead", "*", "old", std::to_string(i)});
  long claimer_tasks = -1;
  const auto [ec, error] = kill_holder_then_claim(
      *redis, {"--max-attempts", "1", "--dead-letter-max", "2"}, claimer_tasks);
  CHECK(ec == make_error_code(remote_errc::dead_lettered));
  REQUIRE(error.is_json());
  CHECK(error.json().at("name") == "DeadLetter");
  CHECK(claimer_tasks == 0); // never run again
  CHECK(redis->cli({"XLEN", "childproc:tasks:dead"}) == "2");
  const auto newest = redis->cli({"XREVRANGE", "childproc:tasks:dead", "+", "-", "COUNT", "1"});
  CHECK(newest.find("deliveries") != std::string::npos);
  CHECK(redis->cli({"XLEN", "childproc:tasks"}) == "0");
}

// Before the fix: "started_by(*claimer) == 1" was 2 == 1 and "started_by(*late) == 1" 0 == 1: the
// claimer's XAUTOCLAIM took the dead agent's task while its XREADGROUP, outstanding for its one
// free slot, then took the next task too (two tasks for one slot; the idle agent got none).
TEST_CASE("an agent claims and reads no more tasks than it has free slots", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto holder = start_agent(*redis, "holder");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto got = std::make_shared<std::map<std::string, boost::system::error_code>>();
  auto run = [&](const std::string& key, int ms) {
    pool.async_run(message(ms), childproc::run_options{.name = "async_sleep"},
                   [got, key](boost::system::error_code ec, message) { (*got)[key] = ec; });
  };
  run("claimed", 3000);
  REQUIRE(run_until(redis->io, [&] { return started_by(*holder) == 1; }));
  REQUIRE(holder->stop(redis->io, SIGKILL));
  // Idle past the claimers' claim idle time: the next claim takes it.
  REQUIRE(run_until(redis->io, [&] {
    return !redis->cli({"XPENDING", "childproc:tasks", "childproc", "IDLE", "400", "-", "+", "1"})
                .empty();
  }));
  auto claimer = start_agent(*redis, "claimer");
  REQUIRE(run_until(redis->io, [&] { return started_by(*claimer) == 1; }));
  // The claimer is full: the next task waits for an agent with a free slot.
  run("next", 10);
  auto late = start_agent(*redis, "late");
  REQUIRE(run_until(
      redis->io, [&] { return got->size() == 2; }, 60s));
  CHECK(!(*got)["claimed"]);
  CHECK(!(*got)["next"]);
  INFO(claimer->out << late->out);
  CHECK(started_by(*claimer) == 1);
  CHECK(started_by(*late) == 1);
  REQUIRE(claimer->stop(redis->io));
  REQUIRE(late->stop(redis->io));
}

// Before the fix: "order.front() == \"orphan\"" was "held" == "orphan": every XAUTOCLAIM
// restarted at 0-0 and scanned only the ten live entries ahead of the dead agent's one, which
// waited for them to finish.
TEST_CASE("the claim scan reaches a dead agent's entry behind many live ones", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  // Ten long tasks held (and kept claimed) by a live agent, older than the dead agent's one.
  auto live = start_agent(*redis, "live", {"--concurrency", "10"});
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto order = std::make_shared<std::vector<std::string>>();
  auto run = [&](const std::string& key, int ms) {
    pool.async_run(message(ms), childproc::run_options{.name = "async_sleep"},
                   [order, key](boost::system::error_code ec, message) {
                     order->push_back(ec ? "error" : key);
                   });
  };
  for (int i = 0; i < 10; ++i)
    run("held", 12000);
  REQUIRE(run_until(redis->io, [&] { return started_by(*live) == 10; }));
  auto dead = start_agent(*redis, "dead");
  run("orphan", 10);
  REQUIRE(run_until(redis->io, [&] { return started_by(*dead) == 1; }));
  REQUIRE(dead->stop(redis->io, SIGKILL));
  auto claimer = start_agent(*redis, "claimer"); // one free slot: XAUTOCLAIM COUNT 1
  REQUIRE(run_until(
      redis->io, [&] { return !order->empty(); }, 60s));
  CHECK(order->front() == "orphan");
  REQUIRE(run_until(
      redis->io, [&] { return order->size() == 11; }, 60s));
  REQUIRE(claimer->stop(redis->io));
  REQUIRE(live->stop(redis->io));
}

// Before the fix: "pool.stats().in_flight == 1" was 0 == 1: the slot's handler completed the run
// inside itself, and complete() clears the slot, destroying the handler while it ran.
TEST_CASE("a cancelled remote run completes after the cancellation slot's handler returned",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  asio::cancellation_signal cancel;
  auto got = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(message(1),
                 asio::bind_cancellation_slot(cancel.slot(), [got](boost::system::error_code ec,
                                                                   message) { got->emplace(ec); }));
  redis->io.run_for(20ms);
  cancel.emit(asio::cancellation_type::terminal);
  CHECK(pool.stats().in_flight == 1); // not inside the slot's handler
  REQUIRE(run_until(redis->io, [&] { return got->has_value(); }));
  CHECK(**got == asio::error::operation_aborted);
  CHECK(pool.stats().in_flight == 0);
}

// Runs by name only (hidden): fails on purpose half-way, with agents, a pool with tasks in
// flight whose handlers hold the test's locals, and the server alive. The test below runs it.
namespace {
bool half_way_locals_gone = false;
struct mark_gone {
  ~mark_gone() { half_way_locals_gone = true; }
};
} // namespace

TEST_CASE("a remote test that fails half-way", "[.][remote-fails-half-way]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agents = start_agents(*redis, 2, 1);
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  int done = 0;
  std::vector<int> answers(100, 0);
  const mark_gone guard; // destroyed first: a handler that runs later would use freed locals
  for (int i = 0; i < 100; ++i)
    pool.async_run(message(50), childproc::run_options{.name = "async_sleep"},
                   [&, i](boost::system::error_code, message) {
                     if (half_way_locals_gone) {
                       std::fputs("a handler of the failed test ran after its locals were "
                                  "destroyed\n",
                                  stderr);
                       std::abort();
                     }
                     ++done;
                     ++answers[i];
                   });
  REQUIRE(run_until(redis->io, [&] { return done > 2; }));
  REQUIRE(done < 0); // fails on purpose, with tasks in flight
}

// Before the fix: "r.signal == std::nullopt" failed (SIGABRT, and "a handler of the failed test
// ran after its locals were destroyed"): the fixture's destructor ran the io_context to reap the
// server, and with it the pool's pool_closed completions (the SIGSEGV seen in CI).
TEST_CASE("a remote test that fails half-way reports its failure and does not crash", "[remote]") {
  if (find_in_path("redis-server").empty()) {
    WARN("redis-server is not installed: skipped");
    return;
  }
  const auto r = childproc::spawn_sync("/proc/self/exe", {"[remote-fails-half-way]"});
  INFO(r.out.value_or("") << r.err.value_or(""));
  CHECK(r.signal == std::nullopt);
  CHECK(r.err.value_or("").find("after its locals") == std::string::npos);
  CHECK(r.status == 1); // Catch2: one test failed
  CHECK(r.out.value_or("").find("REQUIRE( done < 0 )") != std::string::npos);
}

namespace {

// A server that requires a password (requirepass "s3cret") and has an ACL user "alice" with the
// password "wonder".
std::unique_ptr<redis_fixture> start_locked_server() {
  auto redis = redis_fixture::start(
      {"--requirepass", "s3cret", "--user", "alice", "on", ">wonder", "~*", "&*", "+@all"});
  if (redis)
    redis->password = "s3cret";
  return redis;
}

} // namespace

// Before the fix: "REQUIRE_FALSE(agent.closed)" failed: the agent knew no --user or
// --password-file (and a pool had no credentials to send: NOAUTH came back as server_error).
// (No ';' in a test name: catch_discover_tests splits the name there.)
TEST_CASE("a remote pool with the server's credentials runs its tasks and fails with auth_failed "
          "without them or with wrong ones",
          "[remote]") {
  auto redis = start_locked_server();
  if (!redis)
    return;
  temp_dir dir;
  const std::string password_file = dir.path + "/password";
  std::ofstream(password_file) << "wonder\n";
  // The password from a file (never on the command line, which `ps` shows).
  watched_child agent(redis->io, agent_program,
                      {"--server", redis->socket(), "--user", "alice", "--password-file",
                       password_file, "--workers", "1", "--", test::helper, "pool-worker"});
  REQUIRE(agent.wait_ready(redis->io));
  INFO(agent.err);
  REQUIRE_FALSE(agent.closed);
  auto sum_with = [&](std::string user, std::string password) {
    childproc::remote_options options{.server = redis->socket()};
    options.user = std::move(user);
    options.password = std::move(password);
    childproc::remote_pool pool(redis->io, options);
    const auto got = run_one(redis->io, pool, message(boost::json::value{{"a", 2}, {"b", 3}}),
                             childproc::run_options{.name = "sum"});
    REQUIRE(got.has_value());
    return *got;
  };
  const auto as_default = sum_with("", "s3cret");
  CHECK(!as_default.first);
  CHECK(as_default.second.json() == 5);
  const auto as_alice = sum_with("alice", "wonder");
  CHECK(!as_alice.first);
  CHECK(as_alice.second.json() == 5);
  const auto none = sum_with("", "");
  CHECK(none.first == make_error_code(remote_errc::auth_failed));
  REQUIRE(none.second.is_json());
  CHECK(boost::json::serialize(none.second.json()).find("NOAUTH") != std::string::npos);
  CHECK(sum_with("", "wrong").first == make_error_code(remote_errc::auth_failed));
  CHECK(sum_with("alice", "wrong").first == make_error_code(remote_errc::auth_failed));
  REQUIRE(agent.stop(redis->io));
  CHECK(agent.code == 0);
}

// Before the fix: the message lacked "the Redis server refused the credentials" (the agent said
// "ERR Protocol error: unauthenticated multibulk length"), and CHILDPROC_REDIS_PASSWORD was
// ignored: the second agent failed the same way.
TEST_CASE("an agent without the server's credentials exits with a clear error", "[remote]") {
  auto redis = start_locked_server();
  if (!redis)
    return;
  watched_child bare(redis->io, agent_program,
                     {"--server", redis->socket(), "--", test::helper, "pool-worker"});
  REQUIRE(run_until(
      redis->io, [&] { return bare.closed; }, 30s));
  CHECK(bare.code == 69);
  INFO(bare.err);
  CHECK(bare.err.find("the Redis server refused the credentials") != std::string::npos);
  CHECK(bare.err.find("CHILDPROC_REDIS_PASSWORD") != std::string::npos);
  // With the password in its environment: it runs.
  childproc::spawn_options with_password;
  with_password.env = childproc::current_env();
  (*with_password.env)["CHILDPROC_REDIS_PASSWORD"] = "s3cret";
  watched_child agent(redis->io, agent_program,
                      {"--server", redis->socket(), "--", test::helper, "pool-worker"},
                      std::move(with_password));
  REQUIRE(agent.wait_ready(redis->io));
  INFO(agent.err);
  CHECK_FALSE(agent.closed);
  REQUIRE(agent.stop(redis->io));
  CHECK(agent.code == 0);
}

// Before the fix: the worker's "env" task answered "s3cret": every worker (and whatever it
// starts) inherited the agent's CHILDPROC_REDIS_PASSWORD.
TEST_CASE("an agent's workers do not inherit the Redis password from its environment", "[remote]") {
  auto redis = start_locked_server();
  if (!redis)
    return;
  childproc::spawn_options with_password;
  with_password.env = childproc::current_env();
  (*with_password.env)["CHILDPROC_REDIS_PASSWORD"] = "s3cret";
  watched_child agent(
      redis->io, agent_program,
      {"--server", redis->socket(), "--workers", "1", "--", test::helper, "pool-worker"},
      std::move(with_password));
  REQUIRE(agent.wait_ready(redis->io));
  INFO(agent.err);
  REQUIRE_FALSE(agent.closed);
  childproc::remote_options options{.server = redis->socket()};
  options.password = "s3cret";
  childproc::remote_pool pool(redis->io, options);
  const auto got = run_one(redis->io, pool, message("CHILDPROC_REDIS_PASSWORD"),
                           childproc::run_options{.name = "env"});
  REQUIRE(got.has_value());
  REQUIRE(!got->first);
  REQUIRE(got->second.is_json());
  CHECK(boost::json::serialize(got->second.json()) == "null");
  // Nor can a worker read it in the agent's /proc/<pid>/environ (the strings it started with).
  std::ifstream environ_file("/proc/" + std::to_string(agent.child.pid().value_or(0)) + "/environ");
  const std::string environ_text((std::istreambuf_iterator<char>(environ_file)),
                                 std::istreambuf_iterator<char>());
  CHECK(!environ_text.empty());
  CHECK(environ_text.find("s3cret") == std::string::npos);
  REQUIRE(agent.stop(redis->io));
  CHECK(agent.code == 0);
}

// Before the fix: the agent ran (code 0 at its stop) without AUTH, its empty password file
// silently ignored; the server's refusal came later and said nothing of the file.
TEST_CASE("an agent refuses a password file whose first line is empty", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  temp_dir dir;
  const std::string password_file = dir.path + "/password";
  std::ofstream(password_file) << "\nsecond line\n";
  watched_child agent(redis->io, agent_program,
                      {"--server", redis->socket(), "--password-file", password_file, "--",
                       test::helper, "pool-worker"});
  REQUIRE(agent.wait_ready(redis->io, 30s));
  if (!agent.closed)
    REQUIRE(agent.stop(redis->io));
  CHECK(agent.code == 64);
  INFO(agent.err);
  CHECK(agent.err.find("has an empty first line") != std::string::npos);
}

// Before the fix: "run_until(... XPENDING ... == 0 ...)" failed after 20 s: the cancel stayed at
// the caller, and the worker ran its "cancellable" task on (it gives up after 30 s).
TEST_CASE("a remote run cancelled at the caller is cancelled on the agent that runs it",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "runner");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  asio::cancellation_signal cancel;
  auto got = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(message(), childproc::run_options{.name = "cancellable"},
                 asio::bind_cancellation_slot(cancel.slot(), [got](boost::system::error_code ec,
                                                                   message) { got->emplace(ec); }));
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 1; }));
  cancel.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(redis->io, [&] { return got->has_value(); }));
  CHECK(**got == asio::error::operation_aborted);
  // The worker saw the cancel (its task returns at once), and the entry is acknowledged.
  REQUIRE(run_until(
      redis->io,
      [&] {
        return redis->cli({"XPENDING", "childproc:tasks", "childproc"}).rfind("0", 0) == 0;
      },
      20s));
  CHECK(run_until(redis->io, [&] { return agent->out.find(": cancelled ") != std::string::npos; }));
  // No result was written: none read (stray), none left in the reply stream.
  CHECK(pool.stats().stray_replies == 0);
  CHECK(redis->cli({"XLEN", pool.reply_stream()}) == "0");
  CHECK(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "0"; }));
  REQUIRE(agent->stop(redis->io));
  CHECK(agent->code == 0);
}

// Before the fix: "tasks_of(*agent) == 1" was 2 == 1: a task cancelled before any agent read it
// was run all the same.
TEST_CASE("a remote run cancelled before an agent read it is never run", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "runner");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto got = std::make_shared<std::map<std::string, boost::system::error_code>>();
  // The agent's one slot is busy: the second task waits in the stream when it is cancelled.
  pool.async_run(message(1500), childproc::run_options{.name = "async_sleep"},
                 [got](boost::system::error_code ec, message) { (*got)["busy"] = ec; });
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 1; }));
  asio::cancellation_signal cancel;
  pool.async_run(
      message(1), childproc::run_options{.name = "pid"},
      asio::bind_cancellation_slot(cancel.slot(), [got](boost::system::error_code ec, message) {
        (*got)["cancelled"] = ec;
      }));
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "2"; }));
  cancel.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(
      redis->io, [&] { return got->size() == 2; }, 30s));
  CHECK((*got)["cancelled"] == asio::error::operation_aborted);
  CHECK(!(*got)["busy"]);
  // Read once the slot is free, and acknowledged without running.
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "0"; }));
  CHECK(started_by(*agent) == 1);
  CHECK(pool.stats().stray_replies == 0);
  REQUIRE(agent->stop(redis->io));
  CHECK(tasks_of(*agent) == 1);
}

// Before the fix: "run_until(... XPENDING ... == 0 ...)" failed after 20 s: the two runs of task
// 7 shared one record (by "<reply stream> <task id>"), the first run's end erased it, the cancel
// then found no run and the second ran on; its completion cleared a cancellation slot in the
// freed record.
TEST_CASE("an agent cancels a task added twice after its first run ended", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  // The test is the caller: its reply stream, and two entries that carry the task id 7.
  const std::string replies = "test:replies";
  redis->cli({"XADD", replies, "*", "open", "1"});
  for (const auto& [name, data] :
       {std::pair{"async_sleep", "50"}, std::pair{"cancellable", "null"}})
    redis->cli({"XADD", "childproc:tasks", "*", "id", "7", "name", name, "reply", replies, "kind",
                "j", "data", data, "timeout", "0"});
  auto agent = start_agent(*redis, "runner", {"--workers", "2"});
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 2; }));
  // The first run's result: it ended, the second runs on.
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", replies}) == "2"; }));
  redis->cli({"PUBLISH", "childproc:tasks:cancel", replies + " 7"});
  REQUIRE(run_until(
      redis->io,
      [&] {
        return redis->cli({"XPENDING", "childproc:tasks", "childproc"}).rfind("0", 0) == 0;
      },
      20s));
  CHECK(run_until(redis->io, [&] { return agent->out.find(": cancelled ") != std::string::npos; }));
  CHECK(redis->cli({"XLEN", replies}) == "2"); // "open" and the first result: none for the cancel
  REQUIRE(agent->stop(redis->io));
  INFO(agent->out << agent->err);
  CHECK(agent->code == 0);
  CHECK(tasks_of(*agent) == 2);
}

// Runs by name only (hidden): a caller that lives until it is killed, on the server of
// $CHILDPROC_TEST_REDIS_SOCKET, with a reply stream expiring after 1 s unless renewed. It
// prints its reply stream's name. The test below runs and kills it.
TEST_CASE("a remote caller that runs until killed", "[.][remote-caller]") {
  const char* server = std::getenv("CHILDPROC_TEST_REDIS_SOCKET");
  REQUIRE(server != nullptr);
  asio::io_context io;
  childproc::remote_options options{.server = server};
  options.reply_expiry = 1s;
  childproc::remote_pool pool(io, options);
  std::cout << "reply " << pool.reply_stream() << std::endl;
  for (;;)
    io.run_for(1s);
}

// Before the fix: the run_until for "EXISTS == 0" failed after 20 s: the dead caller's reply
// stream stayed for good.
TEST_CASE("a caller that dies leaves no reply stream behind once its expiry passed", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::spawn_options options;
  options.env = childproc::current_env();
  (*options.env)["CHILDPROC_TEST_REDIS_SOCKET"] = redis->socket();
  watched_child caller(redis->io, "/proc/self/exe", {"[remote-caller]"}, std::move(options));
  std::string stream;
  REQUIRE(run_until(redis->io, [&] {
    const auto at = caller.out.find("reply ");
    const auto end = caller.out.find('\n', at);
    if (at != std::string::npos && end != std::string::npos)
      stream = caller.out.substr(at + 6, end - at - 6);
    return caller.closed || !stream.empty();
  }));
  INFO(caller.out << caller.err);
  REQUIRE_FALSE(caller.closed);
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"EXISTS", stream}) == "1"; }));
  // Alive for several expiries: renewed, still there.
  redis->io.run_for(3s);
  CHECK(redis->cli({"EXISTS", stream}) == "1");
  REQUIRE(caller.stop(redis->io, SIGKILL));
  REQUIRE(run_until(
      redis->io,
      [&] {
        return redis->cli({"EXISTS", stream}) == "0";
      },
      20s));
}

// An existing guarantee, tested here for the first time (it passed at once): the caller refuses
// a task over its max_payload before sending it, and an agent one over its --max-payload.
TEST_CASE("a payload over max_payload fails with payload_too_large on either side", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "small", {"--max-payload", "64"});
  auto got = std::make_shared<std::map<std::string, boost::system::error_code>>();
  childproc::remote_options tight{.server = redis->socket()};
  tight.max_payload = 16;
  childproc::remote_pool caller_limited(redis->io, tight);
  caller_limited.async_run(message::bytes(std::string(32, 'x')),
                           [got](boost::system::error_code ec, message) { (*got)["caller"] = ec; });
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  pool.async_run(message::bytes(std::string(100, 'x')),
                 [got](boost::system::error_code ec, message) { (*got)["agent"] = ec; });
  pool.async_run(message::bytes(std::string(60, 'x')),
                 [got](boost::system::error_code ec, message) { (*got)["fits"] = ec; });
  REQUIRE(run_until(
      redis->io, [&] { return got->size() == 3; }, 30s));
  CHECK((*got)["caller"] == make_error_code(remote_errc::payload_too_large));
  CHECK((*got)["agent"] == make_error_code(remote_errc::payload_too_large));
  CHECK(!(*got)["fits"]);
  CHECK(started_by(*agent) == 1); // the refused task never reached the local pool
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "big->first == payload_too_large" was system:0 == childproc.remote:4 (and the
// stats counted 2 completed, 0 failed): the 1000-byte result of an agent with the default
// --max-payload was decoded and delivered unchecked.
TEST_CASE("a result over the pool's max_payload fails its run with payload_too_large", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  // The worker answers "env BIG" with this value: a result much larger than its task.
  childproc::spawn_options with_big;
  with_big.env = childproc::current_env();
  (*with_big.env)["BIG"] = std::string(1000, 'x');
  auto agent = start_agent(*redis, "big", {}, std::move(with_big));
  childproc::remote_options tight{.server = redis->socket()};
  tight.max_payload = 100;
  childproc::remote_pool pool(redis->io, tight);
  const auto big = run_one(redis->io, pool, message("BIG"), childproc::run_options{.name = "env"});
  REQUIRE(big.has_value());
  CHECK(big->first == make_error_code(remote_errc::payload_too_large));
  // A result that fits still arrives: only that run failed.
  const auto fits = run_one(redis->io, pool, message(boost::json::value{{"a", 2}, {"b", 3}}),
                            childproc::run_options{.name = "sum"});
  REQUIRE(fits.has_value());
  CHECK(!fits->first);
  CHECK(fits->second.json() == 5);
  const auto stats = pool.stats();
  CHECK(stats.failed == 1);
  CHECK(stats.completed == 1);
  CHECK(stats.stray_replies == 0);
  REQUIRE(agent->stop(redis->io));
}

// An existing guarantee, tested here for the first time (it passed at once): the agent renews
// the claim of the task it runs, so an idle agent never takes it while it runs past claim-idle.
// With the renewal (refresh_claims) disabled: "tasks_of(*idle) == 0" was 1 == 0, and the task's
// second result was a stray reply.
TEST_CASE("a long task keeps its claim while it runs past the claim idle time", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto holder = start_agent(*redis, "holder");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto got = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(message(3000), childproc::run_options{.name = "async_sleep"}, // 7 x claim idle
                 [got](boost::system::error_code ec, message) { got->emplace(ec); });
  REQUIRE(run_until(redis->io, [&] { return started_by(*holder) == 1; }));
  auto idle = start_agent(*redis, "idle");
  REQUIRE(run_until(
      redis->io, [&] { return got->has_value(); }, 60s));
  CHECK(!**got);
  REQUIRE(holder->stop(redis->io));
  REQUIRE(idle->stop(redis->io));
  CHECK(tasks_of(*holder) == 1);
  CHECK(tasks_of(*idle) == 0);
  CHECK(pool.stats().stray_replies == 0);
}

// Before the fix (the trim's bound was the group's last delivered entry alone): XLEN was "0" ==
// "1": the trim dropped the entry the holder still ran, which no agent could claim again had the
// holder died. Without the XDEL of the entries the trim cannot reach, XLEN stayed "6".
TEST_CASE("an agent's trim keeps the task entries another agent still runs", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto holder = start_agent(*redis, "holder");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  // Runs until cancelled: the holder's entry stays pending for as long as the test needs.
  asio::cancellation_signal cancel;
  auto held = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(
      message(), childproc::run_options{.name = "cancellable"},
      asio::bind_cancellation_slot(
          cancel.slot(), [held](boost::system::error_code ec, message) { held->emplace(ec); }));
  REQUIRE(run_until(redis->io, [&] { return started_by(*holder) == 1; }));
  auto quick = start_agent(*redis, "quick");
  int done = 0;
  for (int i = 0; i < 5; ++i)
    pool.async_run(message(1), childproc::run_options{.name = "async_sleep"},
                   [&done](boost::system::error_code ec, message) { done += ec ? 100 : 1; });
  REQUIRE(run_until(redis->io, [&] { return done == 5; }));
  // The quick agent's trims (each within 100 ms of its acknowledgements) took its five entries
  // and left the one the holder runs.
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) != "6"; }));
  redis->io.run_for(300ms);
  INFO("holder: " << holder->out << holder->err << "\nquick: " << quick->out << quick->err);
  INFO("held: " << (held->has_value() ? (*held)->message() : "running"));
  CHECK(redis->cli({"XLEN", "childproc:tasks"}) == "1");
  CHECK(redis->cli({"XPENDING", "childproc:tasks", "childproc"}).rfind("1", 0) == 0);
  REQUIRE_FALSE(held->has_value());
  cancel.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(redis->io, [&] { return held->has_value(); }));
  CHECK(**held == asio::error::operation_aborted);
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "0"; }));
  REQUIRE(holder->stop(redis->io));
  REQUIRE(quick->stop(redis->io));
  CHECK(tasks_of(*holder) == 1);
  CHECK(tasks_of(*quick) == 5);
}

// Before the fix: the run never completed (run_until failed after 30 s): PEXPIRE's 0 was
// ignored, the agent's result was dropped (NOMKSTREAM on a stream that was gone) and the pool's
// XREAD waited for ever.
TEST_CASE("a reply stream gone from the server fails the runs in flight and is made again",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "only");
  childproc::remote_options options{.server = redis->socket()};
  CHECK_THROWS_AS(
      childproc::remote_pool(redis->io, {.server = redis->socket(), .reply_expiry = 999ms}),
      std::system_error);
  CHECK_THROWS_AS(
      childproc::remote_pool(redis->io, {.server = redis->socket(), .reply_expiry = 25h}),
      std::system_error);
  options.reply_expiry = 1s;
  childproc::remote_pool pool(redis->io, options);
  auto run = [&](int ms) {
    auto got = std::make_shared<std::optional<boost::system::error_code>>();
    pool.async_run(message(ms), childproc::run_options{.name = "async_sleep"},
                   [got](boost::system::error_code ec, message) { got->emplace(ec); });
    return got;
  };
  auto first = run(10);
  REQUIRE(run_until(
      redis->io, [&] { return first->has_value(); }, 30s));
  CHECK(!**first);
  // Much longer than a renewal period (a third of a second): the stream is found gone mid-run.
  auto lost = run(5000);
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 2; }));
  CHECK(redis->cli({"DEL", pool.reply_stream()}) == "1");
  REQUIRE(run_until(
      redis->io, [&] { return lost->has_value(); }, 30s));
  CHECK(**lost == make_error_code(remote_errc::reply_stream_lost));
  // Made again (the XADD may still be on its way when the run fails).
  CHECK(run_until(redis->io, [&] { return redis->cli({"EXISTS", pool.reply_stream()}) == "1"; }));
  auto after = run(10);
  REQUIRE(run_until(
      redis->io, [&] { return after->has_value(); }, 30s));
  CHECK(!**after);
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "after->first == server_error" was childproc.remote:7 (reply_stream_lost) ==
// childproc.remote:3, and no "OOM" in its message (null): the refused XADD that was to make the
// reply stream again was ignored, the pool went on sending tasks, and the next renewal found the
// stream still gone and failed the run sent meanwhile.
TEST_CASE("a reply stream the server refuses to make again fails the pool with server_error",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_options options{.server = redis->socket()};
  options.reply_expiry = 1s;
  childproc::remote_pool pool(redis->io, options);
  // No agent: the run stays in flight while the stream is lost and the server refuses writes.
  auto lost = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(message(1), [lost](boost::system::error_code ec, message) { lost->emplace(ec); });
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "1"; }));
  CHECK(redis->cli({"CONFIG", "SET", "maxmemory-policy", "noeviction"}) == "OK");
  CHECK(redis->cli({"CONFIG", "SET", "maxmemory", "1"}) == "OK");
  CHECK(redis->cli({"DEL", pool.reply_stream()}) == "1");
  REQUIRE(run_until(
      redis->io, [&] { return lost->has_value(); }, 30s));
  CHECK(**lost == make_error_code(remote_errc::reply_stream_lost));
  // Its XADD is answered after the one that was to make the stream again (one connection).
  const auto refused = run_one(redis->io, pool, message(2), {});
  REQUIRE(refused.has_value());
  CHECK(refused->first == make_error_code(remote_errc::server_error));
  // The server takes writes again; the pool has failed for good, with the server's text.
  CHECK(redis->cli({"CONFIG", "SET", "maxmemory", "0"}) == "OK");
  const auto after = run_one(redis->io, pool, message(3), {});
  REQUIRE(after.has_value());
  CHECK(after->first == make_error_code(remote_errc::server_error));
  REQUIRE(after->second.is_json());
  INFO(boost::json::serialize(after->second.json()));
  CHECK(boost::json::serialize(after->second.json()).find("OOM") != std::string::npos);
}

// Before the fix: "orphan" completed last (at 40): the busy agent dropped every claim that came
// while it was full, and under a steady backlog it was always full.
TEST_CASE("a busy agent claims a dead agent's task under a steady backlog", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto order = std::make_shared<std::vector<std::string>>();
  auto run = [&](const std::string& key, int ms) {
    pool.async_run(message(ms), childproc::run_options{.name = "async_sleep"},
                   [order, key](boost::system::error_code ec, message) {
                     order->push_back(ec ? "error" : key);
                   });
  };
  auto dead = start_agent(*redis, "dead");
  run("orphan", 2000);
  REQUIRE(run_until(redis->io, [&] { return started_by(*dead) == 1; }));
  REQUIRE(dead->stop(redis->io, SIGKILL));
  for (int i = 0; i < 40; ++i)
    run("backlog", 150);
  // Queued before it starts: it is full from its first read on.
  auto busy = start_agent(*redis, "busy");
  REQUIRE(run_until(
      redis->io, [&] { return order->size() == 41; }, 60s));
  const auto orphan_at = std::find(order->begin(), order->end(), "orphan") - order->begin();
  CHECK(std::count(order->begin(), order->end(), "error") == 0);
  CHECK(orphan_at < 40);
  REQUIRE(busy->stop(redis->io));
}

namespace {

// The ids of the server's clients whose last command was `command` (CLIENT LIST's "cmd=").
std::vector<std::string> clients_running(const redis_fixture& redis, const std::string& command) {
  std::vector<std::string> ids;
  std::istringstream lines(redis.cli({"CLIENT", "LIST"}));
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("id=", 0) == 0 && line.find(" cmd=" + command + ' ') != std::string::npos)
      ids.push_back(line.substr(3, line.find(' ') - 3));
  return ids;
}

// Closes the pool's reply reader, the one client blocked in XREAD (an agent's is in
// XREADGROUP), as the server would; returns its client id.
std::string kill_pool_reader(const redis_fixture& redis) {
  const auto readers = clients_running(redis, "xread");
  REQUIRE(readers.size() == 1);
  CHECK(redis.cli({"CLIENT", "KILL", "ID", readers.front()}) == "1");
  return readers.front();
}

// Runs `io` for `span` (what it does meanwhile is the test's).
void run_for(asio::io_context& io, std::chrono::milliseconds span) {
  const auto until = std::chrono::steady_clock::now() + span;
  run_until(io, [&] { return std::chrono::steady_clock::now() >= until; });
}

using shared_result = std::shared_ptr<std::optional<std::pair<boost::system::error_code, message>>>;

// Starts one run and returns where its completion will be (run_one without the waiting).
shared_result start_run(childproc::remote_pool& pool, message task, childproc::run_options run) {
  auto got = std::make_shared<std::optional<std::pair<boost::system::error_code, message>>>();
  pool.async_run(std::move(task), std::move(run), [got](boost::system::error_code ec, message m) {
    got->emplace(ec, std::move(m));
  });
  return got;
}

bool is_offline_error(boost::system::error_code ec) {
  return ec == make_error_code(remote_errc::connection_lost) ||
         ec == make_error_code(remote_errc::server_unreachable);
}

} // namespace

// Before the fix: "!held->first" failed with childproc.remote:2 (connection_lost): a lost
// connection failed every run in flight, and every later run.
TEST_CASE("a remote pool connects again after its connection is lost and its runs in flight "
          "complete",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "only");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  const auto first = run_one(redis->io, pool, message(1), {.name = "async_sleep"});
  REQUIRE(first.has_value());
  REQUIRE(!first->first);
  auto held = start_run(pool, message(1500), {.name = "async_sleep"});
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 2; }));
  const auto reader = kill_pool_reader(*redis);
  REQUIRE(run_until(
      redis->io, [&] { return held->has_value(); }, 30s));
  CHECK(!(*held)->first);
  REQUIRE((*held)->second.is_json());
  CHECK((*held)->second.json() == 1500);
  REQUIRE(run_until(redis->io, [&] { return pool.stats().reconnects == 1; }));
  const auto after = run_one(redis->io, pool, message(2), {.name = "async_sleep"});
  REQUIRE(after.has_value());
  CHECK(!after->first);
  const auto now_reading = clients_running(*redis, "xread");
  REQUIRE(now_reading.size() == 1);
  CHECK(now_reading.front() != reader);
  CHECK(pool.stats().stray_replies == 0);
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "CHECK_FALSE(held->has_value())" failed (the run in flight had failed with
// connection_lost when the server went), and so did "!back->first" after the server came back:
// every later run failed with connection_lost.
TEST_CASE("remote runs fail at once while the server is down, and the pool connects again once "
          "it is back",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "first");
  childproc::remote_pool pool(
      redis->io,
      {.server = redis->socket(), .reconnect_delay = 50ms, .max_reconnect_delay = 200ms});
  const auto first = run_one(redis->io, pool, message(1), {.name = "async_sleep"});
  REQUIRE(first.has_value());
  REQUIRE(!first->first);
  auto held = start_run(pool, message(1500), {.name = "async_sleep"});
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 2; }));
  redis->stop_server();
  // An agent whose connection drops finishes its task (its result cannot be written) and exits
  // with 69.
  REQUIRE(run_until(redis->io, agent->closed));
  INFO(agent->out << agent->err);
  CHECK(agent->code == 69);
  const auto down = run_one(redis->io, pool, message(1), {.name = "async_sleep"});
  REQUIRE(down.has_value());
  CHECK(is_offline_error(down->first));
  REQUIRE(down->second.is_json());
  CHECK(boost::json::serialize(down->second.json()).find("RedisError") != std::string::npos);
  // Its task was in the stream: its result could still come, until the stream expires.
  CHECK_FALSE(held->has_value());
  redis->start_server();
  auto second = start_agent(*redis, "second");
  // The server came back empty: the reply stream is gone, with any result written to it.
  REQUIRE(run_until(
      redis->io, [&] { return held->has_value(); }, 30s));
  CHECK((*held)->first == make_error_code(remote_errc::reply_stream_lost));
  // Runs sent before the pool has connected again fail as `down` did; one after it succeeds.
  std::optional<std::pair<boost::system::error_code, message>> back;
  for (int attempt = 0; attempt < 100 && !(back && !back->first); ++attempt) {
    back = run_one(redis->io, pool, message(3), {.name = "async_sleep"});
    REQUIRE(back.has_value());
    if (back->first) {
      CHECK(is_offline_error(back->first));
      run_for(redis->io, 50ms);
    }
  }
  REQUIRE(back.has_value());
  CHECK(!back->first);
  CHECK(pool.stats().reconnects >= 1);
  REQUIRE(second->stop(redis->io));
}

// Before the fix: the message had no "expired" in it: the run failed at once, when the server
// went, rather than when its result could no longer come.
TEST_CASE("a remote run in flight fails with connection_lost once its reply stream expired "
          "without a connection",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_pool pool(redis->io, {.server = redis->socket(), .reply_expiry = 1s});
  // No agent: the task stays in the stream, its XADD answered.
  auto held = start_run(pool, message(1), {});
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "1"; }));
  run_for(redis->io, 100ms);
  redis->stop_server();
  REQUIRE(run_until(
      redis->io, [&] { return held->has_value(); }, 30s));
  CHECK((*held)->first == make_error_code(remote_errc::connection_lost));
  REQUIRE((*held)->second.is_json());
  INFO(boost::json::serialize((*held)->second.json()));
  CHECK(boost::json::serialize((*held)->second.json()).find("expired") != std::string::npos);
  const auto down = run_one(redis->io, pool, message(2), {});
  REQUIRE(down.has_value());
  CHECK(is_offline_error(down->first));
  CHECK(pool.stats().reconnects == 0);
}

// Before the fix: both constructions were accepted (no such options). Then, "handlers < 50" was
// thousands: a first connect that failed at once was retried on every turn of the loop.
TEST_CASE("a remote pool with reconnect_delay zero fails every run once its connection is lost",
          "[remote]") {
  asio::io_context io;
  CHECK_THROWS_AS(childproc::remote_pool(io, {.server = "/nowhere", .reconnect_delay = -1ms}),
                  std::system_error);
  CHECK_THROWS_AS(childproc::remote_pool(
                      io, {.server = "/nowhere", .reconnect_delay = 2s, .max_reconnect_delay = 1s}),
                  std::system_error);
  CHECK_THROWS_AS(childproc::remote_pool(io, {.server = "/nowhere",
                                              .reconnect_delay = 1s,
                                              .max_reconnect_delay = std::chrono::hours(2)}),
                  std::system_error);
  {
    // Unreachable at once: no attempt after the first (each would be a handler run).
    childproc::remote_pool unreachable(io,
                                       {.server = "/nowhere/redis.sock", .reconnect_delay = 0ms});
    std::optional<boost::system::error_code> first;
    unreachable.async_run(message(1), [&](boost::system::error_code ec, message) { first = ec; });
    REQUIRE(run_until(io, [&] { return first.has_value(); }));
    CHECK(*first == make_error_code(remote_errc::server_unreachable));
    std::size_t handlers = 0;
    const auto until = std::chrono::steady_clock::now() + 300ms;
    while (std::chrono::steady_clock::now() < until)
      handlers += io.run_one_for(10ms);
    CHECK(handlers < 50);
  }
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "only");
  childproc::remote_pool pool(redis->io, {.server = redis->socket(), .reconnect_delay = 0ms});
  const auto first = run_one(redis->io, pool, message(1), {.name = "async_sleep"});
  REQUIRE(first.has_value());
  REQUIRE(!first->first);
  kill_pool_reader(*redis);
  std::optional<std::pair<boost::system::error_code, message>> lost;
  for (int attempt = 0; attempt < 100 && !(lost && lost->first); ++attempt)
    lost = run_one(redis->io, pool, message(1), {.name = "async_sleep"});
  REQUIRE(lost.has_value());
  CHECK(lost->first == make_error_code(remote_errc::connection_lost));
  run_for(redis->io, 500ms);
  const auto later = run_one(redis->io, pool, message(1), {.name = "async_sleep"});
  REQUIRE(later.has_value());
  CHECK(later->first == make_error_code(remote_errc::connection_lost));
  CHECK(pool.stats().reconnects == 0);
  CHECK(clients_running(*redis, "xread").empty());
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "run_until(redis->io, agent->closed)" failed after 60 s: the agent's reader
// saw the server go and stopped it, and the stop then waited for the answer of the result it was
// writing, which failed without telling it.
TEST_CASE("an agent whose server goes away while it runs a task exits with 69", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "only");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  auto held = start_run(pool, message(1000), {.name = "async_sleep"});
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 1; }));
  redis->stop_server();
  REQUIRE(run_until(redis->io, agent->closed));
  INFO(agent->out << agent->err);
  CHECK(agent->code == 69);
  CHECK(agent->err.find("the connection to the Redis server was lost") != std::string::npos);
}

namespace {

// How many entries were ever added to `stream` (XINFO STREAM's entries-added), or -1.
long entries_added(const redis_fixture& redis, const std::string& stream) {
  std::istringstream lines(redis.cli({"XINFO", "STREAM", stream}));
  for (std::string line; std::getline(lines, line);)
    if (line == "entries-added" && std::getline(lines, line))
      return std::strtol(line.c_str(), nullptr, 10);
  return -1;
}

} // namespace

// Before the fix: seen was {"\"done\""}: progress messages were not forwarded.
TEST_CASE("a remote task's progress messages reach on_progress in order, before its completion",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "only");
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  std::vector<std::string> seen;
  bool done = false;
  pool.async_run(message(5),
                 childproc::run_options{.name = "progress",
                                        .on_progress =
                                            [&](const message& m) {
                                              seen.push_back(boost::json::serialize(m.json()));
                                            }},
                 [&](boost::system::error_code ec, message m) {
                   CHECK(!ec);
                   seen.push_back(m.is_json() ? boost::json::serialize(m.json()) : "bytes");
                   done = true;
                 });
  REQUIRE(run_until(
      redis->io, [&] { return done; }, 30s));
  CHECK(seen == std::vector<std::string>{"0", "1", "2", "3", "4", "\"done\""});
  // Without on_progress the agent writes none: one entry more in the reply stream, the result.
  const auto added = entries_added(*redis, pool.reply_stream());
  const auto quiet = run_one(redis->io, pool, message(3), {.name = "progress"});
  REQUIRE(quiet.has_value());
  CHECK(!quiet->first);
  CHECK(entries_added(*redis, pool.reply_stream()) == added + 1);
  CHECK(pool.stats().stray_replies == 0);
  CHECK(pool.stats().completed == 2);
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "XLEN childproc:tasks == 0" never held (run_until failed after 60 s): the
// cancel was only published, no agent was there to hear it, and the entry stayed for the next
// agent to run.
TEST_CASE("a remote run cancelled while no agent is connected is never run", "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  asio::cancellation_signal cancel;
  boost::system::error_code cancelled;
  bool done = false;
  pool.async_run(
      message(1), childproc::run_options{.name = "pid"},
      asio::bind_cancellation_slot(cancel.slot(), [&](boost::system::error_code ec, message) {
        cancelled = ec;
        done = true;
      }));
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "1"; }));
  run_for(redis->io, 100ms); // the XADD's answer (the entry id) is read
  cancel.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(
      redis->io, [&] { return done; }, 30s));
  CHECK(cancelled == asio::error::operation_aborted);
  REQUIRE(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "0"; }));
  auto agent = start_agent(*redis, "late");
  const auto after = run_one(redis->io, pool, message(2), {.name = "pid"});
  REQUIRE(after.has_value());
  CHECK(!after->first);
  CHECK(started_by(*agent) == 1);
  REQUIRE(agent->stop(redis->io));
  CHECK(tasks_of(*agent) == 1);
  CHECK(pool.stats().stray_replies == 0);
}

// Before the fix: "the cancellation channel: the connection to the Redis server was lost: NOPERM
// ...": the message did not name the channel to grant.
TEST_CASE("an agent whose user may not subscribe to the cancel channel exits with a clear error",
          "[remote]") {
  auto redis =
      redis_fixture::start({"--user", "bob", "on", ">builder", "~*", "resetchannels", "+@all"});
  if (!redis)
    return;
  temp_dir dir;
  const std::string password_file = dir.path + "/password";
  std::ofstream(password_file) << "builder\n";
  watched_child agent(redis->io, agent_program,
                      {"--server", redis->socket(), "--user", "bob", "--password-file",
                       password_file, "--workers", "1", "--", test::helper, "pool-worker"});
  REQUIRE(run_until(redis->io, agent.closed));
  INFO(agent.out << agent.err);
  CHECK(agent.code == 69);
  CHECK(agent.err.find("childproc:tasks:cancel") != std::string::npos);
  CHECK(agent.err.find("NOPERM") != std::string::npos);
}

namespace {

// The grants docs/scale-out.md gives its ACL user (one user for both sides, the default
// stream), less `drop`: what a test's server sets up for the user "childproc", password "pw".
std::vector<std::string> documented_acl(const std::string& drop = "") {
  std::vector<std::string> args{"--user",
                                "childproc",
                                "on",
                                ">pw",
                                "resetkeys",
                                "~childproc:*",
                                "resetchannels",
                                "&childproc:tasks:cancel",
                                "-@all"};
  for (const char* grant : {"+auth", "+xgroup", "+xreadgroup", "+xautoclaim", "+xclaim",
                            "+xpending", "+xinfo|groups", "+xack", "+xtrim", "+xdel", "+xadd",
                            "+xread", "+del", "+pexpire", "+subscribe", "+publish"})
    if (grant != drop)
      args.push_back(grant);
  return args;
}

// A server whose user "childproc" has documented_acl(drop), an agent and a pool run as it.
// Members in this order: the pool and the agent go before the server and its io_context.
struct documented_user_run {
  std::unique_ptr<redis_fixture> redis;
  temp_dir dir;
  std::unique_ptr<watched_child> agent;
  std::unique_ptr<childproc::remote_pool> pool;
};

// Null when redis-server is not installed (the test is skipped).
std::unique_ptr<documented_user_run> start_as_documented_user(const std::string& drop = "") {
  auto run = std::make_unique<documented_user_run>();
  run->redis = redis_fixture::start(documented_acl(drop));
  if (!run->redis)
    return nullptr;
  auto& redis = *run->redis;
  const std::string password_file = run->dir.path + "/password";
  std::ofstream(password_file) << "pw\n";
  run->agent = std::make_unique<watched_child>(
      redis.io, agent_program,
      std::vector<std::string>{"--server", redis.socket(), "--user", "childproc", "--password-file",
                               password_file, "--workers", "2", "--log-tasks", "1", "--",
                               test::helper, "pool-worker"});
  REQUIRE(run->agent->wait_ready(redis.io));
  run->pool = std::make_unique<childproc::remote_pool>(
      redis.io,
      childproc::remote_options{.server = redis.socket(), .user = "childproc", .password = "pw"});
  return run;
}

} // namespace

// Before XINFO and XTRIM were in docs/scale-out.md's grants: the agent exited 69 ("trimming the
// task stream: XINFO GROUPS: NOPERM ...") after its first task.
TEST_CASE("an agent and a remote pool run as the ACL user the docs grant", "[remote]") {
  auto run = start_as_documented_user();
  if (!run)
    return;
  auto& redis = run->redis;
  auto& agent = run->agent;
  auto& pool = *run->pool;
  int sums = 0;
  for (int i = 0; i < 20; ++i)
    pool.async_run(message(boost::json::value{{"a", i}, {"b", 1}}),
                   childproc::run_options{.name = "sum"},
                   [&sums, i](boost::system::error_code ec, message m) {
                     if (!ec && m.is_json() && m.json() == i + 1)
                       ++sums;
                   });
  asio::cancellation_signal cancel;
  auto cancelled = std::make_shared<std::optional<boost::system::error_code>>();
  pool.async_run(message(), childproc::run_options{.name = "cancellable"},
                 asio::bind_cancellation_slot(cancel.slot(),
                                              [cancelled](boost::system::error_code ec, message) {
                                                cancelled->emplace(ec);
                                              }));
  REQUIRE(run_until(redis->io, [&] { return sums == 20; }));
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 21; }));
  cancel.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(redis->io, [&] { return cancelled->has_value(); }));
  CHECK(**cancelled == asio::error::operation_aborted);
  CHECK(run_until(redis->io, [&] { return redis->cli({"XLEN", "childproc:tasks"}) == "0"; }));
  CHECK(run_until(redis->io, [&] { return redis->cli({"XLEN", pool.reply_stream()}) == "0"; }));
  REQUIRE(agent->stop(redis->io));
  INFO(agent->out << agent->err);
  CHECK(agent->code == 0);
  CHECK(pool.stats().stray_replies == 0);
}

// Before the fix (the trim's replies were not read): the agent ran on with its task stream
// growing, and "run_until(... agent->closed ...)" failed.
TEST_CASE("an agent whose user may not trim the task stream exits with a clear error", "[remote]") {
  auto run = start_as_documented_user("+xtrim");
  if (!run)
    return;
  auto& redis = run->redis;
  auto& agent = run->agent;
  auto& pool = *run->pool;
  const auto got = run_one(redis->io, pool, message(boost::json::value{{"a", 2}, {"b", 3}}),
                           childproc::run_options{.name = "sum"});
  REQUIRE(got.has_value());
  CHECK(!got->first); // the result came first: only the housekeeping after it is refused
  REQUIRE(run_until(
      redis->io, [&] { return agent->closed; }, 30s));
  INFO(agent->out << agent->err);
  CHECK(agent->code == 69);
  CHECK(agent->err.find("trimming the task stream: XTRIM") != std::string::npos);
  CHECK(agent->err.find("NOPERM") != std::string::npos);
}

// Before the fix: "run_until(... held->has_value() ...)" failed after 30 s: the new connection's
// XADD MAXLEN 0, which was to make the reply stream, emptied it of the result the agent had
// written while the pool was away, and the run waited for ever.
TEST_CASE("a result written while the remote pool was disconnected is read once it is back",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  auto agent = start_agent(*redis, "only");
  // The pool comes back 0.5-1 s after the loss; the result is written 0.2 s after the task began.
  childproc::remote_pool pool(
      redis->io, {.server = redis->socket(), .reconnect_delay = 1s, .max_reconnect_delay = 1s});
  auto held = start_run(pool, message(200), {.name = "async_sleep"});
  REQUIRE(run_until(redis->io, [&] { return started_by(*agent) == 1; }));
  kill_pool_reader(*redis);
  REQUIRE(run_until(
      redis->io, [&] { return held->has_value(); }, 30s));
  CHECK(!(*held)->first);
  REQUIRE((*held)->second.is_json());
  CHECK((*held)->second.json() == 200);
  CHECK(run_until(redis->io, [&] { return pool.stats().reconnects == 1; }));
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "is_offline_error(back->first)" failed on every attempt, with server_error ("the
// Redis server answered with an error"): the BUSY answers the pool met on its new connection (a
// script was running) had failed it for good.
TEST_CASE("a remote pool that meets a busy server while it reconnects tries again", "[remote]") {
  auto redis = redis_fixture::start({"--busy-reply-threshold", "50"});
  if (!redis)
    return;
  childproc::remote_pool pool(
      redis->io,
      {.server = redis->socket(), .reconnect_delay = 400ms, .max_reconnect_delay = 400ms});
  REQUIRE(run_until(redis->io, [&] { return clients_running(*redis, "xread").size() == 1; }));
  kill_pool_reader(*redis);
  // A script that holds the server for 2 s: every other command is answered BUSY meanwhile.
  watched_child script(redis->io, "redis-cli",
                       {"-s", redis->socket(), "EVAL",
                        "local s = redis.call('TIME')[1] while redis.call('TIME')[1] - s < 2 do "
                        "end return 1",
                        "0"});
  REQUIRE(run_until(redis->io, script.closed));
  auto agent = start_agent(*redis, "late");
  std::optional<std::pair<boost::system::error_code, message>> back;
  for (int attempt = 0; attempt < 100 && !(back && !back->first); ++attempt) {
    back = run_one(redis->io, pool, message(3), {.name = "pid"});
    REQUIRE(back.has_value());
    if (back->first) {
      INFO(back->first.message());
      CHECK(is_offline_error(back->first));
      run_for(redis->io, 100ms);
    }
  }
  REQUIRE(back.has_value());
  CHECK(!back->first);
  CHECK(pool.stats().reconnects >= 1);
  REQUIRE(agent->stop(redis->io));
}

// Before the fix: "reconnects == 1" did not hold within 10 s: with no command in flight, the
// closed command connection went unnoticed until a command failed on it (the next renewal, 20 s
// later, or a run's XADD).
TEST_CASE("a remote pool finds out at once that its idle command connection was closed",
          "[remote]") {
  auto redis = redis_fixture::start();
  if (!redis)
    return;
  childproc::remote_pool pool(redis->io, {.server = redis->socket()});
  REQUIRE(run_until(redis->io, [&] { return clients_running(*redis, "xread").size() == 1; }));
  // The pool's other client: neither its reader nor this redis-cli.
  std::string command_connection;
  std::istringstream lines(redis->cli({"CLIENT", "LIST"}));
  for (std::string line; std::getline(lines, line);)
    if (line.find(" cmd=xread ") == std::string::npos &&
        line.find(" cmd=client|list ") == std::string::npos)
      command_connection = line.substr(3, line.find(' ') - 3);
  REQUIRE_FALSE(command_connection.empty());
  CHECK(redis->cli({"CLIENT", "KILL", "ID", command_connection}) == "1");
  // Well before the next renewal (a third of the default minute), which would find out too.
  REQUIRE(run_until(
      redis->io, [&] { return pool.stats().reconnects == 1; }, 10s));
  CHECK(clients_running(*redis, "xread").size() == 1);
}
