// libFuzzer target for the channel's decoder (both wire formats).
//
// Input: byte 0 picks the format (bit 0) and the read size (bits 1..7, 1 to 128 bytes), the rest
// is what the peer sent. Properties checked beyond "no crash, no leak, no UB":
//  - an error is final: feeding more returns the same error and delivers nothing;
//  - every decoded message re-encodes to bytes that decode to an equal message (non-finite
//    doubles becoming null, as in Node).
#include "../../src/frame.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
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

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1)
    return 0;
  const wire format = (data[0] & 1) ? wire::node_json : wire::framed;
  const std::size_t step = 1 + ((data[0] >> 1) & 0x7f);
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);

  decoder d(format, 4096, /*large_frame=*/16); // small, so the large-frame path is fuzzed too
  std::vector<message> got;
  std::error_code failed;
  for (std::size_t i = 0; i < input.size(); i += step) {
    std::error_code ec = d.feed(input.substr(i, step), [&](message&& m) {
      if (failed)
        std::abort(); // nothing may be delivered after an error
      got.push_back(std::move(m));
    });
    if (failed && ec != failed)
      std::abort(); // an error is final
    if (ec)
      failed = ec;
  }

  for (const message& m : got) {
    std::string encoded;
    childproc::detail::encode(m, format, encoded);
    decoder again(format, 1u << 20);
    std::vector<message> back;
    if (again.feed(encoded, [&](message&& x) { back.push_back(std::move(x)); }))
      std::abort();
    // node_json turns bytes into a JSON string; JSON values must survive exactly.
    // (Non-finite doubles are sent as null, as Node's JSON.stringify does.)
    const message expected = m.is_json() ? message(childproc::detail::finite_json(m.json())) : m;
    if (back.size() != 1 || (m.is_json() && !same(expected, back[0])))
      std::abort();
  }
  return 0;
}
