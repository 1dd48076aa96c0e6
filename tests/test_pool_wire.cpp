// The pool's envelope on its own (src/pool_protocol.hpp): both forms over a real channel, bad
// binary envelopes, and the batched writes of the pool's channels.
#include "../src/channel_state.hpp"
#include "../src/pool_protocol.hpp"

#include <childproc/error.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>

#include <catch2/catch.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <memory>
#include <string>
#include <vector>

namespace asio = boost::asio;
using childproc::message;
using childproc::detail::channel_state;
using childproc::detail::wire;
namespace pool_wire = childproc::detail::pool_wire;
using pool_wire::envelope;
using pool_wire::op;

namespace {

// Two framed channels over a socket pair, on one io_context.
struct channel_pair {
  channel_pair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) == 0);
    a = std::make_shared<channel_state>(
        io.get_executor(), childproc::detail::posix::unique_fd(fds[0]), wire::framed, 1 << 20);
    b = std::make_shared<channel_state>(
        io.get_executor(), childproc::detail::posix::unique_fd(fds[1]), wire::framed, 1 << 20);
    a->start();
    b->start();
  }
  // The bytes written to a's socket and not yet read by b.
  int unread() const {
    int queued = -1;
    ::ioctl(a->socket.native_handle(), SIOCOUTQ, &queued);
    return queued;
  }
  asio::io_context io;
  std::shared_ptr<channel_state> a, b;
};

std::vector<envelope> all_envelopes() {
  return {
      {op::init, 0, {}, message(boost::json::parse(R"({"config":[1,2,3]})"))},
      {op::task, 1, "resize", message(boost::json::parse(R"({"w":100})"))},
      {op::task, 2, {}, message::bytes(std::string("\0\1\2", 3))},
      {op::cancel, 1, {}, {}},
      {op::broadcast, 0, {}, message("hello")},
      {op::ready, 0, {}, {}},
      {op::done, 0xffffffffffffffffULL, {}, message(42)},
      {op::fail, 3, {}, message(boost::json::parse(R"({"name":"Error","message":"no"})"))},
      {op::progress, 4, {}, message(boost::json::value(0.5))},
  };
}

bool same(const message& x, const message& y) {
  if (x.is_bytes() || y.is_bytes())
    return x.is_bytes() && y.is_bytes() && x.bytes() == y.bytes();
  return x.json() == y.json();
}

} // namespace

TEST_CASE("both envelope forms carry every op, its id, name and data over a channel",
          "[pool_wire]") {
  for (const auto form : {pool_wire::form::binary, pool_wire::form::json})
    for (const bool views : {false, true}) { // views: as the pool and serve() read them
      INFO((form == pool_wire::form::binary ? "binary" : "json") << (views ? ", views" : ""));
      channel_pair pair;
      pool_wire::reader reader;
      std::vector<envelope> got;
      std::error_code ec;
      pair.b->message_handlers.add([&](const message& m, childproc::channel) {
        if (auto e = reader.feed(m, ec))
          got.push_back(std::move(*e));
      });
      if (views)
        pair.b->take_bytes_frames([&](std::string_view bytes) {
          if (auto e = reader.feed_bytes(bytes, ec))
            got.push_back(std::move(*e));
        });
      auto sent = all_envelopes();
      // A payload too large for a view (a message of its own) between small ones.
      sent.insert(sent.begin() + 3, {op::task, 5, "big", message::bytes(std::string(70000, 'q'))});
      for (const auto& e : sent)
        pool_wire::send(childproc::channel(pair.a), e, form);
      pair.a->disconnect();
      pair.io.run();
      REQUIRE_FALSE(ec);
      CHECK(reader.last_form() == form);
      REQUIRE(got.size() == sent.size());
      for (std::size_t i = 0; i < sent.size(); ++i) {
        INFO(i);
        CHECK(got[i].kind == sent[i].kind);
        CHECK(got[i].name == sent[i].name);
        const bool has_id =
            sent[i].kind != op::init && sent[i].kind != op::broadcast && sent[i].kind != op::ready;
        if (has_id)
          CHECK(got[i].id == sent[i].id);
        if (sent[i].kind != op::cancel && sent[i].kind != op::ready)
          CHECK(same(got[i].data, sent[i].data));
      }
    }
}

TEST_CASE("a malformed binary envelope is malformed_message, never a crash", "[pool_wire]") {
  const auto head = [](int kind, int flags, std::uint64_t id, std::uint32_t name_size) {
    std::string h;
    h.push_back(static_cast<char>(kind));
    h.push_back(static_cast<char>(flags));
    for (int i = 0; i < 8; ++i)
      h.push_back(static_cast<char>(id >> (8 * i)));
    for (int i = 0; i < 4; ++i)
      h.push_back(static_cast<char>(name_size >> (8 * i)));
    return h;
  };
  const std::vector<std::pair<const char*, std::string>> bad{
      {"empty", ""},
      {"shorter than the head", head(1, 1, 1, 0).substr(0, 13)},
      {"an op out of range", head(8, 0, 1, 0)},
      {"unknown flags", head(1, 4, 1, 0)},
      {"JSON data and a payload at once", head(1, 3, 1, 0) + "1"},
      {"a name longer than the message", head(1, 0, 1, 5) + "abc"},
      {"a name length near 2^32", head(1, 0, 1, 0xffffffffu) + "abc"},
      {"JSON text that does not parse", head(1, 1, 1, 0) + "{\"a\":"},
      {"data without the JSON flag", head(1, 0, 1, 0) + "7"},
  };
  for (const auto& [what, bytes] : bad) {
    INFO(what);
    pool_wire::reader reader;
    std::error_code ec;
    CHECK_FALSE(reader.feed(message::bytes(bytes), ec));
    CHECK(ec == childproc::errc::malformed_message);
  }
  // And one that is fine, so that the cases above fail for their own reason.
  pool_wire::reader reader;
  std::error_code ec;
  auto e = reader.feed(message::bytes(head(1, 1, 7, 3) + "sum" + "[1,2]"), ec);
  REQUIRE(e);
  CHECK_FALSE(ec);
  CHECK(e->kind == op::task);
  CHECK(e->id == 7);
  CHECK(e->name == "sum");
  CHECK(e->data.json() == boost::json::parse("[1,2]"));
}

