// fork(): the channel, its order with the exit events, bad peers, and Node on either side.
#include "common.hpp"
#include "helpers/order.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <sys/socket.h>
#include <thread>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

const std::string data_dir = CHILDPROC_TEST_DATA;

bool have_node() {
  static const bool found = std::system("node --version > /dev/null 2>&1") == 0;
  return found;
}

} // namespace

TEST_CASE("fork gives a channel both ways and the worker ends when the parent disconnects",
          "[fork]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  std::vector<std::string> events;
  std::optional<int> code;
  child.on_spawn([&] { events.push_back("spawn"); });
  child.on_message([&](const childproc::message& m) {
    events.push_back("message");
    CHECK(m.json() == "start");
    child.disconnect();
  });
  child.on_disconnect([&] { events.push_back("disconnect"); });
  child.on_exit([&](std::optional<int> c, auto) {
    events.push_back("exit");
    code = c;
  });
  child.on_close([&](auto, auto) { events.push_back("close"); });
  CHECK(child.connected());
  CHECK(child.send("start"));
  io.run();
  CHECK(events == std::vector<std::string>{"spawn", "message", "disconnect", "exit", "close"});
  CHECK(code == 0);
  CHECK_FALSE(child.connected());
}

TEST_CASE("a worker ends by itself when its parent dies", "[fork][lifetime]") {
  auto r = childproc::spawn_sync(test::helper, {"fork-echo-and-die"});
  REQUIRE(r.status == 0);
  const pid_t worker = std::stoi(r.out.value());
  const auto deadline = clock_type::now() + 10s;
  while (test::alive(worker) && clock_type::now() < deadline)
    std::this_thread::sleep_for(10ms);
  CHECK_FALSE(test::alive(worker));
}

TEST_CASE("100000 small messages each way arrive complete and in order", "[fork][large]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  constexpr int count = 100000;
  int next = 0;
  bool in_order = true;
  child.on_message([&](const childproc::message& m) {
    in_order = in_order && m.json().at("i").as_int64() == next;
    if (++next == count)
      child.disconnect();
  });
  for (int i = 0; i < count; ++i) // send() may say "past the high-water mark": still queued
    child.send(boost::json::value{{"i", i}, {"pad", "0123456789abcdef"}});
  REQUIRE(child.connected());
  io.run();
  CHECK(next == count);
  CHECK(in_order);
}

TEST_CASE("an 8 MiB message round-trips byte-exact", "[fork][large]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  std::string big(8u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i)
    big[i] = static_cast<char>((i * 7919) & 0xff);
  bool same = false;
  child.on_message([&](const childproc::message& m) {
    same = m.is_bytes() && m.bytes() == big;
    child.disconnect();
  });
  child.send(childproc::message::bytes(big));
  io.run();
  CHECK(same);
}

TEST_CASE("a large message from the child arrives in many reads and reassembles", "[fork]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-big", std::to_string(3u << 20)});
  bool ok = false;
  child.on_message([&](const childproc::message& m) {
    ok = m.bytes().size() == (3u << 20);
    for (std::size_t k = 0; ok && k < m.bytes().size(); ++k)
      ok = m.bytes()[k] == static_cast<char>(k % 251);
    child.disconnect();
  });
  io.run();
  CHECK(ok);
}

TEST_CASE("user types travel as they are through Boost.JSON", "[fork]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  shop::order order{"grace", {10, 20, 12}, true};
  std::optional<int> total;
  child.on_message([&](const childproc::message& m) {
    total = m.json().at("total").to_number<int>();
    CHECK(m.json().at("customer") == "grace");
    child.disconnect();
  });
  child.send(boost::json::value{{"order", boost::json::value_from(order)}});
  io.run();
  CHECK(total == 42);
  // And back into the type.
  auto round = childproc::message::from(order).as<shop::order>();
  CHECK(round.customer == "grace");
  CHECK(round.item_prices == std::vector<int>{10, 20, 12});
}

