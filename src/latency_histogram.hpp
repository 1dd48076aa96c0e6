// A log-linear histogram of durations in microseconds (HdrHistogram's idea, fixed size): exact
// below 64 µs, then 32 buckets per power of two, so a percentile is within 1/32 of the truth.
#pragma once

#include <childproc/pool.hpp>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace childproc::detail {

class latency_histogram {
public:
  void record(std::uint64_t micros) noexcept {
    ++counts_[index_of(micros)];
    ++count_;
    sum_ += static_cast<double>(micros);
    if (micros > max_)
      max_ = micros;
  }

  latency_summary summary() const noexcept {
    latency_summary s;
    s.count = count_;
    if (count_ == 0)
      return s;
    s.mean = sum_ / static_cast<double>(count_);
    s.p50 = percentile(0.50);
    s.p90 = percentile(0.90);
    s.p99 = percentile(0.99);
    s.max = max_;
    return s;
  }

private:
  static constexpr std::size_t exact = 64;
  static constexpr std::size_t per_octave = 32;
  static constexpr std::size_t buckets = exact + (64 - 6) * per_octave;

  static std::size_t index_of(std::uint64_t v) noexcept {
    if (v < exact)
      return static_cast<std::size_t>(v);
    const int msb = std::bit_width(v) - 1; // >= 6
    const int shift = msb - 5;
    const auto mantissa = static_cast<std::size_t>(v >> shift); // 32..63
    return exact + static_cast<std::size_t>(msb - 6) * per_octave + (mantissa - per_octave);
  }
  // The middle of bucket `i`.
  static std::uint64_t value_of(std::size_t i) noexcept {
    if (i < exact)
      return i;
    const std::size_t octave = (i - exact) / per_octave;
    const std::uint64_t mantissa = per_octave + (i - exact) % per_octave;
    const int shift = static_cast<int>(octave) + 1;
    return (mantissa << shift) + ((std::uint64_t{1} << shift) >> 1);
  }
  std::uint64_t percentile(double p) const noexcept {
    const auto rank = static_cast<std::uint64_t>(p * static_cast<double>(count_ - 1)) + 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets; ++i) {
      seen += counts_[i];
      if (seen >= rank)
        return value_of(i) < max_ ? value_of(i) : max_;
    }
    return max_;
  }

  std::array<std::uint64_t, buckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
  double sum_ = 0;
};

} // namespace childproc::detail
