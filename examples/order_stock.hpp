// The order_processing example's stock: a SQLite table (order_stock_sqlite.cpp) where CMake
// found SQLite, a JSON file otherwise (order_stock_json.cpp). One of the two is compiled in.
#pragma once

#include <boost/json.hpp>
#include <fmt/core.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace order_stock {

using line = std::pair<std::string, long>; // sku, quantity in stock

// Where the stock is kept, as the example prints it.
std::string_view where();

// Creates the stock in `folder` with these lines.
void create(const std::filesystem::path& folder, const std::vector<line>& lines);

// Takes every item of an order ([{sku, qty}]) from the stock, all or none (another worker's
// order never interleaves). Returns why the order was refused, if it was.
std::optional<std::string> take(const std::filesystem::path& folder,
                                const boost::json::array& items);

// The stock's lines, sorted by sku.
std::vector<line> lines(const std::filesystem::path& folder);

// The refusal, the same wherever the stock is kept. `left` is none for an unknown sku.
inline std::string shortage(std::string_view sku, long ordered, std::optional<long> left) {
  if (!left)
    return fmt::format("no such item: {}", sku);
  return fmt::format("not enough {} in stock: {} ordered, {} left", sku, ordered, *left);
}

} // namespace order_stock