TEST_CASE("everything the child sends before it exits arrives before disconnect, exit and close",
          "[fork]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-send-exit", "5000"});
  int messages = 0;
  int at_disconnect = -1, at_exit = -1, at_close = -1;
  child.on_message([&](const childproc::message& m) {
    CHECK(m.json().at("i").as_int64() == messages);
    ++messages;
  });
  child.on_disconnect([&] { at_disconnect = messages; });
  child.on_exit([&](std::optional<int> c, auto) {
    CHECK(c == 0);
    at_exit = messages;
    CHECK(at_disconnect == 5000);
  });
  child.on_close([&](auto, auto) { at_close = messages; });
  io.run();
  CHECK(messages == 5000);
  CHECK(at_disconnect == 5000);
  CHECK(at_exit == 5000);
  CHECK(at_close == 5000);
}

TEST_CASE("send after disconnect returns false and reports the error once", "[fork][errors]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  int errors = 0, completions = 0;
  std::error_code completion_error;
  child.on_error([&](const childproc::process_error& e) {
    ++errors;
    CHECK(e.code() == childproc::errc::channel_closed);
  });
  child.disconnect();
  CHECK_FALSE(child.connected());
  CHECK_FALSE(child.send("late", [&](std::error_code ec) {
    ++completions;
    completion_error = ec;
  }));
  io.run();
  CHECK(completions == 1);
  CHECK(completion_error == childproc::errc::channel_closed);
  CHECK(errors == 0);               // reported through the completion, not as an event too
  CHECK_FALSE(child.send("later")); // no completion: one error event
  io.restart();
  io.run();
  CHECK(errors == 1);
}

TEST_CASE("the child crashing mid-message gives error, disconnect and exit, in that order",
          "[fork][errors]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-crash"});
  std::vector<std::string> events;
  std::optional<int> sig;
  child.on_error([&](const childproc::process_error& e) {
    events.push_back("error");
    CHECK(e.code() == childproc::errc::malformed_message);
  });
  child.on_message([&](const auto&) { events.push_back("message"); });
  child.on_disconnect([&] { events.push_back("disconnect"); });
  child.on_exit([&](auto, std::optional<int> s) {
    events.push_back("exit");
    sig = s;
  });
  io.run();
  CHECK(events == std::vector<std::string>{"error", "disconnect", "exit"});
  CHECK(sig == SIGABRT);
}

TEST_CASE("an oversized or malformed frame closes the channel with an error", "[fork][errors]") {
  struct bad_frame {
    const char* hex;
    childproc::errc expected;
  };
  for (auto [hex, expected] : {bad_frame{"f0ffff0f02", childproc::errc::message_too_large},
                               bad_frame{"0100000007ff", childproc::errc::malformed_message},
                               bad_frame{"02000000017b7b", childproc::errc::malformed_message}}) {
    INFO(hex);
    asio::io_context io;
    auto child = childproc::fork(io, test::helper, {"ipc-raw", hex}, {.max_message_size = 1024});
    std::optional<std::error_code> error;
    bool disconnected = false;
    std::optional<int> code;
    child.channel().on_error([&](std::error_code ec) { error = ec; });
    child.on_disconnect([&] { disconnected = true; });
    child.on_exit([&](std::optional<int> c, auto) { code = c; });
    io.run();
    REQUIRE(error);
    CHECK(*error == expected);
    CHECK(disconnected);
    CHECK(code == 0); // the child saw EOF when the parent closed, and ended normally
  }
}

TEST_CASE("disconnect from the child's side reaches the parent", "[fork]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-disconnect"});
  std::vector<std::string> events;
  child.on_message(
      [&](const childproc::message& m) { events.push_back(m.json().as_string().c_str()); });
  child.on_disconnect([&] { events.push_back("disconnect"); });
  child.on_exit([&](auto, auto) { events.push_back("exit"); });
  io.run();
  CHECK(events == std::vector<std::string>{"bye", "disconnect", "exit"});
}

TEST_CASE("a child without a channel: send reports channel_closed", "[fork][errors]") {
  asio::io_context io;
  auto child = childproc::spawn(io, test::helper, {"exit", "0"});
  CHECK_FALSE(child.has_channel());
  std::error_code ec;
  CHECK_FALSE(child.send("x", [&](std::error_code e) { ec = e; }));
  CHECK_THROWS_AS(child.channel(), std::logic_error);
  io.run();
  CHECK(ec == childproc::errc::channel_closed);
}

