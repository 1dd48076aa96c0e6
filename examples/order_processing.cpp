// Seed 004, "1. E-commerce Order Processing": /place-order answers at once; an email, an
// inventory and a payment worker then run, each in its own process.
//
//   app.post('/place-order', async (req, res) => {
//     const emailWorker = fork('workers/email-worker.js');      // and inventory, payment
//     emailWorker.send({ task: 'send-confirmation', order });   // 'update-stock',
//     'process-payment' res.json({ message: 'Order received', orderId: order.id, status:
//     'processing' });
//   });
//   // workers/email-worker.js
//   process.on('message', async (msg) => {
//     if (msg.task === 'send-confirmation') {
//       console.log(`Email worker ${process.pid} processing order ${msg.order.id}`);
//       await sendConfirmationEmail(msg.order);
//       process.send({ task: 'email-sent', orderId: msg.order.id, workerPID: process.pid });
//     }
//   });
//
// The workers are this binary ("email", "inventory", "payment" and a data folder). The email is
// an .eml file in <folder>/outbox; the stock a SQLite table (a JSON file where CMake found no
// SQLite: order_stock.hpp), taken in one transaction per order, all lines or none; the payment
// worker runs with a 5 s timeout (fork_options.timeout) and declines an amount of 0 or less.
// The route replies while the three workers are still running; their reports come afterwards.
// Two orders: the second asks for more desks than are left, and its inventory worker refuses
// it, leaving the stock as it was.
#include "fork_task.hpp"
#include "http/router.hpp"
#include "order_stock.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/core.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string_view>
#include <unistd.h>

namespace hr = http_router;
namespace fs = std::filesystem;
using hr::json::value;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

value email_worker(const fs::path& folder, const value& msg) {
  const auto& order = msg.at("order");
  const auto id = order.at("id").to_number<long>();
  fmt::print("Email worker {} processing order {}\n", ::getpid(), id);
  fs::create_directories(folder / "outbox");
  std::ofstream(folder / "outbox" / fmt::format("order-{}.eml", id))
      << "To: " << order.at("email").as_string().c_str() << "\r\n"
      << "Subject: Order " << id << " confirmed\r\n\r\n"
      << "Thank you for your order.\r\n";
  return {{"task", "email-sent"}, {"orderId", id}, {"workerPID", ::getpid()}};
}

value inventory_worker(const fs::path& folder, const value& msg) {
  const auto& order = msg.at("order");
  value reply{{"task", "stock-updated"}, {"orderId", order.at("id")}, {"workerPID", ::getpid()}};
  try {
    if (auto refused = order_stock::take(folder, order.at("items").as_array())) {
      reply.as_object()["task"] = "stock-refused";
      reply.as_object()["error"] = *refused;
    }
  } catch (const std::exception& e) { // the database failed: the stock is as it was
    reply.as_object()["task"] = "stock-failed";
    reply.as_object()["error"] = e.what();
  }
  return reply;
}

value payment_worker(const value& msg) {
  const bool accepted = msg.at("order").at("amount").to_number<double>() > 0;
  return {{"task", accepted ? "payment-accepted" : "payment-declined"},
          {"orderId", msg.at("order").at("id")},
          {"workerPID", ::getpid()}};
}

int worker(std::string_view kind, const fs::path& folder) {
  return fork_task::serve_tasks([&](const value& msg) {
    if (kind == "email")
      return email_worker(folder, msg);
    if (kind == "inventory")
      return inventory_worker(folder, msg);
    return payment_worker(msg);
  });
}

// Prints what the workers reported, the outbox and the stock, once every worker has exited.
void print_outcome(const fs::path& folder,
                   const std::map<std::pair<long, std::string>, std::string>& reports) {
  for (const auto& [key, report] : reports) {
    auto shown = hr::json::parse(report);
    if (shown.is_object() && shown.as_object().contains("workerPID"))
      shown.as_object()["workerPID"] = "<pid>"; // the pids differ every run
    fmt::print("order {}, {} worker: {}\n", key.first, key.second, hr::json::serialize(shown));
  }
  const auto eml = read_file(folder / "outbox" / "order-42.eml");
  fmt::print("outbox/order-42.eml: {}\n", eml.substr(0, eml.find("\r\n")));
  std::string stock;
  for (const auto& [sku, qty] : order_stock::lines(folder))
    stock += fmt::format("{}{} {}", stock.empty() ? "" : ", ", sku, qty);
  fmt::print("stock after the orders ({}): {}\n", order_stock::where(), stock);
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 2)
    return worker(argv[1], argv[2]);

  char folder_template[] = "/tmp/order_processing.XXXXXX";
  const fs::path folder = ::mkdtemp(folder_template);
  order_stock::create(folder, {{"lamp", 10}, {"desk", 3}});

  boost::asio::io_context io;
  std::map<std::pair<long, std::string>, std::string> reports; // (order, worker) -> report
  int running = 0, running_at_reply = 0;
  boost::asio::steady_timer all_reported(io); // cancelled when the last running worker reports
  auto app = std::make_shared<hr::router>();
  app->post(
      "/place-order", hr::sync([&](hr::context& c) {
        const auto order = hr::json::parse(c.req.body());
        const auto id = order.at("id").to_number<long>();
        const std::pair<const char*, const char*> workers[] = {{"email", "send-confirmation"},
                                                               {"inventory", "update-stock"},
                                                               {"payment", "process-payment"}};
        for (const auto& worker : workers) {
          const char* kind = worker.first;  // not a structured binding: clang 14 cannot
          const char* task = worker.second; // capture one
          childproc::fork_options options;
          if (std::string_view(kind) == "payment")
            options.timeout = std::chrono::seconds(5);
          ++running;
          boost::asio::co_spawn(
              io,
              fork_task::run(childproc::self_exe(), {kind, folder.string()},
                             value{{"task", task}, {"order", order}}, std::move(options)),
              [&, kind, id](std::exception_ptr, fork_task::outcome done) {
                reports[{id, kind}] =
                    hr::json::serialize(done.reply ? *done.reply : value{{"error", "no reply"}});
                if (--running == 0)
                  all_reported.cancel();
              });
        }
        running_at_reply = running;
        hr::send_json(c,
                      {{"message", "Order received"}, {"orderId", id}, {"status", "processing"}});
      }));

  hr::run_with_client(io, app, [&](hr::tcp::endpoint at) -> hr::awaitable<void> {
    const char* orders[] = {
        R"({"id":42,"email":"ada@example.com","amount":59.5,)"
        R"("items":[{"sku":"lamp","qty":2},{"sku":"desk","qty":1}]})",
        R"({"id":43,"email":"linus@example.com","amount":20,)" // more desks than are left
        R"("items":[{"sku":"lamp","qty":1},{"sku":"desk","qty":5}]})"};
    for (const char* order : orders) {
      const auto res = co_await hr::fetch(at, hr::http::verb::post, "/place-order", order);
      // One write, so that a worker's line cannot come between the two.
      fmt::print("{}\nworkers still running when the reply was sent: {}\n",
                 hr::show(hr::http::verb::post, "/place-order", res), running_at_reply);
      // This order's workers report before the next order is sent: its stock is then known.
      all_reported.expires_at(boost::asio::steady_timer::time_point::max());
      if (running > 0)
        co_await all_reported.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
  });

  // Every worker has reported and exited: io.run() returned.
  print_outcome(folder, reports);
  fs::remove_all(folder);
}
