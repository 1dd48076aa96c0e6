// serve() and the Node module: the worker side of a pool, driven by hand with raw envelopes
// (never through pool_wire, so that these tests pin the wire format).
#include "common.hpp"

#include "../src/channel_state.hpp"
#include "../src/serve_channel.hpp"

#include <childproc/serve.hpp>

#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <string_view>
#include <sys/ioctl.h>
#include <sys/socket.h>

using namespace std::chrono_literals;
using childproc::message;

namespace {

const std::string data_dir = CHILDPROC_TEST_DATA;
const std::string node_worker = data_dir + "/pool_worker.js";

bool have_node() {
  static const bool found = std::system("node --version > /dev/null 2>&1") == 0;
  return found;
}

std::string show(const message& m) {
  return m.is_bytes() ? "bytes[" + m.bytes() + "]" : boost::json::serialize(m.json());
}

// A worker process started as a pool would start it, fed envelopes written by hand.
struct worker {
  explicit worker(std::vector<std::string> args, std::string program = test::helper)
      : guard(io, 30s) {
    childproc::fork_options options;
    options.env_overrides = {{"CHILDPROC_POOL_WORKER", "1"}};
    child = childproc::fork(io, std::move(program), std::move(args), std::move(options));
    child.on_message([this](const message& m) {
      got.push_back(m);
      if (until && until(got)) {
        until = {};
        child.disconnect();
      }
    });
    child.on_exit([this](std::optional<int> c, std::optional<int> s) {
      code = c;
      signal = s;
      guard.cancel();
    });
    // A worker that never ends fails its test instead of hanging it.
    guard.async_wait([this](boost::system::error_code ec) {
      if (!ec)
        child.kill(SIGKILL);
    });
  }
  void send(std::string_view envelope) { child.send(message(boost::json::parse(envelope))); }
  void send_bytes(std::string bytes) { child.send(message::bytes(std::move(bytes))); }
  // Runs until the worker exits; disconnects once `done` holds for what it sent.
  void run(std::function<bool(const std::vector<message>&)> done) {
    until = std::move(done);
    io.run();
  }
  // Runs until the worker exits by itself.
  void run() { io.run(); }
  std::string log() const {
    std::string all;
    for (const auto& m : got)
      all += show(m) + "\n";
    return all;
  }

  asio::io_context io;
  asio::steady_timer guard;
  childproc::child_process child;
  std::vector<message> got;
  std::function<bool(const std::vector<message>&)> until;
  std::optional<int> code, signal;
};

// `m` is the JSON `expected` (member order is free).
bool is(const message& m, std::string_view expected) {
  return m.is_json() && m.json() == boost::json::parse(expected);
}

// The number of complete results (done or fail; a bytes result with its payload) in `got`.
std::size_t results(const std::vector<message>& got) {
  std::size_t n = 0;
  bool payload_due = false;
  for (const auto& m : got) {
    if (payload_due) {
      payload_due = false;
      ++n;
      continue;
    }
    const auto* obj = m.is_json() ? m.json().if_object() : nullptr;
    const auto* cp = obj ? obj->if_contains("cp") : nullptr;
    if (!cp || (*cp != "done" && *cp != "fail"))
      continue;
    if (obj->contains("bytes"))
      payload_due = true;
    else
      ++n;
  }
  return n;
}

auto after_results(std::size_t n) {
  return [n](const std::vector<message>& got) { return results(got) == n; };
}

// The C++ helper and, when node is installed, the Node worker script.
std::vector<std::pair<std::string, std::vector<std::string>>> both_workers() {
  std::vector<std::pair<std::string, std::vector<std::string>>> all{
      {test::helper, {"pool-worker"}}};
  if (have_node())
    all.push_back({node_worker, {}});
  else
    WARN("SKIP: node is not on PATH: the Node pool worker is not tested");
  return all;
}

} // namespace