TEST_CASE("fork of a missing program is an error event, and its channel is closed",
          "[fork][errors]") {
  asio::io_context io;
  auto child = childproc::fork(io, "/nonexistent/worker");
  std::vector<std::string> events;
  child.on_error([&](const auto&) { events.push_back("error"); });
  child.on_disconnect([&] { events.push_back("disconnect"); });
  child.on_close([&](auto, auto) { events.push_back("close"); });
  CHECK_FALSE(child.connected());
  io.run();
  CHECK(events == std::vector<std::string>{"error", "close"});
}

TEST_CASE("a C++ parent forks an unmodified Node worker", "[fork][node]") {
  if (!have_node()) {
    WARN("node is not installed: the Node interop test cannot run");
    return;
  }
  asio::io_context io;
  auto child = childproc::fork(io, data_dir + "/echo_worker.js");
  CHECK(child.channel().mode() == childproc::serialization::node_json);
  std::vector<boost::json::value> got;
  const std::vector<boost::json::value> sent{boost::json::value{{"a", 1}}, "ünïcödé ✓ 😀",
                                             boost::json::value{1, 2, 3}};
  std::optional<int> code;
  child.on_message([&](const childproc::message& m) {
    got.push_back(m.json());
    if (got.size() == sent.size())
      child.send("exit");
  });
  child.on_exit([&](std::optional<int> c, auto) { code = c; });
  for (const auto& v : sent)
    child.send(v);
  io.run();
  REQUIRE(got.size() == sent.size());
  for (std::size_t i = 0; i < sent.size(); ++i) {
    CHECK(got[i].at("echo") == sent[i]);
    CHECK(got[i].at("pid").to_number<pid_t>() == *child.original_pid());
  }
  CHECK(code == 0);
}

TEST_CASE("a Node parent drives a C++ worker with fork and with spawn's 'ipc'", "[fork][node]") {
  if (!have_node()) {
    WARN("node is not installed: the Node interop test cannot run");
    return;
  }
  for (const char* how : {"fork", "spawn"}) {
    INFO(how);
    auto r = childproc::spawn_sync("node", {data_dir + "/node_parent.js", test::helper, how},
                                   {.timeout = 60s});
    CHECK(r.status == 0);
    CHECK(r.out == "[{\"hello\":\"world\"},\"ünïcödé ✓ 😀\",[1,2,3],"
                   "{\"total\":7,\"customer\":\"ada\"}]\ndisconnect\nexit 0 null\n");
  }
}

TEST_CASE("self_exe names this test binary", "[fork]") {
  CHECK(childproc::self_exe().find("childproc_tests") != std::string::npos);
}

// Before the fix: the helper (the parent here) died of SIGPIPE: status nullopt, signal 13.
TEST_CASE("a dead peer never kills the parent", "[fork][errors]") {
  auto r = childproc::spawn_sync(test::helper, {"fork-send-to-deaf"}, {.timeout = 30s});
  CHECK(r.signal == std::nullopt);
  CHECK(r.status == 0);
  CHECK(r.out == "send: channel closed\ndisconnect\n");
}

namespace {

// A worker that sends {"i": 0}, {"i": 1}, {"i": 2} and exits.
std::vector<std::int64_t> numbers(const std::vector<childproc::message>& got) {
  std::vector<std::int64_t> out;
  for (const auto& m : got)
    out.push_back(m.json().at("i").as_int64());
  return out;
}

} // namespace

// Before the fix: a heap-use-after-free under ASan; in the debug build the running handler's
// own captures read back as garbage (captures_intact false) once the vector had reallocated.
TEST_CASE("a message handler can add a message handler; the new one gets the next message",
          "[fork][handlers]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-send-exit", "3"});
  // The handler is small enough for std::function to hold it inline, so that a handler list
  // that moves its elements moves the running handler's captures too. What it records lives in
  // statics: after such a move, its captured pointer could not be trusted.
  static std::vector<std::int64_t> first, added;
  static bool captures_intact;
  first.clear();
  added.clear();
  captures_intact = true;
  child.on_message([marker = std::int64_t{0x1234567}, self = &child](const auto& m) {
    first.push_back(m.json().at("i").as_int64());
    if (first.size() > 1)
      return;
    for (int k = 0; k < 8; ++k) // enough to make a vector reallocate under the running handler
      self->on_message([k](const childproc::message& n) {
        if (k == 0)
          added.push_back(n.json().at("i").as_int64());
      });
    captures_intact = marker == 0x1234567;
  });
  io.run();
  CHECK(captures_intact);
  CHECK(first == std::vector<std::int64_t>{0, 1, 2});
  CHECK(added == std::vector<std::int64_t>{1, 2});
}

