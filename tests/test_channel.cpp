// The channel as an Asio object: async_receive / async_send with any token, backpressure, the
// handler's own channel; handle passing (SCM_RIGHTS), framed and with Node.
#include "common.hpp"
#include "helpers/handles.hpp"

#include "../src/frame.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <boost/json/serialize.hpp>

#include <memory>
#include <poll.h>
#include <thread>

namespace {

const std::string data_dir = CHILDPROC_TEST_DATA;

// The descriptors open in this process once the library's process-wide ones exist (the SIGCHLD
// exit watcher opens its own at the first child): what a test must come back to.
std::vector<int> fds_after_warm_up() {
  REQUIRE(childproc::spawn_sync(test::helper, {"exit", "0"}).status == 0);
  return test::open_fds();
}

// How many pipes this process has open.
int open_pipes() {
  int pipes = 0;
  for (int fd : test::open_fds())
    pipes += handles::kind_of(fd) == "pipe";
  return pipes;
}

bool have_node() {
  static const bool found = std::system("node --version > /dev/null 2>&1") == 0;
  return found;
}

} // namespace

// Before the fix: did not compile (no channel::async_receive).
TEST_CASE("async_receive gets 100000 messages in order in a coroutine", "[channel][receive]") {
  asio::io_context io;
  constexpr int count = 100000;
  auto child = childproc::fork(io, test::helper, {"ipc-send-exit", std::to_string(count)});
  int next = 0;
  bool in_order = true;
  std::error_code last;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = child.channel();
        for (;;) {
          auto [ec, m] = co_await ch.async_receive(asio::as_tuple(asio::use_awaitable));
          if (ec) {
            last = ec;
            break;
          }
          in_order = in_order && m.json().at("i").as_int64() == next;
          ++next;
        }
      },
      asio::detached);
  io.run();
  CHECK(next == count);
  CHECK(in_order);
  CHECK(last == childproc::errc::channel_closed);
}

// Before the fix: did not compile (no channel::async_receive).
TEST_CASE("async_receive works with callbacks, deferred and use_future", "[channel][receive]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  auto ch = child.channel();
  ch.send("one");
  ch.send("two");
  ch.send("three");
  std::vector<std::string> got;
  ch.async_receive([&](boost::system::error_code ec, childproc::message m) {
    got.push_back(ec ? "error" : std::string(m.json().as_string()));
  });
  ch.async_receive(asio::deferred)([&](boost::system::error_code ec, childproc::message m) {
    got.push_back(ec ? "error" : std::string(m.json().as_string()));
  });
  auto third = ch.async_receive(asio::use_future);
  std::thread runner([&] { io.run(); });
  const auto m = third.get();
  asio::post(io, [&] {
    got.push_back(std::string(m.json().as_string()));
    ch.disconnect();
  });
  runner.join();
  CHECK(got == std::vector<std::string>{"one", "two", "three"});
}

// Before the fix: did not compile (no channel::async_receive).
TEST_CASE("a cancelled receive completes with operation_aborted and loses no message",
          "[channel][receive]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  auto ch = child.channel();
  asio::cancellation_signal signal;
  std::vector<std::string> events;
  ch.async_receive(asio::bind_cancellation_slot(
      signal.slot(), [&](boost::system::error_code ec, childproc::message) {
        events.push_back(ec == asio::error::operation_aborted ? "aborted" : "other");
        ch.send("after");
        ch.async_receive([&](boost::system::error_code ec2, childproc::message m) {
          events.push_back(ec2 ? "error" : std::string(m.json().as_string()));
          ch.disconnect();
        });
      }));
  asio::post(io, [&] { signal.emit(asio::cancellation_type::terminal); });
  io.run();
  CHECK(events == std::vector<std::string>{"aborted", "after"});
}