// Before the fix: serve() did not exist (undefined reference); with a serve() that only ran the
// io_context: got: (nothing), the worker never said ready.
TEST_CASE("a pool worker says ready after on_init, which receives the worker data", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":{"answer":42}})");
    w.send(R"({"cp":"task","id":1,"name":"worker_data","data":null})");
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 2);
    CHECK(is(w.got[0], R"({"cp":"ready"})"));
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":{"answer":42}})"));
    CHECK(w.code == 0);
  }
}

TEST_CASE("each kind of handler answers its task with done", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"data":{"echo":[1,"two"]}})");          // plain, default
    w.send(R"({"cp":"task","id":2,"name":"sum","data":{"a":40,"b":2}})"); // plain
    w.send(R"({"cp":"task","id":3,"name":"pid","data":null})");           // plain
    w.send(R"({"cp":"task","id":4,"name":"progress","data":0})");         // context
    w.send(R"({"cp":"task","id":5,"name":"async_sleep","data":1})");      // coroutine
    w.send(R"({"cp":"task","id":9007199254740991,"name":"sum","data":{"a":-1,"b":1}})");
    w.run(after_results(6));
    INFO(w.log());
    REQUIRE(w.got.size() == 7);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":{"echo":[1,"two"]}})"));
    CHECK(is(w.got[2], R"({"cp":"done","id":2,"data":42})"));
    CHECK(is(w.got[3],
             R"({"cp":"done","id":3,"data":)" + std::to_string(*w.child.original_pid()) + "}"));
    CHECK(is(w.got[4], R"({"cp":"done","id":4,"data":"done"})"));
    // The coroutine's result may come before or after the last sum.
    CHECK(std::count_if(w.got.begin(), w.got.end(), [](const message& m) {
            return is(m, R"({"cp":"done","id":5,"data":1})");
          }) == 1);
    CHECK(std::count_if(w.got.begin(), w.got.end(), [](const message& m) {
            return is(m, R"({"cp":"done","id":9007199254740991,"data":0})");
          }) == 1);
    CHECK(w.code == 0);
  }
}

TEST_CASE("a bytes task and a bytes result travel as bytes messages", "[serve]") {
  const std::string payload("ab\0\xff\n{", 6);
  const std::string reversed(payload.rbegin(), payload.rend());
  SECTION("the C++ worker") {
    worker w({"pool-worker"});
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"reverse","bytes":true})");
    w.send_bytes(payload);
    w.send(R"({"cp":"task","id":2,"bytes":true})"); // the default handler echoes
    w.send_bytes(payload);
    w.run(after_results(2));
    INFO(w.log());
    REQUIRE(w.got.size() == 5);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"bytes":true})"));
    REQUIRE(w.got[2].is_bytes());
    CHECK(w.got[2].bytes() == reversed);
    CHECK(is(w.got[3], R"({"cp":"done","id":2,"bytes":true})"));
    REQUIRE(w.got[4].is_bytes());
    CHECK(w.got[4].bytes() == payload);
    CHECK(w.code == 0);
  }
  SECTION("the Node worker: a Buffer each way") {
    if (!have_node()) {
      WARN("SKIP: node is not on PATH: the Node pool worker is not tested");
      return;
    }
    worker w({}, node_worker);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"reverse","bytes":true})");
    w.send_bytes(payload); // Buffer JSON over Node's channel
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 3);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"bytes":true})"));
    boost::json::array expected;
    for (unsigned char c : reversed)
      expected.push_back(c);
    CHECK(is(w.got[2],
             boost::json::serialize(boost::json::value{{"type", "Buffer"}, {"data", expected}})));
    CHECK(w.code == 0);
  }
}