// Before the fix: the second run delivered nothing more: got {0}, and the messages read with
// the one that threw were lost.
TEST_CASE("a throwing message handler propagates out of run(); the next run delivers the rest",
          "[fork][handlers]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-send-exit", "3"});
  std::vector<childproc::message> got;
  std::vector<std::string> events;
  child.on_message([&](const childproc::message& m) {
    got.push_back(m);
    events.push_back("message");
    if (got.size() == 1)
      throw std::runtime_error("from the handler");
  });
  child.on_disconnect([&] { events.push_back("disconnect"); });
  child.on_exit([&](auto, auto) { events.push_back("exit"); });
  CHECK_THROWS_WITH(io.run(), "from the handler");
  io.restart();
  io.run();
  CHECK(numbers(got) == std::vector<std::int64_t>{0, 1, 2});
  CHECK(events == std::vector<std::string>{"message", "message", "message", "disconnect", "exit"});
}

// Before the fix: the 2000-byte message was sent (done: success) and the child closed the
// channel with message_too_large.
TEST_CASE("a message larger than the channel's limit is refused at send and never inline",
          "[fork][errors]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"}, {.max_message_size = 1024});
  std::vector<std::string> events;
  child.channel().on_error([&](std::error_code ec) { events.push_back("error " + ec.message()); });
  child.on_message([&](const childproc::message& m) {
    events.push_back("message " + std::string(m.json().as_string()));
    child.disconnect();
  });
  CHECK_FALSE(child.send(childproc::message::bytes(std::string(2000, 'x')),
                         [&](std::error_code ec) { events.push_back("done " + ec.message()); }));
  CHECK_FALSE(child.send(std::string(1100, 'y'))); // no `done`: to the error handlers
  CHECK(events.empty());                           // never inline
  CHECK(child.send("small"));
  io.run();
  CHECK(events == std::vector<std::string>{"done message too large", "error message too large",
                                           "message small"});
}

// Before the fix: the child was told 18446744073709551615 (the frame's length field has 32 bits).
TEST_CASE("max_message_size is clamped to what a frame can carry", "[fork]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"env", "CHILDPROC_CHANNEL_MAX_MESSAGE"},
                               {.silent = true, .max_message_size = SIZE_MAX});
  std::string out;
  child.out().on_data([&](std::string_view d) { out += d; });
  io.run();
  CHECK(out == "4294967295\n");
}

// Before the fix: nothing was reported (errors == {}).
TEST_CASE("a second disconnect reports that the IPC channel is already disconnected",
          "[fork][errors]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  std::vector<std::string> events;
  child.channel().on_error(
      [&](std::error_code ec) { events.push_back("channel " + ec.message()); });
  child.on_error(
      [&](const childproc::process_error& e) { events.push_back("child " + e.code().message()); });
  child.on_disconnect([&] { events.push_back("disconnect"); });
  child.disconnect();
  child.disconnect();
  CHECK(events.empty()); // posted, never inline
  io.run();
  CHECK(events == std::vector<std::string>{"disconnect",
                                           "channel IPC channel is already disconnected",
                                           "child IPC channel is already disconnected"});
}

// Before the fix: the worker's fd 0 was "socket": the parent's own end of the channel. Now the
// closed fd 0 is inherited as the launcher does for any closed inherited fd: /dev/null.
TEST_CASE("fork in a process whose fd 0 is closed does not give the worker its channel as fd 0",
          "[fork]") {
  auto r = childproc::spawn_sync(test::helper, {"fork-fd0-closed"}, {.timeout = 30s});
  CHECK(r.status == 0);
  CHECK(r.out == "char /dev/null\n");
}

