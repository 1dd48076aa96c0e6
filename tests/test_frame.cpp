// The channel's codec on its own: round trips, reassembly from single bytes, and bad input.
#include "../src/frame.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using childproc::message;
using childproc::detail::decoder;
using childproc::detail::wire;

namespace {

std::vector<message> decode_all(decoder& d, std::string_view bytes, std::size_t step,
                                std::error_code& ec) {
  std::vector<message> out;
  for (std::size_t i = 0; i < bytes.size() && !ec; i += step)
    ec = d.feed(bytes.substr(i, step), [&](message&& m) { out.push_back(std::move(m)); });
  return out;
}

} // namespace

TEST_CASE("framed messages round-trip, also when fed one byte at a time", "[frame]") {
  std::string wire_bytes;
  childproc::detail::encode(message(boost::json::value{{"a", 1}}), wire::framed, wire_bytes);
  childproc::detail::encode(message::bytes(std::string("\0\xff\n", 3)), wire::framed, wire_bytes);
  childproc::detail::encode(message("text"), wire::framed, wire_bytes);
  for (std::size_t step : {std::size_t(1), std::size_t(3), wire_bytes.size()}) {
    decoder d(wire::framed, 1024);
    std::error_code ec;
    auto got = decode_all(d, wire_bytes, step, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(got.size() == 3);
    CHECK(got[0].json() == boost::json::value{{"a", 1}});
    CHECK(got[1].bytes() == std::string("\0\xff\n", 3));
    CHECK(got[2].json() == "text");
    CHECK_FALSE(d.partial());
  }
}

TEST_CASE("a frame larger than the maximum is message_too_large", "[frame][errors]") {
  std::string bytes;
  childproc::detail::encode(message::bytes(std::string(100, 'x')), wire::framed, bytes);
  decoder d(wire::framed, 99);
  std::error_code ec;
  decode_all(d, bytes, bytes.size(), ec);
  CHECK(ec == childproc::errc::message_too_large);
  // The header alone is enough to refuse it: nothing is buffered for it.
  decoder early(wire::framed, 99);
  CHECK(early.feed(std::string_view(bytes).substr(0, 5), [](message&&) {}) ==
        childproc::errc::message_too_large);
  std::string huge("\xf0\xff\xff\xff\x02", 5);
  decoder d2(wire::framed, 64u << 20);
  CHECK(d2.feed(huge, [](message&&) {}) == childproc::errc::message_too_large);
}

TEST_CASE("an unknown kind or bad JSON is malformed_message, and the decoder stays failed",
          "[frame][errors]") {
  decoder kind(wire::framed, 1024);
  CHECK(kind.feed(std::string("\x01\x00\x00\x00\x07x", 6), [](message&&) {}) ==
        childproc::errc::malformed_message);
  CHECK(kind.feed(std::string("\x01\x00\x00\x00\x02x", 6), [](message&&) {}) ==
        childproc::errc::malformed_message);
  decoder json(wire::framed, 1024);
  int delivered = 0;
  CHECK(json.feed(std::string("\x01\x00\x00\x00\x01{", 6), [&](message&&) { ++delivered; }) ==
        childproc::errc::malformed_message);
  CHECK(delivered == 0);
}

TEST_CASE("a truncated frame is reported as partial", "[frame]") {
  std::string bytes;
  childproc::detail::encode(message::bytes("abcdef"), wire::framed, bytes);
  decoder d(wire::framed, 1024);
  CHECK_FALSE(d.feed(std::string_view(bytes).substr(0, bytes.size() - 1), [](message&&) {}));
  CHECK(d.partial());
  // Also a large frame, which is collected in place.
  std::string large;
  childproc::detail::encode(message::bytes(std::string(200000, 'z')), wire::framed, large);
  decoder l(wire::framed, 1u << 20);
  CHECK_FALSE(l.feed(std::string_view(large).substr(0, 100), [](message&&) {}));
  CHECK_FALSE(l.feed(std::string_view(large).substr(100, 150000), [](message&&) {}));
  CHECK(l.partial());
}

TEST_CASE("node_json: one JSON text per line, Node's internal messages are dropped",
          "[frame][node]") {
  decoder d(wire::node_json, 1024);
  std::vector<message> got;
  std::string input = "{\"a\":1}\n\"caf\xc3\xa9\"\n{\"cmd\":\"NODE_HANDLE_ACK\"}\n[1,2]\r\n";
  for (char c : input)
    REQUIRE_FALSE(d.feed(std::string_view(&c, 1), [&](message&& m) { got.push_back(m); }));
  REQUIRE(got.size() == 3);
  CHECK(got[0].json() == boost::json::value{{"a", 1}});
  CHECK(got[1].json() == "caf\xc3\xa9");
  CHECK(got[2].json() == boost::json::value{1, 2});
  std::string encoded;
  childproc::detail::encode(message(boost::json::value{{"k", "line\nbreak"}}), wire::node_json,
                            encoded);
  CHECK(encoded == "{\"k\":\"line\\nbreak\"}\n");
}

TEST_CASE("node_json: bad JSON is malformed, an endless line is too large", "[frame][node]") {
  decoder bad(wire::node_json, 1024);
  CHECK(bad.feed("{oops}\n", [](message&&) {}) == childproc::errc::malformed_message);
  decoder endless(wire::node_json, 16);
  CHECK(endless.feed(std::string(17, 'x'), [](message&&) {}) == childproc::errc::message_too_large);
}

TEST_CASE("non-finite numbers are sent as null, as Node's JSON.stringify does",
          "[frame][node][regression]") {
  // Regression (found by the fuzzer): Boost.JSON 1.81 reads 1e999 as infinity and would write it
  // back as `Infinity`, which the peer cannot parse.
  const auto v = boost::json::parse("[1,1e999,{\"x\":-1e999}]");
  for (wire w : {wire::framed, wire::node_json}) {
    std::string bytes;
    childproc::detail::encode(message(v), w, bytes);
    decoder d(w, 1024);
    std::vector<message> got;
    REQUIRE_FALSE(d.feed(bytes, [&](message&& m) { got.push_back(std::move(m)); }));
    REQUIRE(got.size() == 1);
    CHECK(got[0].json() == boost::json::parse("[1,null,{\"x\":null}]"));
  }
}

TEST_CASE("a large bytes message the application keeps is not overwritten by the next one",
          "[frame]") {
  // The decoder reuses the buffer of the previous large message only when nobody holds it.
  const std::string first(100000, 'a'), second(100000, 'b'), third(100000, 'c');
  std::string bytes;
  for (const auto* s : {&first, &second, &third})
    childproc::detail::encode(message::bytes(*s), wire::framed, bytes);
  // Whole (frames complete in one read), and in pieces (large frames collected in place).
  for (std::size_t step : {bytes.size(), std::size_t(7001), std::size_t(3)}) {
    INFO("step " << step);
    decoder d(wire::framed, 1u << 20);
    std::vector<message> kept;
    int seen = 0;
    std::error_code ec;
    for (std::size_t i = 0; i < bytes.size() && !ec; i += step)
      ec = d.feed(std::string_view(bytes).substr(i, step), [&](message&& m) {
        ++seen;
        if (seen != 2) // keep the first and the third, drop the second
          kept.push_back(std::move(m));
      });
    REQUIRE_FALSE(ec);
    REQUIRE(kept.size() == 2);
    CHECK(kept[0].bytes() == first);
    CHECK(kept[1].bytes() == third);
    CHECK_FALSE(d.partial());
  }
  std::vector<message> kept;
  decoder whole(wire::framed, 1u << 20);
  REQUIRE_FALSE(whole.feed(bytes, [&](message&& m) { kept.push_back(std::move(m)); }));
  // Copies share the bytes instead of copying them.
  message copy = kept[0];
  CHECK(&copy.bytes() == &kept[0].bytes());
}

namespace {

std::vector<message> decode_whole(wire w, std::string_view bytes, std::error_code& ec) {
  decoder d(w, 1u << 20);
  std::vector<message> out;
  ec = d.feed(bytes, [&](message&& m) { out.push_back(std::move(m)); });
  return out;
}

} // namespace

// Before the fix: decoding failed with malformed_message (Boost.JSON's default depth of 32).
TEST_CASE("messages nested 1000 deep are accepted in both formats", "[frame][node]") {
  const std::string text = std::string(1000, '[') + "7" + std::string(1000, ']');
  for (wire w : {wire::node_json, wire::framed}) {
    INFO((w == wire::framed ? "framed" : "node_json"));
    std::string bytes;
    if (w == wire::node_json)
      bytes = text + "\n";
    else
      bytes = std::string("\xd1\x07\x00\x00\x01", 5) + text; // 2001 bytes of JSON
    std::error_code ec;
    auto got = decode_whole(w, bytes, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(got.size() == 1);
    std::string back;
    childproc::detail::encode(got[0], w, back);
    CHECK(back == bytes);
  }
}

// Before the fix: the lines ended the channel with malformed_message.
TEST_CASE("lone surrogates as Node's JSON.stringify writes them become U+FFFD", "[frame][node]") {
  // The exact bytes of JSON.stringify('a\ud800b'), of a lone low surrogate, of one at the end
  // of a string, and a valid pair (kept as it is).
  const std::string input = "\"a\\ud800b\"\n{\"k\":\"\\udc00\"}\n[\"x\\uD83D\"]\n"
                            "\"\\ud83d\\ude00\\\\ud800\"\n";
  std::error_code ec;
  auto got = decode_whole(wire::node_json, input, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(got.size() == 4);
  CHECK(got[0].json() == "a\xEF\xBF\xBD"
                         "b");
  CHECK(got[1].json() == boost::json::value{{"k", "\xEF\xBF\xBD"}});
  CHECK(got[2].json() == boost::json::array{"x\xEF\xBF\xBD"});
  CHECK(got[3].json() == "\xF0\x9F\x98\x80\\ud800"); // an escaped backslash is no escape
}

// Before the fix: bytes were written as a JSON string of raw bytes, "\u0000...\xff...", which is
// not UTF-8 and which no JSON parser must accept.
TEST_CASE("bytes over node_json travel as Node's Buffer JSON", "[frame][node]") {
  std::string raw;
  for (int i : {0, 1, 127, 128, 255})
    raw += static_cast<char>(i);
  std::string bytes;
  childproc::detail::encode(message::bytes(raw), wire::node_json, bytes);
  CHECK(bytes == "{\"type\":\"Buffer\",\"data\":[0,1,127,128,255]}\n");
}

// Before the fix: scanned 270008323 bytes for a 1048579-byte line (257 times: the whole partial
// line was rescanned on every read).
TEST_CASE("node_json scans each byte of a long line once, however it is cut", "[frame][node]") {
  // Built with append: g++ 12 -O3 warns falsely (-Wrestrict) on "literal" + std::string.
  std::string line(1, '"');
  line.append(1u << 20, 'x').append("\"\n");
  decoder d(wire::node_json, 2u << 20);
  int delivered = 0;
  for (std::size_t i = 0; i < line.size(); i += 2048)
    REQUIRE_FALSE(d.feed(std::string_view(line).substr(i, 2048), [&](message&&) { ++delivered; }));
  CHECK(delivered == 1);
  CHECK(d.scanned_bytes() == line.size());
}

// The pool's envelopes are read from the frames themselves (decoder::deliver_views): each small
// bytes frame reaches the sink as a view, in order with the messages around it; large bytes
// frames stay messages (their own reused buffer), as do frames fed to a sink without views.
TEST_CASE("a decoder delivering views gives small bytes frames as views in order with messages",
          "[frame]") {
  std::string bytes;
  childproc::detail::encode(message(boost::json::value(1)), wire::framed, bytes);
  childproc::detail::encode(message::bytes("ab"), wire::framed, bytes);
  childproc::detail::encode(message::bytes(std::string(100, 'L')), wire::framed, bytes);
  childproc::detail::encode(message::bytes(""), wire::framed, bytes);
  childproc::detail::encode(message(boost::json::value(2)), wire::framed, bytes);
  struct recorder {
    struct takes_views {};
    std::vector<std::string>& seen;
    void operator()(message&& m) const {
      seen.push_back(m.is_bytes() ? "message bytes " + std::to_string(m.bytes().size())
                                  : "message " + boost::json::serialize(m.json()));
    }
    void operator()(childproc::detail::bytes_frame_view v) const {
      seen.push_back("view " + std::string(v.payload));
    }
  };
  const std::vector<std::string> expected{"message 1", "view ab", "message bytes 100", "view ",
                                          "message 2"};
  for (std::size_t step : {bytes.size(), std::size_t(1), std::size_t(7)}) {
    decoder d(wire::framed, 1 << 20, /*large_frame=*/64);
    d.deliver_views(true);
    std::vector<std::string> seen;
    for (std::size_t i = 0; i < bytes.size(); i += step)
      REQUIRE_FALSE(d.feed(std::string_view(bytes).substr(i, step), recorder{seen}));
    CHECK(seen == expected);
  }
  decoder plain(wire::framed, 1 << 20, 64);
  plain.deliver_views(true); // a sink that takes only messages still gets messages
  std::error_code ec;
  const auto all = decode_all(plain, bytes, bytes.size(), ec);
  CHECK_FALSE(ec);
  REQUIRE(all.size() == 5);
  CHECK(all[1].bytes() == "ab");
  CHECK(all[3].bytes().empty());
}

// Before the fix message(0) chose message(const char*) (0 is a null pointer constant) and
// crashed in strlen; numbers and booleans are now an exact match, and nullptr is JSON null.
TEST_CASE("message(0) is the number 0, message(nullptr) null, message(true) true", "[frame]") {
  CHECK(message(0).json() == 0);
  CHECK(message(-7L).json() == -7);
  CHECK(message(2.5).json() == 2.5);
  CHECK(message(true).json() == true);
  CHECK(message(nullptr).json().is_null());
  CHECK(message("text").json() == "text");
  CHECK(message(std::size_t(3)).json().to_number<std::uint64_t>() == 3);
}