TEST_CASE("a handler that throws fails its task with the exception's type and message", "[serve]") {
  SECTION("the C++ worker") {
    worker w({"pool-worker"});
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"throw","data":"boom"})");
    w.send(R"({"cp":"task","id":2,"name":"throw_int","data":null})");
    w.send(R"({"cp":"task","id":3,"name":"sum","data":{"a":"not a number","b":1}})");
    w.send(R"({"cp":"task","id":4,"name":"pid","data":null})"); // the worker goes on
    w.run(after_results(4));
    INFO(w.log());
    REQUIRE(w.got.size() == 5);
    CHECK(is(w.got[1],
             R"({"cp":"fail","id":1,"error":{"name":"std::runtime_error","message":"boom"}})"));
    CHECK(is(w.got[2],
             R"({"cp":"fail","id":2,"error":{"name":"Error","message":"unknown exception"}})"));
    CHECK(w.got[3].json().at("cp") == "fail");
    // (Boost wraps what it throws: the name is the thrown type's, demangled.)
    CHECK(w.got[3].json().at("error").at("name") ==
          "boost::wrapexcept<boost::system::system_error>");
    CHECK(w.got[4].json().at("cp") == "done");
    CHECK(w.code == 0);
  }
  SECTION("the Node worker") {
    if (!have_node()) {
      WARN("SKIP: node is not on PATH: the Node pool worker is not tested");
      return;
    }
    worker w({}, node_worker);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"throw","data":"boom"})");
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 2);
    CHECK(is(w.got[1], R"({"cp":"fail","id":1,"error":{"name":"Error","message":"boom"}})"));
    CHECK(w.code == 0);
  }
}

TEST_CASE("a task of an unknown name fails with UnknownTask", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":7,"name":"no such task","data":null})");
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 2);
    CHECK(is(w.got[1], R"({"cp":"fail","id":7,"error":{"name":"UnknownTask",
                            "message":"no task named 'no such task'"}})"));
    CHECK(w.code == 0);
  }
}

TEST_CASE("progress messages arrive in order before their task's done", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"progress","data":100})");
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 102);
    for (int i = 0; i < 100; ++i)
      CHECK(is(w.got[1 + i], R"({"cp":"prog","id":1,"data":)" + std::to_string(i) + "}"));
    CHECK(is(w.got[101], R"({"cp":"done","id":1,"data":"done"})"));
    CHECK(w.code == 0);
  }
}

// Before the fix (cancelled() only read the flag, no drain_now): the cancel stayed unread in the
// socket while the handler ran: got only {"cp":"ready"} until the 30 s guard killed the worker.
TEST_CASE("a running synchronous handler sees a cancel sent while it runs", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"cancellable","data":null})");
    // No event says that the handler has started: the cancel is sent once the worker had ample
    // time to start it. (Sent earlier, it is seen as well: the result is the same.)
    asio::steady_timer later(w.io, 300ms);
    later.async_wait([&](auto) { w.send(R"({"cp":"cancel","id":1})"); });
    const auto start = std::chrono::steady_clock::now();
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 2);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":"cancelled"})"));
    CHECK(std::chrono::steady_clock::now() - start < 20s);
    CHECK(w.code == 0);
  }
}

// Before the fix (no signal bound to the co_spawn): the timer ran its full 20 s and the task
// answered {"cp":"done","id":1,"data":20000} ("20001728536ns < 15s" failed).
TEST_CASE("cancelling a coroutine task aborts its pending co_await", "[serve]") {
  worker w({"pool-worker"});
  w.send(R"({"cp":"init","data":null})");
  w.send(R"({"cp":"task","id":1,"name":"async_sleep","data":20000})");
  w.send(R"({"cp":"task","id":2,"name":"pid","data":null})");
  w.send(R"({"cp":"cancel","id":1})");
  w.send(R"({"cp":"cancel","id":1})");   // twice: ignored
  w.send(R"({"cp":"cancel","id":999})"); // no such task: ignored
  const auto start = std::chrono::steady_clock::now();
  w.run(after_results(2));
  INFO(w.log());
  REQUIRE(w.got.size() == 3);
  // The cancel may abort task 1 before or after task 2 answers.
  const auto& failed = w.got[1].json().at("id") == 1 ? w.got[1] : w.got[2];
  const auto& other = w.got[1].json().at("id") == 1 ? w.got[2] : w.got[1];
  CHECK(other.json().at("cp") == "done");
  CHECK(other.json().at("id") == 2);
  CHECK(failed.json().at("cp") == "fail");
  CHECK(failed.json().at("error").at("name") == "boost::system::system_error");
  CHECK(std::chrono::steady_clock::now() - start < 15s);
  CHECK(w.code == 0);
}