// Before the fix: the lone surrogate ended the channel (malformed_message) and no echo came.
TEST_CASE("a Node worker's lone surrogates, deep nesting and bytes messages all get through",
          "[fork][node]") {
  if (!have_node()) {
    WARN("node is not installed: the Node interop test cannot run");
    return;
  }
  asio::io_context io;
  auto child = childproc::fork(io, data_dir + "/interop_worker.js");
  std::string deep_text = std::string(1000, '[') + std::string(1000, ']');
  std::string raw(256, '\0');
  for (int i = 0; i < 256; ++i)
    raw[i] = static_cast<char>(i);
  std::vector<boost::json::value> got;
  std::vector<std::string> errors;
  child.on_error([&](const childproc::process_error& e) { errors.push_back(e.what()); });
  child.on_message([&](const childproc::message& m) {
    got.push_back(m.json());
    if (got.size() == 3)
      child.send("exit");
  });
  child.send("lone");
  boost::json::parse_options deep_options;
  deep_options.max_depth = 2000;
  child.send(boost::json::parse(deep_text, {}, deep_options));
  child.send(childproc::message::bytes(raw));
  io.run();
  CHECK(errors.empty());
  REQUIRE(got.size() == 3);
  CHECK(got[0] == "a\xEF\xBF\xBD"
                  "b"); // U+FFFD, as Node's own Buffer.from('\ud800') gives
  CHECK(boost::json::serialize(got[1]) == deep_text);
  std::string hex;
  for (int i = 0; i < 256; ++i) {
    char two[3];
    std::snprintf(two, sizeof two, "%02x", i);
    hex += two;
  }
  CHECK(got[2] == boost::json::value{{"hex", hex}});
}

// Before the fix: "garbage", "0" and "12abc" gave a limit of 0 or 12 bytes, and the worker
// refused the parent's first message (message_too_large).
TEST_CASE("an unusable CHILDPROC_CHANNEL_MAX_MESSAGE falls back to the default limit",
          "[fork][errors]") {
  for (const char* text : {"garbage", "0", "12abc", "-5", "", "99999999999999999999999"}) {
    INFO("CHILDPROC_CHANNEL_MAX_MESSAGE=" << text);
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    ::setenv("CHILDPROC_CHANNEL_FD", std::to_string(pair[0]).c_str(), 1);
    ::setenv("CHILDPROC_CHANNEL_MAX_MESSAGE", text, 1);
    std::vector<std::string> events;
    {
      asio::io_context io;
      auto channel = childproc::parent_channel(io);
      CHECK(::getenv("CHILDPROC_CHANNEL_MAX_MESSAGE") == nullptr);
      channel.on_message([&](const childproc::message& m) {
        events.push_back(std::string(m.json().as_string()));
        ::close(pair[1]);
      });
      channel.on_error([&](std::error_code ec) {
        events.push_back(ec.message());
        ::close(pair[1]);
      });
      const std::string frame("\x0f\x00\x00\x00\x01\"fifteen bytes\"", 20);
      REQUIRE(::write(pair[1], frame.data(), frame.size()) == 20);
      io.run();
    }
    CHECK(events == std::vector<std::string>{"fifteen bytes"});
  }
}

// Before the fix: got {0}: the nested loop's reads overwrote the thread's channel buffer under
// the outer decoder, and the outer messages 1 and 2 were lost.
TEST_CASE("a message handler that runs a nested event loop keeps the messages it was reading",
          "[fork][handlers]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-send-exit", "3"});
  std::vector<childproc::message> got;
  std::size_t nested_size = 0;
  child.on_message([&](const childproc::message& m) {
    got.push_back(m);
    if (got.size() > 1)
      return;
    // Another child's channel, read on this thread while the outer read is being decoded.
    asio::io_context nested;
    auto other = childproc::fork(nested, test::helper, {"ipc-big", "200000"});
    other.on_message([&](const childproc::message& b) {
      nested_size = b.bytes().size();
      other.disconnect();
    });
    nested.run();
  });
  io.run();
  CHECK(nested_size == 200000);
  CHECK(numbers(got) == std::vector<std::int64_t>{0, 1, 2});
}