// Before the fix: disconnect() closed a batched channel with its sends still queued; they failed
// with channel_closed and the peer got none of them ("got.size() == 10" was "0 == 10").
TEST_CASE("a batched channel writes a turn's sends after the turn, and a disconnect right "
          "after them still delivers them",
          "[pool_wire]") {
  channel_pair pair;
  pair.a->batch_sends = true;
  std::vector<message> got;
  bool peer_disconnected = false;
  pair.b->message_handlers.add([&](const message& m, childproc::channel) { got.push_back(m); });
  pair.b->disconnect_handlers.add([&] { peer_disconnected = true; });
  std::vector<std::error_code> completions;
  for (int i = 0; i < 10; ++i)
    pair.a->send(message(i), [&](std::error_code ec) { completions.push_back(ec); });
  CHECK(pair.unread() == 0); // nothing written yet: the batch goes out after this turn
  CHECK(pair.a->pending_bytes > 0);
  pair.a->disconnect();
  pair.io.run();
  REQUIRE(got.size() == 10);
  for (int i = 0; i < 10; ++i)
    CHECK(got[static_cast<std::size_t>(i)].json() == i);
  CHECK(peer_disconnected);
  CHECK(completions == std::vector<std::error_code>(10));
}

TEST_CASE("a batched channel's posted flush writes the whole turn at once", "[pool_wire]") {
  channel_pair pair;
  pair.a->batch_sends = true;
  for (int i = 0; i < 100; ++i)
    pair.a->send(message(i), {});
  CHECK(pair.unread() == 0);
  pair.io.poll_one(); // the flush
  CHECK(pair.a->pending_bytes == 0);
  CHECK(pair.unread() > 0);
  std::size_t received = 0;
  pair.b->message_handlers.add([&](const message&, childproc::channel) { ++received; });
  pair.a->disconnect();
  pair.io.run();
  CHECK(received == 100);
}

// A turn's small sends share one buffer; a message refused as too large, a large bytes message
// (sent from its own buffer) and a copied envelope between them keep every boundary and the order.
TEST_CASE("sends that share a queued buffer arrive whole and in order around a refused one",
          "[pool_wire]") {
  channel_pair pair;
  pair.a->batch_sends = true;
  const std::size_t limit = 1 << 20;
  std::vector<message> got;
  pair.b->message_handlers.add([&](const message& m, childproc::channel) { got.push_back(m); });
  std::vector<std::string> completions;
  const auto note = [&](std::string what) {
    return [&completions, what](std::error_code ec) {
      std::string line = what;
      if (ec)
        line.append(" ").append(ec.message());
      completions.push_back(std::move(line));
    };
  };
  CHECK(pair.a->send(message(boost::json::value(0)), note("0"))); // a completion ends a buffer
  CHECK(pair.a->send(message(1), {}));
  CHECK_FALSE(pair.a->send(message(std::string(limit, 'x')), note("too large")));
  CHECK(pair.a->send(message::bytes("small"), {}));
  CHECK(pair.a->send(message::bytes(std::string(4096, 'z')), note("large bytes")));
  CHECK(pair.a->send_copy("copied"));
  CHECK(pair.a->send(message(2), note("2")));
  pair.a->disconnect();
  pair.io.run();
  REQUIRE(got.size() == 6);
  CHECK(got[0].json() == 0);
  CHECK(got[1].json() == 1);
  CHECK(got[2].bytes() == "small");
  CHECK(got[3].bytes() == std::string(4096, 'z'));
  CHECK(got[4].bytes() == "copied");
  CHECK(got[5].json() == 2);
  CHECK(completions ==
        std::vector<std::string>{"too large message too large", "0", "large bytes", "2"});
}

// take_bytes_frames: small bytes frames reach the frame handler as views, in order with the
// messages around them; large ones (collected in their own buffer) stay messages.
TEST_CASE("a channel taking bytes frames gives them to its handler in order with its messages",
          "[pool_wire]") {
  channel_pair pair;
  std::vector<std::string> seen;
  pair.b->message_handlers.add([&](const message& m, childproc::channel) {
    seen.push_back(m.is_bytes() ? "message bytes " + std::to_string(m.bytes().size())
                                : "message " + std::to_string(m.json().as_int64()));
  });
  pair.b->take_bytes_frames([&](std::string_view b) { seen.push_back("frame " + std::string(b)); });
  pair.a->send(message(boost::json::value(1)), {});
  pair.a->send(message::bytes("ab"), {});
  pair.a->send(message::bytes(std::string(70000, 'q')), {});
  pair.a->send_copy("c");
  pair.a->send(message(boost::json::value(2)), {});
  pair.a->disconnect();
  pair.io.run();
  CHECK(seen == std::vector<std::string>{"message 1", "frame ab", "message bytes 70000", "frame c",
                                         "message 2"});
}