TEST_CASE("coroutine handlers run at once and complete out of order", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"async_sleep","data":200})");
    w.send(R"({"cp":"task","id":2,"name":"async_sleep","data":10})");
    w.run(after_results(2));
    INFO(w.log());
    REQUIRE(w.got.size() == 3);
    CHECK(is(w.got[1], R"({"cp":"done","id":2,"data":10})"));
    CHECK(is(w.got[2], R"({"cp":"done","id":1,"data":200})"));
    CHECK(w.code == 0);
  }
}

TEST_CASE("broadcasts reach on_broadcast in order with the tasks", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"bcast","data":"first"})");
    w.send(R"({"cp":"task","id":1,"name":"broadcasts","data":null})");
    w.send(R"({"cp":"bcast","data":{"second":2}})");
    w.send(R"({"cp":"task","id":2,"name":"broadcasts","data":null})");
    w.run(after_results(2));
    INFO(w.log());
    REQUIRE(w.got.size() == 3);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":["first"]})"));
    CHECK(is(w.got[2], R"({"cp":"done","id":2,"data":["first",{"second":2}]})"));
    CHECK(w.code == 0);
  }
}

// Before the fix (no unsetenv in serve): got {"cp":"done","id":1,"data":"1"}.
TEST_CASE("a pool worker's own children do not see CHILDPROC_POOL_WORKER", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"env","data":"CHILDPROC_POOL_WORKER"})");
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 2);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":null})"));
    CHECK(w.code == 0);
  }
}

TEST_CASE("on_init throwing ends the worker with exit code 1 and no ready", "[serve]") {
  std::vector<std::pair<std::string, std::vector<std::string>>> workers{
      {test::helper, {"pool-worker-init-throws"}}};
  if (have_node())
    workers.push_back({node_worker, {"init-throws"}});
  else
    WARN("SKIP: node is not on PATH: the Node pool worker is not tested");
  for (const auto& [program, args] : workers) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"pid","data":null})");
    w.run();
    INFO(w.log());
    CHECK(w.got.empty());
    CHECK(w.code == 1);
  }
}

TEST_CASE("a malformed envelope from the pool ends the worker with exit code 2", "[serve]") {
  const std::vector<std::vector<std::string>> sequences{
      {R"(42)"},
      {R"({"cp":"bogus"})"},
      {R"({"cp":"task","id":1,"data":null})"},                          // before init
      {R"({"cp":"init","data":null})", R"({"cp":"init","data":null})"}, // init twice
      {R"({"cp":"init","data":null})", R"({"cp":"done","id":1,"data":null})"},
      {R"({"cp":"init","data":null})", R"({"cp":"task","id":-1,"data":null})"},
      {R"({"cp":"init","data":null})", R"({"cp":"task","name":"pid","data":null})"},
      {R"({"cp":"init","data":null})", R"({"cp":"task","id":1,"bytes":true})", R"("not bytes")"},
  };
  for (const auto& [program, args] : both_workers()) {
    for (const auto& sequence : sequences) {
      INFO(program << ": " << sequence.back());
      worker w(args, program);
      for (const auto& envelope : sequence)
        w.send(envelope);
      w.run();
      INFO(w.log());
      CHECK(w.code == 2);
    }
  }
}

