// The stock as a SQLite table, stock(sku, qty), in <folder>/stock.db. An order is one
// transaction: every line is decremented, or (a line short) none is.
#include "order_stock.hpp"

#include <sqlite3.h>

#include <memory>
#include <stdexcept>

namespace order_stock {
namespace {

struct close_db {
  void operator()(sqlite3* db) const { ::sqlite3_close_v2(db); } // rolls back an open transaction
};
struct finalize {
  void operator()(sqlite3_stmt* statement) const { ::sqlite3_finalize(statement); }
};
using statement = std::unique_ptr<sqlite3_stmt, finalize>;

class database {
public:
  explicit database(const std::filesystem::path& file) {
    sqlite3* db = nullptr;
    const int rc =
        ::sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    db_.reset(db); // closed even when the open failed
    check(rc);
    ::sqlite3_busy_timeout(db, 5000); // another worker's transaction: wait for it
  }
  void exec(const char* sql) { check(::sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr)); }
  statement prepare(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    check(::sqlite3_prepare_v2(db_.get(), sql, -1, &raw, nullptr));
    return statement(raw);
  }
  // Runs a statement to its next row: true if there is one.
  bool step(const statement& s) {
    const int rc = ::sqlite3_step(s.get());
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      check(rc);
    return rc == SQLITE_ROW;
  }
  int changes() { return ::sqlite3_changes(db_.get()); }

private:
  void check(int rc) {
    if (rc != SQLITE_OK)
      throw std::runtime_error(std::string("sqlite: ") + ::sqlite3_errmsg(db_.get()));
  }
  std::unique_ptr<sqlite3, close_db> db_;
};

void bind_text(const statement& s, int index, std::string_view text) {
  ::sqlite3_bind_text(s.get(), index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

std::optional<long> in_stock(database& db, std::string_view sku) {
  auto select = db.prepare("SELECT qty FROM stock WHERE sku = ?1");
  bind_text(select, 1, sku);
  if (!db.step(select))
    return std::nullopt;
  return ::sqlite3_column_int64(select.get(), 0);
}

} // namespace

std::string_view where() {
  return "SQLite table stock in stock.db";
}

void create(const std::filesystem::path& folder, const std::vector<line>& lines) {
  database db(folder / "stock.db");
  db.exec("CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0))");
  auto insert = db.prepare("INSERT INTO stock (sku, qty) VALUES (?1, ?2)");
  for (const auto& [sku, qty] : lines) {
    bind_text(insert, 1, sku);
    ::sqlite3_bind_int64(insert.get(), 2, qty);
    db.step(insert);
    ::sqlite3_reset(insert.get());
  }
}

std::optional<std::string> take(const std::filesystem::path& folder,
                                const boost::json::array& items) {
  database db(folder / "stock.db");
  db.exec("BEGIN IMMEDIATE"); // the write lock first: two orders never interleave
  auto update = db.prepare("UPDATE stock SET qty = qty - ?1 WHERE sku = ?2 AND qty >= ?1");
  for (const auto& item : items) {
    const std::string_view sku = item.at("sku").as_string();
    const auto qty = item.at("qty").to_number<long>();
    ::sqlite3_bind_int64(update.get(), 1, qty);
    bind_text(update, 2, sku);
    db.step(update);
    ::sqlite3_reset(update.get());
    if (db.changes() == 0) {
      auto refusal = shortage(sku, qty, in_stock(db, sku));
      db.exec("ROLLBACK"); // the lines already taken go back
      return refusal;
    }
  }
  db.exec("COMMIT");
  return std::nullopt;
}

std::vector<line> lines(const std::filesystem::path& folder) {
  database db(folder / "stock.db");
  auto select = db.prepare("SELECT sku, qty FROM stock ORDER BY sku");
  std::vector<line> result;
  while (db.step(select))
    result.emplace_back(reinterpret_cast<const char*>(::sqlite3_column_text(select.get(), 0)),
                        ::sqlite3_column_int64(select.get(), 1));
  return result;
}

} // namespace order_stock
