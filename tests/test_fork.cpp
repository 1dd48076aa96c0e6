// fork(): the channel, its order with the exit events, bad peers, and Node on either side.
#include "common.hpp"
#include "helpers/order.hpp"

#include <boost/asio/steady_timer.hpp>

#include <chrono>
#include <csignal>
#include <cstdlib>
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
  const pid_t worker = std::stoi(r.out);
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
  for (int i = 0; i < count; ++i)
    REQUIRE(child.send(boost::json::value{{"i", i}, {"pad", "0123456789abcdef"}}));
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