// Before the fix (serve() did not stop the io_context): the worker ran its 20 s coroutine to the
// end before exiting ("20002868253ns < 15s" failed).
TEST_CASE("a pool worker exits 0 when the pool disconnects, even with a task running", "[serve]") {
  for (const auto& [program, args] : both_workers()) {
    INFO(program);
    worker w(args, program);
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"async_sleep","data":20000})");
    const auto start = std::chrono::steady_clock::now();
    w.run([](const std::vector<message>& got) { return got.size() == 1; }); // after ready
    INFO(w.log());
    CHECK(w.got.size() == 1);
    CHECK(w.code == 0);
    CHECK(std::chrono::steady_clock::now() - start < 15s);
  }
}

// The pool's tests rely on these tasks of the helper misbehaving exactly so.
// Before the fix: the modes did not exist (the helper exited with 2 at once, no ready).
TEST_CASE("the test worker's misbehaving tasks and modes do what the pool's tests expect",
          "[serve]") {
  SECTION("exit") {
    worker w({"pool-worker"});
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"exit","data":7})");
    w.run();
    CHECK(w.got.size() == 1);
    CHECK(w.code == 7);
  }
  SECTION("signal") {
    worker w({"pool-worker"});
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"signal","data":9})");
    w.run();
    CHECK(w.got.size() == 1);
    CHECK(w.signal == SIGKILL);
  }
  SECTION("garbage, wrong_id, sleep, ignore_cancel, alloc") {
    worker w({"pool-worker"});
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"garbage","data":null})");
    w.send(R"({"cp":"task","id":2,"name":"wrong_id","data":null})");
    w.send(R"({"cp":"task","id":3,"name":"sleep","data":5})");
    w.send(R"({"cp":"task","id":4,"name":"ignore_cancel","data":5})");
    w.send(R"({"cp":"cancel","id":4})");
    w.send(R"({"cp":"task","id":5,"name":"alloc","data":16})");
    w.run(after_results(6)); // wrong_id's extra done counts as one
    INFO(w.log());
    REQUIRE(w.got.size() == 8);
    CHECK(is(w.got[1], "42"));
    CHECK(is(w.got[2], R"({"cp":"done","id":1,"data":null})"));
    CHECK(is(w.got[3], R"({"cp":"done","id":1000002,"data":null})"));
    CHECK(is(w.got[4], R"({"cp":"done","id":2,"data":null})"));
    CHECK(is(w.got[5], R"({"cp":"done","id":3,"data":5})"));
    CHECK(is(w.got[6], R"({"cp":"done","id":4,"data":5})"));
    CHECK(w.got[7].json().at("id") == 5);
    CHECK(w.got[7].json().at("data").to_number<std::int64_t>() >= 16);
    CHECK(w.code == 0);
  }
  SECTION("pool-worker-exit-at-start") {
    worker w({"pool-worker-exit-at-start"});
    w.send(R"({"cp":"init","data":null})");
    w.run();
    CHECK(w.got.empty());
    CHECK(w.code == 3);
  }
  SECTION("pool-worker-slow-start") {
    worker w({"pool-worker-slow-start", "100"});
    w.send(R"({"cp":"init","data":null})");
    w.send(R"({"cp":"task","id":1,"name":"sum","data":{"a":1,"b":2}})");
    w.run(after_results(1));
    INFO(w.log());
    REQUIRE(w.got.size() == 2);
    CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":3})"));
    CHECK(w.code == 0);
  }
}

