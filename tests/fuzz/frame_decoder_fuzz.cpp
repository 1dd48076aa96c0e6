// libFuzzer target for the channel's decoder (both wire formats).
//
// Input: byte 0 picks the format (bit 0) and seeds the cuts (bits 1..7); the rest is what the
// peer sent. Properties checked beyond "no crash, no leak, no UB":
//  - however the input is cut into reads (the cuts depend on the seed and on the data), the
//    decoder gives the same messages, the same error and the same partial() as in one read;
//  - an error is final: feeding more returns the same error and delivers nothing;
//  - every decoded message re-encodes to bytes that decode to an equal message (non-finite
//    doubles becoming null, as in Node);
//  - with descriptors given with some reads (duplicates of /dev/null), every one of them is
//    closed once the decoder and its messages are gone, and no message gets more handles than
//    were given.
// The limit (fuzz_limit) is below the -max_len that .ci/run gives libFuzzer, so that lines and
// frames over it occur: both formats' message_too_large branches are reached.
#include "../../src/frame.hpp"

#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fcntl.h>
#include <limits>
#include <string>
#include <unistd.h>
#include <vector>

using childproc::message;
using childproc::detail::decoder;
using childproc::detail::wire;

namespace {

// Equal JSON, except that doubles may differ by a few ULP: Boost.JSON 1.81's number parser is
// not correctly rounded (it reads "4.444444444444444E38" one ULP off), a known limitation of
// that Boost version, not of the codec.
bool close_json(const boost::json::value& a, const boost::json::value& b) {
  if (a.is_double() && b.is_double()) {
    const double x = a.get_double(), y = b.get_double();
    return x == y || std::fabs(x - y) <= 4 * std::numeric_limits<double>::epsilon() *
                                             std::max(std::fabs(x), std::fabs(y));
  }
  if (a.kind() != b.kind())
    return false;
  if (a.is_array()) {
    const auto &p = a.get_array(), &q = b.get_array();
    if (p.size() != q.size())
      return false;
    for (std::size_t i = 0; i < p.size(); ++i)
      if (!close_json(p[i], q[i]))
        return false;
    return true;
  }
  if (a.is_object()) {
    const auto &p = a.get_object(), &q = b.get_object();
    if (p.size() != q.size())
      return false;
    for (const auto& kv : p) {
      const auto* other = q.if_contains(kv.key());
      if (!other || !close_json(kv.value(), *other))
        return false;
    }
    return true;
  }
  return a == b;
}

bool same(const message& a, const message& b) {
  if (a.is_bytes() != b.is_bytes())
    return false;
  return a.is_bytes() ? a.bytes() == b.bytes() : close_json(a.json(), b.json());
}

constexpr std::size_t fuzz_limit = 4096;

struct decoded {
  std::vector<message> messages;
  std::error_code error;
  bool partial = false;
};

// Decodes `input` cut into reads: cut(i) gives the size of the read that starts at offset i.
// `views`: small bytes frames come as views (decoder::deliver_views), kept here as messages.
template <class Cut>
decoded decode(wire format, std::string_view input, Cut cut, bool views = false) {
  decoder d(format, fuzz_limit, /*large_frame=*/16); // small, so the large-frame path is fuzzed
  d.deliver_views(views);
  decoded out;
  struct sink {
    struct takes_views {};
    decoded& out;
    void operator()(message&& m) const {
      if (out.error)
        std::abort(); // nothing may be delivered after an error
      out.messages.push_back(std::move(m));
    }
    void operator()(childproc::detail::bytes_frame_view v) const {
      (*this)(message::bytes(std::string(v.payload)));
    }
  };
  for (std::size_t i = 0; i < input.size();) {
    const std::size_t n = std::min(cut(i), input.size() - i);
    std::error_code ec = d.feed(input.substr(i, n), sink{out});
    if (out.error && ec != out.error)
      std::abort(); // an error is final
    if (ec)
      out.error = ec;
    i += n;
  }
  out.partial = d.partial();
  return out;
}

// Decodes `input` in reads of cut(i) bytes, giving a descriptor with the reads that give(i) picks;
// aborts if a descriptor outlives the decoder and the messages.
template <class Cut, class Give>
void decode_with_fds(wire format, std::string_view input, Cut cut, Give give) {
  static const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<int> given;
  std::size_t handles = 0;
  {
    decoder d(format, fuzz_limit, /*large_frame=*/16);
    std::vector<message> messages;
    for (std::size_t i = 0; i < input.size();) {
      const std::size_t n = std::min(cut(i), input.size() - i);
      std::vector<childproc::owned_fd> fds;
      if (give(i)) {
        fds.emplace_back(::fcntl(null_fd, F_DUPFD_CLOEXEC, 3));
        given.push_back(fds.back().get());
      }
      const std::error_code ec = d.feed(input.substr(i, n), std::move(fds), [&](message&& m) {
        handles += m.has_handle();
        messages.push_back(std::move(m));
      });
      (void)d.take_node_controls();
      if (ec)
        break;
      i += n;
    }
  }
  if (handles > given.size())
    std::abort();
  for (int fd : given)
    if (::fcntl(fd, F_GETFD) >= 0)
      std::abort(); // leaked
}

bool same_exactly(const message& a, const message& b) {
  if (a.is_bytes() != b.is_bytes())
    return false;
  // By their text: Boost.JSON 1.81 parses "0E4235" as NaN (0 times an infinite power of ten),
  // which == never equals, though both decodes gave the same value (found by this fuzzer).
  return a.is_bytes() ? a.bytes() == b.bytes()
                      : boost::json::serialize(a.json()) == boost::json::serialize(b.json());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  const wire format = (data[0] & 1) ? wire::node_json : wire::framed;
  const unsigned seed = data[0] >> 1;
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  const decoded whole = decode(format, input, [&](std::size_t) { return input.size(); });
  // Cuts derived from the seed and from the byte where the read starts: 1 to 128 bytes.
  const decoded cut = decode(format, input, [&](std::size_t i) {
    return 1 + ((static_cast<unsigned char>(input[i]) * 131u + seed * 7u + i) % 128u);
  });
  if (whole.error != cut.error || whole.messages.size() != cut.messages.size())
    std::abort();
  for (std::size_t i = 0; i < whole.messages.size(); ++i)
    if (!same_exactly(whole.messages[i], cut.messages[i]))
      std::abort();
  if (!whole.error && whole.partial != cut.partial)
    std::abort();
  // Views of small bytes frames give the same messages.
  const decoded viewed = decode(
      format, input,
      [&](std::size_t i) {
        return 1 + ((static_cast<unsigned char>(input[i]) * 17u + seed * 5u + i) % 96u);
      },
      true);
  if (whole.error != viewed.error || whole.messages.size() != viewed.messages.size())
    std::abort();
  for (std::size_t i = 0; i < whole.messages.size(); ++i)
    if (!same_exactly(whole.messages[i], viewed.messages[i]))
      std::abort();
  decode_with_fds(
      format, input,
      [&](std::size_t i) {
        return 1 + ((static_cast<unsigned char>(input[i]) * 31u + seed * 11u + i) % 64u);
      },
      [&](std::size_t i) { return ((input[i] ^ seed) & 3) == 0; });

  for (const message& m : whole.messages) {
    std::string encoded;
    childproc::detail::encode(m, format, encoded);
    decoder again(format, 1u << 20);
    std::vector<message> back;
    if (again.feed(encoded, [&](message&& x) { back.push_back(std::move(x)); }))
      std::abort();
    // node_json turns bytes into Buffer JSON; JSON values must survive exactly.
    // (Non-finite doubles are sent as null, as Node's JSON.stringify does.)
    const message expected = m.is_json() ? message(childproc::detail::finite_json(m.json())) : m;
    if (back.size() != 1 || (m.is_json() && !same(expected, back[0])) ||
        (m.is_bytes() && format == wire::framed && back[0].bytes() != m.bytes()))
      std::abort();
  }
  return 0;
}
