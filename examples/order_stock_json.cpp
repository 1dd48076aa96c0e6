// The stock as a JSON file, <folder>/stock.json (SQLite not found at configure time). An order
// is checked whole before the file is replaced; the example's orders never run at once, so no
// lock is taken (the SQLite stock takes one).
#include "order_stock.hpp"

#include <fstream>
#include <map>
#include <sstream>

namespace order_stock {
namespace {

std::map<std::string, long> load(const std::filesystem::path& folder) {
  std::ifstream in(folder / "stock.json");
  std::stringstream text;
  text << in.rdbuf();
  const auto parsed = boost::json::parse(text.str()); // named: a range-for over a temporary's
  std::map<std::string, long> stock;                  // member would dangle
  for (const auto& [sku, qty] : parsed.as_object())
    stock[std::string(sku)] = qty.to_number<long>();
  return stock;
}

void store(const std::filesystem::path& folder, const std::map<std::string, long>& stock) {
  boost::json::object object;
  for (const auto& [sku, qty] : stock)
    object[sku] = qty;
  const auto temporary = folder / "stock.json.new";
  std::ofstream(temporary) << boost::json::serialize(object);
  std::filesystem::rename(temporary, folder / "stock.json"); // whole or not at all
}

} // namespace

std::string_view where() {
  return "JSON file stock.json, SQLite not found";
}

void create(const std::filesystem::path& folder, const std::vector<line>& lines) {
  store(folder, {lines.begin(), lines.end()});
}

std::optional<std::string> take(const std::filesystem::path& folder,
                                const boost::json::array& items) {
  auto stock = load(folder);
  for (const auto& item : items) {
    const std::string sku(item.at("sku").as_string());
    const auto qty = item.at("qty").to_number<long>();
    const auto found = stock.find(sku);
    if (found == stock.end() || found->second < qty)
      return shortage(sku, qty, found == stock.end() ? std::nullopt : std::optional(found->second));
    found->second -= qty;
  }
  store(folder, stock);
  return std::nullopt;
}

std::vector<line> lines(const std::filesystem::path& folder) {
  const auto stock = load(folder);
  return {stock.begin(), stock.end()};
}

} // namespace order_stock