// Before the fix: did not compile (no channel::async_receive).
TEST_CASE("messages queued before the close are received, then channel_closed; handlers hear "
          "nothing in pulled mode",
          "[channel][receive]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-send-exit", "3"});
  auto ch = child.channel();
  int handled = 0;
  ch.on_message([&](const childproc::message&) { ++handled; });
  std::vector<std::string> events;
  std::function<void()> receive_later;
  // The first receive switches to pulled mode; the rest wait for the child's exit.
  ch.async_receive([&](boost::system::error_code ec, childproc::message m) {
    // std::string("i") +: g++ 12 -O3 warns falsely (-Wrestrict) on "literal" + std::string.
    events.push_back(ec ? "error" : std::string("i") + std::to_string(m.json().at("i").as_int64()));
  });
  // The exit comes once the child's three messages were read.
  child.on_exit([&](auto, auto) { receive_later(); });
  receive_later = [&] {
    ch.async_receive([&](boost::system::error_code ec, childproc::message m) {
      if (ec) {
        events.push_back(ec == childproc::errc::channel_closed ? "closed" : ec.message());
        return;
      }
      events.push_back(std::string("i") + std::to_string(m.json().at("i").as_int64()));
      receive_later();
    });
  };
  io.run();
  CHECK(events == std::vector<std::string>{"i0", "i1", "i2", "closed"});
  CHECK(handled == 0);
}

// Before the fix: did not compile (no channel::async_send).
TEST_CASE("async_send completes once the message is written, in a coroutine",
          "[channel][receive]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  std::string echoed;
  boost::system::error_code sent;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto ch = child.channel();
        co_await ch.async_send(childproc::message("ping"), asio::use_awaitable);
        auto m = co_await ch.async_receive(asio::use_awaitable);
        echoed = std::string(m.json().as_string());
        ch.disconnect();
        auto [ec] =
            co_await ch.async_send(childproc::message("late"), asio::as_tuple(asio::use_awaitable));
        sent = ec;
      },
      asio::detached);
  io.run();
  CHECK(echoed == "ping");
  CHECK(sent == childproc::errc::channel_closed);
}

// Before the fix: send() returned true however much was queued (the loop never saw false).
TEST_CASE("send returns false from the high-water mark and drain follows below it",
          "[channel][backpressure]") {
  asio::io_context io;
  auto child = childproc::fork(io, test::helper, {"ipc-echo"});
  auto ch = child.channel();
  CHECK(ch.high_water_mark() == 128 * 1024);
  ch.high_water_mark(4096);
  const std::string pad(1000, 'x');
  int sent = 0;
  bool refused = false;
  std::size_t queued_at_refusal = 0;
  while (!refused && sent < 100000) {
    refused = !ch.send(boost::json::value{{"pad", pad}});
    ++sent;
    if (refused)
      queued_at_refusal = ch.pending_bytes();
  }
  REQUIRE(refused);
  CHECK(queued_at_refusal >= 4096);
  CHECK(ch.connected()); // a refusal is advice: the message is queued
  int drains = 0;
  std::size_t queued_at_drain = 1 << 30;
  ch.on_drain([&] {
    ++drains;
    queued_at_drain = ch.pending_bytes();
  });
  int echoed = 0;
  ch.on_message([&](const childproc::message&) {
    if (++echoed == sent)
      ch.disconnect();
  });
  io.run();
  CHECK(echoed == sent);
  CHECK(drains == 1);
  CHECK(queued_at_drain < 4096);
}

// Before the fix: did not compile (a message handler could not be given its channel).
TEST_CASE("a message handler can disconnect its own channel (Node's child.on('message', m => "
          "child.disconnect()))",
          "[channel]") {
  asio::io_context io;
  std::weak_ptr<int> handler_alive;
  std::vector<std::string> events;
  {
    auto child = childproc::fork(io, test::helper, {"ipc-echo"});
    auto sentinel = std::make_shared<int>(0);
    handler_alive = sentinel;
    child.channel().on_message(
        [&events, sentinel](const childproc::message& m, childproc::channel ch) {
          events.push_back(std::string(m.json().as_string()));
          ch.disconnect();
        });
    child.on_disconnect([&] { events.push_back("disconnect"); });
    child.on_exit([&](std::optional<int> code, auto) {
      events.push_back("exit " + std::to_string(code.value_or(-1)));
    });
    child.send("hello");
  }
  io.run();
  CHECK(events == std::vector<std::string>{"hello", "disconnect", "exit 0"});
  CHECK(handler_alive.expired()); // the handler was released with the channel's handle in it
}

