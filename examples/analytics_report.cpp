// Seed 004, "3. Data Analytics Pipeline": /analytics/report forks a sales, a users and a
// performance worker, sends each the date range, and answers once the three have reported.
//
//   app.get('/analytics/report', (req, res) => {
//     const { startDate, endDate } = req.query;
//     const tasks = [{ worker: fork('workers/sales-analytics.js'), type: 'sales' }, ...users,
//     performance]; tasks.forEach(({ worker, type }) => {
//       worker.send({ startDate, endDate });
//       worker.on('message', (data) => {
//         results[type] = data;
//         if (++completedTasks === tasks.length) { res.json({ analytics: results }); kill all }
//       });
//     });
//   });
//
// The data set is generated: 20 000 events (day of 2024, user, amount in cents, latency in ms)
// from a fixed seed, written to a CSV file that every worker reads. The workers run at once
// (awaitable_operators' &&); each one's result is checked against the same sum computed in the
// main process.
#include "fork_task.hpp"
#include "http/router.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace hr = http_router;
namespace fs = std::filesystem;
using hr::json::value;

namespace {

struct event {
  int day;        // 1..366, 2024
  int user;       // 0..999
  long cents;     // the sale's amount
  int latency_ms; // the request's
};

std::vector<event> generate() {
  std::vector<event> events;
  std::uint32_t state = 2024;
  auto next = [&state](std::uint32_t bound) {
    state = state * 1664525u + 1013904223u; // a fixed LCG: the same data every run
    return int((state >> 8) % bound);
  };
  for (int i = 0; i < 20'000; ++i)
    events.push_back({1 + next(366), next(1000), 100 + next(99'900), 5 + next(495)});
  return events;
}

std::vector<event> load(const fs::path& csv) {
  std::vector<event> events;
  std::ifstream in(csv);
  event e{};
  char comma;
  while (in >> e.day >> comma >> e.user >> comma >> e.cents >> comma >> e.latency_ms)
    events.push_back(e);
  return events;
}

// The three analyses, over the events whose day is in [start, end].
value analyse(std::string_view type, const std::vector<event>& all, int start, int end) {
  std::vector<event> in_range;
  std::copy_if(all.begin(), all.end(), std::back_inserter(in_range),
               [&](const event& e) { return e.day >= start && e.day <= end; });
  if (type == "sales") {
    long total = 0;
    for (const auto& e : in_range)
      total += e.cents;
    return {{"orders", in_range.size()}, {"revenueCents", total}};
  }
  if (type == "users") {
    std::set<int> users;
    for (const auto& e : in_range)
      users.insert(e.user);
    return {{"activeUsers", users.size()}};
  }
  std::vector<int> latencies;
  for (const auto& e : in_range)
    latencies.push_back(e.latency_ms);
  std::sort(latencies.begin(), latencies.end());
  const auto at = [&](double q) {
    return latencies.empty() ? 0 : latencies[size_t(q * (latencies.size() - 1))];
  };
  return {{"p50Ms", at(0.5)}, {"p95Ms", at(0.95)}};
}

// Day of 2024 of "2024-MM-DD".
int day_of(std::string_view date) {
  static constexpr int before[] = {0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335};
  const int month = std::stoi(std::string(date.substr(5, 2)));
  return before[month - 1] + std::stoi(std::string(date.substr(8, 2)));
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 2) { // a worker: argv[1] is its analysis, argv[2] the data set
    const auto events = load(argv[2]);
    return fork_task::serve_tasks([&](const value& range) {
      value data = analyse(argv[1], events, day_of(range.at("startDate").as_string()),
                           day_of(range.at("endDate").as_string()));
      data.as_object()["workerPID"] = ::getpid();
      return data;
    });
  }

  char folder_template[] = "/tmp/analytics_report.XXXXXX";
  const fs::path folder = ::mkdtemp(folder_template);
  const auto csv = (folder / "events.csv").string();
  const auto events = generate();
  {
    std::ofstream out(csv);
    for (const auto& e : events)
      out << e.day << ',' << e.user << ',' << e.cents << ',' << e.latency_ms << '\n';
  }

  boost::asio::io_context io;
  std::set<long> worker_pids;
  auto app = std::make_shared<hr::router>();
  app->get("/analytics/report", [&](hr::context& c) -> hr::awaitable<void> {
    const value range{{"startDate", c.query["startDate"]}, {"endDate", c.query["endDate"]}};
    auto one = [&](const char* type) {
      return fork_task::run(childproc::self_exe(), {type, csv}, range);
    };
    using namespace boost::asio::experimental::awaitable_operators;
    auto [sales, users, performance] =
        co_await (one("sales") && one("users") && one("performance"));
    hr::json::object results;
    for (auto [type, done] : {std::pair{"sales", &sales}, std::pair{"users", &users},
                              std::pair{"performance", &performance}}) {
      if (!done->reply) {
        hr::send_json(c, {{"error", std::string(type) + " worker failed"}},
                      hr::http::status::internal_server_error);
        co_return;
      }
      worker_pids.insert(done->reply->at("workerPID").to_number<long>());
      done->reply->as_object().erase("workerPID");
      results[type] = *done->reply;
    }
    hr::send_json(c, {{"analytics", results}});
  });

  const int start = day_of("2024-03-01"), end = day_of("2024-03-31");
  hr::run_with_client(io, app, [&](hr::tcp::endpoint at) -> hr::awaitable<void> {
    const auto target = "/analytics/report?startDate=2024-03-01&endDate=2024-03-31";
    const auto res = co_await hr::fetch(at, hr::http::verb::get, target);
    fmt::print("{}\n", hr::show(hr::http::verb::get, target, res));
    const auto report = hr::json::parse(res.body()).at("analytics");
    const bool same = report.at("sales") == analyse("sales", events, start, end) &&
                      report.at("users") == analyse("users", events, start, end) &&
                      report.at("performance") == analyse("performance", events, start, end);
    fmt::print("3 workers, 3 pids, none ours: {}\n",
               worker_pids.size() == 3 && worker_pids.count(::getpid()) == 0);
    fmt::print("the same as computed in the main process: {}\n", same);
  });
  fs::remove_all(folder);
}