// Before the fix: is_pool_worker() and serve() did not exist (undefined references).
TEST_CASE("is_pool_worker() tells a pool worker; serve() without a parent channel throws, or "
          "reports channel_closed in its error_code form",
          "[serve]") {
  REQUIRE_FALSE(childproc::has_parent_channel());
  ::setenv("CHILDPROC_POOL_WORKER", "1", 1);
  CHECK(childproc::is_pool_worker());
  asio::io_context io;
  try {
    childproc::serve(io, [](const message& m) { return m; });
    FAIL("serve() returned");
  } catch (const std::system_error& e) {
    CHECK(e.code() == childproc::errc::channel_closed);
  }
  std::error_code ec;
  CHECK(childproc::serve(
            io, [](const message& m) { return m; }, {}, ec) == 1);
  CHECK(ec == childproc::errc::channel_closed);
  CHECK(childproc::serve(io, childproc::task_table{}, {}, ec) == 1);
  CHECK(ec == childproc::errc::channel_closed);
  ::unsetenv("CHILDPROC_POOL_WORKER");
  CHECK_FALSE(childproc::is_pool_worker());
}

// Before the fix (serve() had no error handler on the channel): exit code 0, as if the pool had
// disconnected normally.
TEST_CASE("a frame the worker cannot decode ends it with exit code 2", "[serve]") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  asio::io_context io;
  childproc::spawn_options options;
  options.stdio = {childproc::stdio::inherit, childproc::stdio::inherit, childproc::stdio::inherit,
                   childproc::stdio::fd(pair[1])};
  options.env_overrides = {{"CHILDPROC_CHANNEL_FD", "3"}, {"CHILDPROC_POOL_WORKER", "1"}};
  auto child = childproc::spawn(io, test::helper, {"pool-worker"}, std::move(options));
  ::close(pair[1]);
  std::optional<int> code;
  child.on_exit([&](std::optional<int> c, auto) { code = c; });
  const std::string init = R"({"cp":"init","data":null})";
  std::string frames;
  for (std::uint32_t n = static_cast<std::uint32_t>(init.size());
       char byte :
       {char(n & 0xff), char(n >> 8 & 0xff), char(n >> 16 & 0xff), char(n >> 24), char(1)})
    frames += byte;
  frames += init;
  frames += std::string("\x01\x00\x00\x00\x09x", 6); // kind 9: no such frame kind
  REQUIRE(::write(pair[0], frames.data(), frames.size()) == static_cast<ssize_t>(frames.size()));
  io.run();
  ::close(pair[0]);
  CHECK(code.value_or(-1) == 2);
}

// Before the fix (the signal was only emitted for a coroutine already spawned): the queued
// coroutine started after its cancel and slept its full 20 s ("done" == "fail", 20325649098ns).
TEST_CASE("a coroutine task cancelled while it waits its turn aborts at once when it starts",
          "[serve]") {
  worker w({"pool-worker"});
  w.send(R"({"cp":"init","data":null})");
  w.send(R"({"cp":"task","id":1,"name":"sleep","data":300})"); // holds the queue
  w.send(R"({"cp":"task","id":2,"name":"async_sleep","data":20000})");
  w.send(R"({"cp":"cancel","id":2})"); // read while task 1 sleeps
  const auto start = std::chrono::steady_clock::now();
  w.run(after_results(2));
  INFO(w.log());
  REQUIRE(w.got.size() == 3);
  CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":300})"));
  CHECK(w.got[2].json().at("cp") == "fail");
  CHECK(w.got[2].json().at("id") == 2);
  CHECK(std::chrono::steady_clock::now() - start < 15s);
  CHECK(w.code == 0);
}

// Before the fix (the module ran tasks as they came, without waiting for onInit's Promise):
// got {"cp":"done","id":1,"data":null}, {"cp":"done","id":2,...}, and the test disconnected
// before any ready.
TEST_CASE("a Node worker's tasks wait for its asynchronous onInit", "[serve][node]") {
  if (!have_node()) {
    WARN("SKIP: node is not on PATH: the Node pool worker is not tested");
    return;
  }
  worker w({"async-init"}, node_worker);
  w.send(R"({"cp":"init","data":"configured"})");
  w.send(R"({"cp":"task","id":1,"name":"worker_data","data":null})");
  w.send(R"({"cp":"bcast","data":1})");
  w.send(R"({"cp":"task","id":2,"name":"broadcasts","data":null})");
  w.run(after_results(2));
  INFO(w.log());
  REQUIRE(w.got.size() == 3);
  CHECK(is(w.got[0], R"({"cp":"ready"})"));
  CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":"configured"})"));
  CHECK(is(w.got[2], R"({"cp":"done","id":2,"data":[1]})"));
  CHECK(w.code == 0);
}