// ---- Handle passing (SCM_RIGHTS) ----

namespace {

// The parent's side of a chan-handles child: sends, then collects every reply in order.
struct handle_peer {
  asio::io_context io;
  childproc::child_process child = childproc::fork(io, test::helper, {"chan-handles"});
  childproc::channel ch = child.channel();
  // Sends `request` and runs until its reply came; returns it.
  childproc::message ask(const boost::json::value& request, childproc::owned_fd fd = {}) {
    std::optional<childproc::message> reply;
    ch.async_receive([&](boost::system::error_code ec, childproc::message m) {
      REQUIRE(!ec);
      reply = std::move(m);
    });
    if (fd)
      ch.send(request, std::move(fd));
    else
      ch.send(request);
    while (!reply && io.run_one()) {
    }
    REQUIRE(reply);
    return std::move(*reply);
  }
  std::vector<int> child_fds() {
    std::vector<int> fds;
    const auto reply = ask({{"fds", 1}});
    for (const auto& fd : reply.json().at("fds").as_array())
      fds.push_back(static_cast<int>(fd.as_int64()));
    return fds;
  }
  void finish() {
    ch.disconnect();
    io.run();
  }
};

} // namespace

// Before the fix: did not compile (no channel::send(message, owned_fd)).
TEST_CASE("a socket, a pipe and a file pass both ways with their messages", "[channel][handles]") {
  const auto before = fds_after_warm_up();
  {
    handle_peer peer;
    for (std::string kind : {"pipe", "socket", "file"}) {
      INFO(kind);
      // Parent to child: the child reads what the descriptor holds.
      const auto reply =
          peer.ask({{"i", 1}}, childproc::owned_fd(handles::make(kind, "to " + kind)));
      CHECK(reply.json().at("kind") == kind.c_str());
      CHECK(reply.json().at("text") == ("to " + kind).c_str());
      CHECK_FALSE(reply.has_handle());
      // Child to parent.
      const auto back = peer.ask({{"give", kind}, {"text", "from " + kind}});
      REQUIRE(back.has_handle());
      const childproc::owned_fd fd = back.take_handle();
      CHECK_FALSE(back.has_handle()); // taken once
      CHECK(handles::kind_of(fd.get()) == kind);
      CHECK(handles::read_text(fd.get()) == "from " + kind);
      CHECK(fd.get() > 2);
      CHECK((::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC) != 0);
    }
    peer.finish();
  }
  CHECK(test::open_fds() == before);
}

