// The data that the helper's stream modes write and the stream tests expect (one definition for
// both sides).
#pragma once

#include <cstddef>
#include <string>

namespace stream_data {

// Numbered lines of varying length (0 to 200 bytes of text each, so some are empty), `total`
// bytes in all; the last one is cut short wherever `total` ends, without its '\n'.
inline std::string lines(std::size_t total) {
  std::string text;
  text.reserve(total + 256);
  for (std::size_t k = 0; text.size() < total; ++k) {
    const std::size_t length = (k * 37) % 201;
    if (length > 0) {
      const std::string number = std::to_string(k);
      for (std::size_t i = 0; i < length; ++i)
        text.push_back(i < number.size() ? number[i] : static_cast<char>('a' + (k + i) % 26));
    }
    text.push_back('\n');
  }
  text.resize(total);
  return text;
}

// The sizes of the writes that carry it, used in turn: none is a multiple of a line, a page or
// a pipe, so lines and reads straddle every boundary.
inline constexpr std::size_t chunk_sizes[] = {1, 7, 4093, 65537, 333, 12289, 2, 131071, 999};

} // namespace stream_data