// Before the fix (on_broadcast called without a catch): the exception left serve() and ended
// the worker: got only {"cp":"ready"} ("1 == 2").
TEST_CASE("an on_broadcast that throws does not end the worker", "[serve]") {
  worker w({"pool-worker"});
  w.send(R"({"cp":"init","data":null})");
  w.send(R"({"cp":"bcast","data":"throw"})");
  w.send(R"({"cp":"bcast","data":"next"})");
  w.send(R"({"cp":"task","id":1,"name":"broadcasts","data":null})");
  w.run(after_results(1));
  INFO(w.log());
  REQUIRE(w.got.size() == 2);
  CHECK(is(w.got[1], R"({"cp":"done","id":1,"data":["throw","next"]})"));
  CHECK(w.code == 0);
}

// Before the fix (the step's results waited for a posted flush): a handler posted by the first
// task ran before they were written ("unread_at_marker > unread_at_first_task" was "19 > 19").
TEST_CASE("serve() writes the results of the tasks one read brought in before its event loop "
          "runs anything else",
          "[serve]") {
  using childproc::detail::channel_access;
  using childproc::detail::channel_state;
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) == 0);
  asio::io_context pool_io, worker_io;
  auto pool_end = std::make_shared<channel_state>(pool_io.get_executor(),
                                                  childproc::detail::posix::unique_fd(fds[0]),
                                                  childproc::detail::wire::framed, 1 << 20);
  childproc::channel worker_end(std::make_shared<channel_state>(
      worker_io.get_executor(), childproc::detail::posix::unique_fd(fds[1]),
      childproc::detail::wire::framed, 1 << 20));
  pool_end->start();
  channel_access::state(worker_end)->start();
  const auto send = [&](std::string_view e) { pool_end->send(message(boost::json::parse(e)), {}); };
  send(R"({"cp":"init","data":null})");
  // The tasks are all in the socket before the worker reads them: one read brings them in.
  childproc::serve_options options;
  options.on_init = [&](const message&) {
    for (int id = 1; id <= 3; ++id)
      send(R"({"cp":"task","id":)" + std::to_string(id) + R"(,"data":)" + std::to_string(id) + "}");
  };
  const auto unread = [&] {
    int n = -1;
    ::ioctl(fds[0], FIONREAD, &n);
    return n;
  };
  int unread_at_first_task = -1, unread_at_marker = -1;
  childproc::task_table tasks{{"", [&](const message& m) {
                                 if (m.json() != 1)
                                   return m;
                                 unread_at_first_task = unread(); // `ready` only
                                 asio::post(worker_io, [&] {
                                   unread_at_marker = unread();
                                   ::shutdown(fds[0], SHUT_WR); // the pool is done: serve() ends
                                 });
                                 return m;
                               }}};
  const auto writes_before = channel_access::state(worker_end)->writes;
  CHECK(childproc::detail::serve_channel(worker_io, worker_end, std::move(tasks), std::nullopt,
                                         std::move(options)) == 0);
  CHECK(unread_at_marker > unread_at_first_task);
  // `ready` (written at once, before the first task) and the three results together.
  CHECK(channel_access::state(worker_end)->writes - writes_before == 2);
  std::vector<message> got;
  pool_end->message_handlers.add([&](const message& m, childproc::channel) { got.push_back(m); });
  pool_io.poll();
  REQUIRE(got.size() == 4);
  CHECK(is(got[3], R"({"cp":"done","id":3,"data":3})"));
  pool_end->close({}, true);
}