// Before the fix: did not compile (no channel::send(message, owned_fd)).
TEST_CASE("a primary hands an accepted TCP socket to a worker, which serves it",
          "[channel][handles]") {
  using asio::ip::tcp;
  handle_peer peer;
  tcp::acceptor acceptor(peer.io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  tcp::socket client(peer.io);
  client.connect(acceptor.local_endpoint());
  tcp::socket accepted = acceptor.accept();
  // The primary's side, whole: the accepted socket goes with the message.
  const auto reply =
      peer.ask({{"tcp", "served by"}}, childproc::owned_fd::from(std::move(accepted)));
  CHECK(reply.json().at("served") == 1);
  CHECK_FALSE(accepted.is_open());
  std::string text;
  boost::system::error_code ec;
  asio::read(client, asio::dynamic_buffer(text), ec);
  CHECK(ec == asio::error::eof);
  CHECK(text == "served by " + std::to_string(*peer.child.pid()));
  peer.finish();
}

// Before the fix: the send failed with channel_closed, and so did every later send (the
// channel stopped writing for good on the descriptor's EBADF); the next ask() never got a reply.
TEST_CASE("a descriptor that cannot be sent fails only its own send, and the channel goes on",
          "[channel][handles]") {
  handle_peer peer;
  int closed_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(closed_fd >= 0);
  ::close(closed_fd); // nothing opens a descriptor before the send below: the number stays free
  std::optional<std::error_code> refused;
  CHECK(peer.ch.send(boost::json::value{{"i", 1}}, childproc::owned_fd(closed_fd),
                     [&](std::error_code ec) { refused = ec; }));
  const auto reply = peer.ask({{"i", 2}});
  REQUIRE(refused);
  CHECK(*refused == std::errc::bad_file_descriptor);
  CHECK(reply.json().at("i") == 2); // the refused message never reached the child
  CHECK(reply.json().at("kind") == "none");
  CHECK(peer.ch.connected());
  peer.finish();
}

namespace {
// A fake peer's read: what the socket holds now (without waiting), closing the descriptors that
// came with it and counting them in `received_fds`.
std::string read_available(int fd, int& received_fds) {
  std::string bytes;
  char buffer[65536];
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  iovec into{buffer, sizeof buffer};
  msghdr header{};
  header.msg_iov = &into;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  ssize_t n;
  while ((n = ::recvmsg(fd, &header, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&header); c; c = CMSG_NXTHDR(&header, c)) {
      int received;
      std::memcpy(&received, CMSG_DATA(c), sizeof received);
      ::close(received);
      ++received_fds;
    }
    header.msg_controllen = sizeof control;
    bytes.append(buffer, static_cast<std::size_t>(n));
  }
  return bytes;
}
} // namespace

// Before the fix (in this session's first version of the rule above): the send failed at once
// with EAGAIN ("Resource temporarily unavailable") and its descriptor was closed: a full socket
// buffer was taken for the descriptor's own error.
TEST_CASE("a descriptor sent while the socket buffer is full waits for room, as any send",
          "[channel][handles]") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  childproc::owned_fd peer(pair[1]);
  ::setenv("CHILDPROC_CHANNEL_FD", std::to_string(pair[0]).c_str(), 1);
  asio::io_context io;
  auto ch = childproc::parent_channel(io); // owns pair[0]
  // Fill the kernel's buffer behind the channel's back, so that its next sendmsg gets EAGAIN.
  const std::string filler(4096, 'x');
  while (::send(pair[0], filler.data(), filler.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
  }
  REQUIRE(errno == EAGAIN);
  std::optional<std::error_code> sent;
  ch.send(boost::json::value{{"i", 1}}, childproc::owned_fd(handles::make("pipe", "x")),
          [&](std::error_code ec) { sent = ec; });
  io.poll();
  CHECK_FALSE(sent); // waiting for room
  // The reader drains the socket (the filler, then the frame and its descriptor).
  int received_fds = 0;
  const auto drain = [&] { read_available(peer.get(), received_fds); };
  for (int round = 0; round < 1000 && !sent; ++round) {
    drain();
    io.run_for(std::chrono::milliseconds(5));
  }
  REQUIRE(sent);
  CHECK(*sent == std::error_code());
  drain(); // the frame may have been written after the last read
  CHECK(received_fds == 1);
}

// Before the fix: did not compile (no message::take_handle).
TEST_CASE("a handle nobody takes is closed, in the child and in the parent", "[channel][handles]") {
  const auto before = fds_after_warm_up();
  {
    handle_peer peer;
    const auto child_before = peer.child_fds();
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    childproc::owned_fd write_end(ends[1]);
    CHECK(peer.ask({{"ignore", 1}}, childproc::owned_fd(ends[0])).json().at("ignored") == 1);
    CHECK(peer.child_fds() == child_before);
    // The read end's only copy was the child's, closed with its message: no reader is left.
    pollfd p{write_end.get(), POLLOUT, 0};
    CHECK(::poll(&p, 1, 0) == 1);
    CHECK((p.revents & POLLERR) != 0);
    // The parent ignores a handle too: a message it receives and drops.
    CHECK(peer.ask({{"give", "pipe"}, {"text", "unread"}}).has_handle());
    // A handle queued on a closed channel is closed at once.
    peer.finish();
    int more[2];
    REQUIRE(::pipe2(more, O_CLOEXEC) == 0);
    ::close(more[1]);
    CHECK_FALSE(peer.ch.send("late", childproc::owned_fd(more[0])));
    peer.io.restart();
    peer.io.run();
  }
  CHECK(test::open_fds() == before);
}

// Before the fix: did not compile (no channel::send(message, owned_fd)).
TEST_CASE("each descriptor arrives with its own message among many in one read",
          "[channel][handles]") {
  handle_peer peer;
  constexpr int count = 60;
  std::vector<childproc::message> replies;
  std::function<void()> next = [&] {
    peer.ch.async_receive([&](boost::system::error_code ec, childproc::message m) {
      if (ec)
        return;
      replies.push_back(std::move(m));
      if (replies.size() == count)
        peer.ch.disconnect();
      else
        next();
    });
  };
  next();
  // Queued before the child reads anything: the frames reach it packed in few reads.
  for (int i = 0; i < count; ++i) {
    const boost::json::value request{{"i", i}};
    if (i % 3 == 0)
      peer.ch.send(request, childproc::owned_fd(
                                handles::make("pipe", std::string("n") + std::to_string(i))));
    else
      peer.ch.send(request);
  }
  peer.io.run();
  REQUIRE(replies.size() == count);
  for (int i = 0; i < count; ++i) {
    INFO(i);
    CHECK(replies[i].json().at("i") == i);
    CHECK(replies[i].json().at("kind") == (i % 3 == 0 ? "pipe" : "none"));
    const std::string text = i % 3 == 0 ? std::string("n") + std::to_string(i) : std::string();
    CHECK(replies[i].json().at("text") == text.c_str());
  }
}

// Without the close dropping the decoder's descriptors: the pipe that came with the half frame
// was still open at `disconnect` (pipes: 1 more than before).
TEST_CASE("a peer that dies mid-message with a descriptor in flight leaks nothing",
          "[channel][handles]") {
  const auto before = fds_after_warm_up();
  const int pipes_before = open_pipes();
  std::vector<std::string> events;
  {
    asio::io_context io;
    auto child = childproc::fork(io, test::helper, {"chan-crash-fd"});
    child.channel().on_error([&](std::error_code ec) {
      events.push_back(ec == childproc::errc::malformed_message ? "malformed" : ec.message());
    });
    child.on_disconnect([&] {
      events.push_back("disconnect");
      CHECK(open_pipes() == pipes_before); // closed with the channel, not later
    });
    child.on_exit([&](auto, auto) { events.push_back("exit"); });
    io.run();
  }
  CHECK(events == std::vector<std::string>{"malformed", "disconnect", "exit"});
  CHECK(test::open_fds() == before);
}

// Before the fix: the truncated control data went unnoticed and the frame was delivered:
// events were {"message", "disconnect"}.
TEST_CASE("descriptors that do not fit the control buffer end the channel and are all closed",
          "[channel][handles]") {
  const auto before = fds_after_warm_up();
  const int pipes_before = open_pipes();
  std::vector<std::string> events;
  {
    asio::io_context io;
    auto child = childproc::fork(io, test::helper, {"chan-many-fds"});
    child.on_message([&](const childproc::message&) {
      events.push_back("message");
      child.disconnect();
    });
    child.channel().on_error([&](std::error_code ec) {
      events.push_back(ec == childproc::errc::malformed_message ? "malformed" : ec.message());
    });
    child.on_disconnect([&] {
      events.push_back("disconnect");
      CHECK(open_pipes() == pipes_before);
    });
    io.run();
  }
  CHECK(events == std::vector<std::string>{"malformed", "disconnect"});
  CHECK(test::open_fds() == before);
}

// The decoder's rule, without I/O: a read's descriptors go to the frame that starts in it.
TEST_CASE("the decoder gives a read's descriptor to the frame starting in that read",
          "[channel][handles][frame]") {
  using childproc::detail::decoder;
  using childproc::detail::wire;
  auto fd = [] { return childproc::owned_fd(handles::make("pipe", "x")); };
  auto frames = [](std::initializer_list<bool> with_handle) {
    std::string out;
    int i = 0;
    for (bool h : with_handle)
      childproc::detail::encode(boost::json::value{{"i", i++}}, wire::framed, out, h);
    return out;
  };
  SECTION("plain, handle, plain in one read with one descriptor") {
    decoder d(wire::framed, 1 << 20);
    std::vector<childproc::message> got;
    std::vector<childproc::owned_fd> fds;
    fds.push_back(fd());
    const auto bytes = frames({false, true, false});
    CHECK(!d.feed(bytes, std::move(fds),
                  [&](childproc::message&& m) { got.push_back(std::move(m)); }));
    REQUIRE(got.size() == 3);
    CHECK_FALSE(got[0].has_handle());
    CHECK(got[1].has_handle());
    CHECK_FALSE(got[2].has_handle());
  }
  SECTION("a handle frame cut over two reads takes the descriptor of its first read") {
    decoder d(wire::framed, 1 << 20);
    std::vector<childproc::message> got;
    const auto bytes = frames({true});
    std::vector<childproc::owned_fd> fds;
    fds.push_back(fd());
    CHECK(!d.feed(std::string_view(bytes).substr(0, 3), std::move(fds),
                  [&](auto&& m) { got.push_back(std::move(m)); }));
    CHECK(
        !d.feed(std::string_view(bytes).substr(3), [&](auto&& m) { got.push_back(std::move(m)); }));
    REQUIRE(got.size() == 1);
    CHECK(got[0].has_handle());
  }
  SECTION("a frame claiming a descriptor that did not come is malformed") {
    decoder d(wire::framed, 1 << 20);
    CHECK(d.feed(frames({true}), [](auto&&) {}) == childproc::errc::malformed_message);
  }
  SECTION("a descriptor that no frame starting in its read claims is malformed") {
    decoder d(wire::framed, 1 << 20);
    const auto bytes = frames({false, true});
    const std::size_t first = bytes.size() / 2; // the first frame's bytes only
    std::vector<childproc::owned_fd> fds;
    fds.push_back(fd());
    CHECK(!d.feed(std::string_view(bytes).substr(0, first), std::move(fds), [](auto&&) {}));
    CHECK(d.feed(std::string_view(bytes).substr(first), [](auto&&) {}) ==
          childproc::errc::malformed_message);
  }
}

// ---- Node's handle protocol (node_json) ----

// Before the fix: did not compile (no channel::send(message, owned_fd)); Node's NODE_HANDLE
// messages were dropped as internal ones.
TEST_CASE("a C++ parent hands a socket to a Node worker and takes one back", "[channel][node]") {
  if (!have_node()) {
    WARN("node is not installed: the Node interop test cannot run");
    return;
  }
  using asio::ip::tcp;
  const auto before = fds_after_warm_up();
  {
    asio::io_context io;
    auto child = childproc::fork(io, data_dir + "/handle_worker.js");
    auto ch = child.channel();
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    // C++ to Node: an accepted connection, served by Node.
    tcp::socket client(io);
    client.connect(acceptor.local_endpoint());
    ch.send(boost::json::value{{"op", "serve"}, {"text", "hi"}}, acceptor.accept());
    std::string served, from_cpp;
    std::vector<std::string> events;
    asio::async_read(client, asio::dynamic_buffer(served),
                     [&](boost::system::error_code, std::size_t) {
                       events.push_back("served");
                       client.close(); // Node's end of it stays open until then
                     });
    // Node to C++: Node connects to us and sends its socket; we write through it. EOF on our
    // accepted end also needs Node to close its copy, which it does at our NODE_HANDLE_ACK.
    tcp::socket accepted(io);
    acceptor.async_accept(accepted, [&](boost::system::error_code ec) {
      REQUIRE(!ec);
      asio::async_read(accepted, asio::dynamic_buffer(from_cpp),
                       [&](boost::system::error_code, std::size_t) {
                         events.push_back("eof");
                         ch.send(boost::json::value{{"op", "bye"}});
                       });
    });
    ch.on_message([&](const childproc::message& m) {
      if (m.json().as_object().contains("served")) {
        events.push_back(m.json().at("served") == true ? "node got a net.Socket" : "not a socket");
        ch.send(boost::json::value{{"op", "connect"}, {"port", acceptor.local_endpoint().port()}});
        return;
      }
      CHECK(m.json().at("op") == "socket");
      REQUIRE(m.has_handle());
      auto socket = childproc::adopt<tcp::socket>(io, m.take_handle());
      asio::write(socket, asio::buffer(std::string("from C++")));
    });
    asio::steady_timer bound(io, std::chrono::seconds(30));
    bound.async_wait([&](boost::system::error_code ec) {
      if (!ec) {
        events.push_back("timed out");
        child.kill(SIGKILL);
        ch.disconnect();
        acceptor.close();
        accepted.close();
        client.close();
      }
    });
    std::optional<int> code;
    child.on_exit([&](std::optional<int> c, auto) {
      code = c;
      bound.cancel();
    });
    io.run();
    CHECK(served == "node " + std::to_string(*child.original_pid()) + " hi");
    CHECK(from_cpp == "from C++");
    // Node ends the served socket before it answers on the channel, but the two reach us on
    // separate descriptors, in either order; "eof" comes after both (it needs our reply).
    REQUIRE(events.size() == 3);
    CHECK(std::is_permutation(events.begin(), events.begin() + 2,
                              std::vector<std::string>{"node got a net.Socket", "served"}.begin()));
    CHECK(events[2] == "eof");
    CHECK(code == 0);
  }
  CHECK(test::open_fds() == before);
}

// Before the fix: did not compile (no channel::send(message, owned_fd)).
TEST_CASE("a pipe cannot go to a Node peer: invalid_argument, and it is closed",
          "[channel][node]") {
  if (!have_node()) {
    WARN("node is not installed: the Node interop test cannot run");
    return;
  }
  const auto before = fds_after_warm_up();
  {
    asio::io_context io;
    auto child = childproc::fork(io, data_dir + "/handle_worker.js");
    std::error_code refused;
    CHECK_FALSE(child.channel().send(boost::json::value{{"op", "serve"}},
                                     childproc::owned_fd(handles::make("pipe", "x")),
                                     [&](std::error_code ec) {
                                       refused = ec;
                                       child.send(boost::json::value{{"op", "bye"}});
                                     }));
    io.run();
    CHECK(refused == childproc::errc::invalid_argument);
  }
  CHECK(test::open_fds() == before);
}

// Before the fix: a NODE_HANDLE line was dropped as one of Node's internal messages, whether or
// not a descriptor came with it (no message, nothing to answer).
TEST_CASE("the node_json decoder delivers a NODE_HANDLE's message with its descriptor and asks for "
          "an ACK, or a NACK without one",
          "[channel][handles][frame]") {
  using childproc::detail::decoder;
  using childproc::detail::wire;
  using control = decoder::node_control;
  const std::string line = "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"a\":1}}\n";
  decoder d(wire::node_json, 1 << 20);
  std::vector<childproc::message> got;
  auto sink = [&](childproc::message&& m) { got.push_back(std::move(m)); };
  CHECK(!d.feed(line, sink)); // no descriptor came: Node is asked to send it again
  CHECK(got.empty());
  CHECK(d.take_node_controls() == std::vector<control>{control::send_nack});
  std::vector<childproc::owned_fd> fds;
  fds.emplace_back(handles::make("pipe", "x"));
  CHECK(!d.feed(line + "{\"cmd\":\"NODE_HANDLE_ACK\"}\n", std::move(fds), sink));
  REQUIRE(got.size() == 1);
  CHECK(got[0].json() == boost::json::value{{"a", 1}});
  CHECK(got[0].has_handle());
  CHECK(d.take_node_controls() == std::vector<control>{control::send_ack, control::ack_received});
}

// Before the fix: got.size() == 1 — Node's internal message (its cluster's "newconn") reached the
// application as a user message, with the descriptor.
TEST_CASE("a NODE_HANDLE carrying one of Node's internal messages is acknowledged, not delivered, "
          "and its descriptor is closed",
          "[channel][handles][frame]") {
  using childproc::detail::decoder;
  using childproc::detail::wire;
  using control = decoder::node_control;
  const std::string line = "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"cmd\":"
                           "\"NODE_CLUSTER\",\"act\":\"newconn\"}}\n";
  decoder d(wire::node_json, 1 << 20);
  std::vector<childproc::message> got;
  auto sink = [&](childproc::message&& m) { got.push_back(std::move(m)); };
  const int fd = handles::make("pipe", "x");
  std::vector<childproc::owned_fd> fds;
  fds.emplace_back(fd);
  CHECK(!d.feed(line, std::move(fds), sink));
  CHECK(got.empty());
  CHECK(d.take_node_controls() == std::vector<control>{control::send_ack}); // Node holds none
  CHECK(::fcntl(fd, F_GETFD) == -1);
}

// Before the fix: FAILED: CHECK( errors == std::vector<std::error_code>{handle_not_received} ) with
// expansion: { childproc:6 } == { childproc:22 } (reported as channel_closed).
TEST_CASE("a handle Node refuses three times is handle_not_received and the channel stays open",
          "[channel][handles][node]") {
  int pair[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  childproc::owned_fd peer(pair[1]); // a fake Node: it NACKs every handle it is sent
  ::setenv("NODE_CHANNEL_FD", std::to_string(pair[0]).c_str(), 1);
  asio::io_context io;
  auto ch = childproc::parent_channel(io); // owns pair[0]
  std::vector<std::error_code> errors;
  ch.on_error([&](std::error_code ec) { errors.push_back(ec); });
  int handle[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, handle) == 0);
  childproc::owned_fd other_end(handle[1]);
  ch.send(boost::json::value{{"i", 1}}, childproc::owned_fd(handle[0]));
  std::string received;
  int handle_frames = 0, plain_frames = 0, received_fds = 0;
  const auto answer = [&] { // reads what came, NACKs each handle frame
    received += read_available(peer.get(), received_fds);
    for (std::size_t eol; (eol = received.find('\n')) != std::string::npos;) {
      const std::string_view line(received.data(), eol);
      if (line.find("\"cmd\":\"NODE_HANDLE\"") != std::string_view::npos) {
        ++handle_frames;
        const std::string_view nack = "{\"cmd\":\"NODE_HANDLE_NACK\"}\n";
        REQUIRE(::send(peer.get(), nack.data(), nack.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(nack.size()));
      } else if (line == "{\"after\":1}") {
        ++plain_frames;
      }
      received.erase(0, eol + 1);
    }
  };
  for (int round = 0; round < 1000 && errors.empty(); ++round) {
    answer();
    io.run_for(std::chrono::milliseconds(5));
  }
  CHECK(handle_frames == 4); // the first send and Node's three retransmissions
  CHECK(received_fds == 4);
  CHECK(errors == std::vector<std::error_code>{childproc::errc::handle_not_received});
  CHECK(ch.connected()); // Node only warns: the channel goes on
  std::optional<std::error_code> sent_after;
  ch.send(boost::json::value{{"after", 1}}, [&](std::error_code ec) { sent_after = ec; });
  for (int round = 0; round < 1000 && !sent_after; ++round)
    io.run_for(std::chrono::milliseconds(5));
  CHECK(sent_after == std::error_code());
  answer();
  CHECK(plain_frames == 1); // the message after it arrived
  CHECK(handle_frames == 4);
}
